"""A stock Tavus front end works against our bot: contract tests from Tavus's own client code.

1. ``@tavus/cvi-ui`` (the React hooks Tavus's CLI installs into an app): every event the bot
   sent in a real conversation (the harness: the real pipeline on a file transport, local
   Whisper and Piper, a scripted LLM) is type-checked by ``tsc --strict`` against the member
   of cvi-ui's ``AppMessage<T>['data']`` with its ``event_type``, and every message the test
   sent the bot against ``SendAppMessageProps`` (tests/tavus_contract.py generates the file:
   cvi-ui's source as installed, plus the checks). Event types cvi-ui has no member for are
   listed below, and tsc checks that it really has none.
2. ``tavus-cli``'s ``DailyConversationSession`` (Tavus's Python client, imported from its
   wheel) drives the bot through a fake ``daily-python`` bridged to the harness: connect,
   send_text / collect_turn, a client tool call and its result, an interrupt.

Missing packages (tests/browser/node_modules, the tavus-cli wheel) skip locally and fail in
CI (``CI=true``), as scripts/test.sh installs them.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from config.policies import Guardrail, Objective, Policies
from pipeline.interactions import INBOUND_ALIASES, INBOUND_EVENTS, OUTBOUND_EVENTS
from tests import tavus_contract as contract
from tests.fake_openai import ToolCall
from tests.harness import Harness

pytestmark = pytest.mark.e2e

# Outbound event types cvi-ui's AppMessage<T>['data'] has no member for, and why.
OUTBOUND_NO_MEMBER = {
    "conversation.utterance.streaming": "Tavus's streaming transcript; cvi-ui types only whole utterances",
    "conversation.started_speaking": "the role-tagged speaking event; cvi-ui types the per-role ones",
    "conversation.stopped_speaking": "the role-tagged speaking event; cvi-ui types the per-role ones",
    "conversation.closed_caption": "live captions (enable_closed_captions); not in cvi-ui",
    "conversation.local_tool_call": "our own addition: a call the bot runs itself, so no Tavus "
                                    "client (which executes every conversation.tool_call) runs it",
    "system.error": "our own addition (a rejected message, a failed reply)",
    "system.wake_phrase_detected": "Tavus's wake phrase event; not in cvi-ui",
    "system.replica_joined": "the replica is in the room (tavus-cli's connect() waits for it)",
    "system.replica_present": "the replica is in the room (tavus-cli's connect() waits for it)",
    "conversation.objective.activated": "Tavus's objectives events; not in cvi-ui 0.0.1",
    "conversation.objective.pending": "Tavus's objectives events; not in cvi-ui 0.0.1",
    "conversation.objective.completed": "Tavus's objectives events; not in cvi-ui 0.0.1",
    "conversation.guardrail_triggered": "Tavus's guardrail app message; not in cvi-ui 0.0.1",
    "conversation.rag.observability": "Tavus's knowledge-base event; not in cvi-ui 0.0.1",
}
# Inbound event types (ours and what the tests send) that cvi-ui's SendAppMessageProps lacks.
INBOUND_NO_MEMBER = {
    "conversation.tool_result": "cvi-ui's useSendAppMessage cannot send it (tavus-cli does)",
    "conversation.overwrite_context": "an alias from Tavus's skill file; cvi-ui sends the _llm_ name",
    "conversation.append_context": "an alias from Tavus's skill file; cvi-ui sends the _llm_ name",
    "conversation.dance": "unknown on purpose: the rejected message behind system.error",
    "conversation.objective.confirm": "Tavus's manual objective confirmation; not in cvi-ui 0.0.1",
}

TIME_TOOL = {"type": "function", "function": {
    "name": "get_current_time", "description": "Current local time",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
CURES_TOOL = {"type": "function", "function": {  # no local handler: a client tool
    "name": "get_cures", "description": "Cures for a disease",
    "parameters": {"type": "object", "properties": {"disease": {"type": "string"}},
                   "required": ["disease"]}}}
LONG_REPLY = " ".join(["This is a long sentence that keeps the replica busy."] * 8)
# Perception (raven-0 on the local detectors): a visual tool they fire when two people are in
# view, and the end-of-call analysis.
PERCEPTION = {
    "perception_model": "raven-0",
    "perception_analysis_queries": ["How often was the user looking at the screen?"],
    "perception_tools": [{"type": "function", "function": {
        "name": "notify_second_person",
        "description": "Use this when more than one person is in view.",
        "parameters": {"type": "object", "properties": {"people": {"type": "integer"}},
                       "required": ["people"]}}}]}
PERCEPTION_ENV = {"PERCEPTION_FPS": "4"}


def _require(missing: str | None) -> None:
    if missing:
        if contract.required():
            pytest.fail(f"Tavus client contract test required (CI) but {missing}")
        pytest.skip(missing)


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def script(h: Harness, *answers) -> None:
    """The fake LLM's next answers, from its next request on."""
    h.fake.answers = [""] * len(h.fake.requests) + list(answers)


