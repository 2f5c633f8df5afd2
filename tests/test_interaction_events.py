"""Outbound interaction events from scripted frames: no Whisper, Piper or LLM.

Two levels: the :class:`InteractionTracker` alone (observations in, events out, with a
manual clock and numbered inference ids), and an :class:`InteractionsProcessor` with its
observer in a real Pipecat pipeline fed scripted frames, where a fake output transport
releases the ``TTSTextFrame``s that count as spoken.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InputTransportMessageFrame,
    InterimTranscriptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.workers.runner import WorkerRunner
from pydantic import ValidationError

from pipeline.interactions import (
    EVENT_MODELS,
    OUTBOUND_EVENTS,
    ClosedCaptionEvent,
    InteractionEvent,
    InteractionsObserver,
    InteractionsProcessor,
    InteractionTracker,
    LocalToolCallEvent,
    ReplicaInterruptedEvent,
    ReplicaJoinedEvent,
    ReplicaPresentEvent,
    ReplicaStartedSpeakingEvent,
    ReplicaStoppedSpeakingEvent,
    StartedSpeakingEvent,
    StoppedSpeakingEvent,
    SystemErrorEvent,
    ToolCallEvent,
    UserStartedSpeakingEvent,
    UserStoppedSpeakingEvent,
    UtteranceEvent,
    UtteranceStreamingEvent,
    WakePhraseDetectedEvent,
    build_event,
    parse_event,
)
from pipeline.interactions.events import PerceptionAnalysisEvent, PerceptionToolCallEvent

CID = "c-events"
WALL = 1_746_000_000.1234  # the tracker rounds timestamps to milliseconds


# --------------------------------------------------------------------------- helpers


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def new_tracker(*, captions: bool = False) -> tuple[InteractionTracker, Clock]:
    clock = Clock()
    ids = (f"inf-{n}" for n in itertools.count(1))
    tracker = InteractionTracker(CID, captions=captions, clock=clock, wall_clock=lambda: WALL,
                                 new_id=lambda: next(ids))
    return tracker, clock


def sent(tracker: InteractionTracker, events: list[InteractionEvent]) -> list[dict[str, Any]]:
    """What the room receives for these events (stamped in order, as the processor does)."""
    return [tracker.stamp(event).to_message() for event in events]


def spoken_reply(tracker: InteractionTracker, text: str) -> list[dict[str, Any]]:
    """A whole LLM reply, then the replica speaking it (as one piece of spoken text)."""
    tracker.reply_started()
    tracker.reply_text(text)
    tracker.reply_ended()
    messages = sent(tracker, tracker.replica_started())
    messages += sent(tracker, tracker.replica_spoke(text))
    return messages + sent(tracker, tracker.replica_stopped())


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    """Event types, with the role for the role-carrying ones (``utterance/user``)."""
    out = []
    for m in messages:
        role = (m.get("properties") or {}).get("role")
        out.append(f"{m['event_type']}/{role}" if role else m["event_type"])
    return out


_ABSENT = object()


def wire(event_type: str, properties: Any = _ABSENT, *, seq: int = 7, turn_idx: int = 2,
         inference_id: str | None = None, message_type: str = "conversation") -> dict[str, Any]:
    """The documented wire shape (Tavus's event envelope), keys in the order sent."""
    message: dict[str, Any] = {"message_type": message_type, "event_type": event_type,
                               "conversation_id": CID, "seq": seq, "turn_idx": turn_idx,
                               "timestamp": 1746000000.123}
    if message_type == "system":  # not tied to a turn
        del message["turn_idx"]
    if inference_id:
        message["inference_id"] = inference_id
    if properties is not _ABSENT:
        message["properties"] = properties
    return message


@dataclass
class Sync(SystemFrame):
    """Script marker: everything queued before it has been handled once the processor passes
    it on and the observer has seen that push."""

    done: asyncio.Event = field(default_factory=asyncio.Event)


SYNC = "sync"  # a script step: wait for what came before


class FakeOutputTransport(BaseOutputTransport):
    """Stands for the output transport: a TTSTextFrame it pushes counts as spoken."""

    def __init__(self) -> None:
        super().__init__(TransportParams(), enable_direct_mode=True)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await FrameProcessor.process_frame(self, frame, direction)
        await self.push_frame(frame, direction)


class Collector(FrameProcessor):
    """Records the broadcast events (and every other frame) as they leave the processor."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.messages: list[dict[str, Any]] = []
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, OutputTransportMessageUrgentFrame):
                self.messages.append(frame.message)
        await self.push_frame(frame, direction)


class ScriptObserver(InteractionsObserver):
    """The processor's own observer, which also releases Sync markers."""

    async def on_push_frame(self, data: FramePushed):
        await super().on_push_frame(data)
        if isinstance(data.frame, Sync) and data.source is self._processor:
            data.frame.done.set()


async def play(steps: list[Any], processor: InteractionsProcessor | None = None
               ) -> tuple[list[dict[str, Any]], Collector]:
    """Run the script through [fake output, processor, collector]; return the events sent.

    A step is a frame to queue, a dict (an inbound app message), ``SYNC``, or a coroutine
    function called with the processor once everything before it was handled.
    """
    processor = processor or InteractionsProcessor(CID, heartbeat_secs=None)
    collector = Collector()
    worker = PipelineWorker(Pipeline([FakeOutputTransport(), processor, collector]),
                            observers=[ScriptObserver(processor)], cancel_on_idle_timeout=False,
                            enable_rtvi=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):
        started.set()

    async def sync():
        marker = Sync()
        await worker.queue_frame(marker)
        await asyncio.wait_for(marker.done.wait(), timeout=20)

    async def script():
        try:
            await asyncio.wait_for(started.wait(), timeout=20)
            for step in steps:
                if step == SYNC:
                    await sync()
                elif callable(step):
                    await sync()
                    await step(processor)
                elif isinstance(step, (dict, list)):
                    await worker.queue_frame(InputTransportMessageFrame(message=step))
                else:
                    await worker.queue_frame(step)
            await sync()
        finally:
            await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), script())
    # Every conversation starts with system.replica_joined (checked here, left out of what
    # the scripts compare).
    joined, *messages = collector.messages
    assert joined["event_type"] == "system.replica_joined" and joined["seq"] == 1, joined
    return messages, collector


