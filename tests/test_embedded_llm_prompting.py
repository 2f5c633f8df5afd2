"""What the embedded model receives: speech sampling defaults, developer messages as system notes,
the greeting, and the default persona's prompt."""

from __future__ import annotations

import copy

import pytest

from config import Settings, conversation_from_dict, persona_from_dict
from config.app import AppConfig
from config.prompt import system_prompt_for
from services import llm as llm_factory
from services.llm import LOCAL_SAMPLING, local_sampling, system_notes
from session.builder import GREETING_INSTRUCTION
from tests.conftest import PERSONAS
from tests.fake_openai import FakeOpenAI

BASE = {"persona_name": "Ava", "system_prompt": "You are Ava."}


def persona(**llm):
    data = copy.deepcopy(BASE)
    if llm:
        data["layers"] = {"llm": llm}
    return persona_from_dict(data).value


class _Server:
    def __init__(self, base_url: str):
        self.base_url = base_url


@pytest.fixture
async def fake(monkeypatch):
    """The local engine's factory, pointed at a loopback OpenAI-compatible server instead of llama.cpp."""
    server = await FakeOpenAI(answers=["Hello! How can I help?"]).start()
    monkeypatch.setattr(llm_factory, "local_llm_server", lambda settings: _Server(server.base_url))
    monkeypatch.setattr(llm_factory, "NO_KEY", "test-key")
    yield server
    await server.stop()


def local_service(p, env=None, system="You are Ava."):
    from services.selection import EngineChoice

    return llm_factory.build_llm(EngineChoice(layer="llm", engine="llama-local", reason="test"), p, Settings.from_env(env or {}),
                                 system)


async def one_request(service, messages):
    from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.tests.utils import run_test

    context = LLMContext()
    for m in messages:
        context.add_message(m)
    down, _ = await run_test(service, frames_to_send=[LLMContextFrame(context)])
    return [f for f in down if isinstance(f, LLMFullResponseEndFrame)]


# --------------------------------------------------------------------------- sampling


async def test_local_requests_carry_the_speech_sampling_defaults(fake):
    await one_request(local_service(persona()), [{"role": "user", "content": "Hi"}])
    request = fake.requests[0]
    assert request["temperature"] == LOCAL_SAMPLING["temperature"] == 0.3
    assert request["top_p"] == 0.9
    assert request["max_tokens"] == Settings().llm_max_tokens == 60
    assert "\n\n" in request["stop"] and "<|im_start|>" in request["stop"]


async def test_persona_extra_body_overrides_every_default(fake):
    p = persona(extra_body={"temperature": 0.9, "top_p": 1.0, "stop": ["END"], "max_tokens": 200,
                            "repeat_penalty": 1.2})
    await one_request(local_service(p, {"LLM_MAX_TOKENS": "100"}), [{"role": "user", "content": "Hi"}])
    request = fake.requests[0]
    assert request["temperature"] == 0.9 and request["top_p"] == 1.0
    assert request["stop"] == ["END"]
    assert request["max_tokens"] == 200  # the persona beats LLM_MAX_TOKENS
    assert request["repeat_penalty"] == 1.2


async def test_llm_max_tokens_sets_the_cap_when_the_persona_does_not(fake):
    await one_request(local_service(persona(), {"LLM_MAX_TOKENS": "100"}),
                      [{"role": "user", "content": "Hi"}])
    assert fake.requests[0]["max_tokens"] == 100


def test_local_sampling_maps_max_completion_tokens():
    assert local_sampling({"max_completion_tokens": 64})["max_tokens"] == 64
    assert "max_completion_tokens" not in local_sampling({"max_completion_tokens": 64})
    assert local_sampling({})["stop"] == LOCAL_SAMPLING["stop"]


def test_cloud_llms_get_no_speech_defaults():
    from services.selection import EngineChoice

    svc = llm_factory.build_llm(EngineChoice(layer="llm", engine="openai", reason="test", api_key="sk-x", model="gpt-4.1-mini"),
                                persona(), Settings.from_env({}), "You are Ava.")
    given = lambda v: v is not None and type(v).__name__ != "NotGiven"
    assert not given(svc._settings.temperature) and not given(svc._settings.max_tokens)
    assert svc._settings.extra == {}
    assert svc.supports_developer_role is True


# --------------------------------------------------------------------------- finish reason


async def test_the_end_frame_says_why_the_response_ended(fake):
    ends = await one_request(local_service(persona()), [{"role": "user", "content": "Hi"}])
    assert ends[-1].metadata["finish_reason"] == "stop"


