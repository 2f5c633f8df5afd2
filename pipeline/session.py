"""Running a conversation: a runner session (browser / Daily), text mode, or one-shot on files."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from config.app import AppConfig
from config.redact import redact_text
from pipeline.builder import (
    GREETING_INSTRUCTION,
    PersonaPipeline,
    build_pipeline,
    build_worker,
    new_conversation_id,
)
from pipeline.context import compose_system_prompt, emotion_tags_enabled
from pipeline.lifecycle import JOIN_FAILED, PARTICIPANT_LEFT, ConversationLifecycle, records
from pipeline.transcript import Transcript
from pipeline.tool_dispatch import ToolDispatcher
from services.voice_isolation import input_filter
from services import EnginePlan, Services, build_services, select_engines
from services.tavus import (
    RendererPlan,
    TavusAPI,
    TavusError,
    TavusVideoRenderer,
    open_conversation,
    plan_renderer,
)
from tools import build_registry


def plan_for(app: AppConfig, force_local: bool) -> EnginePlan:
    """The engine plan of this configuration."""
    return select_engines(app.persona, app.settings, force_local=force_local)


def services_for(app: AppConfig, plan: EnginePlan, **layers: bool) -> Services:
    """Build the services of ``plan`` with the persona's composed system prompt.

    Echo mode has no STT and no LLM.
    """
    if app.persona.pipeline_mode == "echo":
        layers.update(stt=False, llm=False)
    return build_services(
        plan,
        app.persona,
        app.conversation,
        app.settings,
        system_instruction=services_system_prompt(app, plan),
        **layers,
    )


def pipeline_for(
    app: AppConfig, transport: Any, services: Services, renderer: Any = None,
    conversation_id: str | None = None,
) -> PersonaPipeline:
    """``build_pipeline`` with this configuration's data directory and tool timeouts."""
    return build_pipeline(
        app.persona,
        app.conversation,
        transport,
        services,
        conversation_id=conversation_id,
        data_dir=app.settings.data_dir,
        tool_timeout_secs=app.settings.tool_timeout_secs,
        client_tool_timeout_secs=app.settings.client_tool_timeout_secs,
        renderer=renderer,
    )


def renderer_plan_for(app: AppConfig, requested: str = "auto") -> RendererPlan:
    """The renderer of this configuration (``--renderer``; see :func:`services.tavus.plan_renderer`)."""
    return plan_renderer(requested, app.conversation, app.persona, app.settings)


@asynccontextmanager
async def tavus_conversation(app: AppConfig, plan: RendererPlan) -> AsyncIterator[Any]:
    """Open a Tavus conversation for ``plan`` (None for no renderer); it is ended on the way out,
    whatever the way out is (normal end, error, cancellation)."""
    if plan.mode == "none":
        yield None
        return
    import aiohttp

    async with aiohttp.ClientSession() as http:
        api = TavusAPI(app.settings.tavus_api_key or "", app.settings.tavus_api_url, http)
        conversation = await open_conversation(api, plan, app.conversation, app.persona.display_name)
        try:
            yield conversation, http
        finally:
            await asyncio.shield(conversation.end("the session ended"))


def lifecycle_for(app: AppConfig, transport: str, replica_id: str | None = None,
                  system_prompt: str | None = None) -> ConversationLifecycle:
    """A new conversation's lifecycle, on this process's records (opened on first use)."""
    store, callbacks = records(app.settings)
    return ConversationLifecycle(
        store=store, callbacks=callbacks, conversation_id=new_conversation_id(),
        conversation=app.conversation, persona=app.persona, persona_source=app.persona_source,
        transport=transport, replica_id=replica_id, system_prompt=system_prompt,
    )


@asynccontextmanager
async def conversation_record(lifecycle: ConversationLifecycle) -> AsyncIterator[ConversationLifecycle]:
    """Close the conversation's record however the session ends (errors are remembered)."""
    try:
        yield lifecycle
    except (asyncio.CancelledError, KeyboardInterrupt):
        lifecycle.finish()
        raise
    except BaseException as exc:
        lifecycle.finish(error=exc)
        raise
    else:
        lifecycle.finish()


# --------------------------------------------------------------------------- runner session