def respond(text: str) -> dict[str, Any]:
    return {"event_type": "conversation.respond", "properties": {"text": text}}


def transcript(text: str, *, final: bool) -> Frame:
    frame_cls = TranscriptionFrame if final else InterimTranscriptionFrame
    return frame_cls(text, "user-1", "2026-01-01T00:00:00Z")


def reply(text: str, words: list[str] | None = None, *, stop: bool = True) -> list[Frame]:
    """The frames of one replica reply: LLM response, speaking, words spoken, stopped."""
    frames: list[Frame] = [LLMFullResponseStartFrame(), LLMTextFrame(text),
                           LLMFullResponseEndFrame(), BotStartedSpeakingFrame()]
    frames += [TTSTextFrame(word, text_type=TextType.WORD) for word in words or text.split()]
    return frames + ([BotStoppedSpeakingFrame()] if stop else [])


def assert_envelopes(messages: list[dict[str, Any]]) -> None:
    first = messages[0]["seq"] if messages else 1
    assert [m["seq"] for m in messages] == list(range(first, first + len(messages)))
    for m in messages:
        assert m["conversation_id"] == CID
        assert isinstance(m["timestamp"], float)
        system = m["event_type"].startswith("system.")
        assert m["message_type"] == ("system" if system else "conversation")
        # turn_idx only on events tied to a turn (Tavus omits it on the others)
        assert ("turn_idx" not in m) if system else isinstance(m["turn_idx"], int)
        assert parse_event(m).to_message() == m  # every message is one of the event models


# --------------------------------------------------------------------------- the event models


def _stamped(event: InteractionEvent) -> dict[str, Any]:
    return event.stamp(conversation_id=CID, seq=7, turn_idx=2, timestamp=1746000000.123).to_message()


@pytest.mark.parametrize("event,expected", [
    (UtteranceEvent(inference_id="i1", properties={"role": "user", "speech": "Hi there"}),
     wire("conversation.utterance", {"role": "user", "speech": "Hi there", "visual_context": ""}, inference_id="i1")),
    (UtteranceStreamingEvent(inference_id="i1", properties={
        "role": "replica", "speech": "Sure, the order", "content_index": 4, "final": False}),
     wire("conversation.utterance.streaming", {"role": "replica", "speech": "Sure, the order",
          "content_index": 4, "final": False}, inference_id="i1")),
    (UtteranceStreamingEvent(inference_id="i1", properties={
        "role": "replica", "speech": "Sure", "content_index": 5, "final": True,
        "is_interrupted": True}),
     wire("conversation.utterance.streaming", {"role": "replica", "speech": "Sure",
          "content_index": 5, "final": True, "is_interrupted": True}, inference_id="i1")),
    (UserStartedSpeakingEvent(inference_id="i1"),
     wire("conversation.user.started_speaking", inference_id="i1")),
    (UserStoppedSpeakingEvent(inference_id="i1"),
     wire("conversation.user.stopped_speaking", inference_id="i1")),
    (ReplicaStartedSpeakingEvent(inference_id="i1"),
     wire("conversation.replica.started_speaking", inference_id="i1")),
    (ReplicaStoppedSpeakingEvent(inference_id="i1", properties={
        "duration": 3.14, "interrupted": False}),
     wire("conversation.replica.stopped_speaking", {"duration": 3.14, "interrupted": False},
          inference_id="i1")),
    (StartedSpeakingEvent(inference_id="i1", properties={"role": "user"}),
     wire("conversation.started_speaking", {"role": "user"}, inference_id="i1")),
    (StoppedSpeakingEvent(inference_id="i1", properties={
        "role": "replica", "interrupted": True, "duration": 0.5}),
     wire("conversation.stopped_speaking", {"role": "replica", "interrupted": True,
          "duration": 0.5}, inference_id="i1")),
    (ReplicaInterruptedEvent(inference_id="i1"),
     wire("conversation.replica_interrupted", inference_id="i1")),
    (ToolCallEvent(inference_id="i1", properties={
        "name": "get_weather", "arguments": '{"location": "SF"}', "tool_call_id": "call_1"}),
     wire("conversation.tool_call", {"name": "get_weather", "arguments": '{"location": "SF"}',
          "tool_call_id": "call_1"}, inference_id="i1")),
    (ClosedCaptionEvent(inference_id="i1", properties={
        "role": "user", "text": "Hello", "final": False}),
     wire("conversation.closed_caption", {"role": "user", "text": "Hello", "final": False},
          inference_id="i1")),
    (SystemErrorEvent(properties={"error": "bad", "received_event_type": "conversation.dance"}),
     wire("system.error", {"error": "bad", "received_event_type": "conversation.dance"},
          message_type="system")),
    (SystemErrorEvent(properties={"error": "message must be a JSON object"}),
     wire("system.error", {"error": "message must be a JSON object"}, message_type="system")),
    (WakePhraseDetectedEvent(inference_id="i1"),
     wire("system.wake_phrase_detected", inference_id="i1", message_type="system")),
    (WakePhraseDetectedEvent(),  # before any turn: no inference id, no properties
     wire("system.wake_phrase_detected", message_type="system")),
    (LocalToolCallEvent(inference_id="i1", properties={
        "name": "get_current_time", "arguments": "{}", "tool_call_id": "call_2"}),
     wire("conversation.local_tool_call", {"name": "get_current_time", "arguments": "{}",
          "tool_call_id": "call_2"}, inference_id="i1")),
    (ReplicaJoinedEvent(properties={"replica_id": "r1"}),
     wire("system.replica_joined", {"replica_id": "r1"}, message_type="system")),
    (ReplicaPresentEvent(), wire("system.replica_present", message_type="system")),
    (UtteranceEvent(properties={"role": "replica", "speech": "x"}),  # no inference id: omitted
     wire("conversation.utterance", {"role": "replica", "speech": "x", "visual_context": ""})),
    # Perception on: a user utterance carries Raven-1's analyses (and raven-0's visual_context).
    (UtteranceEvent(inference_id="i1", properties={
        "role": "user", "speech": "Can you see me?", "visual_context": "One person is in view.",
        "user_visual_analysis": "One person is in view.",
        "user_audio_analysis": "The user sounds calm."}),
     wire("conversation.utterance", {"role": "user", "speech": "Can you see me?",
          "visual_context": "One person is in view.",
          "user_visual_analysis": "One person is in view.",
          "user_audio_analysis": "The user sounds calm."}, inference_id="i1")),
    (PerceptionToolCallEvent(properties={
        "name": "notify_second_person", "arguments": {"people": 2}, "frames": ["/9j/4AAQ"]}),
     wire("conversation.perception_tool_call", {"name": "notify_second_person",
          "arguments": {"people": 2}, "frames": ["/9j/4AAQ"]})),
    (PerceptionToolCallEvent(properties={  # an audio tool: no frames
        "name": "flag_frustration", "arguments": {"tone": "frustrated"}, "frames": []}),
     wire("conversation.perception_tool_call", {"name": "flag_frustration",
          "arguments": {"tone": "frustrated"}, "frames": []})),
    (PerceptionAnalysisEvent(properties={"analysis": "**User Appearance:** One person."}),
     wire("conversation.perception_analysis", {"analysis": "**User Appearance:** One person."})),
])
def test_each_event_model_serialises_to_the_documented_shape(event, expected):
    message = _stamped(event)
    # Same keys, same order, same value types (json tells 2 from 2.0 and true from 1).
    assert json.dumps(message) == json.dumps(expected)
    assert parse_event(message) == event.stamp(conversation_id=CID, seq=7, turn_idx=2,
                                               timestamp=1746000000.123)


