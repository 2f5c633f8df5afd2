"""The Tavus Interactions Protocol: JSON app messages over the call's data channel.

One processor implements the protocol; transports only carry it:

- Daily app messages arrive as ``InputTransportMessageFrame`` (any JSON).
- The local SmallWebRTC data channel delivers JSON that has a ``"type"`` key as
  ``InputTransportMessageFrame`` (Pipecat drops JSON without one, so our page
  adds ``"type": "tavus"``), or inside an RTVI ``client-message`` envelope as
  ``RTVIClientMessageFrame``.
- Outbound events are ``OutputTransportMessageUrgentFrame``s, which every
  transport broadcasts to the room.

Inbound interactions (wire-formats.md section 2): ``conversation.echo``,
``.respond``, ``.interrupt``, ``.overwrite_llm_context``, ``.append_llm_context``,
``.sensitivity`` and ``.tool_result``. Outbound events (section 3) are derived
from pipeline frames by :class:`InteractionsObserver`; every one carries
``conversation_id``, a monotonic ``seq``, ``turn_idx``, ``timestamp`` and,
where it belongs to a turn, the ``inference_id`` that ties the turn's events
together. A bad message is answered with a ``system.error`` event (our own
addition; Tavus documents none) and a log line; the pipeline keeps running.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputTransportMessageFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
    OutputTransportMessageUrgentFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIClientMessageFrame
from pipecat.services.settings import LLMSettings
from pipecat.transports.base_output import BaseOutputTransport

MAX_MESSAGE_BYTES = 1024 * 1024  # an audio echo chunk of a few seconds fits comfortably
MAX_TEXT_CHARS = 10_000

INBOUND_EVENTS = (
    "conversation.echo",
    "conversation.respond",
    "conversation.interrupt",
    "conversation.overwrite_llm_context",
    "conversation.append_llm_context",
    "conversation.sensitivity",
    "conversation.tool_result",
)
# Names used by Tavus's own skill file for the context events.
_ALIASES = {
    "conversation.overwrite_context": "conversation.overwrite_llm_context",
    "conversation.append_context": "conversation.append_llm_context",
}
Sensitivity = Literal["superlow", "verylow", "low", "medium", "high", "auto"]


class ProtocolError(ValueError):
    """An inbound message that cannot be accepted."""


# --------------------------------------------------------------------------- inbound models


class _Props(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EchoProps(_Props):
    modality: Literal["text", "audio"] | None = None
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    audio: str | None = None
    sample_rate: int = Field(default=16000, ge=8000, le=48000)
    inference_id: str | None = Field(default=None, max_length=200)
    done: bool = True

    @field_validator("done", mode="before")
    @classmethod
    def _done(cls, value: Any) -> Any:
        return value.lower() == "true" if isinstance(value, str) else value

    def resolved_modality(self) -> str:
        if self.modality:
            return self.modality
        return "audio" if self.audio is not None else "text"


class RespondProps(_Props):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class ContextProps(_Props):
    context: str = Field(max_length=100_000)


class SensitivityProps(_Props):
    participant_pause_sensitivity: Sensitivity
    participant_interrupt_sensitivity: Sensitivity


class ToolResultProps(_Props):
    tool_call_id: str = Field(min_length=1, max_length=200)
    output: Any = None
    status: Literal["success", "error"] = "success"


_PROPS: dict[str, type[_Props] | None] = {
    "conversation.echo": EchoProps,
    "conversation.respond": RespondProps,
    "conversation.interrupt": None,
    "conversation.overwrite_llm_context": ContextProps,
    "conversation.append_llm_context": ContextProps,
    "conversation.sensitivity": SensitivityProps,
    "conversation.tool_result": ToolResultProps,
}


@dataclass(frozen=True)
class Interaction:
    """A validated inbound interaction."""

    event_type: str
    properties: Any  # one of the *Props models, or None
    sender: str | None = None


def parse_interaction(message: Any, conversation_id: str, sender: str | None = None) -> Interaction:
    """Validate one inbound message; raise :class:`ProtocolError` saying what is wrong."""
    if isinstance(message, (str, bytes)):
        if len(message) > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message too large (over {MAX_MESSAGE_BYTES} bytes)")
        try:
            message = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("message is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    try:
        size = len(json.dumps(message, default=str))
    except (TypeError, ValueError):
        raise ProtocolError("message is not serialisable JSON") from None
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too large ({size} bytes; limit {MAX_MESSAGE_BYTES})")
    message_type = message.get("message_type", "conversation")
    if message_type != "conversation":
        raise ProtocolError(f"message_type must be 'conversation' (got {message_type!r})")
    event_type = message.get("event_type")
    if not isinstance(event_type, str):
        raise ProtocolError("event_type is missing")
    event_type = _ALIASES.get(event_type, event_type)
    if event_type not in _PROPS:
        raise ProtocolError(f"unknown event_type {event_type!r}; accepted: {', '.join(INBOUND_EVENTS)}")
    claimed = message.get("conversation_id")
    if claimed is not None and claimed != conversation_id:
        raise ProtocolError(f"conversation_id {claimed!r} is not this conversation")
    model = _PROPS[event_type]
    if model is None:
        return Interaction(event_type, None, sender)
    props = message.get("properties")
    if not isinstance(props, dict):
        raise ProtocolError(f"{event_type} needs a 'properties' object")
    try:
        parsed = model.model_validate(props)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError(f"{event_type}: properties.{where}: {first.get('msg')}") from None
    if isinstance(parsed, EchoProps):
        if parsed.resolved_modality() == "text" and not parsed.text:
            raise ProtocolError("conversation.echo: text modality needs properties.text")
        if parsed.resolved_modality() == "audio" and parsed.audio is None:
            raise ProtocolError("conversation.echo: audio modality needs properties.audio")
    return Interaction(event_type, parsed, sender)


def decode_pcm(b64: str) -> bytes:
    """Base64 16-bit PCM -> bytes (raises :class:`ProtocolError`)."""
    try:
        audio = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("conversation.echo: properties.audio is not valid base64") from None
    if len(audio) % 2:
        raise ProtocolError("conversation.echo: audio must be 16-bit PCM (an even byte count)")
    return audio


def new_inference_id() -> str:
    """A fresh id tying one turn's events together."""
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- hooks


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
    # user text that did not come through STT (conversation.respond)
    user_text: Callable[[str], None] | None = None
    # called before an app's conversation.respond asks for a reply (opens a wake-phrase gate)
    allow_reply: Callable[[], None] | None = None


