"""layers.conversational_flow on synthetic speech streamed in real time (ordering and outcomes,
never absolute times)."""

from __future__ import annotations

import asyncio

import pytest

from config import persona_from_dict
from config.options import ConversationOptions, FlowOptions
from pipeline.turn_taking import (
    SMART_TURN_INCOMPLETE_SECS,
    SPEECH_TIMEOUT_SECS,
    TurnController,
    turn_plan,
)
from services.pipecat_seam import turn_analyzer_of
from tests.harness import Harness
from tests.speech import write_speech_wav


def flow(**fields):
    return ConversationOptions.resolve(persona_from_dict({"system_prompt": "x", "layers": {
        "conversational_flow": fields}}).value).flow


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("model", ["sparrow-1", "sparrow-0", "time-based"])
@pytest.mark.parametrize("patience", ["low", "medium", "high"])
def test_turn_detection_and_patience_mapping(model, patience):
    controller = TurnController(turn_plan(flow(turn_detection_model=model,
                                               turn_taking_patience=patience)))
    stop = controller.strategies.stop[0]
    if model == "sparrow-1":
        assert type(stop).__name__ == "TurnAnalyzerUserTurnStopStrategy"
        assert turn_analyzer_of(stop).params.stop_secs == SMART_TURN_INCOMPLETE_SECS[patience]
    else:
        assert type(stop).__name__ == "SpeechTimeoutUserTurnStopStrategy"
        assert stop._user_speech_timeout == SPEECH_TIMEOUT_SECS[patience]


def test_absent_layer_defaults_to_sparrow_1_medium():
    plan = turn_plan(FlowOptions())
    assert (plan.model, plan.patience) == ("sparrow-1", "medium")


@pytest.mark.parametrize("level", ["verylow", "low", "medium", "high"])
def test_interruptibility_mapping_and_runtime_change(level):
    controller = TurnController(turn_plan(FlowOptions()), level)
    start = controller.strategies.start[0]
    assert start.interruptibility == level
    controller.apply_sensitivity("medium", "high")  # high sensitivity = hard to interrupt
    assert start.interruptibility == "low" and controller.interruptibility == "low"
    controller.apply_sensitivity("low", "low")
    assert controller.plan.patience == "high" and start.interruptibility == "high"


# --------------------------------------------------------------------------- behaviour


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    await h.stop()


def user_utterances(h: Harness) -> list[str]:
    return [e["properties"]["speech"] for e in h.of("conversation.utterance")
            if e["properties"]["role"] == "user"]


@pytest.mark.parametrize("patience,turns", [("low", 2), ("high", 1)])
async def test_mid_sentence_pause_ends_the_turn_only_at_low_patience(harness, tmp_path,
                                                                      patience, turns):
    wav = write_speech_wav(tmp_path / "pause.wav", [
        0.5, "I would like to order", 0.8, "a large pizza with mushrooms please.", 1.0])
    await harness.start(
        answers=["Okay."] * 3, audio_in=wav,
        persona={"system_prompt": "x", "layers": {"conversational_flow": {
            "turn_detection_model": "time-based", "turn_taking_patience": patience}}})
    await harness.wait_for("conversation.utterance", count=turns, timeout=40,
                           where=lambda e: e["properties"]["role"] == "user")
    await harness.wait_for("conversation.replica.stopped_speaking", count=turns, timeout=40)
    await asyncio.sleep(2.0)  # nothing more arrives
    said = user_utterances(harness)
    assert len(said) == turns, said
    assert "pizza" in " ".join(said).lower()


@pytest.mark.parametrize("level,interrupted", [("high", True), ("low", False)])
async def test_the_same_barge_in_interrupts_only_at_high_interruptibility(harness, tmp_path,
                                                                        level, interrupted):
    long_reply = " ".join(["Here is a long and careful explanation of the topic."] * 5)
    wav = write_speech_wav(tmp_path / "barge.wav", [4.0, "Wait a second.", 1.0])
    await harness.start(
        answers=[long_reply, "Sure."], audio_in=wav,
        persona={"system_prompt": "x", "layers": {"conversational_flow": {
            "replica_interruptibility": level}}})
    await harness.send({"event_type": "conversation.respond",
                        "properties": {"text": "Explain it."}})
    stopped = (await harness.wait_for("conversation.replica.stopped_speaking", timeout=60))[0]
    assert stopped["properties"]["interrupted"] is interrupted
    if not interrupted:
        final = [e["properties"] for e in harness.of("conversation.utterance.streaming")
                 if e["properties"]["role"] == "replica" and e["properties"]["final"]][0]
        assert final["speech"] == long_reply and final["is_interrupted"] is False  # all of it
        assert not harness.of("conversation.replica_interrupted")


# --------------------------------------------------------------------------- wake phrase