def test_every_outbound_event_type_has_one_model():
    assert sorted(OUTBOUND_EVENTS) == sorted([
        "conversation.utterance", "conversation.utterance.streaming",
        "conversation.user.started_speaking", "conversation.user.stopped_speaking",
        "conversation.replica.started_speaking", "conversation.replica.stopped_speaking",
        "conversation.started_speaking", "conversation.stopped_speaking",
        "conversation.replica_interrupted", "conversation.tool_call",
        "conversation.closed_caption", "system.error", "system.wake_phrase_detected",
        "conversation.local_tool_call", "system.replica_joined", "system.replica_present",
        "conversation.objective.activated", "conversation.objective.pending",
        "conversation.objective.completed", "conversation.guardrail_triggered",
        "conversation.rag.observability", "conversation.perception_tool_call",
        "conversation.perception_analysis",
    ])
    assert len(EVENT_MODELS) == len(OUTBOUND_EVENTS)


def test_events_are_validated_and_need_an_envelope_to_be_sent():
    with pytest.raises(ValidationError):
        build_event("conversation.utterance", {"role": "user"})  # no speech
    with pytest.raises(ValidationError):
        build_event("conversation.utterance", {"role": "narrator", "speech": "x"})
    with pytest.raises(ValidationError):
        build_event("conversation.replica_interrupted", {"unexpected": True})
    with pytest.raises(ValidationError):
        build_event("system.error", {"error": "x"}, message_type="conversation")
    assert isinstance(build_event("system.error", {"error": "x"}), SystemErrorEvent)
    with pytest.raises(ValidationError):  # perception tool arguments are an object, not JSON text
        build_event("conversation.perception_tool_call",
                    {"name": "t", "arguments": '{"people": 2}', "frames": []})
    with pytest.raises(ValidationError):
        build_event("conversation.perception_tool_call", {"name": "t", "arguments": {}})
    with pytest.raises(ValidationError):
        build_event("conversation.perception_analysis", {})
    assert isinstance(build_event("conversation.perception_analysis", {"analysis": "x"}),
                      PerceptionAnalysisEvent)
    custom = build_event("conversation.custom", {"a": None}, message_type="system")
    assert _stamped(custom) == wire("conversation.custom", {"a": None}, message_type="system")
    with pytest.raises(ValueError, match="stamp"):
        UserStartedSpeakingEvent(inference_id="i1").to_message()


# --------------------------------------------------------------------------- the tracker alone


def test_tracker_user_turn_started_streaming_stopped_final():
    tracker, clock = new_tracker()
    messages = sent(tracker, tracker.user_started())
    messages += sent(tracker, tracker.user_partial("what is", final=False))
    messages += sent(tracker, tracker.user_partial("What is the capital", final=True))
    messages += sent(tracker, tracker.user_partial("of France", final=False))
    clock.now += 1.5
    messages += sent(tracker, tracker.user_stopped())
    messages += sent(tracker, tracker.user_turn("What is the capital of France?"))

    assert [(m["event_type"], m.get("properties")) for m in messages] == [
        ("conversation.user.started_speaking", None),
        ("conversation.started_speaking", {"role": "user"}),
        ("conversation.utterance.streaming",
         {"role": "user", "speech": "what is", "content_index": 0, "final": False}),
        ("conversation.utterance.streaming",
         {"role": "user", "speech": "What is the capital", "content_index": 1, "final": False}),
        ("conversation.utterance.streaming", {"role": "user",
         "speech": "What is the capital of France", "content_index": 2, "final": False}),
        ("conversation.user.stopped_speaking", None),
        ("conversation.stopped_speaking", {"role": "user", "interrupted": False, "duration": 1.5}),
        ("conversation.utterance.streaming", {"role": "user",
         "speech": "What is the capital of France?", "content_index": 3, "final": True}),
        ("conversation.utterance", {"role": "user", "speech": "What is the capital of France?", "visual_context": ""}),
    ]
    assert {m["inference_id"] for m in messages} == {"inf-1"}
    assert [m["turn_idx"] for m in messages] == [0] * 7 + [1, 1]
    assert_envelopes(messages)
    assert messages[0]["timestamp"] == 1746000000.123
    # Repeats are ignored: no second started/stopped without the other.
    assert tracker.user_stopped() == []
    assert tracker.user_started() and tracker.user_started() == []


