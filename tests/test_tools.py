"""Tool registry, built-in handlers and dispatch: local, client handoff, schema, errors, timeouts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from config import persona_from_dict
from pipeline.tool_dispatch import ToolDispatcher
from tests.conftest import PERSONAS
from tests.fake_openai import ToolCall
from tests.harness import Harness
from tools import ToolError, ToolRegistry, build_registry
from tools.builtin import convert_time_zone, get_current_time, resolve_zone


def tool(name, properties=None, required=None):
    return {"type": "function", "function": {"name": name, "description": name, "parameters": {
        "type": "object", "properties": properties or {}, "required": required or []}}}


def dispatcher(tools, registry, tmp_path, **kw):
    persona = persona_from_dict({"system_prompt": "x", "layers": {"llm": {"tools": tools}}}).value
    return ToolDispatcher(persona.layers.llm.tools, registry, conversation_id="c1",
                          data_dir=tmp_path, **kw)


# --------------------------------------------------------------------------- registry


def test_registry_decorator_and_errors():
    registry = ToolRegistry()

    @registry.tool("echo_back", timeout_secs=2)
    async def echo_back(text: str) -> str:
        return text

    assert registry.get("echo_back").timeout_secs == 2
    assert registry.get("missing") is None
    with pytest.raises(ValueError, match="already registered"):
        registry.add("echo_back", echo_back)
    with pytest.raises(TypeError, match="async"):
        registry.add("sync_one", lambda: 1)


def test_build_registry_has_the_builtins():
    assert set(build_registry().names()) >= {
        "get_current_time", "convert_time_zone", "get_current_weather", "resolve_customer_issue"}


# --------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name,zone", [
    ("Tokyo", "Asia/Tokyo"), ("new york", "America/New_York"), ("New York, NY", "America/New_York"),
    ("PST", "America/Los_Angeles"), ("Europe/Paris", "Europe/Paris"), ("Mumbai", "Asia/Kolkata"),
    ("san francisco", "America/Los_Angeles"), ("CET", "Europe/Paris"), ("Sao Paulo", "America/Sao_Paulo"),
])
def test_resolve_zone(name, zone):
    assert resolve_zone(name)[0] == zone


def test_utc_offsets_and_unknown_places():
    label, tz = resolve_zone("UTC+5:30")
    assert datetime(2026, 1, 1, tzinfo=tz).utcoffset().total_seconds() == 5.5 * 3600
    with pytest.raises(ToolError, match="unknown location"):
        resolve_zone("Atlantis")


async def test_get_current_time_matches_the_clock():
    result = await get_current_time("Tokyo")
    now = datetime.now(resolve_zone("Tokyo")[1])
    assert result["time_zone"] == "Asia/Tokyo" and result["utc_offset"] == "+09:00"
    assert result["date"] in (now.strftime("%Y-%m-%d"),)
    assert abs(int(result["local_time"][:2]) * 60 + int(result["local_time"][3:])
               - (now.hour * 60 + now.minute)) <= 1


async def test_convert_time_zone_with_real_offsets():
    result = await convert_time_zone("2026-07-01T14:00", "PST", "CET")  # summer: -7 -> +2
    assert result["to"]["local_time"] == "23:00" and result["to"]["utc_offset"] == "+02:00"
    winter = await convert_time_zone("2026-01-15T09:30", "Asia/Kolkata", "UTC")
    assert winter["to"]["local_time"] == "04:00"
    pm = await convert_time_zone("2:30 PM", "UTC", "Asia/Tokyo")
    assert pm["to"]["local_time"] == "23:30"
    with pytest.raises(ToolError, match="cannot read the time"):
        await convert_time_zone("25:99", "UTC", "CET")


async def test_weather_default_says_it_is_offline():
    registry = build_registry()
    result = await registry.get("get_current_weather").call({"location": "Paris"}, None)
    assert result["available"] is False and "offline" in result["message"]


async def test_weather_provider_is_pluggable():
    class Sunny:
        async def current(self, location, unit):
            return {"location": location, "temperature": 21, "unit": unit, "conditions": "sunny"}

    registry = build_registry(weather=Sunny())
    result = await registry.get("get_current_weather").call(
        {"location": "Paris", "unit": "celsius"}, None)
    assert result["conditions"] == "sunny"


async def test_ticket_is_recorded_durably(tmp_path):
    d = dispatcher([tool("resolve_customer_issue",
                         {"product": {"type": "string"}, "issue_description": {"type": "string"},
                          "urgency": {"type": "string", "enum": ["low", "medium", "high"]}},
                         ["product", "issue_description", "urgency"])], build_registry(), tmp_path)
    result = await d.run("resolve_customer_issue", "call_9", {
        "product": "Router", "issue_description": "No internet", "urgency": "high"})
    assert result["status"] == "recorded"
    lines = (tmp_path / "tickets.jsonl").read_text().splitlines()
    ticket = json.loads(lines[0])
    assert ticket["ticket_id"] == result["ticket_id"] and ticket["tool_call_id"] == "call_9"
    assert ticket["conversation_id"] == "c1" and ticket["urgency"] == "high"


# --------------------------------------------------------------------------- dispatch


async def test_schema_violation_is_an_error_result_and_no_handler_runs(tmp_path):
    ran = []
    registry = ToolRegistry()

    @registry.tool("book")
    async def book(seats: int) -> dict:
        ran.append(seats)
        return {"booked": seats}

    d = dispatcher([tool("book", {"seats": {"type": "integer", "minimum": 1}}, ["seats"])],
                   registry, tmp_path)
    assert (await d.run("book", "c", {"seats": 0}))["error"].startswith("invalid arguments: seats")
    assert "required" in (await d.run("book", "c", {}))["error"]
    assert (await d.run("book", "c", {"seats": "two"}))["error"].startswith("invalid arguments")
    assert ran == []
    assert await d.run("book", "c", {"seats": 2}) == {"booked": 2}


async def test_handler_exception_and_timeout_become_error_results(tmp_path):
    registry = ToolRegistry()

    @registry.tool("explode")
    async def explode() -> None:
        raise RuntimeError("boom with details")

    @registry.tool("slow", timeout_secs=0.2)
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    @registry.tool("refuse")
    async def refuse() -> None:
        raise ToolError("not allowed today")

    d = dispatcher([tool("explode"), tool("slow"), tool("refuse")], registry, tmp_path)
    assert await d.run("explode", "c", {}) == {"error": "the tool failed (RuntimeError)"}
    assert await d.run("slow", "c", {}) == {"error": "the tool did not finish within 0.2 seconds"}
    assert await d.run("refuse", "c", {}) == {"error": "not allowed today"}
    assert await d.run("undeclared", "c", {}) == {"error": "there is no tool named 'undeclared'"}


async def test_client_handoff_result_error_and_timeout(tmp_path):
    d = dispatcher([tool("get_cures", {"disease": {"type": "string"}}, ["disease"])],
                   ToolRegistry(), tmp_path, client_timeout_secs=0.5)
    assert d.client_tools == ["get_cures"] and d.local_tools == []
    task = asyncio.create_task(d.run("get_cures", "call_1", {"disease": "flu"}))
    await asyncio.sleep(0.05)
    assert d.pending == ["call_1"]
    assert d.resolve("call_1", {"cure": "rest"}) is True
    assert await task == {"cure": "rest"}
    assert d.resolve("call_1", "again") is False  # nothing pending any more
    task = asyncio.create_task(d.run("get_cures", "call_2", {"disease": "flu"}))
    await asyncio.sleep(0.05)
    d.resolve("call_2", "lookup failed", "error")
    assert await task == {"error": "lookup failed"}
    assert await d.run("get_cures", "call_3", {"disease": "flu"}) == {
        "error": "the client did not return a result within 0.5 seconds"}
    assert d.pending == []


async def test_a_client_result_after_the_timeout_is_taken_once(tmp_path):
    d = dispatcher([tool("book", {"slot": {"type": "string"}}, ["slot"])],
                   ToolRegistry(), tmp_path, client_timeout_secs=0.2)
    assert await d.run("book", "call_1", {"slot": "9am"}) == {
        "error": "the client did not return a result within 0.2 seconds"}
    assert d.resolve("call_1", "booked") is False  # nothing is pending any more
    note = d.late_result("call_1", {"booked": "9am"})
    assert note["role"] == "developer"
    assert "book tool call (call_1)" in note["content"] and '{"booked": "9am"}' in note["content"]
    assert d.late_result("call_1", "again") is None  # taken once
    assert d.late_result("call_never", "x") is None
    await d.run("book", "call_2", {"slot": "10am"})
    failed = d.late_result("call_2", "slot gone", "error")
    assert "has now failed: slot gone" in failed["content"]


# --------------------------------------------------------------------------- interruptions


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


async def test_interrupted_reply_does_not_run_side_effects_late(harness, tmp_path):
    registry = ToolRegistry()
    marker = tmp_path / "side-effect.txt"
    started = asyncio.Event()

    @registry.tool("send_email")
    async def send_email(to: str) -> dict:
        started.set()
        await asyncio.sleep(2.0)  # the user interrupts meanwhile
        marker.write_text(to)  # committed only at the end
        return {"sent": True}

    await harness.start(
        answers=[[ToolCall("send_email", {"to": "bob@example.com"}, id="call_e")], "Done.", "Ok."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            tool("send_email", {"to": {"type": "string"}}, ["to"])]}}},
        registry=registry,
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Email Bob"}})
    await asyncio.wait_for(started.wait(), 20)
    await harness.send({"event_type": "conversation.interrupt"})
    await asyncio.sleep(3.0)
    assert not marker.exists(), "the cancelled tool still ran its side effect"


async def test_client_result_after_an_interruption_is_not_lost(harness):
    await harness.start(
        answers=[[ToolCall("get_cures", {"disease": "flu"}, id="call_k")], "Hold on.",
                 "Rest and fluids.", "Ok."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            tool("get_cures", {"disease": {"type": "string"}}, ["disease"])]}}},
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Flu?"}})
    await harness.wait_for("conversation.tool_call")
    await harness.send({"event_type": "conversation.interrupt"})  # e.g. the user starts talking
    await asyncio.sleep(0.3)
    await harness.send({"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_k", "output": "Rest and fluids."}})
    for _ in range(100):
        if any("Rest and fluids." in str(m.get("content"))
               for r in harness.fake.requests for m in r["messages"]):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"late client result lost: {harness.fake.requests}")
    assert not harness.of("system.error")


async def test_a_late_client_result_is_added_to_the_context_not_rejected(harness):
    """tavus-cli's carrier builder sends results that "usually land after CVI synthesized
    one": the result is kept for the next reply, and the client gets no error."""
    await harness.start(
        answers=[[ToolCall("book", {"slot": "9am"}, id="call_late")], "Let me check.",
                 "You are booked at nine."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            tool("book", {"slot": {"type": "string"}}, ["slot"])]}}},
        env={"CLIENT_TOOL_TIMEOUT_SECS": "0.3"},
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Book 9am"}})
    await harness.wait_for("conversation.tool_call")
    await harness.wait_for("conversation.utterance", where=lambda e: e["properties"]["role"]
                           == "replica" and e["properties"]["speech"] == "Let me check.")
    await harness.send({"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_late", "name": "book", "output": json.dumps({"booked": "9am"}),
        "status": "success"}})  # tavus-cli's shape: output as a JSON string, and its name
    await harness.wait_for("conversation.replica.stopped_speaking")  # "Let me check." is said
    assert not harness.of("system.error")
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Well?"}})
    await harness.wait_for("conversation.utterance", where=lambda e: e["properties"]["speech"]
                           == "You are booked at nine.")
    last = harness.fake.requests[-1]["messages"]
    # A note in the context (Pipecat's OpenAI adapter sends our developer role as "user");
    # nothing else is lost: the call's own answer and the reply given without the result stay.
    notes = [m for m in last if "call_late" in str(m.get("content"))]
    assert len(notes) == 1 and '{"booked": "9am"}' in notes[0]["content"]
    assert "Let me check." in [m.get("content") for m in last if m["role"] == "assistant"]
    assert any(m["role"] == "tool" and "did not return a result" in m["content"] for m in last)
    # A second result for the same call is an error again (it was taken once).
    await harness.send({"event_type": "conversation.tool_result", "properties": {
        "tool_call_id": "call_late", "output": "again"}})
    errors = await harness.wait_for("system.error")
    assert "no pending tool call" in errors[0]["properties"]["error"]