# --------------------------------------------------------------------------- processor


class InteractionsProcessor(FrameProcessor):
    """Receives interactions from app messages and broadcasts conversation events.

    Place it right after ``transport.input()``. Pair it with
    :class:`InteractionsObserver` (see :meth:`create_observer`).

    Event handlers available:

    - on_event(processor, message): every outbound event, after it was sent.
    - on_interaction(processor, interaction): every accepted inbound interaction.
    - on_protocol_error(processor, error, message): every rejected inbound message.
    """

    def __init__(self, conversation_id: str, hooks: InteractionHooks | None = None, *,
                 captions: bool = False, **kwargs):
        super().__init__(name="interactions", **kwargs)
        self.conversation_id = conversation_id
        self.hooks = hooks or InteractionHooks()
        self.captions = captions  # enable_closed_captions: conversation.closed_caption events
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self.turn_idx = 0
        # user side
        self._user_speaking_since: float | None = None
        self._user_inference: str | None = None
        self._user_finals: list[str] = []
        self._user_index = 0
        # replica side
        self._turn_inference: str | None = None
        self._reply_inference: str | None = None
        self._reply_text = ""
        self._reply_complete = False
        self._reply_utterance_sent = True
        self._bot_speaking_since: float | None = None
        self._spoken = ""
        self._spoken_index = 0
        self._interrupted = False
        self._echo_inference: str | None = None
        self._register_event_handler("on_event")
        self._register_event_handler("on_interaction")
        self._register_event_handler("on_protocol_error")

    def create_observer(self) -> InteractionsObserver:
        """The observer that feeds this processor the frames it turns into events."""
        return InteractionsObserver(self)

    @property
    def current_inference_id(self) -> str | None:
        """The inference id of the reply in progress (for tool calls)."""
        return self._reply_inference or self._turn_inference

    # ------------------------------------------------------------------ sending

    async def emit(
        self,
        event_type: str,
        properties: dict[str, Any] | None = None,
        *,
        inference_id: str | None = None,
        message_type: str = "conversation",
    ) -> dict[str, Any]:
        """Broadcast one event to the room (seq is strictly increasing in send order)."""
        async with self._send_lock:
            self._seq += 1
            message: dict[str, Any] = {
                "message_type": message_type,
                "event_type": event_type,
                "conversation_id": self.conversation_id,
                "seq": self._seq,
                "turn_idx": self.turn_idx,
                "timestamp": round(time.time(), 3),
            }
            if inference_id:
                message["inference_id"] = inference_id
            if properties is not None:
                message["properties"] = properties
            await self.push_frame(OutputTransportMessageUrgentFrame(message=message))
        await self._call_event_handler("on_event", message)
        return message

    async def emit_error(self, error: str, received: Any = None) -> None:
        """Tell the room (and the log) that an inbound message was rejected."""
        event = received.get("event_type") if isinstance(received, dict) else None
        logger.warning(f"Interactions: rejected message ({event or 'unparsed'}): {error}")
        props: dict[str, Any] = {"error": error}
        if isinstance(event, str):
            props["received_event_type"] = event[:100]
        await self.emit("system.error", props, message_type="system")
        await self._call_event_handler("on_protocol_error", error, received)

    async def caption(self, role: str, text: str, final: bool, inference_id: str | None) -> None:
        """A live closed caption (``enable_closed_captions``): the text so far of one utterance."""
        if self.captions and text:
            await self.emit("conversation.closed_caption",
                            {"role": role, "text": text, "final": final},
                            inference_id=inference_id)

    async def emit_tool_call(self, name: str, arguments: dict[str, Any], tool_call_id: str) -> None:
        """``conversation.tool_call`` for a call the LLM made (arguments as a JSON string)."""
        await self.emit(
            "conversation.tool_call",
            {"name": name, "arguments": json.dumps(arguments), "tool_call_id": tool_call_id},
            inference_id=self.current_inference_id,
        )

    # ------------------------------------------------------------------ inbound

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
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
        if isinstance(message, dict) and message.get("label") == "rtvi-ai":
            return  # RTVI's own traffic (client-ready etc.) is not ours
        try:
            interaction = parse_interaction(message, self.conversation_id, sender)
            await self._dispatch(interaction)
        except ProtocolError as exc:
            await self.emit_error(str(exc), message)
            return
        except Exception as exc:  # a bug must not take the pipeline down
            logger.exception(f"Interactions: failed to handle a message: {exc}")
            await self.emit_error(f"internal error: {type(exc).__name__}", message)
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
            taken = self.hooks.tool_result and self.hooks.tool_result(
                props.tool_call_id, props.output, props.status
            )
            if not taken:
                raise ProtocolError(
                    f"conversation.tool_result: no pending tool call {props.tool_call_id!r}"
                )

    async def _interrupt(self) -> None:
        self._echo_inference = None
        await self.broadcast_interruption()

    async def _respond(self, text: str) -> None:
        if self.hooks.pipeline_mode != "full":
            raise ProtocolError("conversation.respond needs pipeline_mode 'full' (this is echo mode)")
        if self._bot_speaking_since is not None:
            await self.broadcast_interruption()
        self._user_inference = new_inference_id()
        if self.hooks.user_text:
            self.hooks.user_text(text)
        if self.hooks.allow_reply:
            self.hooks.allow_reply()
        await self.user_turn(text)
        await self.push_frame(
            LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True)
        )

    async def _echo(self, props: EchoProps) -> None:
        same_utterance = props.inference_id is not None and props.inference_id == self._echo_inference
        if not same_utterance:
            if self._bot_speaking_since is not None or self._echo_inference is not None:
                await self.broadcast_interruption()
            self._echo_inference = props.inference_id or new_inference_id()
            self._reply_inference = self._echo_inference
        if props.resolved_modality() == "text":
            if same_utterance:
                self._reply_text = f"{self._reply_text} {props.text}".strip()
            else:
                self._reply_text = props.text or ""
                self._reply_utterance_sent = False
            self._reply_complete = True
            await self.push_frame(
                TTSSpeakFrame(props.text, append_to_context=self.hooks.pipeline_mode == "full")
            )
        else:
            audio = decode_pcm(props.audio or "")
            if audio:
                await self.push_frame(
                    TTSAudioRawFrame(audio=audio, sample_rate=props.sample_rate, num_channels=1)
                )
            if props.done:
                await self.push_frame(TTSStoppedFrame())
        if props.done:
            self._echo_inference = None

    # ------------------------------------------------------------------ events from frames

    async def wake_phrase_detected(self) -> None:
        """``system.wake_phrase_detected`` (envelope only, as Tavus documents it)."""
        await self.emit("system.wake_phrase_detected", message_type="system",
                        inference_id=self._turn_inference)

    async def user_started(self) -> None:
        if self._user_speaking_since is not None:
            return
        self._user_speaking_since = time.monotonic()
        self._user_inference = new_inference_id()
        self._user_finals = []
        self._user_index = 0
        await self.emit("conversation.user.started_speaking", inference_id=self._user_inference)
        await self.emit("conversation.started_speaking", {"role": "user"},
                        inference_id=self._user_inference)

    async def user_stopped(self) -> None:
        if self._user_speaking_since is None:
            return
        duration = round(time.monotonic() - self._user_speaking_since, 3)
        self._user_speaking_since = None
        await self.emit("conversation.user.stopped_speaking", inference_id=self._user_inference)
        await self.emit(
            "conversation.stopped_speaking",
            {"role": "user", "interrupted": False, "duration": duration},
            inference_id=self._user_inference,
        )

    async def user_partial(self, text: str, final: bool) -> None:
        text = text.strip()
        if not text:
            return
        if final:
            self._user_finals.append(text)
            speech = " ".join(self._user_finals)
        else:
            speech = " ".join([*self._user_finals, text])
        await self.emit(
            "conversation.utterance.streaming",
            {"role": "user", "speech": speech, "content_index": self._user_index, "final": False},
            inference_id=self._user_inference,
        )
        self._user_index += 1
        await self.caption("user", speech, False, self._user_inference)

    async def user_turn(self, text: str) -> None:
        """A user turn was committed to the context (spoken, or an app's respond)."""
        text = (text or "").strip()
        if not text:
            return
        self.turn_idx += 1
        self._turn_inference = self._user_inference or new_inference_id()
        self._reply_inference = None
        await self.emit(
            "conversation.utterance.streaming",
            {"role": "user", "speech": text, "content_index": self._user_index, "final": True},
            inference_id=self._turn_inference,
        )
        await self.emit("conversation.utterance", {"role": "user", "speech": text},
                        inference_id=self._turn_inference)
        await self.caption("user", text, True, self._turn_inference)
        self._user_finals = []
        self._user_index = 0

    async def reply_started(self) -> None:
        if self._reply_inference is None:
            self._reply_inference = self._turn_inference or new_inference_id()
        if self._reply_utterance_sent or self._reply_complete:
            self._reply_text = ""
        self._reply_complete = False
        self._reply_utterance_sent = False

    async def reply_text(self, text: str) -> None:
        self._reply_text += text

    async def reply_ended(self) -> None:
        self._reply_complete = True
        if self._bot_speaking_since is not None:
            await self._send_reply_utterance()

    async def _send_reply_utterance(self) -> None:
        if self._reply_utterance_sent or not self._reply_text.strip():
            return
        self._reply_utterance_sent = True
        await self.emit(
            "conversation.utterance",
            {"role": "replica", "speech": self._reply_text.strip()},
            inference_id=self._reply_inference,
        )

    async def replica_started(self) -> None:
        if self._bot_speaking_since is not None:
            return
        if self._reply_inference is None:
            self._reply_inference = self._turn_inference or new_inference_id()
        self._bot_speaking_since = time.monotonic()
        self._interrupted = False
        self._spoken = ""
        self._spoken_index = 0
        await self.emit("conversation.replica.started_speaking",
                        inference_id=self._reply_inference)
        await self.emit("conversation.started_speaking", {"role": "replica"},
                        inference_id=self._reply_inference)
        if self._reply_complete:
            await self._send_reply_utterance()

    async def replica_spoke(self, text: str) -> None:
        text = text.strip()
        if not text or self._bot_speaking_since is None:
            return
        self._spoken = f"{self._spoken} {text}".strip()
        await self.emit(
            "conversation.utterance.streaming",
            {"role": "replica", "speech": self._spoken, "content_index": self._spoken_index,
             "final": False},
            inference_id=self._reply_inference,
        )
        self._spoken_index += 1
        await self.caption("replica", self._spoken, False, self._reply_inference)

    async def interrupted(self) -> None:
        if self._bot_speaking_since is not None:
            self._interrupted = True

    async def replica_stopped(self) -> None:
        if self._bot_speaking_since is None:
            return
        duration = round(time.monotonic() - self._bot_speaking_since, 3)
        self._bot_speaking_since = None
        inference = self._reply_inference
        interrupted = self._interrupted
        if interrupted or self._reply_complete:
            await self._send_reply_utterance()
        await self.emit(
            "conversation.utterance.streaming",
            {"role": "replica", "speech": self._spoken, "content_index": self._spoken_index,
             "final": True, "is_interrupted": interrupted},
            inference_id=inference,
        )
        await self.caption("replica", self._spoken, True, inference)
        await self.emit("conversation.replica.stopped_speaking",
                        {"duration": duration, "interrupted": interrupted}, inference_id=inference)
        await self.emit(
            "conversation.stopped_speaking",
            {"role": "replica", "interrupted": interrupted, "duration": duration},
            inference_id=inference,
        )
        if interrupted:
            await self.emit("conversation.replica_interrupted", inference_id=inference)
        if self._reply_complete or interrupted:
            self._reply_inference = None