def test_tracker_user_utterances_carry_what_perception_saw_and_heard():
    """Perception on: the session sets ``tracker.perceive``; each user utterance carries its
    fields at commit time (the replica's do not), and a failing perceive never loses one."""
    tracker, _clock = new_tracker()
    seen = iter(["One person is in view.", "2 people are in view."])

    def perceive() -> dict[str, str]:
        visual = next(seen)
        return {"user_visual_analysis": visual, "visual_context": visual,
                "user_audio_analysis": "The user sounds calm."}

    tracker.perceive = perceive
    tracker.respond_started()
    messages = sent(tracker, tracker.user_turn("Can you see me?"))
    messages += spoken_reply(tracker, "I can.")
    tracker.respond_started()
    messages += sent(tracker, tracker.user_turn("And now?"))
    utterances = [m["properties"] for m in messages if m["event_type"] == "conversation.utterance"]
    assert utterances == [
        {"role": "user", "speech": "Can you see me?", "visual_context": "One person is in view.",
         "user_visual_analysis": "One person is in view.",
         "user_audio_analysis": "The user sounds calm."},
        {"role": "replica", "speech": "I can.", "visual_context": ""},
        {"role": "user", "speech": "And now?", "visual_context": "2 people are in view.",
         "user_visual_analysis": "2 people are in view.",
         "user_audio_analysis": "The user sounds calm."},
    ]
    assert_envelopes(messages)

    def broken() -> dict[str, str]:
        raise RuntimeError("no detectors")

    tracker.perceive = broken
    tracker.respond_started()
    after = sent(tracker, tracker.user_turn("Still there?"))
    assert [m["properties"] for m in after if m["event_type"] == "conversation.utterance"] == [
        {"role": "user", "speech": "Still there?", "visual_context": ""}]


def test_tracker_replica_reply_utterance_when_it_starts_speaking():
    tracker, clock = new_tracker()
    tracker.respond_started()
    messages = sent(tracker, tracker.user_turn("Hi"))
    for observation in (tracker.reply_started(), tracker.reply_text("Hello "),
                        tracker.reply_text("there.")):
        assert observation == []
    messages += sent(tracker, tracker.replica_started())  # the reply is not complete yet
    messages += sent(tracker, tracker.reply_ended())  # -> the replica's utterance now
    messages += sent(tracker, tracker.replica_spoke("Hello"))
    messages += sent(tracker, tracker.replica_spoke("there."))
    clock.now += 2.0
    messages += sent(tracker, tracker.replica_stopped())

    assert kinds(messages) == [
        "conversation.utterance.streaming/user", "conversation.utterance/user",
        "conversation.replica.started_speaking", "conversation.started_speaking/replica",
        "conversation.utterance/replica",
        "conversation.utterance.streaming/replica", "conversation.utterance.streaming/replica",
        "conversation.utterance.streaming/replica",
        "conversation.replica.stopped_speaking", "conversation.stopped_speaking/replica",
    ]
    props = [m.get("properties") for m in messages]
    assert props[4] == {"role": "replica", "speech": "Hello there.", "visual_context": ""}
    assert [p["speech"] for p in props[5:8]] == ["Hello", "Hello there.", "Hello there."]
    assert [p["content_index"] for p in props[5:8]] == [0, 1, 2]
    assert props[7]["final"] is True and props[7]["is_interrupted"] is False
    assert "is_interrupted" not in props[5] and "is_interrupted" not in props[0]
    assert props[8] == {"duration": 2.0, "interrupted": False}
    assert props[9] == {"role": "replica", "interrupted": False, "duration": 2.0}
    assert {m["inference_id"] for m in messages} == {"inf-1"}
    assert {m["turn_idx"] for m in messages} == {1}
    assert_envelopes(messages)
    assert not tracker.replica_speaking and tracker.replica_stopped() == []


def test_tracker_interruption_reports_what_was_said():
    tracker, _ = new_tracker()
    tracker.respond_started()
    sent(tracker, tracker.user_turn("Talk."))
    tracker.reply_started()
    tracker.reply_text("This is a long answer that")
    sent(tracker, tracker.replica_started())
    sent(tracker, tracker.replica_spoke("This is"))
    messages = sent(tracker, tracker.interrupted())  # the segment ends with the interruption
    assert tracker.replica_stopped() == []  # the output's later BotStoppedSpeakingFrame
    assert kinds(messages) == [
        "conversation.utterance/replica", "conversation.utterance.streaming/replica",
        "conversation.replica.stopped_speaking", "conversation.stopped_speaking/replica",
        "conversation.replica_interrupted",
    ]
    assert messages[0]["properties"]["speech"] == "This is a long answer that"
    assert messages[1]["properties"] == {"role": "replica", "speech": "This is",
                                         "content_index": 1, "final": True,
                                         "is_interrupted": True}
    assert messages[2]["properties"]["interrupted"] is True
    assert messages[3]["properties"]["interrupted"] is True
    assert "properties" not in messages[4]
    assert {m["inference_id"] for m in messages} == {"inf-1"}
    # The interrupted reply is over: the next turn has its own inference id.
    tracker.respond_started()
    assert {e.inference_id for e in tracker.user_turn("Next.")} == {"inf-2"}


