"""Spoken test audio, synthesized offline with the bundled Piper voice (deterministic)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from transports.file import write_wav_mono16


@functools.cache
def _voice():
    from piper import PiperVoice

    from services.local.models import piper_voice

    found = piper_voice()
    return PiperVoice.load(found.folder / f"{found.voice_id}.onnx")


def synthesize(text: str) -> tuple[bytes, int]:
    """16-bit mono PCM of ``text`` and its sample rate (noise scales 0: deterministic)."""
    from piper import SynthesisConfig

    voice = _voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    return pcm, voice.config.sample_rate


def write_question_wav(
    path: str | Path, text: str, *, lead_secs: float = 0.5, tail_secs: float = 0.5
) -> Path:
    """A WAV of ``text`` with silence around it."""
    pcm, rate = synthesize(text)
    lead = b"\x00\x00" * int(rate * lead_secs)
    tail = b"\x00\x00" * int(rate * tail_secs)
    write_wav_mono16(path, lead + pcm + tail, rate)
    return Path(path)


def rms(pcm: bytes) -> float:
    """Root-mean-square level of 16-bit PCM in [0, 1]."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    return float(np.sqrt((samples**2).mean())) if samples.size else 0.0


def write_speech_wav(path: str | Path, parts: list, rate: int | None = None) -> Path:
    """A WAV of spoken strings and silences (floats, seconds), in order."""
    chunks: list[bytes] = []
    out_rate = rate
    for part in parts:
        if isinstance(part, str):
            pcm, voice_rate = synthesize(part)
            out_rate = out_rate or voice_rate
            chunks.append(pcm)
        else:
            chunks.append(("silence", float(part)))  # type: ignore[arg-type]
    out_rate = out_rate or 22050
    audio = b"".join(
        c if isinstance(c, bytes) else b"\x00\x00" * int(out_rate * c[1]) for c in chunks
    )
    write_wav_mono16(path, audio, out_rate)
    return Path(path)
