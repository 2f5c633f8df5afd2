"""The interactions processor: inbound interactions in, outbound events out."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputTransportMessageFrame,
    LLMMessagesAppendFrame,
    LLMUpdateSettingsFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIClientMessageFrame
from pipecat.services.settings import LLMSettings

from config.base import LocalToolCallEvents
from config.logging import loggable

from .budgets import MessageLimits, SenderBudgets
from .events import OUTBOUND_EVENTS, InteractionEvent, build_event
from .models import (
    INBOUND_ALIASES,
    MAX_MESSAGE_BYTES,
    EchoProps,
    Interaction,
    ProtocolError,
    addressed_to_us,
    decode_pcm,
    message_size,
    parse_interaction,
)
from .observer import InteractionsObserver
from .tracker import InteractionTracker

ECHO_AUDIO_SECS = 60.0  # echo audio buffered ahead of playback when no limits are given
# system.replica_present: how often the replica says it is still in the room. tavus-cli waits
# for it (or system.replica_joined) before its first message; one small app message.
HEARTBEAT_SECS = 5.0
LOCAL_TOOL_CALL_EVENTS = get_args(LocalToolCallEvents)


@dataclass
class InteractionHooks:
    """What the protocol asks of the rest of the session (set by the pipeline builder)."""

    pipeline_mode: str = "full"
    # (mode, text) -> the new system instruction for the LLM
    update_context: Callable[[str, str], str] | None = None
    # (pause, interrupt) legacy sensitivities -> applied to the turn-taking settings
    apply_sensitivity: Callable[[str, str], None] | None = None
    # (tool_call_id, output, status) -> whether a pending call took it
    tool_result: Callable[[str, Any, str], bool] | None = None
    # (tool_call_id, output, status) -> the context message for a result that came after
    # its call timed out (None: no such call)
    late_tool_result: Callable[[str, Any, str], dict[str, Any] | None] | None = None
    # user text that did not come through STT (conversation.respond)
    user_text: Callable[[str], None] | None = None
    # called before an app's conversation.respond asks for a reply (opens a wake-phrase gate)
    allow_reply: Callable[[], None] | None = None
    # the LLM's size limits (the embedded engine's come from its context window)
    limits: MessageLimits | None = None
    # the conversation's current conversational_context (for the size of an append)
    current_context: Callable[[], str | None] | None = None
    # (objective_name, corrected output_variables or None) -> None, or the reason it is
    # refused (no such pending objective); conversation.objective.confirm
    objective_confirm: Callable[[str, dict[str, Any] | None], Awaitable[str | None]] | None = None


def _tracker_attribute(name: str, doc: str) -> property:
    """A processor attribute that is the tracker's (the tracker owns the outbound state)."""
    return property(lambda self: getattr(self.tracker, name),
                    lambda self, value: setattr(self.tracker, name, value), doc=doc)


