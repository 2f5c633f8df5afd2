"""One conversation's lifecycle: its record, its timeouts, its end and its callbacks.

| property (conversation) | what ends the conversation | ``shutdown_reason`` |
| --- | --- | --- |
| ``max_call_duration`` (s, default 3600) | time since the conversation started | ``max_call_duration reached`` |
| ``participant_absent_timeout`` (s, default 300; 0 = off) | nobody has joined this long after start | ``participant_absent_timeout reached`` |
| ``participant_left_timeout`` (s, default 0) | the last participant left this long ago (a rejoin cancels it) | ``participant_left_timeout reached`` |
| | the session failed before the pipeline ran | ``exception_encountered_during_conversation_startup`` |
| | the bot could not join its room | ``bot_could_not_join_meeting_it_was_probably_ended`` |
| | the pipeline failed | ``internal error occurred at step pipeline`` |
| | Ctrl-C / SIGTERM of the bot (our addition) | ``bot process interrupted`` |
| | the process died (found on the next start) | ``internal error occurred at step process (...)`` |

Ending is graceful: an ``EndFrame`` is queued, so what the replica is saying
finishes before the pipeline stops (if it has not stopped after
``END_GRACE_SECS`` the pipeline is cancelled). Except when the participant left: nobody
hears the rest, so the pipeline is cancelled at once (the reply being generated is aborted
at the llama.cpp server, which the next conversation shares). Then the record is closed and
``system.shutdown`` and ``application.transcription_ready`` are sent;
``system.replica_joined`` is sent when the pipeline is up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from conversation.callbacks import CallbackDispatcher, transcript_properties
from conversation.records import ABANDONED_REASON, ConversationStore

END_GRACE_SECS = 10.0
BEFORE_END_SECS = 8.0

MAX_CALL_DURATION = "max_call_duration reached"
PARTICIPANT_LEFT = "participant_left_timeout reached"
PARTICIPANT_ABSENT = "participant_absent_timeout reached"
STARTUP_ERROR = "exception_encountered_during_conversation_startup"
JOIN_FAILED = "bot_could_not_join_meeting_it_was_probably_ended"
PIPELINE_ERROR = "internal error occurred at step pipeline"
INTERRUPTED = "bot process interrupted"

# Tavus's reason codes (receivers match on them) with what they mean for a person.
_GLOSS = {
    PARTICIPANT_LEFT: "the participant left",
    INTERRUPTED: "Ctrl-C or SIGTERM",
}


# --------------------------------------------------------------------------- process-wide records

_RECORDS: dict[str, tuple[ConversationStore, CallbackDispatcher]] = {}


def records(settings: Any) -> tuple[ConversationStore, CallbackDispatcher]:
    """This process's store and callback dispatcher (opened, recovered and started once)."""
    key = str(settings.data_dir)
    if key not in _RECORDS:
        store = ConversationStore(settings.data_dir)
        dispatcher = CallbackDispatcher(
            store,
            secret=settings.callback_signing_secret,
            timeout_secs=settings.callback_timeout_secs,
            max_attempts=settings.callback_max_attempts,
            backoff_secs=settings.callback_backoff_secs,
        )
        recover(store, dispatcher)
        dispatcher.start()
        _RECORDS[key] = (store, dispatcher)
    return _RECORDS[key]


def close_records(settings: Any | None = None) -> None:
    """Stop this process's dispatcher and close the store of ``settings.data_dir`` (all of them
    without settings); queued callbacks stay in the database for the next start."""
    keys = [str(settings.data_dir)] if settings is not None else list(_RECORDS)
    for key in keys:
        opened = _RECORDS.pop(key, None)
        if opened is not None:
            store, dispatcher = opened
            dispatcher.stop()
            store.close()


def drain_callbacks(settings: Any, timeout: float) -> None:
    """Before exiting: give this process's queued callbacks ``timeout`` seconds to go out
    (what is left is retried on the next start). Nothing to do if no records were opened."""
    opened = _RECORDS.get(str(settings.data_dir))
    if opened is not None:
        opened[1].drain(timeout=timeout)


