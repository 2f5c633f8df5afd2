"""The turn and utterance tracker: all outbound state of one conversation, and no pipeline.

:class:`InteractionTracker` is told what happened (the user started speaking, a transcript
arrived, a reply started, the replica spoke some words, it was interrupted, ...) and
answers with the events that observation causes, in the order they must be sent. It also
stamps each event with its envelope when it is sent: ``seq`` (strictly increasing in send
order), ``turn_idx`` (one more for each committed user turn), ``timestamp`` and the
``conversation_id``. Feeding it is the observer's job; sending is the processor's.

Inference ids tie a turn's events together: the user's speaking events, streaming text and
utterance share the id made when the user started speaking (or when an app's
``conversation.respond`` opened the turn); the reply to that turn (tool calls, replica
speaking events and utterances) carries the same id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from loguru import logger

from .events import (
    ClosedCaptionEvent,
    ClosedCaptionProperties,
    InteractionEvent,
    LocalToolCallEvent,
    ReplicaInterruptedEvent,
    ReplicaJoinedEvent,
    ReplicaJoinedProperties,
    ReplicaPresentEvent,
    ReplicaStartedSpeakingEvent,
    ReplicaStoppedSpeakingEvent,
    ReplicaStoppedSpeakingProperties,
    Role,
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
)

Events = list[InteractionEvent]


def new_inference_id() -> str:
    """A fresh id tying one turn's events together."""
    return str(uuid.uuid4())


