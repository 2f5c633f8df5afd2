"""The scripted user's voices: the embedded Piper voice, or any espeak-ng voice for variety.

A turn's ``voice`` is ``piper`` (the bundled ``en_US-joe-medium``, deterministic),
``piper:<speed>`` (length scale: ``piper:1.3`` speaks slower), or ``espeak:<voice>``
(e.g. ``espeak:en-gb``, ``espeak:en-us+f3``; ``espeak-ng --voices`` lists them), with an
optional words-per-minute after another colon (``espeak:en-us:140``). Every clip comes
back as 16-bit mono PCM at 16 kHz.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import numpy as np

from config.errors import AgentError

RATE = 16000
_VOICE = re.compile(r"^(piper(:(?P<scale>\d+(\.\d+)?))?|espeak:(?P<espeak>[A-Za-z0-9_+\-]{1,40})"
                    r"(:(?P<wpm>\d{2,3}))?)$")


class VoiceError(AgentError):
    """A voice a scenario names cannot be used here."""


def voice_problem(voice: str) -> str | None:
    """Why ``voice`` is not a voice name (None when it is)."""
    if not _VOICE.match(voice):
        return ("must be 'piper', 'piper:<length scale>' or 'espeak:<voice>[:<words per "
                "minute>]', e.g. 'espeak:en-gb'")
    return None


@functools.lru_cache(maxsize=1)
def _piper():
    from piper import PiperVoice

    from services.local.models import piper_voice

    found = piper_voice()
    return PiperVoice.load(found.folder / f"{found.voice_id}.onnx")


def resample(pcm: bytes, rate: int, to: int = RATE) -> bytes:
    """16-bit mono PCM at ``rate`` as 16-bit mono PCM at ``to``."""
    if rate == to:
        return pcm
    import soxr

    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    out = soxr.resample(samples, rate, to)
    return (np.clip(out, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def speak(text: str, voice: str = "piper") -> bytes:
    """``text`` spoken in ``voice``: 16-bit mono PCM at :data:`RATE`."""
    match = _VOICE.match(voice)
    if match is None:
        raise VoiceError(f"voice {voice!r}: {voice_problem(voice)}")
    if match.group("espeak"):
        return _espeak(text, match.group("espeak"), int(match.group("wpm") or 160))
    from piper import SynthesisConfig

    scale = float(match.group("scale") or 1.0)
    piper = _piper()
    config = SynthesisConfig(length_scale=scale, noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in piper.synthesize(text, syn_config=config))
    return resample(pcm, piper.config.sample_rate)


def _espeak(text: str, voice: str, wpm: int) -> bytes:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise VoiceError("espeak voices need espeak-ng (apt-get install espeak-ng); "
                         "'piper' needs nothing")
    done = subprocess.run([binary, "-v", voice, "-s", str(wpm), "--stdout", text],
                          capture_output=True, timeout=60, check=False)
    if done.returncode != 0 or b"data" not in done.stdout[:200]:
        raise VoiceError(f"espeak-ng has no voice {voice!r} "
                         f"({done.stderr.decode(errors='replace').strip()[:200]})")
    out = done.stdout
    # espeak-ng writes a WAV with unknown-length headers: the PCM follows the "data" chunk.
    data = out.find(b"data")
    rate = int.from_bytes(out[24:28], "little")
    return resample(out[data + 8:], rate)
