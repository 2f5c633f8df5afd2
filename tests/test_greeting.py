"""The greeting when the participant joins: custom_greeting verbatim, once, then the conversation."""

from __future__ import annotations

import asyncio
import time

import pytest

from config import conversation_from_dict
from config.app import AppConfig
from session.owner import ConversationSession
from tests.conftest import PERSONAS
from transports.file import FileTransport
from tests.speech import rms, write_question_wav

pytestmark = pytest.mark.e2e

GREETING = "Hello, I am Ava. How can I help?"


async def run_session(tmp_path, conversation: dict, question: str, secs: float):
    loaded = AppConfig.load(PERSONAS / "default.json", environ={"PERSONA_DATA_DIR": str(tmp_path)})
    app = AppConfig.of(loaded.persona, conversation_from_dict(conversation).value, loaded.settings)
    wav = write_question_wav(tmp_path / "q.wav", question, lead_secs=6.0, tail_secs=0.5)
    transport = FileTransport(wav)
    async with ConversationSession(app, transport="file") as session:
        built = session.build(transport)
        await session.start()
        await asyncio.sleep(0.3)
        await session.participant_joined()
        await session.participant_joined()  # a second join event must not greet twice
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            roles = [e.role for e in built.transcript.entries]
            if "user" in roles and roles[-1] == "assistant" and roles.count("assistant") >= 2:
                break
            await asyncio.sleep(0.2)
        transport.finish()
        await session.stop(timeout=20)
    return built, transport


async def test_custom_greeting_is_spoken_once_then_the_question_answered(tmp_path):
    built, transport = await run_session(
        tmp_path, {"custom_greeting": GREETING}, "What is your name?", secs=60)
    entries = built.transcript.entries
    assert entries[0].role == "assistant" and entries[0].content == GREETING
    assert [e.content for e in entries].count(GREETING) == 1
    assert built.context.get_messages()[0] == {"role": "assistant", "content": GREETING}
    assert [e.role for e in entries][1:3] == ["user", "assistant"]
    assert "name" in entries[1].content.lower()
    assert rms(bytes(transport.recorded)) > 0.01


async def test_without_custom_greeting_the_llm_greets(tmp_path):
    built, _ = await run_session(tmp_path, {}, "Hello there.", secs=60)
    first = built.transcript.entries[0]
    assert first.role == "assistant" and first.content