async def run_runner_session(
    runner_args: Any,
    app: AppConfig,
    *,
    force_local: bool = False,
    greet: bool = True,
    renderer: str = "auto",
) -> Transcript:
    """One conversation through the development runner (local WebRTC page or Daily).

    With a Tavus replica (``renderer`` plan ``video``) the bot's TTS audio goes
    to Tavus and the replica's video and audio come to the user.
    """
    from services.transports import make_transport

    from pipecat.runner.types import DailyRunnerArguments

    rplan = renderer_plan_for(app, renderer)
    if rplan.mode == "transport":
        raise ModeError("--renderer transport runs its own session (the user joins the Tavus room)")
    daily = isinstance(runner_args, DailyRunnerArguments)
    lifecycle = lifecycle_for(app, "daily" if daily else "webrtc", rplan.replica_id)
    async with conversation_record(lifecycle):
        plan = plan_for(app, force_local)
        services = services_for(app, plan)
        lifecycle.system_prompt = services_system_prompt(app, plan)
        await services.ready()
        async with tavus_conversation(app, rplan) as opened:
            video = None
            if opened:
                conversation, http = opened
                video = TavusVideoRenderer(
                    conversation=conversation, session=http, bot_name=app.persona.display_name,
                    on_failure=lambda _msg: _set_reason(lifecycle, JOIN_FAILED),
                )
            lifecycle.open(opened[0].conversation_id if opened else None)
            transport = await make_transport(
                runner_args, app.persona, video=video is not None,
                captions=app.conversation.properties.enable_closed_captions,
            )
            built = pipeline_for(app, transport, services, renderer=video,
                                 conversation_id=lifecycle.conversation_id)
            return await _run_session(
                built, transport, lifecycle, greet=greet,
                handle_sigint=getattr(runner_args, "handle_sigint", False),
            )


def _set_reason(lifecycle: ConversationLifecycle, reason: str) -> None:
    if lifecycle.shutdown_reason is None:
        lifecycle.shutdown_reason = reason


def services_system_prompt(app: AppConfig, plan: EnginePlan) -> str:
    """The composed system prompt as the LLM gets it (also sent with the transcript callback)."""
    return compose_system_prompt(
        app.persona, app.conversation, emotion_tags=emotion_tags_enabled(app.persona, plan.tts.engine)
    )


async def _run_session(built: PersonaPipeline, transport: Any, lifecycle: ConversationLifecycle,
                       *, greet: bool, handle_sigint: bool, worker: Any = None) -> Transcript:
    """Run a built pipeline: greet when the participant joins; the lifecycle ends it."""
    from pipecat.workers.runner import WorkerRunner

    worker = worker or build_worker(built, idle_timeout_secs=None)
    lifecycle.attach(worker, built.transcript)
    runner = WorkerRunner(handle_sigint=handle_sigint)
    name = built.persona.display_name

    @transport.event_handler("on_client_connected")
    async def _on_connected(_transport, _client):
        logger.info(f"Participant joined {name}")
        await lifecycle.participant_joined()
        if greet:
            await built.greet(worker)

    @transport.event_handler("on_client_disconnected")
    async def _on_disconnected(_transport, _client):
        logger.info("Participant left")
        await lifecycle.participant_left()

    failures: list[str] = []
    if "on_error" in getattr(transport, "_event_handlers", {}):  # Daily

        @transport.event_handler("on_error")
        async def _on_error(_transport, error):
            if str(error).startswith("Error joining"):
                failures.append(str(error))
                _set_reason(lifecycle, JOIN_FAILED)
                await runner.cancel()

    await runner.add_workers(worker)
    await runner.run()
    if failures:
        raise SessionError(f"could not join the room: {failures[0]}")
    return built.transcript


class SessionError(RuntimeError):
    """The conversation could not run (e.g. the bot could not join its room)."""


async def run_tavus_transport_session(
    app: AppConfig, *, force_local: bool = False, greet: bool = True,
    announce: Callable[[str], None] = print,
) -> Transcript:
    """``--renderer transport``: the bot joins the room Tavus creates; the user opens its URL."""
    from services.tavus import PersonaTavusTransport, TavusParams

    rplan = renderer_plan_for(app, "transport")
    lifecycle = lifecycle_for(app, "tavus", rplan.replica_id)
    failures: list[str] = []
    async with conversation_record(lifecycle):
        plan = plan_for(app, force_local)
        services = services_for(app, plan)
        lifecycle.system_prompt = services_system_prompt(app, plan)
        await services.ready()
        async with tavus_conversation(app, rplan) as (conversation, http):
            lifecycle.open(conversation.conversation_id)
            announce(f"Join the conversation: {conversation.join_url}")
            transport = PersonaTavusTransport(
                conversation=conversation,
                session=http,
                bot_name=app.persona.display_name,
                params=TavusParams(
                    audio_in_enabled=True, audio_out_enabled=True, microphone_out_enabled=False,
                    audio_in_filter=input_filter(app.persona),
                ),
            )
            built = pipeline_for(app, transport, services, conversation_id=conversation.conversation_id)
            worker = build_worker(built, idle_timeout_secs=None)

            async def fatal(message: str) -> None:
                failures.append(message)
                _set_reason(lifecycle, JOIN_FAILED)
                await worker.cancel(reason=f"Tavus: {message}")

            transport.set_on_fatal(fatal)
            transcript = await _run_session(built, transport, lifecycle, greet=greet,
                                            handle_sigint=True, worker=worker)
    if failures:
        raise TavusError(f"Tavus conversation {conversation.conversation_id}: {failures[0]}")
    return transcript