def test_tracker_interruption_while_silent_is_not_reported():
    tracker, _ = new_tracker()
    tracker.interrupted()  # the replica was not speaking
    messages = spoken_reply(tracker, "Fine.")
    assert "conversation.replica_interrupted" not in kinds(messages)
    assert messages[-1]["properties"]["interrupted"] is False


def test_tracker_one_inference_id_per_turn_and_seq_across_turns():
    tracker, _ = new_tracker()
    messages = []
    for text in ("First.", "Second."):
        messages += sent(tracker, tracker.user_started())
        messages += sent(tracker, tracker.user_partial(text, final=True))
        messages += sent(tracker, tracker.user_stopped())
        messages += sent(tracker, tracker.user_turn(text))
        messages += sent(tracker, tracker.tool_call("lookup", {"q": text}, "call_" + text))
        messages += spoken_reply(tracker, "Answer.")
    assert_envelopes(messages)
    first = [m for m in messages if m["inference_id"] == "inf-1"]
    second = [m for m in messages if m["inference_id"] == "inf-2"]
    assert len(first) + len(second) == len(messages)  # every event belongs to one turn
    assert kinds(first) == kinds(second) and first[-1]["seq"] < second[0]["seq"]
    # turn_idx moves on when the user's turn is committed, not when the user starts speaking.
    assert [m["turn_idx"] for m in first] == [0] * 5 + [1] * 10
    assert [m["turn_idx"] for m in second] == [1] * 5 + [2] * 10
    calls = [m for m in messages if m["event_type"] == "conversation.tool_call"]
    assert [json.loads(c["properties"]["arguments"]) for c in calls] == [{"q": "First."},
                                                                        {"q": "Second."}]
    assert [c["inference_id"] for c in calls] == ["inf-1", "inf-2"]


def test_tracker_a_committed_turn_starts_the_next_one_afresh():
    tracker, _ = new_tracker()
    tracker.respond_started()
    tracker.user_partial("One.", final=True)
    sent(tracker, tracker.user_turn("One."))
    tracker.reply_started()  # a reply to turn 1 that never got spoken
    tracker.reply_text("Unsaid.")
    tracker.reply_ended()
    # More speech without a new started_speaking: the old text is not carried over.
    (streaming,) = tracker.user_partial("Two.", final=True)
    assert (streaming.properties.speech, streaming.properties.content_index) == ("Two.", 0)
    tracker.respond_started()
    turn = tracker.user_turn("Two.")
    assert turn[0].properties.content_index == 1
    # The reply to turn 2 is tied to turn 2, not to the unsaid reply of turn 1.
    tracker.reply_started()
    assert tracker.current_inference_id == "inf-2" == turn[0].inference_id
    tracker.reply_text("Said.")
    tracker.reply_ended()
    started = sent(tracker, tracker.replica_started())
    assert {m["inference_id"] for m in started} == {"inf-2"}
    assert started[-1]["properties"] == {"role": "replica", "speech": "Said.", "visual_context": ""}


@pytest.mark.parametrize("captions", [True, False])
def test_tracker_closed_captions_on_and_off(captions):
    tracker, _ = new_tracker(captions=captions)
    messages = sent(tracker, tracker.user_started())
    messages += sent(tracker, tracker.user_partial("Hello", final=False))
    messages += sent(tracker, tracker.user_turn("Hello there"))
    messages += spoken_reply(tracker, "Hi!")
    captioned = [m["properties"] for m in messages
                 if m["event_type"] == "conversation.closed_caption"]
    if not captions:
        assert captioned == []
        return
    assert captioned == [
        {"role": "user", "text": "Hello", "final": False},
        {"role": "user", "text": "Hello there", "final": True},
        {"role": "replica", "text": "Hi!", "final": False},
        {"role": "replica", "text": "Hi!", "final": True},
    ]
    # Each caption follows the streaming event it mirrors.
    for i, m in enumerate(messages):
        if m["event_type"] == "conversation.closed_caption" and not m["properties"]["final"]:
            assert messages[i - 1]["event_type"] == "conversation.utterance.streaming"


def test_tracker_echo_text_is_the_replica_utterance():
    tracker, _ = new_tracker()
    assert not tracker.echo_continues("e1")
    tracker.echo_started("e1")
    tracker.echo_text("Echo this.", continues=False)
    assert tracker.echo_open and tracker.echo_continues("e1")
    tracker.echo_text("And this.", continues=True)
    tracker.echo_ended()
    messages = sent(tracker, tracker.replica_started())
    messages += sent(tracker, tracker.replica_stopped())
    utterance = [m for m in messages if kinds([m]) == ["conversation.utterance/replica"]]
    assert [u["properties"]["speech"] for u in utterance] == ["Echo this. And this."]
    assert {m["inference_id"] for m in messages} == {"e1"}
    assert not tracker.echo_open


def test_tracker_errors_and_wake_phrase():
    tracker, _ = new_tracker()
    (error,) = sent(tracker, tracker.error("unknown event_type", "x" * 300))
    assert error["properties"] == {"error": "unknown event_type", "received_event_type": "x" * 100}
    (error,) = sent(tracker, tracker.error("message must be a JSON object", 42))
    assert error["properties"] == {"error": "message must be a JSON object"}
    (wake,) = sent(tracker, tracker.wake_phrase_detected())
    assert wake == wire("system.wake_phrase_detected", seq=3, turn_idx=0, message_type="system")


# --------------------------------------------------------------------------- through a pipeline