def replica_stops(h: Harness) -> int:
    return len(h.of("conversation.replica.stopped_speaking"))


async def spoken(h: Harness, before: int, timeout: float = 40) -> None:
    """Wait for the replica to finish one more utterance than ``before``."""
    await h.wait_for("conversation.replica.stopped_speaking", count=before + 1, timeout=timeout)


def inbound_sent(h: Harness) -> list[dict]:
    return [m for m, _ in h.transport.received_messages if isinstance(m, dict)]


def photo() -> np.ndarray:
    """A real photograph of one person that ships with matplotlib (Grace Hopper), as RGB."""
    from pathlib import Path

    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


async def show(h: Harness, rgb: np.ndarray, count: int = 3, until=None) -> None:
    """Camera frames at the sampling rate, each processed before the next (as
    tests/test_perception_conversation.py shows them); ``until``: stop once it holds."""
    from pipecat.frames.frames import UserImageRawFrame

    runner = h.built.perception
    for _ in range(count):
        if until is not None and until():
            return
        frame = UserImageRawFrame(user_id="u1", image=rgb.tobytes(),
                                  size=(rgb.shape[1], rgb.shape[0]), format="RGB")
        frame.transport_source = "camera"
        before = runner.stats["camera"].processed
        await h.worker.queue_frames([frame])
        for _ in range(200):
            await asyncio.sleep(0.05)
            if runner.stats["camera"].processed > before and not runner._busy:
                break
        await asyncio.sleep(0.3)
        runner._cooldown_until = 0.0  # the test paces frames itself


# --------------------------------------------------------------------------- 1. cvi-ui + tsc


def test_cvi_ui_has_a_member_for_every_event_type_or_it_is_listed(tmp_path):
    """Our event types (outbound and inbound) against cvi-ui's unions, without a conversation:
    each has a member or is listed above (and then cvi-ui really has none)."""
    _require(contract.cvi_ui_missing())
    inbound_types = [*INBOUND_EVENTS, *INBOUND_ALIASES]
    checks = (
        contract.presence_checks(list(OUTBOUND_EVENTS), direction="outbound",
                                 no_member=OUTBOUND_NO_MEMBER)
        + contract.absence_checks(OUTBOUND_NO_MEMBER, direction="outbound")
        + contract.presence_checks(inbound_types, direction="inbound", no_member=INBOUND_NO_MEMBER)
        + contract.absence_checks(INBOUND_NO_MEMBER, direction="inbound")
    )
    result = contract.typecheck(checks, tmp_path / "tsc")
    assert result.ok, result.report()
    # A listed outbound type the bot does not have is stale, or one the bot should send.
    assert set(OUTBOUND_NO_MEMBER) <= set(OUTBOUND_EVENTS), (
        f"listed but not outbound events of the bot: "
        f"{sorted(set(OUTBOUND_NO_MEMBER) - set(OUTBOUND_EVENTS))}")


