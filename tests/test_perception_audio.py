"""perception/audio.py: voice facts from synthetic numpy signals and, when present, espeak-ng."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import pytest

from perception.audio import TONES, VoiceFacts, analyse_turn, answer, describe

RATE = 16000
CALM_TEXT = "could you tell me what time the shop opens on saturday"  # 11 words, neutral


def _pcm(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _tone(seconds: float, *, f0: float = 150.0, depth: float = 0.0, amp: float = 0.3,
          rate: int = RATE) -> bytes:
    """A harmonic tone at ``f0`` Hz, its pitch modulated by +-``depth`` (fraction) at 3 Hz."""
    t = np.arange(int(rate * seconds)) / rate
    freq = f0 * (1.0 + depth * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(freq) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    return _pcm(amp * x / np.abs(x).max())


def _facts(**kw) -> VoiceFacts:
    base = dict(seconds=3.0, energy_db=-25.0, pitch_hz=150.0, pitch_spread=0.1,
                words_per_min=140.0, sentiment=0.0, tone="calm")
    base.update(kw)
    return VoiceFacts(**base)


def test_pitch_of_a_harmonic_tone():
    facts = analyse_turn(_tone(4.0, depth=0.1), RATE, CALM_TEXT)
    assert facts.pitch_hz == pytest.approx(150.0, rel=0.10)
    assert 0.03 < facts.pitch_spread < 0.15  # +-10 % sine modulation: std ~7 %
    assert facts.seconds == pytest.approx(4.0, abs=0.05)
    assert -20 < facts.energy_db < -5
    assert facts.tone in TONES


@pytest.mark.parametrize("f0", [90.0, 220.0, 330.0])
def test_pitch_across_the_range(f0):
    facts = analyse_turn(_tone(1.5, f0=f0), RATE, "")
    assert facts.pitch_hz == pytest.approx(f0, rel=0.10)


def test_pitch_at_other_sample_rates():
    for rate in (8000, 22050, 48000):
        facts = analyse_turn(_tone(1.5, f0=180.0, rate=rate), rate, "hello")
        assert facts.pitch_hz == pytest.approx(180.0, rel=0.10), rate


def test_silence_is_quiet_without_pitch():
    facts = analyse_turn(bytes(RATE * 2 * 2), RATE, "hello")
    assert facts.pitch_hz is None and facts.pitch_spread is None
    assert facts.words_per_min is None and facts.seconds == 0.0
    assert facts.tone == "quiet"
    assert "no voice heard" in describe(facts)


def test_empty_and_odd_length_input():
    assert analyse_turn(b"", RATE, "").tone == "quiet"
    assert analyse_turn(b"\x01", RATE, "").tone == "quiet"
    facts = analyse_turn(_tone(1.0) + b"\x00", RATE, "")
    assert facts.pitch_hz == pytest.approx(150.0, rel=0.10)
    with pytest.raises(ValueError):
        analyse_turn(_tone(1.0), 0, "")


def test_white_noise_has_no_pitch():
    noise = np.random.default_rng(7).standard_normal(RATE * 2) * 0.1
    facts = analyse_turn(_pcm(noise), RATE, CALM_TEXT)
    assert facts.pitch_hz is None
    assert facts.seconds > 1.9


def test_faint_voice_is_quiet():
    facts = analyse_turn(_tone(2.0, amp=0.005), RATE, CALM_TEXT)
    assert facts.energy_db < -40
    assert facts.tone == "quiet"


def test_voiced_span_excludes_leading_and_trailing_silence():
    pcm = bytes(RATE * 2) + _tone(2.0) + bytes(RATE * 2)  # 1 s silence, 2 s tone, 1 s silence
    facts = analyse_turn(pcm, RATE, " ".join(["word"] * 5))
    assert facts.seconds == pytest.approx(2.0, abs=0.07)
    assert facts.words_per_min == pytest.approx(150.0, rel=0.05)


def test_fast_transcript_over_short_audio_is_hurried():
    text = "okay so I need the invoice the receipt and the tracking number right now please thanks"
    facts = analyse_turn(_tone(3.0), RATE, text)  # 16 words in 3 s = 320 words/min
    assert facts.words_per_min > 190
    assert facts.tone == "hurried"
    assert "fast pace" in describe(facts)


def test_too_short_for_a_pace():
    facts = analyse_turn(_tone(0.3), RATE, "yes please")
    assert facts.words_per_min is None


def test_angry_words_and_loud_varied_voice_are_frustrated():
    text = "this is ridiculous, I am so angry, nothing works"
    facts = analyse_turn(_tone(3.0, f0=200.0, depth=0.45, amp=0.8), RATE, text)
    assert facts.sentiment <= -0.3
    assert facts.energy_db > -22 and facts.pitch_spread > 0.25
    assert facts.tone == "frustrated"
    reply = answer("Does the user sound frustrated?", [facts])
    assert reply.startswith("Yes")
    assert "negative wording" in reply and "dBFS" in reply


def test_sad_words_in_a_soft_steady_voice_are_upset():
    facts = analyse_turn(_tone(3.0, amp=0.03), RATE, "I feel terrible and sad, my friend died")
    assert facts.tone == "upset"


def test_fillers_are_hesitant():
    text = "um I think it was uh the blue one, I don't know, maybe the green one"
    facts = analyse_turn(_tone(6.0), RATE, text)  # 16 words in 6 s = 160 words/min: a normal pace
    assert facts.tone == "hesitant"
    assert "filler" in answer("Is the user confused?", [facts])


def test_slow_speech_is_hesitant_and_steady_moderate_speech_calm():
    assert analyse_turn(_tone(6.0), RATE, "well maybe the red one").tone == "hesitant"
    facts = analyse_turn(_tone(8.0, depth=0.05), RATE, CALM_TEXT + " and whether it closes late")
    assert 90 <= facts.words_per_min <= 170
    assert facts.tone == "calm"
    assert describe(facts).startswith("sounds calm; normal pace")


def test_happy_words_with_lively_pitch_are_excited():
    text = "wow this is amazing, I love it, thank you so much"
    facts = analyse_turn(_tone(4.0, f0=220.0, depth=0.45), RATE, text)
    assert facts.sentiment >= 0.5
    assert facts.tone == "excited"


def test_answer_routes_and_cites_evidence():
    calm = _facts()
    fast = _facts(words_per_min=212.0, tone="hurried")
    assert answer("Is the user frustrated?", []) == "No speech heard yet."
    assert answer("Is the user's dog barking?", [calm]) == "Cannot tell from the audio alone."
    reply = answer("Is the user in a hurry?", [calm, fast])
    assert reply.startswith("Yes") and "212 words/min" in reply and "1 of the last 2" in reply
    reply = answer("Does the user seem annoyed?", [fast])
    assert reply.startswith("Not clearly") and "hurried" in reply
    assert "calm" in answer("Is the user relaxed?", [calm])
    assert "dBFS" in answer("Is the user whispering?", [_facts(energy_db=-45.0, tone="quiet")])
    assert answer("Does the user sound sad?", [calm]).startswith("Not clearly")
    assert "pitch" in answer("Is the user excited?", [calm])


def test_describe_is_one_short_sentence():
    text = describe(_facts())
    assert text == "sounds calm; normal pace (140 words/min); neutral wording (+0.00)"
    assert "pace unknown" in describe(_facts(words_per_min=None, tone="neutral"))


def test_sentiment_needs_no_network(monkeypatch):
    import socket

    from perception import audio

    def refuse(*args, **kwargs):
        raise AssertionError("perception.audio tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(audio, "_analyzer", None)  # the lexicon is read again, from the wheel
    assert analyse_turn(_tone(1.0), RATE, "I am so angry").sentiment < -0.3


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speech_has_a_pitch():
    sentence = "Hello, I would like to book a table for two people tonight, please."
    wav = subprocess.run(["espeak-ng", "--stdout", sentence], capture_output=True, check=True,
                         timeout=30).stdout
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    facts = analyse_turn(pcm, rate, sentence)
    assert facts.pitch_hz is not None and 70 <= facts.pitch_hz <= 300
    assert facts.seconds > 1.0
    assert facts.words_per_min is not None
