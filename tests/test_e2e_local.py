"""End to end on the embedded models: a spoken WAV in, the persona's spoken reply out.

Real local Whisper (tiny.en), the real llama.cpp server with SmolLM2 and Piper,
the question streamed in real time through a test input transport.
"""

from __future__ import annotations

import json
import re
import wave

import pytest

from config.app import AppConfig
from session.modes import run_oneshot
from tests.conftest import PERSONAS
from tests.speech import rms, write_question_wav

pytestmark = pytest.mark.e2e


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_spoken_question_gets_a_spoken_answer(output_dir):
    question = "What is the capital of France?"
    wav_in = write_question_wav(output_dir / "question.wav", question)
    wav_out = output_dir / "reply.wav"
    transcript_path = output_dir / "transcript.json"
    app = AppConfig.load(PERSONAS / "default.json", environ={})

    result = await run_oneshot(app, wav_in, wav_out, transcript_path)

    # What was heard matches what was said into the microphone.
    assert words(" ".join(result["heard"])) == words(question)
    # The LLM answered, and the answer was spoken.
    assert result["said"] and len(words(" ".join(result["said"]))) >= 2
    with wave.open(str(wav_out), "rb") as wav:
        rate = wav.getframerate()
        audio = wav.readframes(wav.getnframes())
    assert len(audio) / 2 / rate > 0.5  # more than half a second of reply
    assert rms(audio) > 0.01  # and it is not silence
    assert result["engines"] == {
        "stt": {"engine": "whisper", "model": "tiny.en"},
        "llm": {"engine": "llama-local", "model": "SmolLM2-135M-Instruct (llama.cpp)"},
        "tts": {"engine": "piper", "model": "en_US-joe-medium"},
    }
    saved = json.loads(transcript_path.read_text())
    roles = [e["role"] for e in saved["transcript"]]
    assert roles[:2] == ["user", "assistant"]
    assert saved["timing"]["voice_to_voice_secs"] is not None


async def test_silent_file_is_a_clear_error(tmp_path):
    from session.modes import OneShotError

    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\x00\x00" * 16000)
    app = AppConfig.load(PERSONAS / "default.json", environ={})
    with pytest.raises(OneShotError, match="silent"):
        await run_oneshot(app, path, tmp_path / "out.wav")