async def test_every_event_of_a_conversation_type_checks_against_cvi_ui(harness, tmp_path):
    """One conversation covering every outbound event type: a spoken turn (user speaking
    events, streaming, captions, the wake phrase), a local and a client tool call, text and
    audio echo, an interrupt, the context and sensitivity messages, a rejected message, and
    perception (camera frames of a real photo: utterances with their analyses, a perception
    tool call with its frames, the end-of-call analysis when the conversation ends)."""
    _require(contract.cvi_ui_missing())
    from tests.speech import write_question_wav

    wav = write_question_wav(tmp_path / "q.wav", "What is the capital of France?",
                             lead_secs=1.0, tail_secs=0.5)
    manual = tmp_path / "manual.md"  # a document, for conversation.rag.observability
    manual.write_text("The Zephyr blender carries a warranty of thirty seven months.")
    from knowledge.documents import create_document, process
    from knowledge.fetch import AddressPolicy
    from knowledge.store import KnowledgeStore

    store = KnowledgeStore(tmp_path / "data")
    document = create_document(store, {"document_url": str(manual)})
    await process(store, document["document_id"], policy=AddressPolicy(), notify=lambda d: None)
    h = await harness.start(
        answers=["Paris."], audio_in=wav,
        persona={"persona_name": "Ava", "system_prompt": "You are Ava.",
                 "document_ids": [document["document_id"]], "layers": {
            "llm": {"tools": [TIME_TOOL, CURES_TOOL]},
            "conversational_flow": {"wake_phrase": "capital"},
            "perception": PERCEPTION}},
        conversation={"properties": {"enable_closed_captions": True}}, env=PERCEPTION_ENV,
        policies=Policies(objectives=[Objective(
            objective_name="get_name", objective_prompt="Ask for their name.",
            output_variables=["name"], confirmation_mode="manual")], guardrails=[Guardrail(
                guardrail_name="no_doses", guardrail_prompt="Never give medicine doses.")]))

    def guard(body):  # the guardrail's verdicts: only the dose question breaks it
        if (body.get("response_format") or {}).get("json_schema", {}).get("name") != "guardrail_verdict":
            return None
        violated = "dose" in body["messages"][-1]["content"]
        return json.dumps({"violated": violated, "guardrail": "no_doses" if violated else "",
                           "reason": "a dose" if violated else ""})

    h.fake.route = guard
    await h.transport.client_connected({"id": "cvi-ui-app"})  # the app joined the room
    cid = h.built.conversation_id

    async def send(event_type: str, properties: dict | None = None) -> None:
        """As cvi-ui's useSendAppMessage sends it (message_type, conversation_id)."""
        message = {"message_type": "conversation", "event_type": event_type,
                   "conversation_id": cid}
        if properties is not None:
            message["properties"] = properties
        await h.transport.receive_message(message, "cvi-ui-app")

    await spoken(h, 0)  # the spoken question, answered: it had the wake phrase

    # The camera: one person (the user utterances from here on carry user_visual_analysis),
    # then two side by side, which fires the visual tool: conversation.perception_tool_call.
    one = photo()
    await show(h, one)
    await show(h, np.concatenate([one, one], axis=1), count=8,
               until=lambda: h.of("conversation.perception_tool_call"))
    await h.wait_for("conversation.perception_tool_call")

    stops = replica_stops(h)
    script(h, [ToolCall("get_current_time", {"location": "Tokyo"}, id="call_t1")],
           "It is evening in Tokyo.")
    await send("conversation.respond", {"text": "What time is it in Tokyo?"})
    await spoken(h, stops)

    stops = replica_stops(h)
    script(h, [ToolCall("get_cures", {"disease": "flu"}, id="call_c1")], "Rest and fluids.")
    await send("conversation.respond", {"text": "What cures the flu?"})
    await h.wait_for("conversation.tool_call",
                     where=lambda e: e["properties"]["tool_call_id"] == "call_c1")
    await send("conversation.tool_result", {"tool_call_id": "call_c1",
                                            "output": "Rest and fluids.", "status": "success"})
    await spoken(h, stops)

    stops = replica_stops(h)
    script(h, "The warranty lasts thirty seven months.")
    await send("conversation.respond", {"text": "How long is the blender's warranty?"})
    await h.wait_for("conversation.rag.observability")
    await spoken(h, stops)
    stops = replica_stops(h)
    await send("conversation.echo", {"modality": "text", "text": "Echo this sentence."})
    await spoken(h, stops)
    stops = replica_stops(h)
    tone = (np.sin(np.arange(7200) * 2 * np.pi * 440 / 24000) * 8000).astype(np.int16)
    await send("conversation.echo", {"modality": "audio", "sample_rate": 24000,
                                     "audio": base64.b64encode(tone.tobytes()).decode(),
                                     "inference_id": "echo-audio-1", "done": True})
    await spoken(h, stops)

    stops = replica_stops(h)
    script(h, LONG_REPLY)
    await send("conversation.respond", {"text": "Talk to me."})
    await h.wait_for("conversation.replica.started_speaking", count=stops + 1)
    await h.wait_for("conversation.utterance.streaming", count=2,
                     where=lambda e: e["properties"]["role"] == "replica"
                     and e["properties"]["speech"].startswith("This is a long"))
    await send("conversation.interrupt")
    await h.wait_for("conversation.replica_interrupted")
    await spoken(h, stops)

    await send("conversation.append_llm_context", {"context": "The user likes tea."})
    await send("conversation.overwrite_llm_context", {"context": "The user is Carol."})
    await send("conversation.sensitivity", {"participant_pause_sensitivity": "high",
                                            "participant_interrupt_sensitivity": "low"})
    stops = replica_stops(h)
    script(h, [ToolCall("complete_objective", {"name": "Carol"}, id="call_o1")], "Please confirm.")
    await send("conversation.respond", {"text": "I am Carol."})
    await h.wait_for("conversation.objective.pending")
    await spoken(h, stops)
    await send("conversation.objective.confirm", {"objective_name": "get_name",
                                                  "output_variables": {"name": "Carol"}})
    await h.wait_for("conversation.objective.completed")
    stops = replica_stops(h)
    script(h, "Take two pills.")
    await send("conversation.respond", {"text": "What dose should I take?"})
    await h.wait_for("conversation.guardrail_triggered")
    await spoken(h, stops)
    await send("conversation.dance", {"moves": 3})
    await h.wait_for("system.error",
                     where=lambda e: e["properties"].get("received_event_type") == "conversation.dance")
    await asyncio.sleep(0.3)
    # The conversation ends gracefully: the end-of-call conversation.perception_analysis.
    await h.session.lifecycle.end("end_conversation_endpoint_hit")
    await h.wait_for("conversation.perception_analysis", timeout=30)
    await asyncio.wait_for(asyncio.shield(h.session.task), 30)
    outbound = list(h.events)
    inbound = inbound_sent(h)

    # The run covers every outbound event type the bot has (a new one needs a scenario here).
    emitted = {e["event_type"] for e in outbound}
    assert set(OUTBOUND_EVENTS) <= emitted, (
        f"not covered by this conversation: {sorted(set(OUTBOUND_EVENTS) - emitted)}")
    errors = [e["properties"] for e in h.of("system.error")]
    assert [e.get("received_event_type") for e in errors] == ["conversation.dance"], errors
    # Perception's fields are in what tsc checks below: a user utterance with its analysis
    # (a property newer than cvi-ui 0.0.1's AppMessageUtterance, which types role, speech and
    # visual_context only; Raven-1 sends it, and tsc accepts it, as it accepts the envelope's
    # seq and timestamp: the checks assign a value, not a fresh literal, so TypeScript's
    # structural typing allows the extra properties), the tool call's frames, the analysis.
    users = [e["properties"] for e in h.of("conversation.utterance")
             if e["properties"]["role"] == "user"]
    assert any(u.get("user_visual_analysis") for u in users), users
    call = h.of("conversation.perception_tool_call")[0]["properties"]
    assert call["name"] == "notify_second_person" and call["arguments"] == {"people": 2}, call
    assert call["frames"] and base64.b64decode(call["frames"][-1])[:2] == b"\xff\xd8"  # JPEG
    assert len(h.of("conversation.perception_analysis")) == 1

    checks = (contract.message_checks(outbound, direction="outbound", no_member=OUTBOUND_NO_MEMBER)
              + contract.message_checks(inbound, direction="inbound", no_member=INBOUND_NO_MEMBER)
              + contract.absence_checks(OUTBOUND_NO_MEMBER, direction="outbound")
              + contract.absence_checks(INBOUND_NO_MEMBER, direction="inbound"))
    result = contract.typecheck(checks, tmp_path / "tsc")
    assert result.ok, result.report()


