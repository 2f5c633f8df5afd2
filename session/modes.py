"""The run modes: each supplies a transport (or none) and a way to present output to a
:class:`~session.owner.ConversationSession`, which does the rest.

| mode | transport | how it ends |
| --- | --- | --- |
| :func:`run_runner_session` (local page, Daily room of the runner) | the runner's WebRTC / Daily transport | the lifecycle (participant left / timeouts) |
| :func:`run_daily_session` (``-t daily``) | a Daily room we create and delete | as above |
| :func:`run_tavus_transport_session` (``--renderer transport``) | the Tavus room (``TavusTransport``) | as above |
| :func:`run_text` (``--text``) | none: typed lines in, replies printed | end of input or ``/quit`` |
| :func:`run_oneshot` (``--audio-in``/``--audio-out``) | a WAV file in real time | the reply has been spoken |
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from config.app import AppConfig
from config.errors import AgentError
from config.redact import redact_text
from conversation.lifecycle import PARTICIPANT_LEFT
from conversation.transcript import Transcript
from services.voice_isolation import input_filter
from session.builder import new_conversation_id
from session.errors import ModeError, OneShotError
from session.owner import (
    QUICK_END_SECS,
    ConversationSession,
    process_interrupted,
    renderer_plan_for,
)

# --------------------------------------------------------------------------- runner session


async def run_runner_session(
    runner_args: Any, app: AppConfig, *, force_local: bool = False, renderer: str = "auto",
    conversation_id: str | None = None,
) -> Transcript | None:
    """One conversation through the development runner (local WebRTC page or Daily).

    With a Tavus replica (``renderer`` plan ``video``) the bot's TTS audio goes
    to Tavus and the replica's video and audio come to the user. A WebRTC peer
    that does not connect within ``PEER_CONNECT_TIMEOUT_SECS`` gets no
    conversation at all (None; see :mod:`transports.guard`).
    """
    from pipecat.runner.types import DailyRunnerArguments

    from transports import capacity

    connection = getattr(runner_args, "webrtc_connection", None)
    # The slot the signalling guard took for this offer (MAX_CONVERSATIONS): held until the
    # conversation ends, given back at once if the peer never connects.
    slot = capacity.claim(getattr(connection, "pc_id", None))
    try:
        return await _runner_session(runner_args, app, connection, force_local=force_local,
                                     renderer=renderer, conversation_id=conversation_id,
                                     daily=isinstance(runner_args, DailyRunnerArguments))
    finally:
        if slot is not None:
            slot.release()


async def _runner_session(runner_args: Any, app: AppConfig, connection: Any, *, force_local: bool,
                          renderer: str, daily: bool,
                          conversation_id: str | None = None) -> Transcript | None:
    from transports.guard import wait_for_peer
    from transports.runner import make_transport

    rplan = renderer_plan_for(app, renderer)
    if rplan.mode == "transport":
        raise ModeError("--renderer transport runs its own session (the user joins the Tavus room)")
    if connection is not None:
        timeout = app.settings.peer_connect_timeout_secs
        if not await wait_for_peer(connection, timeout):
            logger.warning(f"A WebRTC offer's peer did not connect within {timeout:g}s: "
                           "no conversation started")
            return None
    async with ConversationSession(app, transport="daily" if daily else "webrtc",
                                   force_local=force_local, renderer=rplan,
                                   conversation_id=conversation_id) as session:
        transport = await make_transport(runner_args, session.options, video=session.video is not None,
                                         perception_fps=session.perception_fps)
        session.build(transport)
        return await session.run(handle_sigint=getattr(runner_args, "handle_sigint", False))


async def run_daily_session(
    app: AppConfig, *, force_local: bool = False, renderer: str = "auto",
    announce: Callable[[str], None] = print,
) -> Transcript:
    """``-t daily``: create a Daily room with the conversation's limits, print its URL and the
    conversation id (the room's name; the id app messages carry), run there."""
    import aiohttp
    from pipecat.runner.types import DailyRunnerArguments

    from transports.daily_rooms import DailyRooms

    if not app.settings.daily_api_key:
        raise ModeError("-t daily needs DAILY_API_KEY (set it in the environment or .env)")
    renderer_plan_for(app, renderer)  # fail on a bad renderer before creating anything
    async with aiohttp.ClientSession() as http:
        rooms = DailyRooms(app.settings.daily_api_key, app.settings.daily_api_url, http)
        conversation_id = new_conversation_id()
        room = await rooms.create(app.conversation, app.options.persona_name,
                                  conversation_id=conversation_id)
        try:
            announce(f"Join the conversation: {room.join_url}\n"
                     f"Conversation id: {conversation_id}")
            args = DailyRunnerArguments(room_url=room.url, token=room.bot_token)
            args.handle_sigint = True
            return await run_runner_session(args, app, force_local=force_local, renderer=renderer,
                                            conversation_id=conversation_id)
        finally:
            deleting = asyncio.ensure_future(rooms.delete(room))
            try:  # after Ctrl-C, bounded: the room expires at max_call_duration anyway
                await asyncio.wait_for(asyncio.shield(deleting),
                                       QUICK_END_SECS if process_interrupted() else None)
            except TimeoutError:
                logger.warning(f"Daily room {room.url} not deleted within {QUICK_END_SECS}s; "
                               "it expires at the conversation's max_call_duration")


async def run_tavus_transport_session(
    app: AppConfig, *, force_local: bool = False, announce: Callable[[str], None] = print,
) -> Transcript:
    """``--renderer transport``: the bot joins the room Tavus creates; the user opens its URL."""
    from pipecat.transports.tavus.transport import TavusParams

    from services.tavus.renderers import PersonaTavusTransport

    rplan = renderer_plan_for(app, "transport")
    async with ConversationSession(app, transport="tavus", force_local=force_local,
                                   renderer=rplan) as session:
        announce(f"Join the conversation: {session.tavus.join_url}\n"
                 f"Conversation id: {session.conversation_id}")
        transport = PersonaTavusTransport(
            conversation=session.tavus,
            session=session.http,
            bot_name=session.options.persona_name,
            params=TavusParams(
                audio_in_enabled=True, audio_out_enabled=True, microphone_out_enabled=False,
                audio_in_filter=input_filter(session.options.flow),
            ),
        )
        session.build(transport)
        return await session.run(handle_sigint=True)


# --------------------------------------------------------------------------- text mode


def _reply_printer(on_reply: Callable[[str], Awaitable[None]]):
    from pipecat.frames.frames import (
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class ReplyCollector(FrameProcessor):
        """Collects each LLM response and hands the whole text to ``on_reply``."""

        def __init__(self):
            super().__init__(name="reply-collector")
            self._parts: list[str] = []

        async def process_frame(self, frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, LLMFullResponseStartFrame):
                self._parts = []
            elif isinstance(frame, LLMTextFrame):
                self._parts.append(frame.text)
            elif isinstance(frame, LLMFullResponseEndFrame):
                await on_reply("".join(self._parts).strip())
            await self.push_frame(frame, direction)

    return ReplyCollector()


async def run_text(
    app: AppConfig,
    *,
    force_local: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    reply_timeout: float = 120.0,
) -> Transcript:
    """A terminal conversation: typed user turns in, the persona's replies out (no STT/TTS)."""
    from pipecat.frames.frames import LLMMessagesAppendFrame

    if app.options.echo:
        raise ModeError("--text needs a persona with pipeline_mode 'full' (echo mode has no LLM)")
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    name = app.options.persona_name
    replies: asyncio.Queue[str | Exception] = asyncio.Queue()

    def say(text: str) -> None:
        stdout.write(f"{name}: {text}\n")
        stdout.flush()

    async with ConversationSession(app, transport="text", force_local=force_local,
                                   stt=False, tts=False) as session:
        async def on_reply(text: str) -> None:
            session.transcript.add("assistant", text)  # blank text is not recorded
            await replies.put(text)

        # Text mode's transcript is what was typed and what was answered (no turn detection).
        transcript = session.build(None, output=_reply_printer(on_reply)).transcript

        @session.worker.event_handler("on_pipeline_error")
        async def _on_error(_worker, frame):
            await replies.put(RuntimeError(frame.error))

        async def wait_reply() -> str | None:
            try:
                reply = await asyncio.wait_for(replies.get(), timeout=reply_timeout)
            except TimeoutError:
                stdout.write(f"({name} did not answer within {reply_timeout:.0f}s)\n")
                return None
            if reply == "":  # an empty response: usually an error report follows at once
                try:
                    reply = await asyncio.wait_for(replies.get(), timeout=0.5)
                except TimeoutError:
                    stdout.write(f"({name} gave an empty answer)\n")
                    return None
            if isinstance(reply, Exception):
                stdout.write(f"({name} could not answer: {redact_text(str(reply), app.secrets())})\n")
                return None
            return reply

        await session.start(handle_sigint=True)
        await session.lifecycle.participant_joined()
        interactive = stdin.isatty()
        if interactive:
            stdout.write(f"Talking with {name}. Type a message and press Enter; "
                         "/quit or Ctrl-D leaves.\n")
        try:
            greeting = session.options.custom_greeting
            if session.options.greet and greeting:
                # Shown verbatim and kept in the context, as the spoken greeting is.
                transcript.add("assistant", greeting)
                await session.worker.queue_frames([LLMMessagesAppendFrame(
                    [{"role": "assistant", "content": greeting}], run_llm=False)])
                say(greeting)
            elif session.options.greet:  # an in-character greeting from the LLM
                await session.worker.queue_frames(session.built.greeting_frames())
                reply = await wait_reply()
                if reply is not None:
                    say(reply)
            while True:
                if interactive:
                    stdout.write("You: ")
                    stdout.flush()
                line = await _read_line(stdin, session.task)
                if line is None:  # Ctrl-C ended the conversation
                    break
                text = line.strip()
                if not line or text in ("/quit", "/exit"):
                    session.lifecycle.ending_because(PARTICIPANT_LEFT)
                    break
                if not text:
                    continue
                transcript.add("user", text)
                await session.worker.queue_frames(
                    [LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True)]
                )
                reply = await wait_reply()
                if reply is not None:
                    say(reply)
        finally:
            await session.stop(timeout=10)
        if interactive:
            stdout.write(f"\nConversation {session.conversation_id} ended; "
                         f"`python bot.py --show-conversation {session.conversation_id}` "
                         "shows it again.\n")
        return transcript


async def _read_line(stdin: TextIO, running: asyncio.Task) -> str | None:
    """The next line typed, or None if the conversation ended first (Ctrl-C).

    Read in a daemon thread: a thread blocked in ``readline`` must not keep the
    process alive after the conversation has ended.
    """
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            text = stdin.readline()
        except Exception as exc:  # a closed stdin
            error = exc
            loop.call_soon_threadsafe(lambda: line.done() or line.set_exception(error))
            return
        loop.call_soon_threadsafe(lambda: line.done() or line.set_result(text))

    threading.Thread(target=read, name="text-mode-stdin", daemon=True).start()
    done, _ = await asyncio.wait({line, running}, return_when=asyncio.FIRST_COMPLETED)
    if line in done:
        return line.result()
    line.cancel()
    return None


# --------------------------------------------------------------------------- one-shot


def _speech_watcher(state: dict[str, Any]):
    from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame
    from pipecat.observers.base_observer import BaseObserver, FramePushed

    class SpeechWatcher(BaseObserver):
        """Tracks whether the bot is speaking and when each reply's audio ends."""

        async def on_push_frame(self, data: FramePushed):
            if isinstance(data.frame, BotStartedSpeakingFrame):
                state["speaking"] = True
            elif isinstance(data.frame, BotStoppedSpeakingFrame) and state.get("speaking"):
                state["speaking"] = False
                state["stopped_at"] = time.monotonic()

    return SpeechWatcher()


async def run_oneshot(
    app: AppConfig,
    audio_in: str | Path,
    audio_out: str | Path,
    transcript_out: str | Path | None = None,
    *,
    force_local: bool = False,
    timeout: float = 180.0,
    settle_secs: float = 1.0,
) -> dict[str, Any]:
    """Run the full voice pipeline on a WAV question; write the reply WAV and a JSON transcript.

    The question is streamed in real time, then silence until the persona's
    reply has been spoken (or ``timeout``). One-shot never greets.
    """
    from transports.file import FileTransport, last_speech_secs, write_wav_mono16

    if app.options.echo:
        raise ModeError("one-shot mode needs a persona with pipeline_mode 'full' "
                        "(echo mode only speaks what conversation.echo sends)")
    started = time.monotonic()
    session = ConversationSession(app, transport="file", force_local=force_local)
    transport = FileTransport(audio_in, audio_in_filter=input_filter(app.options.flow))
    try:  # fail fast on a bad file, before any model loads (still on record)
        speech_end = last_speech_secs(transport.load(16000), 16000)
        if speech_end is None:
            raise OneShotError(f"{audio_in}: no speech found (the file is silent)")
    except AgentError as exc:
        session.refuse(exc)
        raise

    async with session:
        ready_at = time.monotonic()
        state: dict[str, Any] = {"speaking": False}
        built = session.build(transport, observers=[_speech_watcher(state)])
        await session.lifecycle.participant_joined()  # the file is the participant: no greeting
        await session.start(handle_sigint=True)

        def replied() -> bool:
            entries = built.transcript.entries
            users = [i for i, e in enumerate(entries) if e.role == "user"]
            return bool(users) and any(
                e.role == "assistant" for e in entries[users[0] + 1 :]
            ) and not state["speaking"]

        error: str | None = None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and session.running:
                if transport.question_sent.is_set() and replied():
                    await asyncio.sleep(settle_secs)  # a reply in several parts keeps speaking
                    if replied():
                        break
                await asyncio.sleep(0.05)
            else:
                if not session.running:
                    error = "the pipeline stopped before the persona replied"
                elif not built.transcript.of("user"):
                    error = f"no speech was recognised in {audio_in} within {timeout:.0f}s"
                else:
                    error = f"the persona did not finish replying within {timeout:.0f}s"
        finally:
            session.lifecycle.ending_because(PARTICIPANT_LEFT)  # the file ended: nobody is left
            transport.finish()
            await session.stop(timeout=15)
        plan = session.plan

    write_wav_mono16(audio_out, bytes(transport.recorded), transport.output_rate)
    stats = transport.stats
    latency = None
    if stats.input_started is not None and stats.first_output_audio is not None:
        latency = round(stats.first_output_audio - (stats.input_started + speech_end), 3)
    result = {
        "persona": app.options.persona_name,
        "engines": {c.layer: {"engine": c.engine, "model": c.model} for c in plan.choices()},
        "audio_in": str(audio_in),
        "audio_out": str(audio_out),
        "heard": built.transcript.of("user"),
        "said": built.transcript.of("assistant"),
        "transcript": built.transcript.to_list(),
        "timing": {
            "startup_secs": round(ready_at - started, 3),
            "question_speech_end_secs": round(speech_end, 3),
            "voice_to_voice_secs": latency,
            "reply_audio_secs": round(len(transport.recorded) / 2 / transport.output_rate, 3),
        },
        "error": error,
    }
    if transcript_out:
        path = Path(transcript_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if error:
        raise OneShotError(error)
    return result