@pytest.mark.parametrize("setting, announced", [
    (None, ["conversation.local_tool_call"]),
    ("tool_call", ["conversation.tool_call"]),
    ("none", []),
])
async def test_how_a_local_tool_call_is_announced(harness, setting, announced):
    conversation = {"properties": {"local_tool_call_events": setting}} if setting else None
    await harness.start(
        answers=[[ToolCall("get_current_time", {"location": "Tokyo"}, id="call_l")], "Late."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            tool("get_current_time", {"location": {"type": "string"}}, ["location"])]}}},
        conversation=conversation,
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Time?"}})
    await harness.wait_for("conversation.utterance", where=lambda e: e["properties"]["speech"]
                           == "Late.")
    calls = [e for e in harness.events
             if e["event_type"] in ("conversation.tool_call", "conversation.local_tool_call")]
    assert [e["event_type"] for e in calls] == announced
    for e in calls:
        assert e["properties"]["tool_call_id"] == "call_l" and e["inference_id"]


def test_the_persona_sets_local_tool_call_events_and_the_conversation_overrides_it():
    from config import conversation_from_dict
    from config.options import ConversationOptions

    persona = persona_from_dict({"system_prompt": "x", "layers": {"llm": {
        "local_tool_call_events": "none"}}}).value
    assert ConversationOptions.resolve(persona).local_tool_call_events == "none"
    conv = conversation_from_dict({"properties": {"local_tool_call_events": "tool_call"}}).value
    assert ConversationOptions.resolve(persona, conv).local_tool_call_events == "tool_call"
    plain = persona_from_dict({"system_prompt": "x"}).value
    assert ConversationOptions.resolve(plain).local_tool_call_events == "local"
    from config.errors import ConfigError

    with pytest.raises(ConfigError, match="local_tool_call_events"):
        persona_from_dict({"system_prompt": "x", "layers": {"llm": {
            "local_tool_call_events": "always"}}})


