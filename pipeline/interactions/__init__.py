"""The Tavus Interactions Protocol: JSON app messages over the call's data channel.

One processor implements the protocol; transports only carry it:

- Daily app messages arrive as ``DailyInputTransportMessageFrame`` (any JSON, with the
  sender's participant id); so do the Tavus room's under ``--renderer transport``
  (``services/tavus/renderers.py``; the replica's own messages are not passed on).
- The local SmallWebRTC data channel delivers any JSON object as
  ``InputTransportMessageFrame``: Pipecat those with a ``"type"`` key (our page adds
  ``"type": "tavus"``), :mod:`transports.webrtc_messages` those without one (a Tavus
  client's raw messages, which Pipecat alone drops); or inside an RTVI ``client-message``
  envelope as ``RTVIClientMessageFrame``.
- Outbound events are ``OutputTransportMessageUrgentFrame``s, which every transport
  broadcasts to the room; a ``system.error`` for a rejected message goes to its sender only
  where the transport names one (Daily and Tavus rooms).

The channel is shared: RTVI messages, Daily Prebuilt's chat, other replicas' events and
``system.*`` messages are not interactions and are ignored with a debug line
(:func:`.models.addressed_to_us`). Pipecat's own RTVI traffic leaves the bot only once an
RTVI client asked for it (``pipeline/secret_fence.py``).

Inbound interactions (Tavus's Interactions Protocol): ``conversation.echo``,
``.respond``, ``.interrupt``, ``.overwrite_llm_context``, ``.append_llm_context``,
``.sensitivity`` and ``.tool_result`` (a result after its call timed out goes into the
context as a note). A message may carry the conversation's id or, with a Tavus replica
rendering through its own conversation, that conversation's id. Outbound events are
derived from pipeline frames by :class:`InteractionsObserver`; every one carries
``conversation_id``, a monotonic ``seq``, ``timestamp``, ``turn_idx`` (except ``system.*``
events, which belong to no turn) and, where it belongs to a turn, the ``inference_id``
that ties the turn's events together. ``system.replica_joined`` starts every conversation
and ``system.replica_present`` repeats every few seconds and on each join (tavus-cli waits
for one of them). A call of a tool the bot runs itself is announced as
``conversation.local_tool_call`` (``local_tool_call_events``), never as a
``conversation.tool_call`` a Tavus client would execute. A bad message is answered with a
``system.error`` event (our own addition; Tavus documents none) and a log line; the
pipeline keeps running. So is a turn the LLM gave no answer to (the event then carries
the turn's ``inference_id``; see ``pipeline/reply_guard.py``).

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
