"""Interactions protocol conformance: every inbound interaction's effect, every outbound
event's shape and order, in scripted conversations through the real pipeline."""

from __future__ import annotations

import asyncio
import base64
import json
import random

import numpy as np
import pytest

from pipeline.interactions import ProtocolError, parse_interaction
from tests.fake_openai import ToolCall
from tests.harness import Harness

CID = "c123"


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("message", [
    {"message_type": "conversation", "event_type": "conversation.echo", "conversation_id": CID,
     "properties": {"modality": "text", "text": "Hello!", "done": True}},
    {"event_type": "conversation.echo", "properties": {"text": "No modality, as in the docs."}},
    {"event_type": "conversation.echo", "properties": {"modality": "audio", "audio": "AAAA",
     "sample_rate": 24000, "inference_id": "inf-1", "done": "true"}},
    {"event_type": "conversation.respond", "conversation_id": CID, "properties": {"text": "Hi"}},
    {"event_type": "conversation.interrupt", "conversation_id": CID},
    {"event_type": "conversation.overwrite_llm_context", "properties": {"context": "x"}},
    {"event_type": "conversation.append_llm_context", "properties": {"context": "x"}},
    {"event_type": "conversation.overwrite_context", "properties": {"context": "alias"}},
    {"event_type": "conversation.sensitivity", "properties": {
        "participant_pause_sensitivity": "medium", "participant_interrupt_sensitivity": "high"}},
    {"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_abc", "output": {"temp": 72}, "status": "success"}},
])
def test_valid_inbound_messages_parse(message):
    interaction = parse_interaction(message, CID)
    assert interaction.event_type.startswith("conversation.")


@pytest.mark.parametrize("message,words", [
    ("not json", "not JSON"),
    ([1, 2], "JSON object"),
    ({"event_type": "conversation.dance"}, "unknown event_type"),
    ({"properties": {}}, "event_type is missing"),
    ({"message_type": "system", "event_type": "conversation.respond"}, "message_type"),
    ({"event_type": "conversation.respond", "conversation_id": "other",
      "properties": {"text": "x"}}, "not this conversation"),
    ({"event_type": "conversation.respond"}, "properties"),
    ({"event_type": "conversation.respond", "properties": {"text": ""}}, "properties.text"),
    ({"event_type": "conversation.echo", "properties": {"modality": "audio"}}, "audio"),
    ({"event_type": "conversation.echo", "properties": {"modality": "video", "text": "x"}},
     "modality"),
    ({"event_type": "conversation.sensitivity", "properties": {
        "participant_pause_sensitivity": "medium"}}, "participant_interrupt_sensitivity"),
    ({"event_type": "conversation.tool_result", "properties": {"output": "x"}}, "tool_call_id"),
    ({"event_type": "conversation.respond", "properties": {"text": "x" * 2_000_000}}, "too large"),
])
def test_bad_inbound_messages_are_rejected_with_a_reason(message, words):
    with pytest.raises(ProtocolError, match=words):
        parse_interaction(message, CID)


# --------------------------------------------------------------------------- conversations


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def assert_envelopes(events: list[dict], conversation_id: str) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    for e in events:
        assert e["conversation_id"] == conversation_id
        assert isinstance(e["timestamp"], float)
        assert e["message_type"] in ("conversation", "system")
        # turn_idx only on events tied to a turn
        assert ("turn_idx" not in e) if e["message_type"] == "system" else isinstance(
            e["turn_idx"], int)


