"""One LLM turn through the real OpenAILLMService against a loopback OpenAI-compatible server."""

from __future__ import annotations

import pytest

from config import Settings, persona_from_dict
from config.app import AppConfig
from session.owner import ConversationSession
from tests.fake_openai import FakeOpenAI


@pytest.fixture
async def fake():
    server = await FakeOpenAI(answers=["Paris is the capital of France."]).start()
    yield server
    await server.stop()


async def test_one_turn_streams_the_scripted_answer(fake, tmp_path):
    from pipecat.frames.frames import (
        LLMContextFrame,
        LLMFullResponseEndFrame,
        LLMFullResponseStartFrame,
        LLMTextFrame,
    )
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.tests.utils import run_test

    persona = persona_from_dict({
        "system_prompt": "You are Ava.",
        "context": "You help with geography.",
        "layers": {"llm": {
            "model": "fake-model", "base_url": fake.base_url, "api_key": "test-key",
            "headers": {"X-Persona": "ava"}, "default_query": {"api-version": "2024-06-01"},
            "extra_body": {"temperature": 0.3, "repetition_penalty": 1.2},
        }},
    }).value
    app = AppConfig.of(persona, settings=Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path)}))
    async with ConversationSession(app, transport="text", stt=False, tts=False) as session:
        assert session.plan.llm.engine == "openai-compatible"
        llm = session.services.llm

        context = LLMContext()
        context.add_message({"role": "user", "content": "What is the capital of France?"})
        down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)])

        types = [type(f) for f in down]
        assert LLMFullResponseStartFrame in types and LLMFullResponseEndFrame in types
    text = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    assert text.strip() == "Paris is the capital of France."

    request = fake.requests[0]
    assert request["model"] == "fake-model" and request["stream"] is True
    assert request["temperature"] == 0.3
    assert request["repetition_penalty"] == 1.2  # extra_body travels as-is
    assert request["messages"][0] == {
        "role": "system", "content": "You are Ava.\n\nYou help with geography."}
    assert request["messages"][-1]["content"] == "What is the capital of France?"
    assert fake.headers[0]["x-persona"] == "ava"
    assert fake.queries[0] == {"api-version": "2024-06-01"}
