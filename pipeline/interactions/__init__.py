"""The Tavus Interactions Protocol: JSON app messages over the call's data channel.

One processor implements the protocol; transports only carry it:

- Daily app messages arrive as ``InputTransportMessageFrame`` (any JSON).
- The local SmallWebRTC data channel delivers JSON that has a ``"type"`` key as
  ``InputTransportMessageFrame`` (Pipecat drops JSON without one, so our page
  adds ``"type": "tavus"``), or inside an RTVI ``client-message`` envelope as
  ``RTVIClientMessageFrame``.
- Outbound events are ``OutputTransportMessageUrgentFrame``s, which every
  transport broadcasts to the room.

Inbound interactions (Tavus's Interactions Protocol): ``conversation.echo``,
``.respond``, ``.interrupt``, ``.overwrite_llm_context``, ``.append_llm_context``,
``.sensitivity`` and ``.tool_result``. Outbound events are derived
from pipeline frames by :class:`InteractionsObserver`; every one carries
``conversation_id``, a monotonic ``seq``, ``turn_idx``, ``timestamp`` and,
where it belongs to a turn, the ``inference_id`` that ties the turn's events
together. A bad message is answered with a ``system.error`` event (our own
addition; Tavus documents none) and a log line; the pipeline keeps running. So is
a turn the LLM gave no answer to (the event then carries the turn's
``inference_id``; see ``pipeline/reply_guard.py``).

The package is split by role, as Pipecat splits RTVI:

- :mod:`.models`: inbound message models, :func:`parse_interaction`, :class:`ProtocolError`.
- :mod:`.events`: one pydantic model per outbound event type; the one serialiser.
- :mod:`.tracker`: :class:`InteractionTracker`, all outbound state (seq, turn_idx, the
  user's and the replica's turns); observations in, event models out; no pipeline needed.
- :mod:`.processor`: :class:`InteractionsProcessor` (inbound dispatch, sending events)
  and :class:`InteractionHooks`.
- :mod:`.observer`: :class:`InteractionsObserver` (pipeline frames -> tracker).
"""

from .events import (
    EVENT_MODELS,
    OUTBOUND_EVENTS,
    ClosedCaptionEvent,
    ClosedCaptionProperties,
    EventProperties,
    InteractionEvent,
    LocalToolCallEvent,
    ReplicaInterruptedEvent,
    ReplicaJoinedEvent,
    ReplicaJoinedProperties,
    ReplicaPresentEvent,
    ReplicaStartedSpeakingEvent,
    ReplicaStoppedSpeakingEvent,
    ReplicaStoppedSpeakingProperties,
    StartedSpeakingEvent,
    StartedSpeakingProperties,
    StoppedSpeakingEvent,
    StoppedSpeakingProperties,
    SystemErrorEvent,
    SystemErrorProperties,
    ToolCallEvent,
    ToolCallProperties,
    UserStartedSpeakingEvent,
    UserStoppedSpeakingEvent,
    UtteranceEvent,
    UtteranceProperties,
    UtteranceStreamingEvent,
    UtteranceStreamingProperties,
    WakePhraseDetectedEvent,
    build_event,
    parse_event,
)
from .models import (
    INBOUND_ALIASES,
    INBOUND_EVENTS,
    MAX_MESSAGE_BYTES,
    MAX_TEXT_CHARS,
    ContextProps,
    EchoProps,
    Interaction,
    ProtocolError,
    RespondProps,
    Sensitivity,
    SensitivityProps,
    ToolResultProps,
    decode_pcm,
    parse_interaction,
)
from .observer import InteractionsObserver
from .processor import InteractionHooks, InteractionsProcessor
from .tracker import InteractionTracker, new_inference_id

__all__ = [
    "EVENT_MODELS",
    "INBOUND_ALIASES",
    "INBOUND_EVENTS",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT_CHARS",
    "OUTBOUND_EVENTS",
    "ClosedCaptionEvent",
    "ClosedCaptionProperties",
    "ContextProps",
    "EchoProps",
    "EventProperties",
    "Interaction",
    "InteractionEvent",
    "InteractionHooks",
    "InteractionTracker",
    "InteractionsObserver",
    "InteractionsProcessor",
    "LocalToolCallEvent",
    "ProtocolError",
    "ReplicaInterruptedEvent",
    "ReplicaJoinedEvent",
    "ReplicaJoinedProperties",
    "ReplicaPresentEvent",
    "ReplicaStartedSpeakingEvent",
    "ReplicaStoppedSpeakingEvent",
    "ReplicaStoppedSpeakingProperties",
    "RespondProps",
    "Sensitivity",
    "SensitivityProps",
    "StartedSpeakingEvent",
    "StartedSpeakingProperties",
    "StoppedSpeakingEvent",
    "StoppedSpeakingProperties",
    "SystemErrorEvent",
    "SystemErrorProperties",
    "ToolCallEvent",
    "ToolCallProperties",
    "ToolResultProps",
    "UserStartedSpeakingEvent",
    "UserStoppedSpeakingEvent",
    "UtteranceEvent",
    "UtteranceProperties",
    "UtteranceStreamingEvent",
    "UtteranceStreamingProperties",
    "WakePhraseDetectedEvent",
    "build_event",
    "decode_pcm",
    "new_inference_id",
    "parse_event",
    "parse_interaction",
]