# --------------------------------------------------------------------------- the tools persona

TOOLS_PERSONA = PERSONAS / "time_zone_helper.json"


async def test_the_tools_persona_answers_the_time_from_the_builtin_handler(harness):
    """personas/time_zone_helper.json, as the README shows it: the LLM calls
    get_current_time, the built-in handler answers, and that answer goes back."""
    persona = json.loads(TOOLS_PERSONA.read_text())
    declared = [t["function"]["name"] for t in persona["layers"]["llm"]["tools"]]
    assert all(build_registry().get(name) is not None for name in declared)  # all local
    await harness.start(
        answers=[[ToolCall("get_current_time", {"location": "Tokyo"}, id="call_t")],
                 "It is evening in Tokyo.", "Ok."],
        persona=persona)
    await harness.send({"event_type": "conversation.respond",
                        "properties": {"text": "What time is it in Tokyo?"}})
    for _ in range(200):
        results = [m for r in harness.fake.requests for m in r["messages"]
                   if m.get("role") == "tool" and m.get("tool_call_id") == "call_t"]
        if results:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no tool result reached the LLM: {harness.fake.requests}")
    result = json.loads(results[0]["content"])
    assert result["time_zone"] == "Asia/Tokyo"
    now = datetime.now(ZoneInfo("Asia/Tokyo"))
    assert result["local_time"] in {now.strftime("%H:%M"),
                                    (now - timedelta(minutes=1)).strftime("%H:%M")}
    assert set(harness.fake.requests[0]["tools"][0]["function"]) >= {"name", "parameters"}