async def run_daily_session(
    app: AppConfig, *, force_local: bool = False, greet: bool = True, renderer: str = "auto",
    announce: Callable[[str], None] = print,
) -> Transcript:
    """``-t daily``: create a Daily room with the conversation's limits, print its URL, run there."""
    import aiohttp
    from pipecat.runner.types import DailyRunnerArguments

    from services.daily_rooms import DailyRooms

    if not app.settings.daily_api_key:
        raise ModeError("-t daily needs DAILY_API_KEY (set it in the environment or .env)")
    renderer_plan_for(app, renderer)  # fail on a bad renderer before creating anything
    async with aiohttp.ClientSession() as http:
        rooms = DailyRooms(app.settings.daily_api_key, app.settings.daily_api_url, http)
        room = await rooms.create(app.conversation, app.persona.display_name)
        try:
            announce(f"Join the conversation: {room.join_url}")
            args = DailyRunnerArguments(room_url=room.url, token=room.bot_token)
            args.handle_sigint = True
            return await run_runner_session(
                args, app, force_local=force_local, greet=greet, renderer=renderer
            )
        finally:
            await asyncio.shield(rooms.delete(room))


# --------------------------------------------------------------------------- text mode


def _reply_printer(on_reply: Callable[[str], Awaitable[None]]):
    from pipecat.frames.frames import LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame
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
    greet: bool = True,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    reply_timeout: float = 120.0,
) -> Transcript:
    """A terminal conversation: typed user turns in, the persona's replies out (no STT/TTS)."""
    if app.persona.pipeline_mode == "echo":
        raise ModeError("--text needs a persona with pipeline_mode 'full' (echo mode has no LLM)")
    lifecycle = lifecycle_for(app, "text")
    async with conversation_record(lifecycle):
        return await _run_text(app, lifecycle, force_local=force_local, greet=greet, stdin=stdin,
                               stdout=stdout, reply_timeout=reply_timeout)


async def _run_text(
    app: AppConfig,
    lifecycle: ConversationLifecycle,
    *,
    force_local: bool,
    greet: bool,
    stdin: TextIO | None,
    stdout: TextIO | None,
    reply_timeout: float,
) -> Transcript:
    from pipecat.frames.frames import EndFrame, LLMMessagesAppendFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.workers.runner import WorkerRunner

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    name = app.persona.display_name
    plan = plan_for(app, force_local)
    services = services_for(app, plan, stt=False, tts=False)
    lifecycle.system_prompt = services_system_prompt(app, plan)
    await services.ready()

    transcript = Transcript()
    replies: asyncio.Queue[str | Exception] = asyncio.Queue()

    async def on_reply(text: str) -> None:
        transcript.add("assistant", text)  # blank text is not recorded
        await replies.put(text)

    tools = ToolDispatcher(
        app.persona.layers.llm.tools,
        build_registry(),
        conversation_id=lifecycle.conversation_id,
        data_dir=app.settings.data_dir,
        handler_timeout_secs=app.settings.tool_timeout_secs,
        client_timeout_secs=app.settings.client_tool_timeout_secs,
    )
    tools.register(services.llm)
    context = tools.new_context()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    pipeline = Pipeline([user_aggregator, services.llm, _reply_printer(on_reply), assistant_aggregator])
    worker = build_worker_for(pipeline)

    @worker.event_handler("on_pipeline_error")
    async def _on_error(_worker, frame):
        await replies.put(RuntimeError(frame.error))

    lifecycle.open()
    lifecycle.attach(worker, transcript)
    await lifecycle.participant_joined()
    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())
    interactive = stdin.isatty()

    def say(text: str) -> None:
        stdout.write(f"{name}: {text}\n")
        stdout.flush()

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

    try:
        greeting = app.conversation.custom_greeting
        if greet and greeting:
            transcript.add("assistant", greeting)
            await worker.queue_frames(
                [LLMMessagesAppendFrame([{"role": "assistant", "content": greeting}], run_llm=False)]
            )
            say(greeting)
        elif greet:
            await worker.queue_frames(
                [LLMMessagesAppendFrame([{"role": "developer", "content": GREETING_INSTRUCTION}], run_llm=True)]
            )
            reply = await wait_reply()
            if reply is not None:
                say(reply)
        while True:
            if interactive:
                stdout.write("You: ")
                stdout.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                _set_reason(lifecycle, PARTICIPANT_LEFT)
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                _set_reason(lifecycle, PARTICIPANT_LEFT)
                break
            transcript.add("user", text)
            await worker.queue_frames(
                [LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True)]
            )
            reply = await wait_reply()
            if reply is not None:
                say(reply)
    finally:
        await worker.queue_frames([EndFrame()])
        try:
            await asyncio.wait_for(run_task, timeout=10)
        except TimeoutError:
            await runner.cancel()
    return transcript