class InteractionsObserver(BaseObserver):
    """Turns pipeline frames into protocol events (a thin forwarder to the processor)."""

    def __init__(self, processor: InteractionsProcessor, **kwargs):
        super().__init__(**kwargs)
        self._p = processor

    async def on_push_frame(self, data: FramePushed):
        if data.direction != FrameDirection.DOWNSTREAM:
            return
        frame, p = data.frame, self._p
        if isinstance(frame, TTSTextFrame):
            # What was *spoken*: the output transport releases text in step with the audio.
            if isinstance(data.source, BaseOutputTransport):
                await p.replica_spoke(frame.text)
            return
        if not data.first_push:
            return
        if isinstance(frame, UserStartedSpeakingFrame):
            await p.user_started()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await p.user_stopped()
        elif isinstance(frame, TranscriptionFrame):
            await p.user_partial(frame.text, final=True)
        elif isinstance(frame, InterimTranscriptionFrame):
            await p.user_partial(frame.text, final=False)
        elif isinstance(frame, LLMFullResponseStartFrame):
            await p.reply_started()
        elif isinstance(frame, LLMTextFrame):
            await p.reply_text(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            await p.reply_ended()
        elif isinstance(frame, BotStartedSpeakingFrame):
            await p.replica_started()
        elif isinstance(frame, InterruptionFrame):
            await p.interrupted()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            await p.replica_stopped()