async def test_respond_with_a_local_tool_call_event_order(harness):
    await harness.start(
        answers=[[ToolCall("get_current_time", {"location": "Tokyo"}, id="call_t1")],
                 "It is late evening in Tokyo."],
        persona={"persona_name": "Ava", "system_prompt": "You are Ava.", "layers": {"llm": {
            "tools": [{"type": "function", "function": {
                "name": "get_current_time", "description": "Current local time",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}}]}}},
    )
    await harness.send({"event_type": "conversation.respond",
                        "properties": {"text": "What time is it in Tokyo?"}})
    await harness.wait_for("conversation.replica.stopped_speaking")
    events = harness.events
    assert_envelopes(events, harness.built.conversation_id)
    types = harness.types()
    # The bot runs this tool itself: announced as a local call, never as a conversation.tool_call
    # (a Tavus front end executes every one of those).
    assert "conversation.tool_call" not in types
    order = ["conversation.utterance", "conversation.local_tool_call",
             "conversation.replica.started_speaking", "conversation.replica.stopped_speaking"]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types

    user_utt = harness.of("conversation.utterance")[0]
    assert user_utt["properties"] == {"role": "user", "speech": "What time is it in Tokyo?",
                                      "visual_context": ""}
    assert user_utt["turn_idx"] == 1
    call = harness.of("conversation.local_tool_call")[0]
    assert call["properties"]["name"] == "get_current_time"
    assert json.loads(call["properties"]["arguments"]) == {"location": "Tokyo"}
    assert call["properties"]["tool_call_id"] == "call_t1"
    replica_utt = [e for e in harness.of("conversation.utterance")
                   if e["properties"]["role"] == "replica"][0]
    assert replica_utt["properties"]["speech"] == "It is late evening in Tokyo."
    # One inference id ties the turn together.
    inference = user_utt["inference_id"]
    for e in (call, replica_utt, harness.of("conversation.replica.started_speaking")[0],
              harness.of("conversation.replica.stopped_speaking")[0]):
        assert e["inference_id"] == inference
    stopped = harness.of("conversation.replica.stopped_speaking")[0]["properties"]
    assert stopped["interrupted"] is False and stopped["duration"] > 0
    combined = harness.of("conversation.stopped_speaking")[-1]["properties"]
    assert combined["role"] == "replica" and combined["interrupted"] is False
    streaming = [e["properties"] for e in harness.of("conversation.utterance.streaming")
                 if e["properties"]["role"] == "replica"]
    assert streaming[-1]["final"] is True and streaming[-1]["is_interrupted"] is False
    assert [s["content_index"] for s in streaming] == sorted(s["content_index"] for s in streaming)
    # The local handler ran and its result went back to the LLM.
    second = harness.fake.requests[1]["messages"]
    tool_message = [m for m in second if m["role"] == "tool"][0]
    result = json.loads(tool_message["content"])
    assert result["time_zone"] == "Asia/Tokyo" and ":" in result["local_time"]
    assert tool_message["tool_call_id"] == "call_t1"
    assert harness.built.transcript.of("user") == ["What time is it in Tokyo?"]


async def test_client_tool_result_goes_back_to_the_llm(harness):
    await harness.start(
        answers=[[ToolCall("get_cures", {"disease": "flu"}, id="call_c1")],
                 "Rest and fluids.", "Anything else?"],
        persona={"system_prompt": "You are a doctor.", "layers": {"llm": {"tools": [
            {"type": "function", "function": {"name": "get_cures", "description": "cures",
             "parameters": {"type": "object", "properties": {"disease": {"type": "string"}},
                            "required": ["disease"]}}}]}}},
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Flu?"}})
    call = (await harness.wait_for("conversation.tool_call"))[0]
    assert call["properties"]["tool_call_id"] == "call_c1"
    assert harness.built.tools.pending == ["call_c1"]
    await harness.send({"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_c1", "output": "Rest, fluids and sleep.", "status": "success"}})
    for _ in range(200):
        if any(m["role"] == "tool" and "Rest, fluids" in str(m["content"])
               for r in harness.fake.requests for m in r["messages"]):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"tool result never reached the LLM: {harness.fake.requests}")
    assert harness.built.tools.pending == []
    # A second result for the same call is an error event, not a crash.
    await harness.send({"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_c1", "output": "again"}})
    error = (await harness.wait_for("system.error"))[0]
    assert "no pending tool call" in error["properties"]["error"]