async def test_spoken_user_turn_event_order():
    async def commit(processor):  # the user aggregator commits the turn (session/builder.py)
        await processor.user_turn("What is the capital of France?")

    messages, _ = await play([
        UserStartedSpeakingFrame(),
        transcript("What is", final=False),
        transcript("What is the capital of France?", final=True),
        UserStoppedSpeakingFrame(),
        commit,
    ])
    assert kinds(messages) == [
        "conversation.user.started_speaking", "conversation.started_speaking/user",
        "conversation.utterance.streaming/user", "conversation.utterance.streaming/user",
        "conversation.user.stopped_speaking", "conversation.stopped_speaking/user",
        "conversation.utterance.streaming/user", "conversation.utterance/user",
    ]
    streaming = [m["properties"] for m in messages
                 if m["event_type"] == "conversation.utterance.streaming"]
    assert [(s["speech"], s["content_index"], s["final"]) for s in streaming] == [
        ("What is", 0, False), ("What is the capital of France?", 1, False),
        ("What is the capital of France?", 2, True)]
    assert messages[-1]["properties"] == {"role": "user",
                                          "speech": "What is the capital of France?", "visual_context": ""}
    assert len({m["inference_id"] for m in messages}) == 1
    assert [m["turn_idx"] for m in messages] == [0] * 6 + [1, 1]
    stopped = messages[5]["properties"]
    assert stopped["interrupted"] is False and isinstance(stopped["duration"], float)
    assert_envelopes(messages)


@pytest.mark.parametrize("captions", [False, True])
async def test_replica_reply_event_order(captions):
    processor = InteractionsProcessor(CID, captions=captions, heartbeat_secs=None)
    messages, collector = await play([
        respond("Hi"), SYNC, *reply("Hello there, friend.", ["Hello", "there,", "friend."]),
    ], processor)
    expected = [
        "conversation.utterance.streaming/user", "conversation.utterance/user",
        "conversation.replica.started_speaking", "conversation.started_speaking/replica",
        "conversation.utterance/replica",
        *["conversation.utterance.streaming/replica"] * 4,
        "conversation.replica.stopped_speaking", "conversation.stopped_speaking/replica",
    ]
    if captions:
        expected.insert(2, "conversation.closed_caption/user")
        for i in (7, 9, 11, 13):  # after each replica streaming event, the final one too
            expected.insert(i, "conversation.closed_caption/replica")
    assert kinds(messages) == expected
    replica = [m["properties"] for m in messages
               if kinds([m]) == ["conversation.utterance.streaming/replica"]]
    assert [r["speech"] for r in replica] == ["Hello", "Hello there,", "Hello there, friend.",
                                              "Hello there, friend."]
    assert [r["content_index"] for r in replica] == [0, 1, 2, 3]
    assert [r["final"] for r in replica] == [False, False, False, True]
    assert replica[-1]["is_interrupted"] is False
    utterance = [m for m in messages if kinds([m]) == ["conversation.utterance/replica"]]
    assert utterance[0]["properties"]["speech"] == "Hello there, friend."
    # One turn, one inference id: the user's utterance and the whole reply.
    assert len({m["inference_id"] for m in messages}) == 1
    assert {m["turn_idx"] for m in messages} == {1}
    assert_envelopes(messages)
    # conversation.respond asked the LLM for the reply.
    appended = [f for f in collector.frames if isinstance(f, LLMMessagesAppendFrame)]
    assert [f.messages for f in appended] == [[{"role": "user", "content": "Hi"}]]


async def test_text_that_did_not_come_from_the_output_transport_is_not_spoken():
    # TTSTextFrames are observed where the output transport pushes them; the same frames
    # seen at other hops (here: entering the fake transport) are not counted twice.
    messages, _ = await play([respond("Hi"), SYNC, *reply("One two.", ["One", "two."])])
    replica = [m["properties"]["speech"] for m in messages
               if kinds([m]) == ["conversation.utterance.streaming/replica"]]
    assert replica == ["One", "One two.", "One two."]


async def test_interruption_event_order():
    messages, _ = await play([
        respond("Talk."), SYNC,
        LLMFullResponseStartFrame(), LLMTextFrame("This is a long answer that"),
        BotStartedSpeakingFrame(), TTSTextFrame("This", text_type=TextType.WORD),
        TTSTextFrame("is", text_type=TextType.WORD), SYNC,
        {"event_type": "conversation.interrupt"}, SYNC,
        BotStoppedSpeakingFrame(),
    ])
    assert kinds(messages) == [
        "conversation.utterance.streaming/user", "conversation.utterance/user",
        "conversation.replica.started_speaking", "conversation.started_speaking/replica",
        "conversation.utterance.streaming/replica", "conversation.utterance.streaming/replica",
        "conversation.utterance/replica", "conversation.utterance.streaming/replica",
        "conversation.replica.stopped_speaking", "conversation.stopped_speaking/replica",
        "conversation.replica_interrupted",
    ]
    final = messages[7]["properties"]
    assert final == {"role": "replica", "speech": "This is", "content_index": 2, "final": True,
                     "is_interrupted": True}
    assert messages[6]["properties"]["speech"] == "This is a long answer that"
    assert messages[8]["properties"]["interrupted"] is True
    assert messages[9]["properties"]["interrupted"] is True
    assert "properties" not in messages[10]
    assert messages[10]["inference_id"] == messages[8]["inference_id"] == messages[0]["inference_id"]
    assert_envelopes(messages)


async def test_two_turns_have_their_own_inference_ids():
    messages, _ = await play([
        respond("First?"), SYNC, *reply("One."), SYNC,
        respond("Second?"), SYNC, *reply("Two."),
    ])
    assert_envelopes(messages)
    by_turn: dict[int, set[str]] = {}
    for m in messages:
        by_turn.setdefault(m["turn_idx"], set()).add(m["inference_id"])
    assert sorted(by_turn) == [1, 2]
    assert all(len(ids) == 1 for ids in by_turn.values())
    assert by_turn[1] != by_turn[2]
    utterances = [(m["turn_idx"], m["properties"]["role"], m["properties"]["speech"])
                  for m in messages if m["event_type"] == "conversation.utterance"]
    assert utterances == [(1, "user", "First?"), (1, "replica", "One."),
                          (2, "user", "Second?"), (2, "replica", "Two.")]


