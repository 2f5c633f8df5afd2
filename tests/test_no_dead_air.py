"""Conversations that cannot go dead silently: the probe's cases, through the real pipeline.

- A 100,000-character ``conversation.append_llm_context`` or ``overwrite_llm_context``, or a
  10,000-character ``conversation.respond``, on the real embedded stack (the llama.cpp
  server with SmolLM2, the local LLM service, local Whisper and Piper): refused with a
  ``system.error`` naming the model's limit, and the questions after it are answered.
- The llama.cpp server's child process killed (SIGKILL) in the middle of a reply: that
  turn ends with a spoken apology and a ``system.error`` event, the server is restarted,
  and the next question is answered normally.
- An LLM that answers nothing (the loopback fake): a WARNING, a ``system.error`` event for
  the turn, a spoken apology, and the next turn is answered.

The server runs at ``n_ctx`` 1024 rather than the default 4096: the same overflow (100,000
characters are ~22,000 tokens), a quarter of the prefill on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from loguru import logger

from pipeline.reply_guard import APOLOGY
from services import llm as llm_factory
from tests.conftest import running_llama_server
from tests.harness import Harness

PERSONA = {"persona_name": "Ava",
           "system_prompt": "You are Ava, a museum guide. Answer in one short sentence."}
APPENDED = ("The museum opens at nine in the morning and closes at five in the evening. "
            "The harbour hall shows the old ships. " * 900)[:100_000]


@pytest.fixture(scope="module")
def llama():
    """A real llama.cpp server for this module's conversations."""
    with running_llama_server(n_ctx=1024) as server:
        yield server


@pytest.fixture
async def local(llama, monkeypatch, tmp_path):
    """A conversation on the embedded stack, its LLM service on ``llama``."""
    monkeypatch.setattr(llm_factory, "local_llm_server", lambda settings: llama)
    harness = Harness(tmp_path)
    yield harness
    await harness.stop()


@pytest.fixture
def log():
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])),
                      level="WARNING")
    yield lines
    logger.remove(sink)


def replica_utterances(harness: Harness) -> list[str]:
    return [e["properties"]["speech"] for e in harness.of("conversation.utterance")
            if e["properties"]["role"] == "replica"]


async def ask(harness: Harness, text: str, count: int) -> str:
    """Ask as an app does (``conversation.respond``) and wait until the replica has said its
    ``count``-th utterance, to its end (a question while it speaks would interrupt it)."""
    await harness.send({"event_type": "conversation.respond", "properties": {"text": text}})
    found = await harness.wait_for("conversation.utterance", count=count, timeout=240,
                                   where=lambda e: e["properties"]["role"] == "replica")
    await harness.wait_for("conversation.replica.stopped_speaking", count=count, timeout=60)
    for _ in range(100):  # the transcript takes the reply when its turn ends
        if len(harness.built.transcript.of("assistant")) >= count:
            break
        await asyncio.sleep(0.05)
    return found[count - 1]["properties"]["speech"]


async def test_a_100k_append_llm_context_is_refused_and_the_questions_are_answered(local, llama, log):
    await local.start(persona=PERSONA, force_local=True)
    assert local.session.plan.llm.engine == "llama-local"
    await local.send({"event_type": "conversation.append_llm_context",
                      "properties": {"context": APPENDED}})
    (error,) = await local.wait_for("system.error")
    assert "100,000 characters" in error["properties"]["error"]
    assert "1024-token context" in error["properties"]["error"]  # the limit and where from
    first = await ask(local, "When does the museum open?", 1)
    assert first.strip()
    # A context within the model's limit is taken, and every later turn is answered too.
    await local.send({"event_type": "conversation.append_llm_context",
                      "properties": {"context": APPENDED[:1500]}})
    second = await ask(local, "And when does it close?", 2)
    assert second.strip()
    assert len(local.of("system.error")) == 1
    # What was said is in the transcript.
    assert local.built.transcript.of("assistant") == [first, second]


