"""A generation nobody will hear is stopped at the shared llama.cpp server.

The embedded LLM's server (llama_cpp.server) is shared by every conversation of the process
and generates one reply at a time. When Pipecat cancels the LLM's work, the service closes
its stream; the server sees the client go (it prints "Disconnected from client") and stops
generating at the next token. These tests assert that state on the real server, not timings:

- a reply cancelled through the pipeline (the participant left mid-reply: nobody hears the
  rest, so the conversation is cancelled, not ended gracefully) is aborted at the server,
  long before the tokens it was made to generate (``min_tokens``) were done;
- the next conversation then finds the server idle: a short request on it completes in full,
  and the aborted stream was the only one the server dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from conversation.lifecycle import PARTICIPANT_LEFT
from services import llm as llm_factory
from services.local.llama_server import LlamaServer
from tests.conftest import running_llama_server
from tests.harness import Harness

# A reply that would take well over a hundred tokens (llama.cpp's min_tokens), so it is
# certainly still being generated when the participant leaves at its first words.
LONG = {"persona_name": "Ava", "system_prompt": "You are Ava, a museum guide.",
        "layers": {"llm": {"extra_body": {"min_tokens": 200, "max_tokens": 240,
                                          "stop": ["<|im_end|>"]}}}}
SHORT = {"persona_name": "Ava", "system_prompt": "You are Ava. Answer in one short sentence."}
DROPPED = "Disconnected from client"


@pytest.fixture(scope="module")
def llama():
    with running_llama_server(n_ctx=512) as server:
        yield server


def dropped(server: LlamaServer) -> int:
    """How many streams the server has seen its client close mid-generation."""
    return sum(DROPPED in line for line in server.recent_output().splitlines())


async def until(predicate, secs: float = 30.0) -> bool:
    for _ in range(int(secs / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def completion_tokens(server: LlamaServer, max_tokens: int) -> tuple[int, str]:
    """A short non-streamed request: the tokens it generated and why it stopped."""
    body = {"model": LlamaServer.MODEL_ALIAS, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from one to twenty."}]}
    async with aiohttp.ClientSession() as session, session.post(
            f"{server.base_url}/chat/completions", json=body) as resp:
        data = await resp.json()
    return data["usage"]["completion_tokens"], data["choices"][0]["finish_reason"]


async def at_the_first_words(harness: Harness, act: Callable[[], Awaitable[Any]]) -> list[int]:
    """Ask for a long reply; at its first words, ``act()`` (leave, interrupt). The LLM text
    frames pushed are counted (a list of one count)."""
    from pipecat.frames.frames import LLMTextFrame

    llm = harness.session.services.llm
    pushed = [0]

    @llm.event_handler("on_after_push_frame")
    async def _act(_llm, frame):
        if isinstance(frame, LLMTextFrame):
            pushed[0] += 1
            if pushed[0] == 1:
                asyncio.get_running_loop().create_task(act())

    await harness.send({"event_type": "conversation.respond",
                        "properties": {"text": "Tell me a long story about the old ships."}})
    return pushed


async def leave_at_the_first_words(harness: Harness) -> list[int]:
    """The participant leaves at a long reply's first words."""
    return await at_the_first_words(harness, harness.session.lifecycle.participant_left)


async def test_a_reply_nobody_will_hear_is_aborted_at_the_server_and_the_next_session_finds_it_idle(
        llama, monkeypatch, tmp_path):
    monkeypatch.setattr(llm_factory, "local_llm_server", lambda settings: llama)
    before = dropped(llama)
    first = Harness(tmp_path / "first")
    try:
        await first.start(persona=LONG, force_local=True)
        assert first.session.plan.llm.engine == "llama-local"
        pushed = await leave_at_the_first_words(first)
        await asyncio.wait_for(asyncio.shield(first.task), 120)  # cancelled, not ended gracefully
        assert first.session.lifecycle.shutdown_reason == PARTICIPANT_LEFT
        # The server saw the stream closed: the generation was aborted there ...
        assert await until(lambda: dropped(llama) == before + 1)
        # ... long before the 200 tokens it had to generate.
        assert 1 <= pushed[0] < 200
    finally:
        await first.stop()

    # The next conversation: the server is idle (nothing else is generating), so a short
    # request completes in full, and a second conversation on it is answered.
    tokens, reason = await completion_tokens(llama, 8)
    assert (tokens, reason) == (8, "length")
    second = Harness(tmp_path / "second")
    try:
        await second.start(persona=SHORT, force_local=True)
        await second.send({"event_type": "conversation.respond",
                           "properties": {"text": "What is the capital of France?"}})
        found = await second.wait_for("conversation.utterance", count=1, timeout=240,
                                      where=lambda e: e["properties"]["role"] == "replica")
        assert found[0]["properties"]["speech"].strip()
    finally:
        await second.stop()
    assert dropped(llama) == before + 1  # nothing else was cut off


async def test_an_interrupted_reply_is_aborted_at_the_server_and_the_conversation_goes_on(
        llama, monkeypatch, tmp_path):
    """``conversation.interrupt`` at a long reply's first words: Pipecat cancels the LLM's
    work, the stream is closed, the server drops the generation; the next question is
    answered on the same (idle) server."""
    monkeypatch.setattr(llm_factory, "local_llm_server", lambda settings: llama)
    before = dropped(llama)
    harness = Harness(tmp_path)
    try:
        await harness.start(persona=LONG, force_local=True)
        pushed = await at_the_first_words(
            harness, lambda: harness.send({"event_type": "conversation.interrupt"}))
        assert await until(lambda: dropped(llama) == before + 1, 120)
        assert 1 <= pushed[0] < 200  # far fewer than the 200 tokens it had to generate
        assert not harness.task.done()  # the conversation goes on
        tokens, reason = await completion_tokens(llama, 8)  # the server is idle
        assert (tokens, reason) == (8, "length")
    finally:
        await harness.stop()


async def test_a_participant_who_left_within_the_left_timeout_is_not_spoken_to(
        llama, monkeypatch, tmp_path):
    """With a ``participant_left_timeout`` the conversation waits for a rejoin, but the reply
    in progress is for nobody: it is interrupted, and aborted at the server."""
    monkeypatch.setattr(llm_factory, "local_llm_server", lambda settings: llama)
    before = dropped(llama)
    harness = Harness(tmp_path)
    try:
        await harness.start(persona=LONG, force_local=True,
                            conversation={"properties": {"participant_left_timeout": 60}})
        pushed = await leave_at_the_first_words(harness)
        assert await until(lambda: dropped(llama) == before + 1, 120)
        assert 1 <= pushed[0] < 200
        assert not harness.task.done()  # still waiting for the participant to come back
        assert harness.session.lifecycle.shutdown_reason is None
        tokens, reason = await completion_tokens(llama, 8)  # the server is idle
        assert (tokens, reason) == (8, "length")
    finally:
        await harness.stop()