# --------------------------------------------------------------------------- 2. tavus-cli


@pytest.fixture
def tavus_cli():
    """tavus-cli's ``tavus_mcp.sdk.daily_transport``, from its wheel."""
    wheel = contract.tavus_cli_wheel()
    _require(None if wheel else f"the tavus-cli {contract.TAVUS_CLI_VERSION} wheel is not "
             f"downloaded (TAVUS_CLI_WHEEL; scripts/test.sh fetches it)")
    return contract.load_tavus_cli(wheel)


ROOM_URL = "https://example.daily.co/contract-room"


def new_session(h: Harness, module, monkeypatch) -> tuple[object, contract.FakeDaily]:
    """tavus-cli's session for the bot's conversation, on a fake daily bridged to it."""
    fake = contract.FakeDaily(h, asyncio.get_running_loop())
    monkeypatch.setattr(module, "_load_daily", fake.load)
    return module.DailyConversationSession(h.built.conversation_id, ROOM_URL), fake


async def join(session, module) -> None:
    """Join the room the way ``connect()`` does, without its wait for the replica to announce
    itself (that wait is tested on its own, by test_tavus_cli_connects_...)."""

    def joined() -> None:
        call_client_cls, daily, event_handler_cls = module._load_daily()
        module._ensure_daily_initialized(daily)
        session._handler = module._make_queue_handler(event_handler_cls)
        session._client = call_client_cls(event_handler=session._handler)
        session._client.join(session.conversation_url)

    await asyncio.to_thread(joined)


