"""Outbound events (Tavus's conversation events): one pydantic model per event type.

An event is built without its envelope (just ``event_type``, ``inference_id`` and
``properties``); :meth:`InteractionEvent.stamp` adds ``conversation_id``, ``seq``,
``turn_idx`` and ``timestamp`` when it is sent, and :meth:`InteractionEvent.to_message`
is the one place an event becomes the JSON dict broadcast to the room::

    {"message_type": "conversation", "event_type": "conversation.utterance",
     "conversation_id": "c123", "seq": 7, "turn_idx": 1, "timestamp": 1746000000.123,
     "inference_id": "…", "properties": {"role": "user", "speech": "Hi"}}

``inference_id`` is left out when the event has none, ``properties`` when the event type
carries none (the speaking events, ``conversation.replica_interrupted``,
``system.wake_phrase_detected``, ``system.replica_present``), and an optional property
(``is_interrupted``, ``received_event_type``) when it is not set. ``system.*`` events have
``message_type`` ``"system"`` and no ``turn_idx`` (Tavus: it is "omitted on events not tied
to a turn").

The shapes follow Tavus's own client code where it is stricter than the docs: npm
``@tavus/cvi-ui`` types ``conversation.utterance`` with a required ``properties.visual_context``
string (sent empty until perception exists) and ``inference_id`` on every utterance, tool
call and speaking event; ``tests/test_tavus_clients.py`` type-checks what the bot emits
against those types with ``tsc``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer

Role = Literal["user", "replica"]


# --------------------------------------------------------------------------- properties


class EventProperties(BaseModel):
    """The ``properties`` object of one outbound event; an optional field left None is omitted."""

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class UtteranceProperties(EventProperties):
    role: Role
    speech: str
    # What the replica saw (Tavus's perception); "" while there is none. cvi-ui's type
    # requires the string on every utterance.
    visual_context: str = ""
    # Raven-1's analyses of a user utterance (perception on).
    user_visual_analysis: str | None = None
    user_audio_analysis: str | None = None


class UtteranceStreamingProperties(EventProperties):
    role: Role
    speech: str  # accumulated text so far, not a delta
    content_index: int
    final: bool
    is_interrupted: bool | None = None  # replica only, on the final event


class StartedSpeakingProperties(EventProperties):
    role: Role


class StoppedSpeakingProperties(EventProperties):
    role: Role
    interrupted: bool
    duration: float


class ReplicaStoppedSpeakingProperties(EventProperties):
    duration: float
    interrupted: bool


class ToolCallProperties(EventProperties):
    name: str
    arguments: str  # a JSON string, as Tavus sends it
    tool_call_id: str


class ClosedCaptionProperties(EventProperties):
    role: Role
    text: str
    final: bool


class SystemErrorProperties(EventProperties):
    error: str
    received_event_type: str | None = None


class ObjectiveProperties(EventProperties):
    objective_name: str
    output_variables: dict[str, Any] | None = None  # pending / completed only


class GuardrailTriggeredProperties(EventProperties):
    guardrail: str
    guardrail_uuid: str
    reason: str
    role: Role  # whose words broke it: the user's turn or the replica's reply (our addition)


class RagObservabilityProperties(EventProperties):
    document_ids: list[str]
    document_names: list[str]


class PerceptionToolCallProperties(EventProperties):
    name: str
    arguments: dict[str, Any]
    frames: list[str]  # base64 JPEG: what the camera or screen showed when it fired


class PerceptionAnalysisProperties(EventProperties):
    analysis: str  # markdown


class ReplicaJoinedProperties(EventProperties):
    replica_id: str  # "" without a Tavus replica, as in the callback


# --------------------------------------------------------------------------- events


class InteractionEvent(BaseModel):
    """One outbound event: the envelope plus the properties of its type.

    Used as is only for an event type this module has no model for (see :func:`build_event`).
    """

    model_config = ConfigDict(extra="forbid")

    message_type: str = "conversation"
    event_type: str
    # The envelope, set by stamp() when the event is sent.
    conversation_id: str | None = None
    seq: int | None = None
    turn_idx: int | None = None
    timestamp: float | None = None
    inference_id: str | None = None
    properties: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _wire(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if not self.inference_id:
            data.pop("inference_id", None)
        if self.properties is None:
            data.pop("properties", None)
        if self.turn_idx is None:
            data.pop("turn_idx", None)
        return data

    @property
    def stamped(self) -> bool:
        return self.seq is not None

    @property
    def tied_to_turn(self) -> bool:
        """Whether the event belongs to a turn (``turn_idx``); ``system.*`` events do not."""
        return self.message_type != "system"

    def stamp(self, *, conversation_id: str, seq: int, turn_idx: int, timestamp: float) -> Self:
        """A copy carrying the envelope it is sent with."""
        return self.model_copy(update={
            "conversation_id": conversation_id, "seq": int(seq),
            "turn_idx": int(turn_idx) if self.tied_to_turn else None,
            "timestamp": float(timestamp),
        })

    def to_message(self) -> dict[str, Any]:
        """The JSON dict sent to the room (the event must have been stamped)."""
        if not self.stamped:
            raise ValueError(f"{self.event_type} has no envelope yet (stamp it before sending)")
        return self.model_dump()


class UtteranceEvent(InteractionEvent):
    """A whole utterance: the user's committed turn, or the replica's full reply."""

    event_type: Literal["conversation.utterance"] = "conversation.utterance"
    properties: UtteranceProperties


class UtteranceStreamingEvent(InteractionEvent):
    """The text of an utterance so far (``final`` on the last one)."""

    event_type: Literal["conversation.utterance.streaming"] = "conversation.utterance.streaming"
    properties: UtteranceStreamingProperties


class UserStartedSpeakingEvent(InteractionEvent):
    event_type: Literal["conversation.user.started_speaking"] = "conversation.user.started_speaking"
    properties: None = None


class UserStoppedSpeakingEvent(InteractionEvent):
    event_type: Literal["conversation.user.stopped_speaking"] = "conversation.user.stopped_speaking"
    properties: None = None


class ReplicaStartedSpeakingEvent(InteractionEvent):
    event_type: Literal["conversation.replica.started_speaking"] = (
        "conversation.replica.started_speaking"
    )
    properties: None = None


class ReplicaStoppedSpeakingEvent(InteractionEvent):
    event_type: Literal["conversation.replica.stopped_speaking"] = (
        "conversation.replica.stopped_speaking"
    )
    properties: ReplicaStoppedSpeakingProperties


class StartedSpeakingEvent(InteractionEvent):
    """The role-tagged speaking event (the per-role ones are its legacy duplicates)."""

    event_type: Literal["conversation.started_speaking"] = "conversation.started_speaking"
    properties: StartedSpeakingProperties


class StoppedSpeakingEvent(InteractionEvent):
    event_type: Literal["conversation.stopped_speaking"] = "conversation.stopped_speaking"
    properties: StoppedSpeakingProperties


class ReplicaInterruptedEvent(InteractionEvent):
    """Legacy (removed by Tavus, still sent for old clients) after an interrupted reply."""

    event_type: Literal["conversation.replica_interrupted"] = "conversation.replica_interrupted"
    properties: None = None


class ToolCallEvent(InteractionEvent):
    """A call the client is to execute (it answers with ``conversation.tool_result``)."""

    event_type: Literal["conversation.tool_call"] = "conversation.tool_call"
    properties: ToolCallProperties


class LocalToolCallEvent(InteractionEvent):
    """A call the bot runs itself (``tools/``), announced for display only: a Tavus client
    that executes every ``conversation.tool_call`` must not run it a second time. Our own
    event type (Tavus runs no tool locally); see ``local_tool_call_events``."""

    event_type: Literal["conversation.local_tool_call"] = "conversation.local_tool_call"
    properties: ToolCallProperties


class ClosedCaptionEvent(InteractionEvent):
    """A live caption (``enable_closed_captions``): the text so far of one utterance."""

    event_type: Literal["conversation.closed_caption"] = "conversation.closed_caption"
    properties: ClosedCaptionProperties


class SystemErrorEvent(InteractionEvent):
    """An inbound message was rejected (``received_event_type`` says which), or the LLM gave
    no answer to a turn (``inference_id`` says which; the replica apologised). Our own
    addition; Tavus documents none."""

    message_type: Literal["system"] = "system"
    event_type: Literal["system.error"] = "system.error"
    properties: SystemErrorProperties


class WakePhraseDetectedEvent(InteractionEvent):
    message_type: Literal["system"] = "system"
    event_type: Literal["system.wake_phrase_detected"] = "system.wake_phrase_detected"
    properties: None = None


class ReplicaJoinedEvent(InteractionEvent):
    """The replica is in the room (sent once, when the pipeline starts; its envelope carries
    the ``conversation_id`` a client must use). tavus-cli waits for it, or for the heartbeat."""

    message_type: Literal["system"] = "system"
    event_type: Literal["system.replica_joined"] = "system.replica_joined"
    properties: ReplicaJoinedProperties


class ReplicaPresentEvent(InteractionEvent):
    """The heartbeat: the replica is still in the room (also sent when a participant joins)."""

    message_type: Literal["system"] = "system"
    event_type: Literal["system.replica_present"] = "system.replica_present"
    properties: None = None


class ObjectiveActivatedEvent(InteractionEvent):
    """An objective became the one the persona pursues (``properties.objective_name``)."""

    event_type: Literal["conversation.objective.activated"] = "conversation.objective.activated"
    properties: ObjectiveProperties


class ObjectivePendingEvent(InteractionEvent):
    """A ``confirmation_mode: manual`` objective's values await ``conversation.objective.confirm``."""

    event_type: Literal["conversation.objective.pending"] = "conversation.objective.pending"
    properties: ObjectiveProperties