async def test_a_100k_overwrite_and_a_10k_respond_are_refused_and_the_next_question_answered(
        local, llama):
    """The probe: neither leaves the conversation silent; the previous context stays."""
    await local.start(persona=PERSONA, force_local=True)
    llm = local.session.services.llm
    before = llm._settings.system_instruction
    await local.send({"event_type": "conversation.overwrite_llm_context",
                      "properties": {"context": APPENDED}})
    await local.send({"event_type": "conversation.respond",
                      "properties": {"text": APPENDED[:10_000]}})
    errors = await local.wait_for("system.error", count=2)
    overwrite, respond = (e["properties"] for e in errors)
    assert overwrite["received_event_type"] == "conversation.overwrite_llm_context"
    assert "keeps its previous context" in overwrite["error"]
    assert respond["received_event_type"] == "conversation.respond"
    assert "10,000 characters" in respond["error"] and "at most" in respond["error"]
    assert llm._settings.system_instruction == before
    answer = await ask(local, "When does the museum open?", 1)
    assert answer.strip()
    assert len(local.of("system.error")) == 2
    assert local.built.transcript.of("user") == ["When does the museum open?"]


# --------------------------------------------------------------------------- the server dies


async def test_the_server_killed_mid_reply_gets_an_apology_then_the_next_turn_is_answered(
        local, llama, log):
    from pipecat.frames.frames import LLMTextFrame

    # A reply long enough to be killed in the middle of (llama.cpp's min_tokens).
    persona = {**PERSONA, "layers": {"llm": {"extra_body": {
        "min_tokens": 100, "max_tokens": 120, "stop": ["<|im_end|>"]}}}}
    await local.start(persona=persona, force_local=True)
    llm = local.session.services.llm
    killed: list[int] = []

    @llm.event_handler("on_after_push_frame")
    async def _kill_at_the_first_words(_llm, frame):
        if isinstance(frame, LLMTextFrame) and not killed:
            killed.append(llama.pid)
            os.kill(llama.pid, signal.SIGKILL)

    first = await ask(local, "Tell me a long story about the old ships.", 1)
    assert killed, "the reply never started"
    assert first.endswith(APOLOGY) and first != APOLOGY  # the words it got, then the apology
    (error,) = local.of("system.error")
    user = next(e for e in local.of("conversation.utterance") if e["properties"]["role"] == "user")
    assert error["inference_id"] == user["inference_id"]
    assert "failed" in error["properties"]["error"]
    assert any(level == "ERROR" and "died (killed by SIGKILL" in m for level, m in log)
    assert any(level == "WARNING" and "No reply" in m for level, m in log)

    second = await ask(local, "What is the capital of France?", 2)
    assert second.strip() and APOLOGY not in second
    assert len(local.of("system.error")) == 1
    assert llama.pid != killed[0] and llama.restarts == 1 and llama.gave_up is None
    said = local.built.transcript.of("assistant")
    assert len(said) == 2 and said[0] == first  # the apology is in the transcript as said


# --------------------------------------------------------------------------- an empty answer


async def test_an_empty_answer_is_reported_and_apologised_for_and_the_next_turn_works(tmp_path, log):
    harness = Harness(tmp_path)
    try:
        await harness.start(answers=["", "The museum opens at nine."])  # the loopback fake LLM
        first = await ask(harness, "When does the museum open?", 1)
        assert first == APOLOGY  # spoken: an utterance goes out once the replica speaks it
        (error,) = harness.of("system.error")
        user = next(e for e in harness.of("conversation.utterance")
                    if e["properties"]["role"] == "user")
        assert error["message_type"] == "system" and error["inference_id"] == user["inference_id"]
        assert "empty answer" in error["properties"]["error"]
        assert "received_event_type" not in error["properties"]
        warnings = [m for level, m in log if level == "WARNING" and "No reply" in m]
        assert len(warnings) == 1 and "empty answer" in warnings[0]

        second = await ask(harness, "When does it open?", 2)
        assert second == "The museum opens at nine."
        assert len(harness.of("system.error")) == 1
        assert harness.built.transcript.of("assistant") == [APOLOGY, second]
        # The apology is in the context the LLM saw for the next turn, as said.
        assert {"role": "assistant", "content": APOLOGY} in harness.fake.requests[1]["messages"]
    finally:
        await harness.stop()