def test_the_embedded_llm_is_not_offered_tools(tmp_path, monkeypatch):
    """The bundled 135M model cannot call functions: no tools in its context, a warning."""
    from loguru import logger

    import services.llm as llm_module
    from config import Settings
    from config.app import AppConfig
    from services import Services
    from services.selection import EngineChoice
    from session.builder import build_pipeline

    class Server:  # the llama.cpp child process is not needed to build the service
        base_url = "http://127.0.0.1:9/v1"

    monkeypatch.setattr(llm_module, "local_llm_server", lambda settings: Server())
    persona = persona_from_dict(json.loads(TOOLS_PERSONA.read_text())).value
    settings = Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path)})
    choice = EngineChoice(layer="llm", engine="llama-local", reason="test")
    llm = llm_module.build_llm(choice, persona, settings)
    assert llm.calls_tools is False
    own = Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path), "LOCAL_LLM_GGUF": __file__})
    assert llm_module.build_llm(choice, persona, own).calls_tools is True  # the user's model
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        from types import SimpleNamespace

        plan = SimpleNamespace(llm=choice, tts=SimpleNamespace(engine="piper"))
        built = build_pipeline(AppConfig.of(persona, None, settings), None,
                               Services(plan=plan, llm=llm))
    finally:
        logger.remove(sink)
    assert built.tools.tools_schema() is None  # nothing offered
    assert any("cannot call tools" in w and "get_current_time" in w for w in warnings)