class ObjectiveCompletedEvent(InteractionEvent):
    event_type: Literal["conversation.objective.completed"] = "conversation.objective.completed"
    properties: ObjectiveProperties


class GuardrailTriggeredEvent(InteractionEvent):
    """A guardrail was broken (sent when the guardrail's ``app_message`` is true)."""

    event_type: Literal["conversation.guardrail_triggered"] = "conversation.guardrail_triggered"
    properties: GuardrailTriggeredProperties


class RagObservabilityEvent(InteractionEvent):
    """The reply drew on passages of these documents (the knowledge base)."""

    event_type: Literal["conversation.rag.observability"] = "conversation.rag.observability"
    properties: RagObservabilityProperties


class PerceptionToolCallEvent(InteractionEvent):
    """A perception tool fired from what was seen or heard (not called by the LLM)."""

    event_type: Literal["conversation.perception_tool_call"] = "conversation.perception_tool_call"
    properties: PerceptionToolCallProperties


class PerceptionAnalysisEvent(InteractionEvent):
    """The end-of-call summary of what was perceived."""

    event_type: Literal["conversation.perception_analysis"] = "conversation.perception_analysis"
    properties: PerceptionAnalysisProperties


EVENT_MODELS: tuple[type[InteractionEvent], ...] = (
    UtteranceEvent,
    UtteranceStreamingEvent,
    UserStartedSpeakingEvent,
    UserStoppedSpeakingEvent,
    ReplicaStartedSpeakingEvent,
    ReplicaStoppedSpeakingEvent,
    StartedSpeakingEvent,
    StoppedSpeakingEvent,
    ReplicaInterruptedEvent,
    ToolCallEvent,
    LocalToolCallEvent,
    ClosedCaptionEvent,
    SystemErrorEvent,
    WakePhraseDetectedEvent,
    ReplicaJoinedEvent,
    ReplicaPresentEvent,
    ObjectiveActivatedEvent,
    ObjectivePendingEvent,
    ObjectiveCompletedEvent,
    GuardrailTriggeredEvent,
    RagObservabilityEvent,
    PerceptionToolCallEvent,
    PerceptionAnalysisEvent,
)
OUTBOUND_EVENTS: dict[str, type[InteractionEvent]] = {
    model.model_fields["event_type"].default: model for model in EVENT_MODELS
}
_TYPED = TypeAdapter(Annotated[
    UtteranceEvent | UtteranceStreamingEvent | UserStartedSpeakingEvent
    | UserStoppedSpeakingEvent | ReplicaStartedSpeakingEvent | ReplicaStoppedSpeakingEvent
    | StartedSpeakingEvent | StoppedSpeakingEvent | ReplicaInterruptedEvent | ToolCallEvent
    | LocalToolCallEvent | ClosedCaptionEvent | SystemErrorEvent | WakePhraseDetectedEvent | ReplicaJoinedEvent
    | ReplicaPresentEvent | ObjectiveActivatedEvent | ObjectivePendingEvent
    | ObjectiveCompletedEvent | GuardrailTriggeredEvent | RagObservabilityEvent
    | PerceptionToolCallEvent | PerceptionAnalysisEvent,
    Field(discriminator="event_type"),
])


def build_event(
    event_type: str,
    properties: dict[str, Any] | None = None,
    *,
    inference_id: str | None = None,
    message_type: str | None = None,
) -> InteractionEvent:
    """The event model for an event type, validated (an unknown type gets the generic model)."""
    if event_type not in OUTBOUND_EVENTS:
        return InteractionEvent(message_type=message_type or "conversation", event_type=event_type,
                                inference_id=inference_id, properties=properties)
    data: dict[str, Any] = {"event_type": event_type, "inference_id": inference_id,
                            "properties": properties}
    if message_type is not None:
        data["message_type"] = message_type
    return OUTBOUND_EVENTS[event_type].model_validate(data)


def parse_event(message: dict[str, Any]) -> InteractionEvent:
    """An outbound event as received (a client's view; the inverse of ``to_message``)."""
    if message.get("event_type") in OUTBOUND_EVENTS:
        return _TYPED.validate_python(message)
    return InteractionEvent.model_validate(message)