def build_worker_for(pipeline: Any) -> Any:
    """A worker for a pipeline that is not a voice pipeline (no idle timeout)."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker

    return PipelineWorker(
        pipeline, params=PipelineParams(enable_metrics=True), idle_timeout_secs=None
    )


# --------------------------------------------------------------------------- one-shot


class OneShotError(RuntimeError):
    """The one-shot run did not produce a reply."""


class ModeError(ValueError):
    """The persona cannot run in the requested mode."""


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
    reply has been spoken (or ``timeout``).
    """
    if app.persona.pipeline_mode == "echo":
        raise ModeError("one-shot mode needs a persona with pipeline_mode 'full' "
                        "(echo mode only speaks what conversation.echo sends)")
    lifecycle = lifecycle_for(app, "file")
    async with conversation_record(lifecycle):
        return await _run_oneshot(app, lifecycle, audio_in, audio_out, transcript_out,
                                  force_local=force_local, timeout=timeout, settle_secs=settle_secs)


async def _run_oneshot(
    app: AppConfig,
    lifecycle: ConversationLifecycle,
    audio_in: str | Path,
    audio_out: str | Path,
    transcript_out: str | Path | None,
    *,
    force_local: bool,
    timeout: float,
    settle_secs: float,
) -> dict[str, Any]:
    from pipecat.frames.frames import EndFrame
    from pipecat.workers.runner import WorkerRunner

    from pipeline.file_transport import FileTransport, last_speech_secs, write_wav_mono16

    started = time.monotonic()
    transport = FileTransport(audio_in, audio_in_filter=input_filter(app.persona))
    question_pcm = transport.load(16000)  # fail fast on a bad file
    speech_end = last_speech_secs(question_pcm, 16000)
    if speech_end is None:
        raise OneShotError(f"{audio_in}: no speech found (the file is silent)")

    plan = plan_for(app, force_local)
    services = services_for(app, plan)
    lifecycle.system_prompt = services_system_prompt(app, plan)
    await services.ready()
    ready_at = time.monotonic()
    lifecycle.open()
    built = pipeline_for(app, transport, services, conversation_id=lifecycle.conversation_id)
    state: dict[str, Any] = {"speaking": False}
    worker = build_worker(built, idle_timeout_secs=None, observers=[_speech_watcher(state)])
    lifecycle.attach(worker, built.transcript)
    await lifecycle.participant_joined()
    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(worker)
    run_task = asyncio.create_task(runner.run())

    def replied() -> bool:
        entries = built.transcript.entries
        users = [i for i, e in enumerate(entries) if e.role == "user"]
        return bool(users) and any(
            e.role == "assistant" for e in entries[users[0] + 1 :]
        ) and not state["speaking"]

    error: str | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not run_task.done():
            if transport.question_sent.is_set() and replied():
                await asyncio.sleep(settle_secs)  # a reply in several parts keeps speaking
                if replied():
                    break
            await asyncio.sleep(0.05)
        else:
            if run_task.done():
                error = "the pipeline stopped before the persona replied"
            elif not built.transcript.of("user"):
                error = f"no speech was recognised in {audio_in} within {timeout:.0f}s"
            else:
                error = f"the persona did not finish replying within {timeout:.0f}s"
    finally:
        _set_reason(lifecycle, PARTICIPANT_LEFT)  # the file ended: the participant is gone
        transport.finish()
        await worker.queue_frames([EndFrame()])
        try:
            await asyncio.wait_for(run_task, timeout=15)
        except TimeoutError:
            await runner.cancel()

    write_wav_mono16(audio_out, bytes(transport.recorded), transport.output_rate)
    stats = transport.stats
    latency = None
    if stats.input_started is not None and stats.first_output_audio is not None:
        latency = round(stats.first_output_audio - (stats.input_started + speech_end), 3)
    result = {
        "persona": app.persona.display_name,
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