class InteractionTracker:
    """Turns observations into outbound events; owns seq, turn_idx and every turn's state.

    Each observation method returns the (unstamped) events it causes, possibly none;
    :meth:`stamp` gives an event its envelope at the moment it is sent.
    """

    def __init__(
        self,
        conversation_id: str,
        *,
        captions: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = new_inference_id,
    ):
        self.conversation_id = conversation_id
        self.captions = captions  # enable_closed_captions: conversation.closed_caption events
        self.turn_idx = 0
        self._seq = 0
        self._clock = clock  # for durations
        self._wall_clock = wall_clock  # for timestamps
        self._new_id = new_id
        # Perception's fields of a user utterance (pipeline/perception.py), when it runs.
        self.perceive: Callable[[], dict[str, str]] | None = None
        # user side
        self._user_speaking_since: float | None = None
        self._user_inference: str | None = None
        self._user_finals: list[str] = []
        self._user_index = 0
        # replica side
        self._turn_inference: str | None = None
        self._reply_inference: str | None = None
        self._reply_text = ""
        self._reply_revised = False  # a guardrail replaced the reply: the LLM's text is not it
        self._reply_complete = False
        self._reply_utterance_sent = True
        self._spoken_pending = False  # the current reply is spoken text (the greeting), unsent
        self._spoken_inference: str | None = None  # its inference id (a user turn keeps it)
        self._bot_speaking_since: float | None = None
        self._spoken = ""
        self._spoken_index = 0
        self._interrupted = False
        self._echo_inference: str | None = None

    # ------------------------------------------------------------------ state

    @property
    def seq(self) -> int:
        """The seq of the last event stamped (0 before the first)."""
        return self._seq

    @property
    def current_inference_id(self) -> str | None:
        """The inference id of the reply in progress (for tool calls)."""
        return self._reply_inference or self._turn_inference

    @property
    def user_speaking(self) -> bool:
        return self._user_speaking_since is not None

    @property
    def replica_speaking(self) -> bool:
        return self._bot_speaking_since is not None

    def stamp(self, event: InteractionEvent) -> InteractionEvent:
        """The event with its envelope; call it once per event, in send order."""
        self._seq += 1
        return event.stamp(conversation_id=self.conversation_id, seq=self._seq,
                           turn_idx=self.turn_idx, timestamp=round(self._wall_clock(), 3))

    # ------------------------------------------------------------------ events not tied to speech

    def error(self, error: str, received_event_type: Any = None) -> Events:
        """``system.error`` for a rejected inbound message."""
        received = received_event_type[:100] if isinstance(received_event_type, str) else None
        return [SystemErrorEvent(properties=SystemErrorProperties(
            error=error, received_event_type=received))]

    def reply_failed(self, reason: str) -> Events:
        """``system.error`` for a turn the LLM gave no answer to (an error, or an empty
        reply), with the turn's inference id and no ``received_event_type``."""
        return [SystemErrorEvent(inference_id=self.current_inference_id,
                                 properties=SystemErrorProperties(error=f"no reply: {reason}"[:500]))]

    def tool_call(self, name: str, arguments: dict[str, Any], tool_call_id: str,
                  event_type: str = "conversation.tool_call") -> Events:
        """``conversation.tool_call`` for a call the LLM made (arguments as a JSON string);
        ``event_type`` ``conversation.local_tool_call`` for one the bot runs itself."""
        inference = self.current_inference_id
        if inference is None:  # cvi-ui's type requires one; a call outside any turn gets its own
            inference = self._reply_inference = self._new_id()
        properties = ToolCallProperties(name=name, arguments=json.dumps(arguments),
                                        tool_call_id=tool_call_id)
        if event_type == "conversation.tool_call":
            return [ToolCallEvent(inference_id=inference, properties=properties)]
        return [LocalToolCallEvent(inference_id=inference, properties=properties)]

    def replica_joined(self, replica_id: str | None) -> Events:
        """``system.replica_joined``: the replica is in the room."""
        return [ReplicaJoinedEvent(properties=ReplicaJoinedProperties(replica_id=replica_id or ""))]

    def replica_present(self) -> Events:
        """``system.replica_present``: the heartbeat."""
        return [ReplicaPresentEvent()]

    def wake_phrase_detected(self) -> Events:
        """``system.wake_phrase_detected`` (envelope only, as Tavus documents it)."""
        return [WakePhraseDetectedEvent(inference_id=self._turn_inference)]

    def caption(self, role: Role, text: str, final: bool, inference_id: str | None) -> Events:
        """A live closed caption (``enable_closed_captions``): the text so far of one utterance."""
        if not (self.captions and text):
            return []
        return [ClosedCaptionEvent(inference_id=inference_id, properties=ClosedCaptionProperties(
            role=role, text=text, final=final))]

    # ------------------------------------------------------------------ the user

    def user_started(self) -> Events:
        if self._user_speaking_since is not None:
            return []
        self._user_speaking_since = self._clock()
        self._user_inference = self._new_id()
        self._user_finals = []
        self._user_index = 0
        return [
            UserStartedSpeakingEvent(inference_id=self._user_inference),
            StartedSpeakingEvent(inference_id=self._user_inference,
                                 properties=StartedSpeakingProperties(role="user")),
        ]

    def user_stopped(self) -> Events:
        if self._user_speaking_since is None:
            return []
        duration = round(self._clock() - self._user_speaking_since, 3)
        self._user_speaking_since = None
        return [
            UserStoppedSpeakingEvent(inference_id=self._user_inference),
            StoppedSpeakingEvent(inference_id=self._user_inference,
                                 properties=StoppedSpeakingProperties(
                                     role="user", interrupted=False, duration=duration)),
        ]

    def user_partial(self, text: str, final: bool) -> Events:
        """A transcript of what the user is saying (``final``: a finished segment of it)."""
        text = text.strip()
        if not text:
            return []
        if final:
            self._user_finals.append(text)
            speech = " ".join(self._user_finals)
        else:
            speech = " ".join([*self._user_finals, text])
        events: Events = [self._streaming("user", speech, self._user_index, self._user_inference)]
        self._user_index += 1
        return events + self.caption("user", speech, False, self._user_inference)

    def respond_started(self) -> None:
        """An app's ``conversation.respond`` opens a user turn that nobody spoke."""
        self._user_inference = self._new_id()

    def _perceived(self) -> dict[str, str]:
        if self.perceive is None:
            return {}
        try:
            return self.perceive()
        except Exception as exc:  # noqa: BLE001 - an utterance is never lost to perception
            logger.warning(f"Perception: the utterance's analysis failed: {exc}")
            return {}

    def user_turn(self, text: str) -> Events:
        """A user turn was committed to the context (spoken, or an app's respond)."""
        text = (text or "").strip()
        if not text:
            return []
        self.turn_idx += 1
        self._turn_inference = inference = self._user_inference or self._new_id()
        self._reply_inference = None
        events: Events = [
            self._streaming("user", text, self._user_index, inference, final=True),
            UtteranceEvent(inference_id=inference,
                           properties=UtteranceProperties(role="user", speech=text,
                                                          **self._perceived())),
            *self.caption("user", text, True, inference),
        ]
        self._user_finals = []
        self._user_index = 0
        return events

    # ------------------------------------------------------------------ the replica

    def reply_started(self) -> Events:
        """The LLM started a response."""
        events: Events = []
        if self._spoken_pending and not self._reply_utterance_sent:
            # The greeting is not spoken yet: its utterance now, before this reply takes over.
            events = self._reply_utterance()
            self._reply_inference = None
        self._spoken_pending = False
        self._spoken_inference = None
        if self._reply_inference is None:
            self._reply_inference = self._turn_inference or self._new_id()
        if self._reply_utterance_sent or self._reply_complete:
            self._reply_text = ""
        self._reply_revised = False
        self._reply_complete = False
        self._reply_utterance_sent = False
        return events

    def spoken_text(self, text: str) -> Events:
        """Text to be spoken as it is, not from the LLM (the custom greeting): the replica's
        whole utterance with its own inference id, sent when it starts speaking it, like an
        LLM reply's. With a reply already in flight or being spoken (a respond that came with
        the join) it is sent at once instead, so that neither utterance takes the other's
        text or id."""
        text = text.strip()
        if not text:
            return []
        idle = self._bot_speaking_since is None and (
            self._reply_inference is None or self._reply_utterance_sent)
        if not idle:
            return [UtteranceEvent(inference_id=self._new_id(), properties=UtteranceProperties(
                role="replica", speech=text))]
        self._reply_inference = self._spoken_inference = self._new_id()
        self._reply_text = text
        self._reply_complete = True
        self._reply_utterance_sent = False
        self._spoken_pending = True
        return []

    def reply_text(self, text: str) -> Events:
        if not self._reply_revised:
            self._reply_text += text
        return []

    def reply_revised(self, text: str) -> Events:
        """The reply is ``text`` after all (a guardrail replaced it, or cut it there): the
        LLM's words after this are not said and not told."""
        self._reply_text = text
        self._reply_revised = True
        return []

    def reply_ended(self) -> Events:
        """The LLM finished its response (its utterance goes out once the replica speaks)."""
        self._reply_complete = True
        return self._reply_utterance() if self._bot_speaking_since is not None else []

    def replica_started(self) -> Events:
        if self._bot_speaking_since is not None:
            return []
        if self._spoken_pending and not self._reply_utterance_sent:
            self._reply_inference = self._spoken_inference  # the greeting is what plays
        if self._reply_inference is None:
            self._reply_inference = self._turn_inference or self._new_id()
        self._bot_speaking_since = self._clock()
        self._interrupted = False
        self._spoken = ""
        self._spoken_index = 0
        events: Events = [
            ReplicaStartedSpeakingEvent(inference_id=self._reply_inference),
            StartedSpeakingEvent(inference_id=self._reply_inference,
                                 properties=StartedSpeakingProperties(role="replica")),
        ]
        if self._reply_complete:
            events += self._reply_utterance()
        return events

    def replica_spoke(self, text: str) -> Events:
        """Words the output transport released, in step with the audio."""
        text = text.strip()
        if not text or self._bot_speaking_since is None:
            return []
        self._spoken = f"{self._spoken} {text}".strip()
        events: Events = [
            self._streaming("replica", self._spoken, self._spoken_index, self._reply_inference)
        ]
        self._spoken_index += 1
        return events + self.caption("replica", self._spoken, False, self._reply_inference)

    def interrupted(self) -> Events:
        """An interruption stops the replica's speech: its segment ends now, with the
        stopped-speaking events, rather than at the output's BotStoppedSpeakingFrame, which
        can come after the next reply has started (its text and inference id then belong
        to the next segment, never to the interrupted one)."""
        if self._bot_speaking_since is None:
            return []
        self._interrupted = True
        return self.replica_stopped()

    def replica_stopped(self) -> Events:
        if self._bot_speaking_since is None:
            return []
        duration = round(self._clock() - self._bot_speaking_since, 3)
        self._bot_speaking_since = None
        inference = self._reply_inference
        interrupted = self._interrupted
        events: Events = []
        if interrupted or self._reply_complete:
            events += self._reply_utterance()
        events.append(self._streaming("replica", self._spoken, self._spoken_index, inference,
                                      final=True, is_interrupted=interrupted))
        events += self.caption("replica", self._spoken, True, inference)
        events.append(ReplicaStoppedSpeakingEvent(
            inference_id=inference,
            properties=ReplicaStoppedSpeakingProperties(duration=duration, interrupted=interrupted),
        ))
        events.append(StoppedSpeakingEvent(inference_id=inference, properties=StoppedSpeakingProperties(
            role="replica", interrupted=interrupted, duration=duration)))
        if interrupted:
            events.append(ReplicaInterruptedEvent(inference_id=inference))
        if self._reply_complete or interrupted:
            self._reply_inference = None
        return events

    # ------------------------------------------------------------------ echo (conversation.echo)

    def echo_continues(self, inference_id: str | None) -> bool:
        """Whether an echo message adds to the echo utterance in progress."""
        return inference_id is not None and inference_id == self._echo_inference

    @property
    def echo_open(self) -> bool:
        """An echo utterance has started and not yet said ``done``."""
        return self._echo_inference is not None

    def echo_started(self, inference_id: str | None) -> None:
        """A new echo utterance: the replica's next speech carries its inference id."""
        self._echo_inference = inference_id or self._new_id()
        self._reply_inference = self._echo_inference

    def echo_text(self, text: str, continues: bool) -> None:
        """Echoed text is the reply's whole text (its utterance goes out when spoken)."""
        if continues:
            self._reply_text = f"{self._reply_text} {text}".strip()
        else:
            self._reply_text = text
            self._reply_utterance_sent = False
        self._reply_complete = True

    def echo_ended(self) -> None:
        self._echo_inference = None

    # ------------------------------------------------------------------ helpers

    def _reply_utterance(self) -> Events:
        if self._reply_utterance_sent or not self._reply_text.strip():
            return []
        self._reply_utterance_sent = True
        inference = self._spoken_inference if self._spoken_pending else self._reply_inference
        self._spoken_pending = False
        return [UtteranceEvent(inference_id=inference, properties=UtteranceProperties(
            role="replica", speech=self._reply_text.strip()))]

    @staticmethod
    def _streaming(role: Role, speech: str, index: int, inference_id: str | None, *,
                   final: bool = False, is_interrupted: bool | None = None) -> InteractionEvent:
        return UtteranceStreamingEvent(inference_id=inference_id, properties=UtteranceStreamingProperties(
            role=role, speech=speech, content_index=index, final=final,
            is_interrupted=is_interrupted))