async def test_client_tool_timeout_tells_the_llm(harness):
    await harness.start(
        answers=[[ToolCall("lookup_order", {"order_id": "42"}, id="call_o1")], "Sorry.", "Ok."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            {"type": "function", "function": {"name": "lookup_order", "description": "order",
             "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                            "required": ["order_id"]}}}]}}},
        env={"CLIENT_TOOL_TIMEOUT_SECS": "1.0"},
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Order 42?"}})
    await harness.wait_for("conversation.tool_call")
    for _ in range(100):
        contents = [str(m.get("content")) for r in harness.fake.requests for m in r["messages"]
                    if m["role"] in ("tool", "developer", "user")]
        if any("did not return a result" in c for c in contents):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"timeout never reported: {harness.fake.requests}")
    assert harness.built.tools.pending == []


async def test_interrupt_stops_the_replica_and_reports_it(harness):
    long_text = " ".join(["This is a long sentence that keeps the replica busy."] * 8)
    await harness.start(answers=[long_text])
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Talk."}})
    await harness.wait_for("conversation.replica.started_speaking")
    await harness.wait_for("conversation.utterance.streaming", count=2,
                           where=lambda e: e["properties"]["role"] == "replica")
    await harness.send({"event_type": "conversation.interrupt"})
    stopped = (await harness.wait_for("conversation.replica.stopped_speaking"))[0]
    assert stopped["properties"]["interrupted"] is True
    legacy = await harness.wait_for("conversation.replica_interrupted")
    assert legacy[0]["inference_id"] == stopped["inference_id"]
    final = [e["properties"] for e in harness.of("conversation.utterance.streaming")
             if e["properties"]["role"] == "replica" and e["properties"]["final"]]
    assert final and final[-1]["is_interrupted"] is True
    # What was actually said (not the whole reply) is what the context keeps.
    said = harness.built.transcript.entries[-1]
    assert said.role == "assistant" and said.interrupted and len(said.content) < len(long_text)


async def test_echo_text_and_audio_in_full_mode(harness):
    await harness.start()
    await harness.send({"event_type": "conversation.echo",
                        "properties": {"modality": "text", "text": "Echo this sentence."}})
    utt = await harness.wait_for("conversation.utterance",
                                 where=lambda e: e["properties"]["role"] == "replica")
    assert utt[0]["properties"]["speech"] == "Echo this sentence."
    await harness.wait_for("conversation.replica.stopped_speaking")
    before = len(harness.transport.recorded)
    tone = (np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000) * 8000).astype(np.int16).tobytes()
    b64 = base64.b64encode(tone).decode()
    await harness.send({"event_type": "conversation.echo", "properties": {
        "modality": "audio", "audio": b64, "sample_rate": 24000, "inference_id": "inf-a",
        "done": True}})
    await harness.wait_for("conversation.replica.stopped_speaking", count=2)
    started = harness.of("conversation.replica.started_speaking")[-1]
    assert started["inference_id"] == "inf-a"
    echoed = bytes(harness.transport.recorded[before:])
    level = np.sqrt((np.frombuffer(echoed, np.int16).astype(np.float32) ** 2).mean())
    assert level > 1000  # the tone came out


async def test_context_overwrite_and_append_change_the_system_prompt(harness):
    await harness.start(answers=["One.", "Two."],
                        conversation={"conversational_context": "The user is Bob."})
    await harness.send({"event_type": "conversation.append_llm_context",
                        "properties": {"context": "Bob likes tea."}})
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Hi"}})
    await harness.wait_for("conversation.replica.stopped_speaking")
    first = harness.fake.requests[0]["messages"][0]["content"]
    assert "The user is Bob.\n\nBob likes tea." in first
    await harness.send({"event_type": "conversation.overwrite_llm_context",
                        "properties": {"context": "The user is Carol."}})
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Again"}})
    await harness.wait_for("conversation.replica.stopped_speaking", count=2)
    second = harness.fake.requests[1]["messages"][0]["content"]
    assert "The user is Carol." in second and "Bob" not in second


async def test_sensitivity_changes_turn_taking(harness):
    await harness.start()
    assert harness.built.turn.patience == "medium"
    await harness.send({"event_type": "conversation.sensitivity", "properties": {
        "participant_pause_sensitivity": "high", "participant_interrupt_sensitivity": "low"}})
    await asyncio.sleep(0.3)
    assert harness.built.turn.patience == "low"  # high pause sensitivity = quick to respond
    assert harness.built.turns.interruptibility == "high"
    analyzer = harness.built.turns.strategies.stop[0]._turn_analyzer
    assert analyzer._params.stop_secs == 1.0
    assert not harness.of("system.error")


async def test_bad_messages_get_error_events_and_the_pipeline_keeps_running(harness):
    await harness.start(answers=["Still here."])
    await harness.send({"event_type": "conversation.dance"})
    await harness.send({"event_type": "conversation.respond", "conversation_id": "c-other",
                        "properties": {"text": "x"}})
    await harness.transport.receive_message(["not", "an", "object"])  # not ours: ignored
    await harness.send({"event_type": "conversation.echo", "properties": {
        "modality": "audio", "audio": "%%%not-base64%%%"}})
    errors = await harness.wait_for("system.error", count=3)
    assert [e["message_type"] for e in errors] == ["system"] * 3
    assert "unknown event_type" in errors[0]["properties"]["error"]
    assert errors[0]["properties"]["received_event_type"] == "conversation.dance"
    assert "not this conversation" in errors[1]["properties"]["error"]
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Hello?"}})
    utt = await harness.wait_for("conversation.utterance",
                                 where=lambda e: e["properties"]["role"] == "replica")
    assert utt[0]["properties"]["speech"] == "Still here."


async def test_fuzz_200_random_messages(harness):
    await harness.start(answers=["Fine."])
    rng = random.Random(1234)
    events = ["conversation.echo", "conversation.respond", "conversation.interrupt",
              "conversation.overwrite_llm_context", "conversation.tool_result",
              "conversation.sensitivity", "conversation.nope", None, 42]
    values = [None, "", "x", 0, -1, 3.5, True, [], {}, {"text": 5}, "A" * 300, {"nested": {"a": []}},
              "medium", "low", "text", "audio", "%%%"]

    def random_message():
        message = {}
        if rng.random() < 0.9:
            message["event_type"] = rng.choice(events)
        if rng.random() < 0.5:
            message["message_type"] = rng.choice(["conversation", "system", 3, None])
        if rng.random() < 0.5:
            message["conversation_id"] = rng.choice([harness.built.conversation_id, "zzz", None, 7])
        if rng.random() < 0.8:
            message["properties"] = {rng.choice(["text", "context", "modality", "audio",
                                                 "tool_call_id", "participant_pause_sensitivity",
                                                 "sample_rate", "done", "inference_id"]):
                                     rng.choice(values) for _ in range(rng.randint(0, 4))}
        if rng.random() < 0.1:
            return rng.choice(values)
        return message

    for _ in range(200):
        await harness.transport.receive_message(random_message())
    await asyncio.sleep(1.0)
    assert harness.of("system.error")  # plenty were rejected
    await harness.send({"event_type": "conversation.interrupt"})
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Alive?"}})
    await harness.wait_for("conversation.utterance", timeout=40,
                           where=lambda e: e["properties"]["speech"] == "Alive?")
    assert not harness.task.done()


async def test_spoken_turn_events(harness, tmp_path):
    from tests.speech import write_question_wav

    wav = write_question_wav(tmp_path / "q.wav", "What is the capital of France?",
                             lead_secs=1.0, tail_secs=0.5)
    await harness.start(answers=["Paris."], audio_in=wav)
    await harness.wait_for("conversation.replica.stopped_speaking", timeout=40)
    types = harness.types()
    for expected in ("conversation.user.started_speaking", "conversation.user.stopped_speaking"):
        assert expected in types
    assert types.index("conversation.user.started_speaking") < types.index(
        "conversation.replica.started_speaking")
    started = harness.of("conversation.user.started_speaking")[0]
    user_utt = [e for e in harness.of("conversation.utterance")
                if e["properties"]["role"] == "user"][0]
    assert user_utt["properties"]["speech"].lower().startswith("what is the capital of france")
    assert user_utt["inference_id"] == started["inference_id"] and user_utt["turn_idx"] == 1
    stopped_user = [e for e in harness.of("conversation.stopped_speaking")
                    if e["properties"]["role"] == "user"][0]
    assert stopped_user["properties"]["duration"] > 0.5
    streaming = [e for e in harness.of("conversation.utterance.streaming")
                 if e["properties"]["role"] == "user"]
    assert streaming[-1]["properties"]["final"] is True
    replica = [e for e in harness.of("conversation.utterance")
               if e["properties"]["role"] == "replica"][0]
    assert replica["inference_id"] == user_utt["inference_id"]