GREETING = "Hi, I am Ava."


async def greeted(h: Harness) -> None:
    """The custom greeting was spoken when the client joined (before its first turn)."""
    await h.wait_for("conversation.utterance.streaming", timeout=30,
                     where=lambda e: e["properties"]["role"] == "replica"
                     and e["properties"]["speech"] == GREETING and e["properties"]["final"])
    await h.wait_for("conversation.replica.stopped_speaking")


async def test_tavus_cli_connects_when_the_bot_announces_itself(harness, tavus_cli, monkeypatch):
    """connect() returns on the bot's system.replica_joined / system.replica_present (the fake
    daily never reports the bot as a joining participant: it was in the room first)."""
    h = await harness.start(answers=["Hello."])
    session, fake = new_session(h, tavus_cli, monkeypatch)
    try:
        try:
            await asyncio.wait_for(session.connect(startup_timeout_s=10), 20)
        except tavus_cli.TavusError as exc:
            raise AssertionError(
                f"tavus-cli's connect() gave up: {exc}; the bot sent it "
                f"{[m['event_type'] for m in fake.clients[0].delivered if 'event_type' in m]}"
            ) from None
        client = fake.clients[0]
        assert client.joined_url == ROOM_URL
        ready = [m for m in client.delivered
                 if m.get("event_type") in ("system.replica_joined", "system.replica_present")]
        assert ready, client.delivered
        assert ready[0]["conversation_id"] == h.built.conversation_id
    finally:
        await session.close()


async def test_tavus_cli_connect_then_send_text_at_once(harness, tavus_cli, monkeypatch):
    """``tavus chat send``'s order: connect() returns on the join's replica_present and the
    question goes out at once, while the custom greeting is still to be spoken. Both
    utterances come, each with its own inference id (the reply's is the question's)."""
    h = await harness.start(answers=["Not much."], conversation={"custom_greeting": GREETING})
    session, _ = new_session(h, tavus_cli, monkeypatch)
    try:
        await asyncio.wait_for(session.connect(startup_timeout_s=10), 20)
        await session.send_text("What's up?")
        await h.wait_for("conversation.utterance", timeout=30, where=lambda e: (
            e["properties"]["role"] == "replica" and e["properties"]["speech"] == "Not much."))
        await h.wait_for("conversation.utterance", timeout=30, where=lambda e: (
            e["properties"]["role"] == "replica" and e["properties"]["speech"] == GREETING))
    finally:
        await session.close()
    utterances = {(e["properties"]["role"], e["properties"]["speech"]): e.get("inference_id")
                  for e in h.of("conversation.utterance")}
    question = utterances[("user", "What's up?")]
    assert utterances[("replica", "Not much.")] == question
    assert utterances[("replica", GREETING)] not in (None, question)


async def test_tavus_cli_collects_the_custom_greeting(harness, tavus_cli, monkeypatch):
    """The replica's opening words (the conversation's custom_greeting, spoken when the client
    joins) are a replica turn to tavus-cli's collect_turn: a conversation.utterance, as
    every reply is (a cvi-ui app's transcript shows the same event)."""
    h = await harness.start(answers=["Unused."], conversation={"custom_greeting": GREETING})
    session, _ = new_session(h, tavus_cli, monkeypatch)
    try:
        await join(session, tavus_cli)
        turn = await asyncio.wait_for(session.collect_turn(timeout_s=15), 25)
    finally:
        await session.close()
    assert turn == {"text": GREETING, "tool_calls": []}


