"""No lost turns: speech over the greeting or a reply is a barge-in or answered afterwards.

The real pipeline on the file transport (Silero VAD, Smart Turn, Whisper, Piper; a
scripted LLM). The participant joins, the persona starts a long greeting, and the user
speaks two seconds into it. By the interruptibility rules the words either interrupt
the greeting (a barge-in) or are taken while it plays and answered once it ends; in
every case the user's words reach the LLM and get a reply.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import Harness
from tests.speech import write_speech_wav

pytestmark = pytest.mark.e2e

# Long (about 18 s spoken), so a barge-in's transcript arrives while it still plays even
# when Whisper is slow on a loaded 2-core machine.
GREETING = ("Hello and welcome! I am Ava, and I am very glad you could join me on this call "
            "today. We can talk about anything you like, from travel to science to cooking. "
            "I know a little about many things, and I love a good question, so please ask me "
            "whatever is on your mind, and we will figure it out together, one step at a time.")
REPLY = "Glad you asked, here is my answer."
QUESTION = "What is the capital of France?"  # six words: a barge-in at medium and low


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def user_said(h: Harness) -> list[str]:
    return [e["properties"]["speech"] for e in h.of("conversation.utterance")
            if e["properties"]["role"] == "user"]


async def speak_over_greeting(h: Harness, tmp_path, *, level: str, words: str,
                              custom: bool = False) -> list[dict]:
    wav = write_speech_wav(tmp_path / "over.wav", [2.0, words, 1.0])
    await h.start(
        answers=([] if custom else [GREETING]) + [REPLY],
        audio_in=wav,
        persona={"system_prompt": "You are Ava.", "layers": {"conversational_flow": {
            "replica_interruptibility": level}}},
        conversation={"custom_greeting": GREETING} if custom else None)
    await h.session.participant_joined()
    await h.wait_for("conversation.utterance", timeout=60, where=lambda e: (
        e["properties"]["role"] == "replica" and e["properties"]["speech"] == REPLY))
    return replica_said(h)


def replica_said(h: Harness) -> list[str]:
    return [e["properties"]["speech"] for e in h.of("conversation.utterance")
            if e["properties"]["role"] == "replica"]


def interrupted(h: Harness) -> bool:
    """Whether the replica was interrupted: by the events, or by the transcript (a loaded
    machine's slow TTS can split the greeting into several speaking segments)."""
    return bool(h.of("conversation.replica_interrupted")) or any(
        e["properties"]["interrupted"] for e in h.of("conversation.replica.stopped_speaking")
    ) or any(e.interrupted for e in h.built.transcript.entries if e.role == "assistant")


def assert_answered(h: Harness, words: str) -> None:
    key = words.split()[0].strip(",.?").lower()
    said = " ".join(user_said(h)).lower()
    assert key in said, user_said(h)
    asked = [[m for m in r["messages"] if m["role"] == "user"] for r in h.fake.requests]
    assert any(key in (msgs[-1]["content"] or "").lower() for msgs in asked if msgs), asked
    assert REPLY in replica_said(h), replica_said(h)


@pytest.mark.parametrize("level,words,barge_in", [
    ("high", "Okay.", True),          # any speech interrupts
    ("medium", "Okay.", False),       # one word: taken quietly, answered after the greeting
    ("medium", QUESTION, True),       # enough words: a barge-in
    ("low", "Sounds good.", False),   # two words are not enough at low
    ("low", QUESTION, True),
    ("verylow", QUESTION, False),     # nothing interrupts
])
async def test_speech_over_the_greeting_is_never_dropped(harness, tmp_path, level, words,
                                                        barge_in):
    replies = await speak_over_greeting(harness, tmp_path, level=level, words=words)
    assert interrupted(harness) is barge_in, harness.types()
    assert_answered(harness, words)
    if not barge_in:
        assert replies[:2] == [GREETING, REPLY], replies  # the whole greeting, then the answer


async def test_speech_over_a_custom_greeting_is_answered_after_it(harness, tmp_path):
    # Tavus does not let the user interrupt the custom greeting, even at high; the words
    # are still taken (never muted away) and answered once it ends.
    await speak_over_greeting(harness, tmp_path, level="high", words=QUESTION, custom=True)
    assert not interrupted(harness), harness.types()
    assert_answered(harness, QUESTION)

    def spoken() -> list[tuple[str, bool]]:
        return [(e.content, e.interrupted) for e in harness.built.transcript.entries
                if e.role == "assistant"]

    for _ in range(100):  # the reply is recorded once it has been spoken
        if len(spoken()) >= 2:
            break
        await asyncio.sleep(0.2)
    assert spoken()[:2] == [(GREETING, False), (REPLY, False)], spoken()


async def test_the_interrupted_replys_late_text_never_joins_the_next_reply():
    """The interruption overtakes queued text (a system frame); the fence drops that text."""
    from pipecat.frames.frames import InterruptionFrame, TTSStartedFrame, TTSTextFrame
    from pipecat.tests.utils import SleepFrame, run_test

    from pipeline.interruption_fence import InterruptionFence

    def text(t: str) -> TTSTextFrame:
        return TTSTextFrame(t, text_type="sentence")

    fence = InterruptionFence()
    down, _ = await run_test(fence, frames_to_send=[
        TTSStartedFrame(), text("Hello and welcome!"), SleepFrame(0.1), InterruptionFrame(),
        SleepFrame(0.1), text("I am Ava."),  # late: from the interrupted greeting
        SleepFrame(0.1), TTSStartedFrame(), text("Paris."),
    ], expected_down_frames=None)
    spoken = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert spoken == ["Hello and welcome!", "Paris."]
    assert fence.dropped == 1


async def test_a_barge_in_leaves_the_greeting_and_the_reply_apart(harness, tmp_path):
    await speak_over_greeting(harness, tmp_path, level="high", words=QUESTION)

    def spoken() -> list[str]:
        return [e.content for e in harness.built.transcript.entries if e.role == "assistant"]

    for _ in range(100):  # the reply is recorded once it has been spoken
        if any(REPLY in s for s in spoken()):
            break
        await asyncio.sleep(0.2)
    spoken = spoken()
    assert REPLY in spoken, spoken  # the reply alone, never glued to the greeting's words
    assert all(GREETING.startswith(s) for s in spoken if s != REPLY), spoken