class InteractionsProcessor(FrameProcessor):
    """Receives interactions from app messages and broadcasts conversation events.

    Place it right after ``transport.input()``. Pair it with
    :class:`InteractionsObserver` (see :meth:`create_observer`). Its
    :class:`InteractionTracker` (``tracker``) holds the conversation's outbound state; pass
    one in (``tracker=``) to choose its clocks or ids, and it brings its own
    ``conversation_id`` and ``captions``.

    The shared channel carries other traffic too (RTVI, chat messages, other replicas'
    events): only messages :func:`~.models.addressed_to_us` are handled; the rest is ignored
    with a debug line. A rejected message is answered with ``system.error`` to its sender
    only, where the transport names one (Daily, Tavus); the local page has one peer.

    Args:
        conversation_id: the id stamped on every event.
        also_known_as: other ids a client may use for it (a Tavus replica's conversation).
        replica_id: carried by ``system.replica_joined``.
        heartbeat_secs: the ``system.replica_present`` interval (None: no heartbeat).
        local_tool_call_events: how calls of the bot's own tools are announced
            (``local``: ``conversation.local_tool_call``; ``tool_call``: Tavus's
            ``conversation.tool_call``; ``none``).

    Event handlers available:

    - on_event(processor, message): every outbound event, after it was sent.
    - on_interaction(processor, interaction): every accepted inbound interaction.
    - on_protocol_error(processor, error, message): every rejected inbound message.
    """

    def __init__(self, conversation_id: str, hooks: InteractionHooks | None = None, *,
                 captions: bool = False, tracker: InteractionTracker | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 also_known_as: tuple[str, ...] = (), replica_id: str | None = None,
                 heartbeat_secs: float | None = HEARTBEAT_SECS,
                 local_tool_call_events: str = "local", **kwargs):
        super().__init__(name="interactions", **kwargs)
        if local_tool_call_events not in LOCAL_TOOL_CALL_EVENTS:
            raise ValueError(f"local_tool_call_events must be one of {LOCAL_TOOL_CALL_EVENTS}")
        self.hooks = hooks or InteractionHooks()
        self.tracker = tracker or InteractionTracker(conversation_id, captions=captions)
        self.also_known_as = tuple(also_known_as)
        self.replica_id = replica_id
        self.local_tool_call_events = local_tool_call_events
        self._heartbeat_secs = heartbeat_secs
        self._heartbeat = None
        self._clock = clock
        self.budgets = SenderBudgets(clock)
        self._echo_audio_until = 0.0  # when the echo audio pushed so far has played out
        self._echo_over_reported = False
        self._respond_pending = False  # a respond's reply not yet spoken to its end
        self._send_lock = asyncio.Lock()
        self._register_event_handler("on_event")
        self._register_event_handler("on_interaction")
        self._register_event_handler("on_protocol_error")

    def create_observer(self) -> InteractionsObserver:
        """The observer that feeds this processor the frames it turns into events."""
        return InteractionsObserver(self)

    conversation_id = _tracker_attribute("conversation_id", "The conversation's id.")
    captions = _tracker_attribute(
        "captions", "``enable_closed_captions``: send ``conversation.closed_caption`` events.")
    turn_idx = _tracker_attribute("turn_idx", "The number of user turns committed so far.")

    @property
    def current_inference_id(self) -> str | None:
        """The inference id of the reply in progress (for tool calls)."""
        return self.tracker.current_inference_id

    @property
    def conversation_ids(self) -> tuple[str, ...]:
        """Every id an inbound message may carry."""
        return (self.conversation_id, *self.also_known_as)

    # ------------------------------------------------------------------ sending

    async def send(self, *events: InteractionEvent, to: str | None = None
                   ) -> list[dict[str, Any]]:
        """Send events in order (seq is strictly increasing in send order): to the room, or
        to one participant (``to``: its transport id; Daily and Tavus rooms address it)."""
        messages = []
        for event in events:
            async with self._send_lock:
                message = self.tracker.stamp(event).to_message()
                await self.push_frame(_message_frame(message, to))
            await self._call_event_handler("on_event", message)
            messages.append(message)
        return messages

    async def emit(
        self,
        event: InteractionEvent | str,
        properties: dict[str, Any] | None = None,
        *,
        inference_id: str | None = None,
        message_type: str | None = None,
    ) -> dict[str, Any]:
        """Broadcast one event, given as a model or as its type and properties."""
        if not isinstance(event, InteractionEvent):
            event = build_event(event, properties, inference_id=inference_id,
                                message_type=message_type)
        (message,) = await self.send(event)
        return message

    async def emit_error(self, error: str, received: Any = None, sender: str | None = None
                         ) -> None:
        """Tell the sender (and the log) that an inbound message was rejected (the whole room
        when the transport does not name the sender)."""
        event = received.get("event_type") if isinstance(received, dict) else None
        # The client's values at most cut and escaped (its message itself is never logged).
        logger.warning(f"Interactions: rejected message ({loggable(event or 'unparsed', 80)}): "
                       f"{loggable(error, 400)}")
        await self.send(*self.tracker.error(error, event), to=sender)
        await self._call_event_handler("on_protocol_error", error, received)

    async def reply_failed(self, reason: str) -> None:
        """``system.error`` for a turn the LLM gave no answer to (see pipeline/reply_guard.py)."""
        await self.send(*self.tracker.reply_failed(reason))

    async def caption(self, role: str, text: str, final: bool, inference_id: str | None) -> None:
        """A live closed caption (``enable_closed_captions``): the text so far of one utterance."""
        await self.send(*self.tracker.caption(role, text, final, inference_id))

    async def emit_tool_call(self, name: str, arguments: dict[str, Any], tool_call_id: str,
                             local: bool = False) -> None:
        """Announce a call the LLM made (arguments as a JSON string): ``conversation.tool_call``
        for the client to execute; a ``local`` one (the bot runs it) as
        ``local_tool_call_events`` says."""
        if local and self.local_tool_call_events == "none":
            return
        kind = ("conversation.local_tool_call" if local and self.local_tool_call_events == "local"
                else "conversation.tool_call")
        await self.send(*self.tracker.tool_call(name, arguments, tool_call_id, kind))

    async def replica_present(self) -> None:
        """``system.replica_present`` now (the heartbeat)."""
        await self.send(*self.tracker.replica_present())

    async def participant_joined(self, participant_id: str | None = None) -> None:
        """Someone joined: ``system.replica_joined`` to them (where the transport names them:
        in a Daily room the one sent at start reached nobody, and it carries the conversation
        id), and ``system.replica_present`` to the room at once, not at the next heartbeat."""
        if participant_id is not None:
            await self.send(*self.tracker.replica_joined(self.replica_id), to=participant_id)
        await self.replica_present()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_secs)
            await self.replica_present()

    async def _started(self) -> None:
        await self.send(*self.tracker.replica_joined(self.replica_id))
        if self._heartbeat_secs and self._heartbeat is None:
            self._heartbeat = self.create_task(self._beat(), name="replica-present")

    async def _stopped(self) -> None:
        if self._heartbeat is not None:
            heartbeat, self._heartbeat = self._heartbeat, None
            await self.cancel_task(heartbeat)

    async def wake_phrase_detected(self) -> None:
        """``system.wake_phrase_detected`` (envelope only, as Tavus documents it)."""
        await self.send(*self.tracker.wake_phrase_detected())

    async def user_turn(self, text: str) -> None:
        """A user turn was committed to the context (spoken, or an app's respond)."""
        await self.send(*self.tracker.user_turn(text))

    # ------------------------------------------------------------------ inbound

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # everything downstream starts first
            await self._started()
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._stopped()
        if isinstance(frame, InputTransportMessageFrame) and direction == FrameDirection.DOWNSTREAM:
            await self.handle_message(frame.message, getattr(frame, "participant_id", None))
            return  # consumed
        if isinstance(frame, RTVIClientMessageFrame):
            data = frame.data if isinstance(frame.data, dict) else {}
            payload = data.get("d", data) if isinstance(data, dict) else data
            if isinstance(payload, dict) and "event_type" in payload:
                await self.handle_message(payload, None)
                return
        await self.push_frame(frame, direction)

    async def handle_message(self, message: Any, sender: str | None = None) -> None:
        """Validate and act on one inbound message; errors never escape."""
        oversized = isinstance(message, (str, bytes)) and message_size(message) > MAX_MESSAGE_BYTES
        if isinstance(message, (str, bytes)) and not oversized:
            try:  # decoded once here so that the budget knows its event type
                decoded = json.loads(message)
            except (ValueError, UnicodeDecodeError):
                decoded = None
            message = decoded
        if not oversized and not addressed_to_us(message, OUTBOUND_EVENTS):
            # Someone else's traffic on the shared channel: RTVI, chat, other replicas' events.
            kind = message.get("event_type") or message.get("type") if isinstance(
                message, dict) else None
            kind = kind if isinstance(kind, str) else type(message).__name__  # no user text
            logger.debug(f"Interactions: ignored an app message that is not an interaction "
                         f"({loggable(kind, 60)})")
            return
        raw_type = message.get("event_type") if isinstance(message, dict) else None
        raw_type = INBOUND_ALIASES.get(raw_type, raw_type) if isinstance(raw_type, str) else None
        admitted, report = self.budgets.admit(sender, raw_type)
        if not admitted:  # dropped, never queued: one system.error per burst
            if report:
                await self.emit_error(SenderBudgets.error(raw_type), message, sender)
            return
        try:
            interaction = parse_interaction(message, self.conversation_ids, sender)
            await self._dispatch(interaction)
        except ProtocolError as exc:
            await self.emit_error(str(exc), message, sender)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take the pipeline down
            logger.exception(f"Interactions: failed to handle a message: {exc}")
            await self.emit_error(f"internal error: {type(exc).__name__}", message, sender)
            return
        await self._call_event_handler("on_interaction", interaction)

    async def _dispatch(self, interaction: Interaction) -> None:
        kind, props = interaction.event_type, interaction.properties
        if kind == "conversation.interrupt":
            await self._interrupt()
        elif kind == "conversation.respond":
            await self._respond(props.text)
        elif kind == "conversation.echo":
            await self._echo(props)
        elif kind in ("conversation.overwrite_llm_context", "conversation.append_llm_context"):
            mode = "overwrite" if kind.endswith("overwrite_llm_context") else "append"
            if self.hooks.update_context is None:
                raise ProtocolError(f"{kind} is not available in this pipeline")
            self._check_context(kind, mode, props.context)
            instruction = self.hooks.update_context(mode, props.context)
            if self.hooks.pipeline_mode == "full":
                await self.push_frame(
                    LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=instruction))
                )
        elif kind == "conversation.sensitivity":
            if self.hooks.apply_sensitivity is None:
                raise ProtocolError("conversation.sensitivity is not available in this pipeline")
            self.hooks.apply_sensitivity(
                props.participant_pause_sensitivity, props.participant_interrupt_sensitivity
            )
        elif kind == "conversation.tool_result":
            await self._tool_result(props.tool_call_id, props.output, props.status)
        elif kind == "conversation.objective.confirm":
            if self.hooks.objective_confirm is None:
                raise ProtocolError("conversation.objective.confirm: this persona has no objectives")
            refused = await self.hooks.objective_confirm(props.objective_name,
                                                         props.output_variables)
            if refused:
                raise ProtocolError(f"conversation.objective.confirm: {refused}")

    async def _tool_result(self, call_id: str, output: Any, status: str) -> None:
        """A client's result: to its pending call; one that came after the call timed out
        (the LLM was told so) is added to the context for the next reply, not rejected."""
        hooks = self.hooks
        if hooks.tool_result and hooks.tool_result(call_id, output, status):
            return
        late = hooks.late_tool_result and hooks.late_tool_result(call_id, output, status)
        if not late:
            raise ProtocolError(f"conversation.tool_result: no pending tool call {call_id!r}")
        if hooks.pipeline_mode == "full":
            await self.push_frame(LLMMessagesAppendFrame([late], run_llm=False))
            logger.info(f"Interactions: a late result for tool call {loggable(call_id, 80)} "
                        "was added to the context")

    def _check_context(self, kind: str, mode: str, text: str) -> None:
        """Refuse a context the LLM cannot hold (the conversation keeps its previous one)."""
        limits = self.hooks.limits
        if limits is None or limits.context_chars is None:
            return
        size = len(text)
        if mode == "append" and self.hooks.current_context is not None:
            current = self.hooks.current_context() or ""
            size += len(current) + 2 if current else 0
        if size > limits.context_chars:
            whole = "the conversation's context with it" if mode == "append" else "the context"
            raise ProtocolError(
                f"{kind}: {whole} would be {size:,} characters; {limits.engine} holds at most "
                f"{limits.context_chars:,}. Refused: the conversation keeps its previous context")

    async def _interrupt(self) -> None:
        self.tracker.echo_ended()
        self._echo_audio_until = 0.0
        await self.broadcast_interruption()

    @property
    def reply_pending(self) -> bool:
        """A respond's reply is queued, being generated or spoken."""
        return (self._respond_pending or self.tracker.replica_speaking
                or self._echo_audio_until > self._clock())

    def reply_done(self) -> None:
        """The replica finished speaking (the observer tells it): no respond is pending."""
        self._respond_pending = False

    async def _respond(self, text: str) -> None:
        if self.hooks.pipeline_mode != "full":
            raise ProtocolError("conversation.respond needs pipeline_mode 'full' (this is echo mode)")
        limits = self.hooks.limits
        if limits is not None and limits.respond_chars is not None and (
                len(text) > limits.respond_chars):
            raise ProtocolError(
                f"conversation.respond: text is {len(text):,} characters; {limits.engine} "
                f"takes at most {limits.respond_chars:,}. Refused (send it as "
                "conversation.append_llm_context, or shorter)")
        if self.reply_pending:
            # The newest respond wins: the reply still queued or being generated (or spoken)
            # for the previous one is interrupted, so a burst never queues LLM runs.
            self._echo_audio_until = 0.0
            await self.broadcast_interruption()
        self._respond_pending = True
        self.tracker.respond_started()
        if self.hooks.user_text:
            self.hooks.user_text(text)
        if self.hooks.allow_reply:
            self.hooks.allow_reply()
        await self.user_turn(text)
        await self.push_frame(
            LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True)
        )

    def _echo_audio_fits(self, secs: float) -> bool:
        """Whether ``secs`` more echo audio stay within the buffered-audio budget (taken if so)."""
        cap = self.hooks.limits.echo_audio_secs if self.hooks.limits else ECHO_AUDIO_SECS
        now = self._clock()
        start = max(self._echo_audio_until, now)
        if start - now + secs > cap:
            return False
        self._echo_audio_until = start + secs
        return True

    async def _echo(self, props: EchoProps) -> None:
        tracker = self.tracker
        continues = tracker.echo_continues(props.inference_id)
        if not continues:
            if tracker.replica_speaking or tracker.echo_open:
                await self.broadcast_interruption()
            self._echo_audio_until = 0.0
            self._echo_over_reported = False
            tracker.echo_started(props.inference_id)
        if props.resolved_modality() == "text":
            tracker.echo_text(props.text or "", continues)
            await self.push_frame(
                TTSSpeakFrame(props.text, append_to_context=self.hooks.pipeline_mode == "full")
            )
        else:
            audio = decode_pcm(props.audio or "")
            if audio and not self._echo_audio_fits(len(audio) / 2 / props.sample_rate):
                if props.done:
                    await self.push_frame(TTSStoppedFrame())
                    tracker.echo_ended()
                if self._echo_over_reported:
                    return  # one system.error per echo over its budget
                self._echo_over_reported = True
                cap = self.hooks.limits.echo_audio_secs if self.hooks.limits else ECHO_AUDIO_SECS
                raise ProtocolError(
                    f"conversation.echo: more than {cap:g} s of echo audio buffered ahead of "
                    "playback; this chunk is dropped (send audio at about real time)")
            if audio:
                await self.push_frame(
                    TTSAudioRawFrame(audio=audio, sample_rate=props.sample_rate, num_channels=1)
                )
            if props.done:
                await self.push_frame(TTSStoppedFrame())
        if props.done:
            tracker.echo_ended()


def _message_frame(message: dict[str, Any], to: str | None) -> Frame:
    """The frame that sends one app message: to the room, or to one Daily participant
    (Pipecat's Daily client, which the Tavus transport uses too, addresses it; any other
    transport sends it as it sends every message)."""
    if to is None:
        return OutputTransportMessageUrgentFrame(message=message)
    from pipecat.transports.daily.transport import DailyOutputTransportMessageUrgentFrame

    return DailyOutputTransportMessageUrgentFrame(message=message, participant_id=to)