async def test_tavus_cli_send_text_gets_the_replicas_reply(harness, tavus_cli, monkeypatch):
    h = await harness.start(answers=["Paris is the capital of France."],
                            conversation={"custom_greeting": GREETING})
    session, fake = new_session(h, tavus_cli, monkeypatch)
    try:
        await join(session, tavus_cli)
        await greeted(h)
        await session.send_text("What is the capital of France?")
        turn = await asyncio.wait_for(session.collect_turn(timeout_s=30), 40)
    finally:
        await session.close()
    assert turn == {"text": "Paris is the capital of France.", "tool_calls": []}
    client = fake.clients[0]
    message, sender = h.transport.received_messages[-1]
    assert message == client.sent[-1] and sender == client.participant_id
    assert message["event_type"] == "conversation.respond"
    asked = [m for m in h.fake.requests[-1]["messages"] if m["role"] == "user"][-1]
    assert asked["content"] == "What is the capital of France?"
    assert not h.of("system.error"), h.of("system.error")


async def test_tavus_cli_client_tool_call_and_result(harness, tavus_cli, monkeypatch):
    h = await harness.start(
        answers=[[ToolCall("get_cures", {"disease": "flu"}, id="call_c1")],
                 "Rest, fluids and sleep."],
        persona={"persona_name": "Ava", "system_prompt": "You are a doctor.",
                 "layers": {"llm": {"tools": [CURES_TOOL]}}},
        conversation={"custom_greeting": GREETING})
    session, _ = new_session(h, tavus_cli, monkeypatch)
    result = {"cures": ["rest", "fluids", "sleep"]}
    try:
        await join(session, tavus_cli)
        await greeted(h)
        await session.send_text("What cures the flu?")
        turn = await asyncio.wait_for(session.collect_turn(timeout_s=30), 40)
        assert turn["tool_calls"] == [{"name": "get_cures", "arguments": '{"disease": "flu"}',
                                       "tool_call_id": "call_c1"}], turn
        assert h.built.tools.pending == ["call_c1"]
        await session.send_tool_result("call_c1", "get_cures", result)
        answer = await asyncio.wait_for(session.collect_turn(timeout_s=30), 40)
    finally:
        await session.close()
    assert answer == {"text": "Rest, fluids and sleep.", "tool_calls": []}
    assert h.built.tools.pending == []
    assert not h.of("system.error"), h.of("system.error")
    tool_messages = [m for m in h.fake.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_c1"]
    # tavus-cli sends the output as a JSON string; Tavus documents conversation.tool_result's
    # output as "string | object. Strings are passed through; objects are JSON-serialized":
    # the LLM gets tavus-cli's string as it is, not JSON-encoded once more.
    assert tool_messages[0]["content"] == json.dumps(result), tool_messages[0]["content"]


async def test_tavus_cli_interrupt_stops_the_replica(harness, tavus_cli, monkeypatch):
    h = await harness.start(answers=[LONG_REPLY], conversation={"custom_greeting": GREETING})
    session, fake = new_session(h, tavus_cli, monkeypatch)
    try:
        await join(session, tavus_cli)
        await greeted(h)
        stops = replica_stops(h)
        await session.send_text("Talk to me.")
        await h.wait_for("conversation.replica.started_speaking", count=stops + 1)
        await h.wait_for("conversation.utterance.streaming", count=2,
                         where=lambda e: e["properties"]["role"] == "replica"
                         and e["properties"]["speech"].startswith("This is a long"))
        # As tavus-cli shapes every message (it always adds properties).
        await asyncio.to_thread(session._send_sync, "conversation.interrupt", {})
        stopped = (await h.wait_for("conversation.replica.stopped_speaking", count=stops + 1,
                                    timeout=15))[-1]
    finally:
        await session.close()
    sent = fake.clients[0].sent[-1]
    assert sent["event_type"] == "conversation.interrupt" and sent["properties"] == {}
    assert not h.of("system.error"), h.of("system.error")
    assert stopped["properties"]["interrupted"] is True, stopped
    said = h.built.transcript.entries[-1]
    assert said.role == "assistant" and said.interrupted and len(said.content) < len(LONG_REPLY)