async def test_calls_the_bot_answers_itself_are_never_announced_for_the_client(harness):
    """An undeclared tool and arguments against the schema are answered by the bot with an
    error: a Tavus client (which executes every conversation.tool_call) must not run them."""
    await harness.start(
        answers=[[ToolCall("delete_account", {}, id="call_u"),
                  ToolCall("get_cures", {"disease": 7}, id="call_bad")],
                 "I cannot do that.", "Ok."],
        persona={"system_prompt": "x", "layers": {"llm": {"tools": [
            tool("get_cures", {"disease": {"type": "string"}}, ["disease"])]}}},
    )
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Do it"}})
    await harness.wait_for("conversation.replica.stopped_speaking")
    assert not harness.of("conversation.tool_call")
    local = {e["properties"]["tool_call_id"] for e in harness.of("conversation.local_tool_call")}
    assert local == {"call_u", "call_bad"}
    assert harness.built.tools.pending == []


async def test_a_client_result_sent_the_moment_the_call_is_announced_is_taken(tmp_path):
    events: list = []
    d = None

    async def announce(name, arguments, call_id, local):
        events.append((name, call_id, local))
        assert d.resolve(call_id, {"cure": "rest"}) is True  # the client answers at once

    d = dispatcher([tool("get_cures", {"disease": {"type": "string"}}, ["disease"])],
                   ToolRegistry(), tmp_path, announce=announce, client_timeout_secs=5)

    class Params:
        function_name, tool_call_id = "get_cures", "call_now"

        def __init__(self):
            self.arguments = {"disease": "flu"}
            self.results: list = []

        async def result_callback(self, result):
            self.results.append(result)

    params = Params()
    await d._handle(params)
    assert events == [("get_cures", "call_now", False)]
    assert params.results == [{"cure": "rest"}] and d.pending == []