# Traffic on the shared channel that is not an interaction: ignored without a word.
NOT_OURS = [
    ["not", "an", "object"],
    "not json",
    {"label": "rtvi-ai", "type": "client-ready", "id": "1", "data": {}},  # RTVI
    {"date": "2026-12-02T06:00:00Z", "event": "chat-msg", "message": "hi", "name": "Ann"},
    {"message_type": "conversation", "event_type": "conversation.utterance",  # a replica's
     "properties": {"role": "replica", "speech": "Hi"}},
    {"message_type": "conversation", "event_type": "conversation.perception_analysis",
     "properties": {"analysis": "x"}},
    {"message_type": "system", "event_type": "system.replica_present"},
    {"event_type": 42},
]


async def test_bad_messages_get_system_error_events():
    messages, _ = await play([
        *NOT_OURS,
        {"event_type": "conversation.dance"},
        {"event_type": "conversation.respond", "conversation_id": "c-other",
         "properties": {"text": "x"}},
        {"message_type": "system", "event_type": "conversation.respond",
         "properties": {"text": "x"}},
        SYNC,
        respond("Still there?"),
    ])
    errors = [m for m in messages if m["event_type"] == "system.error"]
    assert len(errors) == 3
    assert all(e["message_type"] == "system" and "inference_id" not in e for e in errors)
    assert "unknown event_type" in errors[0]["properties"]["error"]
    assert errors[0]["properties"]["received_event_type"] == "conversation.dance"
    assert "not this conversation" in errors[1]["properties"]["error"]
    assert errors[1]["properties"]["received_event_type"] == "conversation.respond"
    assert "message_type must be 'conversation'" in errors[2]["properties"]["error"]
    # The processor kept going.
    assert kinds(messages[3:]) == ["conversation.utterance.streaming/user",
                                   "conversation.utterance/user"]
    assert_envelopes(messages)


async def test_a_conversations_other_id_is_accepted():
    """With a Tavus replica rendering through its own conversation, a client may know either."""
    processor = InteractionsProcessor(CID, heartbeat_secs=None, also_known_as=("c-tavus",))
    messages, _ = await play([
        {**respond("By our id."), "conversation_id": CID}, SYNC,
        {**respond("By Tavus's id."), "conversation_id": "c-tavus"}, SYNC,
        {**respond("By another."), "conversation_id": "c-other"},
    ], processor)
    said = [m["properties"]["speech"] for m in messages
            if m["event_type"] == "conversation.utterance"]
    assert said == ["By our id.", "By Tavus's id."]
    assert [m["event_type"] for m in messages][-1] == "system.error"
    assert {m["conversation_id"] for m in messages} == {CID}  # events carry the one id


async def test_echo_text_is_spoken_and_reported_with_its_inference_id():
    messages, collector = await play([
        {"event_type": "conversation.echo", "properties": {
            "modality": "text", "text": "Echo this.", "inference_id": "echo-1"}}, SYNC,
        BotStartedSpeakingFrame(), TTSTextFrame("Echo this.", text_type=TextType.SENTENCE),
        BotStoppedSpeakingFrame(),
    ])
    spoken = [f for f in collector.frames if isinstance(f, TTSSpeakFrame)]
    assert [f.text for f in spoken] == ["Echo this."]
    assert kinds(messages) == [
        "conversation.replica.started_speaking", "conversation.started_speaking/replica",
        "conversation.utterance/replica", "conversation.utterance.streaming/replica",
        "conversation.utterance.streaming/replica", "conversation.replica.stopped_speaking",
        "conversation.stopped_speaking/replica",
    ]
    assert {m["inference_id"] for m in messages} == {"echo-1"}
    assert messages[2]["properties"]["speech"] == "Echo this."


async def test_processor_api_used_by_the_session():
    processor = InteractionsProcessor(CID, captions=True, heartbeat_secs=None)
    assert processor.conversation_id == CID and processor.captions and processor.turn_idx == 0
    seen: list[dict[str, Any]] = []

    async def session_calls(p: InteractionsProcessor):
        await p.wake_phrase_detected()
        await p.user_turn("Weather?")
        assert p.current_inference_id is not None and p.turn_idx == 1
        await p.emit_tool_call("get_weather", {"location": "SF"}, "call_w")
        seen.append(await p.emit("conversation.utterance", {"role": "replica", "speech": "Sunny."},
                                 inference_id=p.current_inference_id))

    messages, _ = await play([session_calls], processor)
    assert kinds(messages) == [
        "system.wake_phrase_detected", "conversation.utterance.streaming/user",
        "conversation.utterance/user", "conversation.closed_caption/user",
        "conversation.tool_call", "conversation.utterance/replica",
    ]
    assert "properties" not in messages[0] and "inference_id" not in messages[0]
    call = messages[4]
    assert call["properties"] == {"name": "get_weather", "arguments": '{"location": "SF"}',
                                  "tool_call_id": "call_w"}
    assert call["inference_id"] == messages[1]["inference_id"]
    assert seen == [messages[5]]
    assert_envelopes(messages)


async def test_a_rejected_message_is_answered_to_its_sender_only():
    """In a Daily (or Tavus) room the transport names the sender: its system.error goes to
    that participant alone, not to everyone in the room."""
    from pipecat.transports.daily.transport import (
        DailyInputTransportMessageFrame,
        DailyOutputTransportMessageUrgentFrame,
    )

    _messages, collector = await play([
        DailyInputTransportMessageFrame(message={"event_type": "conversation.dance"},
                                        participant_id="p-7"),
        DailyInputTransportMessageFrame(message=respond("Hi"), participant_id="p-7"),
    ])
    frames = [f for f in collector.frames if isinstance(f, OutputTransportMessageUrgentFrame)]
    error = next(f for f in frames if f.message["event_type"] == "system.error")
    assert isinstance(error, DailyOutputTransportMessageUrgentFrame)
    assert error.participant_id == "p-7"
    # Everything else is the room's.
    others = [f for f in frames if f is not error]
    assert others and not any(isinstance(f, DailyOutputTransportMessageUrgentFrame) for f in others)