async def test_wake_phrase_gates_replies_but_keeps_every_utterance(harness, tmp_path):
    wav = write_speech_wav(tmp_path / "wake.wav", [
        0.5, "What is the weather like today?", 2.5, "Hello computer, what time is it?", 1.0])
    await harness.start(
        answers=["It is noon.", "Anything else?"], audio_in=wav,
        persona={"system_prompt": "x", "layers": {"conversational_flow": {
            "wake_phrase": "hello computer"}}})
    await harness.wait_for("conversation.replica.stopped_speaking", timeout=40)
    await asyncio.sleep(1.0)
    # No reply to the turn before the phrase; the first reply is to the phrase itself
    # (Piper's comma pause may split "Hello computer, what time is it?" into a wake turn
    # and a follow-up, which is answered because the persona is awake by then).
    last_user = [[m for m in r["messages"] if m["role"] == "user"][-1]["content"].lower()
                 for r in harness.fake.requests]
    assert last_user and "hello computer" in last_user[0]
    assert not any("weather" in text for text in last_user)
    said = user_utterances(harness)
    assert "weather" in said[0].lower() and len(said) >= 2
    # ...but the first utterance was in the context it answered with.
    contents = [m["content"] for m in harness.fake.requests[0]["messages"] if m["role"] == "user"]
    assert "weather" in contents[0].lower()
    types = harness.types()
    assert "system.wake_phrase_detected" in types
    assert types.index("system.wake_phrase_detected") < types.index(
        "conversation.replica.started_speaking")
    wake = harness.of("system.wake_phrase_detected")[0]
    assert wake["message_type"] == "system" and "properties" not in wake
    assert [e.role for e in harness.built.transcript.entries].count("user") == len(said)


async def test_wake_phrase_persona_does_not_greet_and_app_respond_is_answered(harness):
    await harness.start(
        answers=["Sure."],
        persona={"system_prompt": "x", "layers": {"conversational_flow": {
            "wake_phrase": "hello computer"}}})
    assert harness.built.greeting_frames() == []
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Hi"}})
    await harness.wait_for("conversation.replica.stopped_speaking")
    assert len(harness.fake.requests) == 1


# --------------------------------------------------------------------------- idle engagement


@pytest.mark.parametrize("level,expected", [("eager", 3), ("off", 0)])
async def test_idle_engagement_speaks_after_silence_and_gives_up(harness, monkeypatch,
                                                                 level, expected):
    import pipeline.idle_engagement as idle

    monkeypatch.setitem(idle.IDLE_SECS, "eager", 1.0)
    await harness.start(
        answers=["Hello!", "Still there?", "Anything on your mind?", "I'm here if you need me."],
        persona={"system_prompt": "x", "layers": {"conversational_flow": {
            "idle_engagement": level}}})
    await harness.send({"event_type": "conversation.respond", "properties": {"text": "Hi"}})
    first_stop = (await harness.wait_for("conversation.replica.stopped_speaking"))[0]
    if expected:
        await harness.wait_for("conversation.replica.stopped_speaking", count=1 + expected,
                               timeout=60)
    await asyncio.sleep(4.0)  # several idle periods more: nothing else happens
    idle_requests = [t for r, t in zip(harness.fake.requests, harness.fake.request_times)
                     if any(idle.INSTRUCTION in str(m.get("content")) for m in r["messages"][-1:])]
    assert len(idle_requests) == expected
    # Never before the replica had finished and the silence had begun.
    assert all(t > first_stop["timestamp"] for t in idle_requests)
    assert len(harness.fake.requests) == 1 + expected


# --------------------------------------------------------------------------- voice isolation


def test_voice_isolation_filter_selection():
    from services.voice_isolation import input_filter

    def persona(**fields):
        return ConversationOptions.resolve(persona_from_dict({"system_prompt": "x", "layers": {
            "conversational_flow": fields} if fields else {}}).value).flow

    # Tavus default: near (RNNoise gated by its speech probability: services/voice_isolation.py)
    assert type(input_filter(persona())).__name__ == "SpeechGatedRNNoiseFilter"
    assert type(input_filter(persona(voice_isolation="near"))).__name__ == "SpeechGatedRNNoiseFilter"
    assert input_filter(persona(voice_isolation="off")) is None