async def test_finish_reason_stream_records_the_reason():
    from types import SimpleNamespace

    from services.llm import _FinishReasonStream

    async def chunks():
        yield SimpleNamespace(choices=[SimpleNamespace(finish_reason=None)])
        yield SimpleNamespace(choices=[SimpleNamespace(finish_reason="length")])
        yield SimpleNamespace(choices=[])

    seen = []
    got = [c async for c in _FinishReasonStream(chunks(), seen.append)]
    assert len(got) == 3 and seen == ["length"]


def test_both_sides_use_the_same_metadata_key():
    from pipeline.sentence_cut import FINISH_REASON

    assert FINISH_REASON == llm_factory.FINISH_REASON


# --------------------------------------------------------------------------- developer messages


def test_a_pending_developer_message_becomes_a_system_note():
    messages = [{"role": "system", "content": "You are Ava."},
                {"role": "developer", "content": "Say hello."}]
    assert system_notes(messages) == [{"role": "system", "content": "You are Ava.\n\nSay hello."}]
    assert messages[0]["content"] == "You are Ava."  # the input is left alone


def test_an_answered_developer_message_is_left_out():
    messages = [{"role": "system", "content": "You are Ava."},
                {"role": "developer", "content": "Say hello."},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What's up?"}]
    assert system_notes(messages) == [messages[0], messages[2], messages[3]]


def test_a_developer_note_without_system_message_becomes_one():
    assert system_notes([{"role": "user", "content": "Hi"},
                         {"role": "developer", "content": "Check in."}]) == [
        {"role": "system", "content": "Check in."}, {"role": "user", "content": "Hi"}]


def test_messages_without_developer_role_are_untouched():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert system_notes(messages) is messages


async def test_the_greeting_reaches_the_embedded_model_as_a_system_note(fake):
    """What the 135M model gets for the greeting: no user turn it could answer or recite."""
    from session.builder import PersonaPipeline

    built = PersonaPipeline.__new__(PersonaPipeline)  # only greeting_frames' inputs are needed
    built.options = type("O", (), {"greet": True, "custom_greeting": None, "echo": False})()
    built.wake_gate = None
    (frame,) = built.greeting_frames()
    assert frame.run_llm and frame.messages == [{"role": "developer", "content": GREETING_INSTRUCTION}]

    svc = local_service(persona())
    await one_request(svc, frame.messages)
    assert fake.requests[0]["messages"] == [
        {"role": "system", "content": f"You are Ava.\n\n{GREETING_INSTRUCTION}"}]

    # The next turn: the greeting stays, its instruction does not.
    await one_request(svc, [*frame.messages, {"role": "assistant", "content": "Hello!"},
                            {"role": "user", "content": "Hi Ava."}])
    assert fake.requests[1]["messages"] == [
        {"role": "system", "content": "You are Ava."},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hi Ava."}]


def test_greeting_instruction_is_short_and_literal():
    assert len(GREETING_INSTRUCTION.split()) <= 16
    assert "in character" not in GREETING_INSTRUCTION  # a 135M model recites such phrases


# --------------------------------------------------------------------------- default persona


def test_default_persona_validates_with_a_short_prompt():
    app = AppConfig.load(PERSONAS / "default.json", environ={})
    assert app.persona.display_name == "Ava"
    prompt = system_prompt_for(app.persona, conversation_from_dict({}).value, "piper")
    assert prompt == app.persona.system_prompt  # no long context for a 135M model to recite
    assert len(prompt.split()) <= 40
    assert "one or two short sentences" in prompt


# --------------------------------------------------------------------------- history window


def test_recent_history_keeps_the_system_message_and_the_last_turns():
    from services.llm import recent_history

    system = {"role": "system", "content": "S"}
    turns = []
    for i in range(5):
        turns += [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
    turns.append({"role": "user", "content": "u5"})
    kept = recent_history([system, *turns], keep=4)
    # the last 4 would start at an assistant message: the window starts at the next user one
    assert kept == [system, {"role": "user", "content": "u4"},
                    {"role": "assistant", "content": "a4"}, {"role": "user", "content": "u5"}]
    short = [system, *turns[:3]]
    assert recent_history(short, keep=4) is short


def test_recent_history_keeps_a_tool_call_with_its_result():
    from services.llm import recent_history

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "u0"},
            {"role": "assistant", "content": "a0"}, {"role": "user", "content": "time?"},
            {"role": "assistant", "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "9pm"},
            {"role": "assistant", "content": "It is 9 pm."}]
    assert recent_history(msgs, keep=3) == [msgs[0], *msgs[3:]]  # back to the user message


async def test_the_embedded_model_gets_the_recent_history_only(fake):
    svc = local_service(persona())
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    await one_request(svc, [*history, {"role": "user", "content": "last"}])
    sent = fake.requests[0]["messages"]
    assert sent[0]["role"] == "system" and sent[1] == {"role": "user", "content": "q5"}
    assert len(sent) == 1 + llm_factory.LOCAL_HISTORY_MESSAGES - 1
