"""Budgets instead of failures: the probe's messages through the real pipeline.

A burst of 500 ``conversation.respond`` messages, a 10,000-character respond and a
100,000-character ``conversation.overwrite_llm_context`` on the embedded engine, and more
echo audio than a conversation buffers: each is refused or cut down with few
``system.error`` events, and the next question is answered.
"""

from __future__ import annotations

import asyncio
import base64

import pytest

from pipeline.interactions.budgets import TokenBucket
from tests.harness import Harness


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def respond(text: str) -> dict:
    return {"event_type": "conversation.respond", "properties": {"text": text}}


async def answered(harness: Harness, question: str, timeout: float = 60) -> dict:
    """Ask ``question`` and wait for the replica's utterance of the same turn."""
    await harness.send(respond(question))
    (user,) = await harness.wait_for(
        "conversation.utterance", timeout=timeout,
        where=lambda e: e["properties"]["role"] == "user"
        and e["properties"]["speech"] == question)
    (reply,) = await harness.wait_for(
        "conversation.utterance", timeout=timeout,
        where=lambda e: e["properties"]["role"] == "replica"
        and e["inference_id"] == user["inference_id"])
    return reply


def test_token_bucket_burst_then_rate():
    now = [0.0]
    bucket = TokenBucket(capacity=3, rate=2.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] += 0.5  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 100
    assert sum(bucket.take() for _ in range(10)) == 3  # never more than the burst


async def test_a_burst_of_500_responds_reaches_the_llm_a_few_times_and_the_next_question_is_answered(
        harness):
    await harness.start(answers=["Hello there."])
    for i in range(500):
        await harness.send(respond(f"Question number {i}?"))
    await harness.wait_for("system.error")
    await asyncio.sleep(1.5)  # the burst settles; the bucket refills for the next question
    reply = await answered(harness, "When does the museum open?")
    assert reply["properties"]["speech"] == "Hello there."
    errors = harness.of("system.error")
    print(f"burst: {len(harness.fake.requests)} LLM requests, {len(errors)} system.error")
    assert 1 <= len(errors) <= 2, [e["properties"] for e in errors]
    assert "rate" in errors[0]["properties"]["error"]
    assert errors[0]["properties"]["received_event_type"] == "conversation.respond"
    assert len(harness.fake.requests) <= 15, len(harness.fake.requests)  # not 500
    users = [m for m in harness.fake.requests[-1]["messages"] if m["role"] == "user"]
    assert users[-1]["content"] == "When does the museum open?"


async def test_echo_audio_over_the_buffer_budget_is_refused_once_and_the_next_question_is_answered(
        harness):
    await harness.start(answers=["Hello there."])
    chunk = base64.b64encode(b"\x10\x00" * 16000 * 6).decode()  # 6 s of 16 kHz PCM
    for _ in range(20):  # 120 s sent at once; 60 s may wait ahead of playback
        await harness.send({"event_type": "conversation.echo", "properties": {
            "modality": "audio", "audio": chunk, "sample_rate": 16000,
            "inference_id": "echo-1", "done": False}})
    (error,) = await harness.wait_for("system.error")
    assert "60 s of echo audio" in error["properties"]["error"]
    assert error["properties"]["received_event_type"] == "conversation.echo"
    await harness.wait_for("conversation.replica.started_speaking")
    reply = await answered(harness, "When does the museum open?")  # interrupts the echo
    assert reply["properties"]["speech"] == "Hello there."
    assert len(harness.of("system.error")) == 1


def test_sender_budgets_one_report_per_burst_and_per_sender():
    from pipeline.interactions.budgets import LLM_BURST, SenderBudgets

    now = [0.0]
    budgets = SenderBudgets(clock=lambda: now[0])
    results = [budgets.admit("alice", "conversation.respond") for _ in range(LLM_BURST + 5)]
    assert [ok for ok, _ in results] == [True] * LLM_BURST + [False] * 5
    assert [report for _, report in results].count(True) == 1  # one error for the burst
    assert budgets.admit("bob", "conversation.respond") == (True, False)  # another sender
    assert budgets.admit("alice", "conversation.echo") == (True, False)  # another class
    now[0] += 1.0
    assert budgets.admit("alice", "conversation.respond") == (True, False)
    assert [budgets.admit("alice", "conversation.respond") for _ in range(2)][-1] == (False, True)
