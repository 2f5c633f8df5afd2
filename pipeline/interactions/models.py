"""Inbound interactions (Tavus's Interactions Protocol): the messages an app sends the replica.

:func:`parse_interaction` validates one message into an :class:`Interaction` carrying one
of the ``*Props`` models, or raises :class:`ProtocolError` saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# The largest message the local page's data channel carries: aiortc (under Pipecat's
# SmallWebRTC transport) advertises ``a=max-message-size:262144`` in the bot's SDP
# (``aiortc.rtcsctptransport.LOCAL_MAX_MESSAGE_SIZE``), and the sending browser (or aiortc
# client) refuses anything larger in ``RTCDataChannel.send()``: it never reaches the bot.
# The same limit for every transport, so what works on one works on all (16-bit PCM at
# 16 kHz: about 6 s of audio per echo chunk, base64-encoded).
MAX_MESSAGE_BYTES = 256 * 1024
MAX_TEXT_CHARS = 10_000
_SHOWN_CHARS = 80  # a client's value quoted in an error: at most this many characters

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
INBOUND_ALIASES = {
    "conversation.overwrite_context": "conversation.overwrite_llm_context",
    "conversation.append_context": "conversation.append_llm_context",
}
# Events a replica (ours, or a Tavus one in the same room) sends, beyond those we emit
# (events.OUTBOUND_EVENTS): seen on the shared channel, never meant for us.
TAVUS_OUTBOUND_EVENTS = frozenset({
    "conversation.perception_tool_call",
    "conversation.perception_analysis",
    "conversation.objective.pending",
    "conversation.objective.completed",
    "conversation.objective.activated",
    "conversation.guardrail_triggered",
    "conversation.rag.observability",
    "conversation.agent_start",
    "conversation.agent_stop",
})
Sensitivity = Literal["superlow", "verylow", "low", "medium", "high", "auto"]


class ProtocolError(ValueError):
    """An inbound message that cannot be accepted."""


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


class ObjectiveConfirmProps(_Props):
    """``conversation.objective.confirm`` (shape not documented by Tavus; ours): the pending
    objective, and the values as the participant corrected them (absent: as collected)."""

    objective_name: str = Field(min_length=1, max_length=100)
    output_variables: dict[str, str | int | float | bool | None] | None = Field(
        default=None, max_length=20)


_PROPS: dict[str, type[_Props] | None] = {
    "conversation.echo": EchoProps,
    "conversation.respond": RespondProps,
    "conversation.interrupt": None,
    "conversation.overwrite_llm_context": ContextProps,
    "conversation.append_llm_context": ContextProps,
    "conversation.sensitivity": SensitivityProps,
    "conversation.tool_result": ToolResultProps,
    "conversation.objective.confirm": ObjectiveConfirmProps,
}


@dataclass(frozen=True)
class Interaction:
    """A validated inbound interaction."""

    event_type: str
    properties: Any  # one of the *Props models, or None
    sender: str | None = None


def too_large(size: int) -> str:
    """The error for a message of ``size`` bytes over :data:`MAX_MESSAGE_BYTES`."""
    return (f"message too large ({size} bytes; the limit is {MAX_MESSAGE_BYTES} bytes "
            f"({MAX_MESSAGE_BYTES // 1024} KiB), the data channel's maximum message size)")


def shown(value: Any) -> str:
    """A client's value quoted in an error (``repr``, cut to a few dozen characters)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} chars)"


def message_size(message: Any) -> int:
    """The size of a message in bytes as it travels: UTF-8 JSON, compact."""
    if isinstance(message, str):
        return len(message.encode("utf-8", "surrogatepass"))
    if isinstance(message, bytes):
        return len(message)
    return len(json.dumps(message, default=str, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "surrogatepass"))


def addressed_to_us(message: Any, outbound: Collection[str] = ()) -> bool:
    """Whether an app message is an interaction for the replica (validated, and answered
    with ``system.error`` when wrong) rather than someone else's traffic on the shared
    channel, which is ignored: anything that is not a JSON object with a string
    ``event_type`` (RTVI, a Daily Prebuilt chat message, a ping), ``system.*`` events, and
    the events replicas send (``outbound``: ours; :data:`TAVUS_OUTBOUND_EVENTS`). An unknown
    ``conversation.*`` type is taken as ours (a client's typo, or an interaction we do not
    support yet, deserves an answer)."""
    if not isinstance(message, dict) or message.get("label") == "rtvi-ai":
        return False
    event_type = message.get("event_type")
    if not isinstance(event_type, str):
        return False
    if event_type in _PROPS or event_type in INBOUND_ALIASES:
        return True
    if event_type in outbound or event_type in TAVUS_OUTBOUND_EVENTS:
        return False
    return event_type.startswith("conversation.")


def parse_interaction(message: Any, conversation_id: str | Collection[str],
                      sender: str | None = None) -> Interaction:
    """Validate one inbound message; raise :class:`ProtocolError` saying what is wrong.

    ``conversation_id``: the conversation's id, or every id a client may know it by (with a
    Tavus replica rendering through its own conversation, that one's id too); a message
    without one is accepted."""
    if isinstance(message, (str, bytes)):
        if message_size(message) > MAX_MESSAGE_BYTES:
            raise ProtocolError(too_large(message_size(message)))
        try:
            message = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("message is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    try:
        size = message_size(message)
    except (TypeError, ValueError):
        raise ProtocolError("message is not serialisable JSON") from None
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(too_large(size))
    message_type = message.get("message_type", "conversation")
    if message_type != "conversation":
        raise ProtocolError(f"message_type must be 'conversation' (got {shown(message_type)})")
    event_type = message.get("event_type")
    if not isinstance(event_type, str):
        raise ProtocolError("event_type is missing")
    event_type = INBOUND_ALIASES.get(event_type, event_type)
    if event_type not in _PROPS:
        raise ProtocolError(f"unknown event_type {shown(event_type)}; accepted: {', '.join(INBOUND_EVENTS)}")
    claimed = message.get("conversation_id")
    known = (conversation_id,) if isinstance(conversation_id, str) else conversation_id
    if claimed is not None and claimed not in known:
        raise ProtocolError(f"conversation_id {shown(claimed)} is not this conversation")
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