async def test_rnnoise_removes_noise_and_keeps_speech(harness, tmp_path):
    """Noise-only audio is suppressed; lightly noisy speech is still transcribed right.

    (Measured here: with strong white noise, sigma 800-3000, Whisper tiny.en alone still hears
    "France" but hears "brand" after RNNoise; see the README's voice isolation note.)
    """
    import numpy as np

    from transports.file import read_wav_mono16, write_wav_mono16
    from services.voice_isolation import input_filter
    from tests.speech import write_question_wav

    clean = read_wav_mono16(write_question_wav(tmp_path / "clean.wav", "What is the capital of France?",
                                               lead_secs=1.0, tail_secs=1.0), 16000)
    speech = np.frombuffer(clean, np.int16).astype(np.float32)
    noise = np.random.default_rng(7).normal(0, 300, speech.size)
    noisy = np.clip(speech + noise, -32768, 32767).astype(np.int16).tobytes()
    write_wav_mono16(tmp_path / "noisy.wav", noisy, 16000)

    persona = ConversationOptions.resolve(persona_from_dict({"system_prompt": "x"}).value).flow
    filt = input_filter(persona)
    await filt.start(16000)
    loud = np.random.default_rng(8).normal(0, 2000, 16000).astype(np.int16).tobytes()
    lead = loud  # one second of noise only
    out = b"".join([await filt.filter(lead[i:i + 640]) for i in range(0, len(lead), 640)])
    level_in = np.sqrt((np.frombuffer(lead, np.int16).astype(float) ** 2).mean())
    level_out = np.sqrt((np.frombuffer(out, np.int16).astype(float) ** 2).mean())
    assert level_out < level_in / 5
    await filt.stop()

    await harness.start(answers=["Paris."], audio_in=tmp_path / "noisy.wav",
                        audio_in_filter=input_filter(persona))
    utterance = await harness.wait_for("conversation.utterance", timeout=40,
                                       where=lambda e: e["properties"]["role"] == "user")
    assert "capital of france" in utterance[0]["properties"]["speech"].lower()


def test_patience_sets_the_vad_pause_too():
    from pipeline.turn_taking import VAD_STOP_SECS

    controller = TurnController(turn_plan(flow(turn_taking_patience="high")))
    assert controller.vad.params.stop_secs == VAD_STOP_SECS["high"]
    controller.set_patience("low")
    assert controller.vad.params.stop_secs == VAD_STOP_SECS["low"]


# --------------------------------------------------------------------------- speculative inference


@pytest.mark.parametrize("speculative", [True, False])
async def test_speculative_inference_starts_the_llm_before_the_turn_ends(harness, tmp_path,
                                                                         speculative):
    wav = write_speech_wav(tmp_path / "q.wav", [0.5, "What is the capital of France?", 1.0])
    await harness.start(
        answers=["Paris.", "Second answer."], audio_in=wav,
        persona={"system_prompt": "x", "layers": {
            "llm": {"speculative_inference": speculative},
            "conversational_flow": {"turn_detection_model": "time-based",
                                    "turn_taking_patience": "high"}}})
    replies = await harness.wait_for("conversation.utterance", timeout=40,
                                     where=lambda e: e["properties"]["role"] == "replica")
    await asyncio.sleep(1.0)
    assert replies[0]["properties"]["speech"] == "Paris."
    assert len(harness.fake.requests) == 1  # a confirmed speculation is not answered twice
    turn_end = harness.of("conversation.user.stopped_speaking")[0]["timestamp"]
    asked = harness.fake.request_times[0]
    # With speculation the LLM was asked while the turn was still open; without, after.
    assert (asked < turn_end) is speculative


async def test_withdrawn_speculation_is_never_spoken(harness, tmp_path):
    # A pause long enough for a transcript (and a speculation) but shorter than the patience.
    wav = write_speech_wav(tmp_path / "q.wav", [
        0.5, "I would like to order", 0.9, "a large pizza with mushrooms please.", 1.0])
    await harness.start(
        answers=["SPECULATIVE ANSWER.", "Full answer."], audio_in=wav, llm_delay_secs=0.0,
        persona={"system_prompt": "x", "layers": {
            "llm": {"speculative_inference": True},
            "conversational_flow": {"turn_detection_model": "time-based",
                                    "turn_taking_patience": "high"}}})
    await harness.wait_for("conversation.utterance", timeout=40,
                           where=lambda e: e["properties"]["role"] == "replica")
    await asyncio.sleep(2.0)
    spoken = [e["properties"]["speech"] for e in harness.of("conversation.utterance")
              if e["properties"]["role"] == "replica"]
    assert len(harness.fake.requests) == 2  # the speculation did run, on the first half
    first = [m for m in harness.fake.requests[0]["messages"] if m["role"] == "user"][-1]
    assert "order" in first["content"].lower() and "pizza" not in first["content"].lower()
    assert "SPECULATIVE ANSWER." not in spoken, spoken
    assert spoken == ["Full answer."]
    said = user_utterances(harness)
    assert len(said) == 1 and "pizza" in said[0].lower() and "order" in said[0].lower()


async def test_voice_isolation_adds_no_hold_to_the_audio():
    """The gate decides frame by frame (issue 18): what goes in comes out at once, but for
    RNNoise's 10 ms framing and the resampler, so the VAD (and every turn) is not delayed."""
    import numpy as np

    from services.voice_isolation import input_filter

    flow = ConversationOptions.resolve(persona_from_dict({"system_prompt": "x"}).value).flow
    filt = input_filter(flow)
    await filt.start(16000)
    noise = np.random.default_rng(3).normal(0, 500, 16000).astype(np.int16).tobytes()
    sent = out = 0
    for i in range(0, len(noise), 640):  # 20 ms frames, as transports send them
        chunk = noise[i:i + 640]
        sent += len(chunk)
        out += len(await filt.filter(chunk))
    await filt.stop()
    assert sent - out <= 2 * 320, (sent, out)  # under 20 ms behind