async def test_replica_joined_then_a_heartbeat_and_present_when_someone_joins():
    from pipecat.transports.daily.transport import DailyOutputTransportMessageUrgentFrame

    processor = InteractionsProcessor(CID, heartbeat_secs=0.05, replica_id="r-face")
    beats: list = []

    @processor.event_handler("on_event")
    async def _on_event(_p, message):
        if message["event_type"] == "system.replica_present":
            beats.append(message)

    async def two_beats(_p):  # however loaded the machine: no timing asserted
        for _ in range(400):
            if len(beats) >= 2:
                return
            await asyncio.sleep(0.05)

    async def someone_joined(p):
        await p.participant_joined("p-9")

    messages, collector = await play([two_beats, someone_joined], processor)
    joined = collector.messages[0]
    assert joined["properties"] == {"replica_id": "r-face"} and "turn_idx" not in joined
    present = [m for m in messages if m["event_type"] == "system.replica_present"]
    assert len(present) >= 3  # two beats, and one for the participant
    for m in present:
        assert m["message_type"] == "system" and "properties" not in m and "turn_idx" not in m
    # The participant who joined gets a replica_joined of its own (the room's went to nobody).
    to_them = [f for f in collector.frames if isinstance(f, DailyOutputTransportMessageUrgentFrame)]
    assert [(f.participant_id, f.message["event_type"]) for f in to_them] == [
        ("p-9", "system.replica_joined")]
    assert_envelopes(messages)


def test_tracker_the_custom_greeting_is_a_replica_utterance_of_its_own():
    tracker, _clock = new_tracker()
    # Alone: its utterance when the replica starts speaking it, with its own inference id.
    assert tracker.spoken_text("Hi, I am Ava.") == []
    messages = sent(tracker, tracker.replica_started())
    messages += sent(tracker, tracker.replica_stopped())
    utterance = [m for m in messages if m["event_type"] == "conversation.utterance"]
    assert [u["properties"]["speech"] for u in utterance] == ["Hi, I am Ava."]
    assert utterance[0]["inference_id"] == "inf-1"

    # A respond came with the join: its reply is in flight when the greeting is queued. The
    # greeting's utterance goes out at once; the reply keeps its own text and id.
    tracker.respond_started()
    sent(tracker, tracker.user_turn("What is your name?"))  # inference inf-2
    tracker.reply_started()
    tracker.reply_text("I am Ava.")
    early = sent(tracker, tracker.spoken_text("Welcome!"))
    assert [(m["properties"]["speech"], m["inference_id"]) for m in early] == [("Welcome!", "inf-3")]
    tracker.reply_ended()
    spoken = sent(tracker, tracker.replica_started()) + sent(tracker, tracker.replica_stopped())
    said = [(m["properties"]["speech"], m["inference_id"]) for m in spoken
            if m["event_type"] == "conversation.utterance"]
    assert said == [("I am Ava.", "inf-2")]

    # Queued, then an LLM reply starts before it is spoken: the greeting's utterance first.
    assert tracker.spoken_text("Hello again.") == []
    flushed = sent(tracker, tracker.reply_started())
    assert [m["properties"]["speech"] for m in flushed] == ["Hello again."]


@pytest.mark.parametrize("reply_first", [True, False])
def test_tracker_a_user_turn_while_the_greeting_waits_keeps_both_ids(reply_first):
    """tavus-cli's connect() returns on the join's replica_present and send_text() goes out at
    once: the user's turn is committed before the greeting plays."""
    tracker, _clock = new_tracker()
    tracker.spoken_text("Hi, I am Ava.")  # the greeting: inf-1
    tracker.respond_started()
    sent(tracker, tracker.user_turn("What's up?"))  # inf-2
    messages = []
    if reply_first:  # the LLM starts on the turn before the greeting's audio starts
        messages += sent(tracker, tracker.reply_started())
        tracker.reply_text("Not much.")
        tracker.reply_ended()
        messages += sent(tracker, tracker.replica_started())
    else:  # the greeting's audio starts, and ends, before the LLM answers
        messages += sent(tracker, tracker.replica_started())
        messages += sent(tracker, tracker.replica_stopped())
        messages += sent(tracker, tracker.reply_started())
        tracker.reply_text("Not much.")
        tracker.reply_ended()
        messages += sent(tracker, tracker.replica_started())
    said = [(m["properties"]["speech"], m["inference_id"]) for m in messages
            if m["event_type"] == "conversation.utterance"]
    assert said == [("Hi, I am Ava.", "inf-1"), ("Not much.", "inf-2")]


def test_a_reply_after_an_interruption_is_never_told_as_part_of_the_interrupted_one():
    """The next reply can be generated before the output's BotStoppedSpeakingFrame (a
    loaded machine): its utterance waits for its own speaking segment, with its own id."""
    tracker, _ = new_tracker()
    tracker.respond_started()
    sent(tracker, tracker.user_turn("Talk."))
    tracker.reply_started()
    tracker.reply_text("A long greeting that goes on.")
    tracker.reply_ended()
    sent(tracker, tracker.replica_started())
    first = sent(tracker, tracker.interrupted())
    assert "conversation.replica_interrupted" in kinds(first)
    tracker.respond_started()
    sent(tracker, tracker.user_turn("A question?"))
    tracker.reply_started()
    tracker.reply_text("The answer.")
    assert sent(tracker, tracker.reply_ended()) == []  # not spoken yet
    assert sent(tracker, tracker.replica_stopped()) == []  # the interrupted segment's late stop
    later = sent(tracker, tracker.replica_started())
    utterances = [m for m in later if m["event_type"] == "conversation.utterance"]
    assert [m["properties"]["speech"] for m in utterances] == ["The answer."]
    assert {m["inference_id"] for m in later} == {"inf-2"}