def recover(store: ConversationStore, dispatcher: CallbackDispatcher) -> list[str]:
    """Close conversations a dead process left active; queue their shutdown and transcript callbacks."""
    closed = []
    for row in store.run(store.abandoned):
        cid = row["conversation_id"]
        if not store.run(store.end, cid, ABANDONED_REASON):
            continue
        transcript = store.run(store.transcript, cid)
        replica = row.get("replica_id") or ""
        url = row.get("callback_url")
        dispatcher.emit(cid, url, "system.shutdown", "system",
                        {"replica_id": replica, "shutdown_reason": ABANDONED_REASON})
        dispatcher.emit(cid, url, "application.transcription_ready", "application",
                        transcript_properties(replica, None, transcript))
        logger.warning(f"Conversation {cid} was left active by a process that is gone; "
                       f"closed it ({len(transcript)} utterances kept)")
        closed.append(cid)
    store.flush()
    return closed


# --------------------------------------------------------------------------- one conversation


@dataclass
class ConversationLifecycle:
    """Record, timeouts, end and callbacks of one conversation."""

    store: ConversationStore
    callbacks: CallbackDispatcher
    conversation_id: str
    conversation: Any  # ConversationRequest
    persona: Any
    persona_source: str = ""
    transport: str = ""
    replica_id: str | None = None
    tavus_conversation_id: str | None = None  # the Tavus replica's conversation, if any
    system_prompt: str | None = None
    shutdown_reason: str | None = None
    _opened: bool = False
    _finished: bool = False
    _joined: bool = False
    _participants: int = 0
    _timers: dict[str, asyncio.Task] = field(default_factory=dict)
    _worker: Any = None
    # Awaited (at most BEFORE_END_SECS) when a graceful end starts, before the EndFrame.
    before_end: Any = None
    _transcript: Any = None

    @property
    def callback_url(self) -> str | None:
        return self.conversation.callback_url

    # ------------------------------------------------------------------ start

    def open(self, conversation_id: str | None = None, *, tavus_conversation_id: str | None = None,
             system_prompt: str | None = None) -> None:
        """Create the record (status active) and start the absent and duration timers.

        ``conversation_id``: the id the conversation goes by from now on, when it is not the
        one it was made with (the Tavus conversation's, when the user joins Tavus's room);
        ``tavus_conversation_id``: the Tavus replica's conversation, recorded beside it;
        ``system_prompt``: sent with the transcript at the end.
        """
        if self._opened:
            return
        self.conversation_id = conversation_id or self.conversation_id
        self.tavus_conversation_id = tavus_conversation_id or self.tavus_conversation_id
        self.system_prompt = system_prompt or self.system_prompt
        self._create_record()
        props = self.conversation.properties
        logger.info(f"Conversation {self.conversation_id} started ({self.persona.display_name})")
        self._timer("max_call_duration", props.max_call_duration, MAX_CALL_DURATION)
        if props.participant_absent_timeout and not self._joined:
            self._timer("absent", props.participant_absent_timeout, PARTICIPANT_ABSENT)

    def _create_record(self) -> None:
        self._opened = True
        self.store.submit(
            self.store.create, self.conversation_id,
            conversation_name=self.conversation.conversation_name or self.persona.display_name,
            persona_name=self.persona.display_name,
            persona_id=self.persona.persona_id or self.conversation.persona_id,
            persona_source=self.persona_source,
            replica_id=self.replica_id,
            tavus_conversation_id=self.tavus_conversation_id,
            callback_url=self.callback_url,
            transport=self.transport,
            language=self.conversation.properties.language,
            properties=self.conversation.properties.model_dump(mode="json"),
        )

    def attach(self, worker: Any, transcript: Any) -> None:
        """Follow the pipeline: live transcript, replica_joined when it is up, errors."""
        self._worker = worker
        self._transcript = transcript
        transcript.add_listener(
            lambda entry: self.store.submit(self.store.append_transcript, self.conversation_id,
                                            entry.to_dict())
        )

        @worker.event_handler("on_pipeline_started")
        async def _started(_worker, _frame):
            self.callbacks.emit(self.conversation_id, self.callback_url, "system.replica_joined",
                                "system", {"replica_id": self.replica_id or ""})

        @worker.event_handler("on_pipeline_error")
        async def _error(_worker, frame):
            if getattr(frame, "fatal", False):
                self.ending_because(PIPELINE_ERROR)

    # ------------------------------------------------------------------ participants

    async def participant_joined(self) -> None:
        self._joined = True
        self._participants += 1
        self._cancel("absent")
        self._cancel("left")

    async def participant_left(self) -> None:
        self._participants = max(0, self._participants - 1)
        if self._participants:
            return
        secs = self.conversation.properties.participant_left_timeout
        if secs:
            logger.info(f"Participant left; ending in {secs}s unless someone joins")
            await self._interrupt()  # what was being said is for nobody: stop generating it
        self._timer("left", secs, PARTICIPANT_LEFT)

    async def _interrupt(self) -> None:
        """Interrupt the reply in progress (the LLM's request is cancelled, its stream closed,
        and the llama.cpp server drops the generation), as a barge-in would."""
        worker = self._worker
        if worker is None or worker.has_finished():
            return
        from pipecat.frames.frames import InterruptionFrame

        await worker.queue_frames([InterruptionFrame()])

    # ------------------------------------------------------------------ ending

    def ending_because(self, reason: str) -> None:
        """The session knows why it is about to end (the first reason wins): e.g. the
        participant closed the terminal or the file ended, or the bot could not join."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason

    def _timer(self, name: str, secs: float, reason: str) -> None:
        self._cancel(name)

        async def fire():
            await asyncio.sleep(secs)
            logger.info(f"Conversation {self.conversation_id}: {reason}")
            await self.end(reason)

        self._timers[name] = asyncio.get_running_loop().create_task(fire())

    def _cancel(self, name: str) -> None:
        task = self._timers.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def end(self, reason: str) -> None:
        """End gracefully for ``reason`` (the first reason wins)."""
        self.ending_because(reason)
        worker = self._worker
        if worker is None:
            return
        if self.before_end is not None and reason != PARTICIPANT_LEFT:
            # What must reach the room before it ends (the perception analysis).
            hook, self.before_end = self.before_end, None
            try:
                await asyncio.wait_for(hook(), BEFORE_END_SECS)
            except Exception as exc:  # noqa: BLE001 - the end goes on whatever happens
                logger.warning(f"Conversation {self.conversation_id}: before the end: "
                               f"{exc or type(exc).__name__}")
        if reason == PARTICIPANT_LEFT:
            # Nobody is left to hear the rest: cancel now rather than let the reply being
            # generated and spoken finish (an EndFrame waits for it, and the LLM request on
            # the shared llama.cpp server with it). Cancelling closes the LLM's stream, which
            # the server sees as a disconnect: it stops generating at the next token.
            logger.info(f"Conversation {self.conversation_id}: nobody left to hear it; "
                        "cancelling what was still being generated")
            await worker.cancel(reason=reason)
            return
        from pipecat.frames.frames import EndFrame

        await worker.queue_frames([EndFrame()])

        async def force():
            await asyncio.sleep(END_GRACE_SECS)
            if not worker.has_finished():
                logger.warning(f"Conversation {self.conversation_id}: still running "
                               f"{END_GRACE_SECS:.0f}s after the end; cancelling")
                await worker.cancel(reason=reason)

        self._timers["force"] = asyncio.get_running_loop().create_task(force())

    def finish(self, *, error: BaseException | None = None, default: str = INTERRUPTED,
               system_prompt: str | None = None) -> None:
        """The session is over: close the record and send the shutdown and transcript callbacks.

        ``system_prompt``: the prompt, if it was composed but the conversation never opened.
        """
        if self._finished:
            return
        self._finished = True
        self.system_prompt = self.system_prompt or system_prompt
        for name in list(self._timers):
            self._cancel(name)
        if self.shutdown_reason is None:
            if error is not None:
                self.shutdown_reason = PIPELINE_ERROR if self._worker is not None else STARTUP_ERROR
            else:
                self.shutdown_reason = default
        if not self._opened:  # it failed before it started: still on record
            self._create_record()
        reason = self.shutdown_reason
        self.store.submit(self.store.end, self.conversation_id, reason)
        replica = self.replica_id or ""
        self.callbacks.emit(self.conversation_id, self.callback_url, "system.shutdown", "system",
                            {"replica_id": replica, "shutdown_reason": reason})
        transcript = self._transcript.to_list() if self._transcript is not None else []
        self.callbacks.emit(self.conversation_id, self.callback_url,
                            "application.transcription_ready", "application",
                            transcript_properties(replica, self.system_prompt, transcript))
        gloss = _GLOSS.get(reason)
        logger.info(f"Conversation {self.conversation_id} ended: {reason}"
                    + (f" ({gloss})" if gloss else ""))
