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


# ---------------------------------------------------------------------------------------------
# Varied, more real-sounding speech for word-error-rate measurements (benchmarks/page_wer.py,
# tests/test_browser.py): several espeak-ng voices and Piper settings, speed changes, room noise,
# reverb, telephone band and different loudness. Needs Debian's espeak-ng and sox
# (scripts/test.sh installs them); `have_speech_tools()` says whether they are there.

import dataclasses
import re
import shutil
import subprocess

RATE = 16000  # every generated clip is 16 kHz mono 16-bit, what Whisper is given


@dataclasses.dataclass(frozen=True)
class Speaker:
    """One way of saying a sentence: a voice, then what the room and the line do to it."""

    name: str
    engine: str = "espeak"  # "espeak" (voice = an espeak-ng voice) or "piper" (the bundled voice)
    voice: str = "en-us"
    wpm: int = 160  # espeak-ng words per minute
    pitch: int = 50  # espeak-ng pitch 0-99
    length_scale: float = 1.0  # piper: > 1 is slower
    noise_scale: float = 0.0  # piper: > 0 varies the voice (not deterministic then)
    tempo: float = 1.0  # sox tempo (speed without pitch change)
    reverb: int = 0  # sox reverberance 0-100 (0: dry)
    telephone: bool = False  # sox sinc 300-3400 band-pass
    noise: str = ""  # "pink" / "brown" / "white" room noise mixed in at snr_db
    snr_db: float = 20.0
    level_dbfs: float = -20.0  # RMS level of the speech (quiet or loud talker)


# Varied voices and conditions, none of them the clean Piper voice the other tests use.
SPEAKERS: list[Speaker] = [
    Speaker("espeak en-us", voice="en-us", wpm=165),
    Speaker("espeak en-gb, pink noise 15 dB", voice="en-gb", wpm=150, noise="pink", snr_db=15),
    Speaker("espeak en-gb-scotland, reverb", voice="en-gb-scotland", wpm=145, pitch=40, reverb=50),
    Speaker("espeak en-us+f3, quiet", voice="en-us+f3", wpm=170, pitch=65, level_dbfs=-32),
    Speaker("espeak en-gb-x-rp+m3, telephone", voice="en-gb-x-rp+m3", wpm=155, telephone=True),
    Speaker("espeak en-us-nyc+f2, brown noise 10 dB", voice="en-us-nyc+f2", wpm=175, pitch=60,
            noise="brown", snr_db=10),
    Speaker("espeak en-029, fast", voice="en-029", wpm=150, tempo=1.2),
    Speaker("espeak en-gb-x-gbclan+Andrea, loud", voice="en-gb-x-gbclan+Andrea", wpm=160,
            level_dbfs=-10),
    Speaker("piper slow, varied", engine="piper", length_scale=1.3, noise_scale=0.667),
    Speaker("piper fast, pink noise 12 dB, reverb", engine="piper", length_scale=0.8,
            noise_scale=0.5, noise="pink", snr_db=12, reverb=35),
    Speaker("espeak en-us+m7, slow, telephone, white noise 20 dB", voice="en-us+m7", wpm=130,
            tempo=0.9, telephone=True, noise="white", snr_db=20),
    Speaker("piper, telephone, quiet", engine="piper", noise_scale=0.4, telephone=True,
            level_dbfs=-30),
]

SENTENCES: list[str] = [
    "Could you tell me how the weather looks for the weekend?",
    "I would like to change the delivery address on my order.",
    "What time does the library open on Sunday mornings?",
    "My laptop keeps restarting whenever I open the video editor.",
    "Please remind me to call my sister after lunch.",
    "How far is the train station from the city center?",
    "I think the blue jacket fits better than the green one.",
    "Can you recommend a quiet restaurant near the river?",
    "We are planning a trip to the mountains next month.",
    "Which vegetables grow well in a small garden?",
    "The meeting has been moved to Thursday afternoon.",
    "Tell me something interesting about the ocean.",
]


def have_speech_tools() -> str | None:
    """None when espeak-ng and sox are installed, else what is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if not shutil.which(tool)]
    return f"{' and '.join(missing)} not installed (apt-get install espeak-ng sox)" if missing else None


def _sox(pcm: bytes, rate_in: int, effects: list[str]) -> bytes:
    raw = ["-t", "raw", "-e", "signed", "-b", "16", "-c", "1"]
    out = subprocess.run(["sox", *raw, "-r", str(rate_in), "-", *raw, "-r", str(RATE), "-",
                          *effects, "rate", str(RATE)],
                         input=pcm, capture_output=True, check=True)
    return out.stdout


def _espeak(text: str, speaker: Speaker) -> tuple[bytes, int]:
    out = subprocess.run(["espeak-ng", "-v", speaker.voice, "-s", str(speaker.wpm),
                          "-p", str(speaker.pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    # espeak-ng writes a WAV with unknown-length headers: take the PCM after the "data" chunk.
    data = out.find(b"data")
    rate = int.from_bytes(out[24:28], "little")
    return out[data + 8:], rate


def _piper(text: str, speaker: Speaker) -> tuple[bytes, int]:
    from piper import SynthesisConfig

    voice = _voice()
    config = SynthesisConfig(length_scale=speaker.length_scale, noise_scale=speaker.noise_scale,
                             noise_w_scale=0.8 if speaker.noise_scale else 0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    return pcm, voice.config.sample_rate


def noise_bed(seconds: float, kind: str = "pink", seed: int = 1) -> np.ndarray:
    """``seconds`` of sox-synthesized noise at RATE, float32 with RMS 1."""
    n = int(seconds * RATE)
    out = subprocess.run(["sox", "-n", "-t", "raw", "-e", "signed", "-b", "16", "-c", "1",
                          "-r", str(RATE), "-R", "-", "synth", f"{seconds:.3f}", f"{kind}noise"],
                         capture_output=True, check=True).stdout
    noise = np.frombuffer(out, dtype=np.int16).astype(np.float32)[:n]
    if noise.size < n:
        noise = np.pad(noise, (0, n - noise.size))
    rng = np.random.default_rng(seed)  # sox -R is repeatable; rotate it so beds differ
    noise = np.roll(noise, int(rng.integers(0, max(1, n))))
    return noise / max(float(np.sqrt((noise**2).mean())), 1e-9)


def speak(text: str, speaker: Speaker) -> np.ndarray:
    """``text`` as ``speaker`` says it: float32 samples in [-1, 1] at RATE."""
    pcm, rate = _piper(text, speaker) if speaker.engine == "piper" else _espeak(text, speaker)
    return through_room(pcm, rate, speaker, seed=len(text))


def through_room(pcm: bytes, rate: int, speaker: Speaker, seed: int = 0) -> np.ndarray:
    """16-bit PCM after ``speaker``'s tempo, telephone band, reverb, level and room noise."""
    effects: list[str] = []
    if speaker.tempo != 1.0:
        effects += ["tempo", "-s", str(speaker.tempo)]
    if speaker.telephone:
        effects += ["sinc", "300-3400"]
    if speaker.reverb:
        effects += ["reverb", str(speaker.reverb)]
    pcm = _sox(pcm, rate, effects)
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    loud = np.abs(x) > 0.01 * max(float(np.abs(x).max()), 1e-9)
    level = float(np.sqrt((x[loud] ** 2).mean())) if loud.any() else 1.0
    x = x * (10 ** (speaker.level_dbfs / 20) / max(level, 1e-9))
    if speaker.noise:
        x = x + noise_bed(len(x) / RATE, speaker.noise, seed=seed) * (
            10 ** ((speaker.level_dbfs - speaker.snr_db) / 20))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


# What a real recording goes through in human_recordings(noisy=True): one condition each, in turn.
HUMAN_CONDITIONS: list[Speaker] = [
    Speaker("pink noise 10 dB", noise="pink", snr_db=10),
    Speaker("telephone, quiet", telephone=True, level_dbfs=-32),
    Speaker("reverb, brown noise 12 dB", reverb=50, noise="brown", snr_db=12),
    Speaker("fast, white noise 15 dB", tempo=1.15, noise="white", snr_db=15),
    Speaker("loud, pink noise 5 dB", level_dbfs=-10, noise="pink", snr_db=5),
]


@dataclasses.dataclass(frozen=True)
class Recording:
    """A real recording (float32 at RATE) said as it is: no voice, no effects."""

    name: str
    samples: np.ndarray = dataclasses.field(repr=False, compare=False)


def human_recordings(directory: str | Path, noisy: bool = False) -> list[tuple[str, Recording]]:
    """(transcript, recording) of each ``*.wav`` with a ``*.txt`` beside it: e.g. the LibriVox
    clips of real human speech that pocketsphinx's source distribution ships in
    ``test/data/librivox`` (``pip download --no-deps --no-binary :all: pocketsphinx``).
    ``noisy``: each recording once more through one of HUMAN_CONDITIONS."""
    import wave

    out = []
    for wav in sorted(Path(directory).glob("*.wav")):
        txt = wav.with_suffix(".txt")
        if not txt.exists():
            continue
        with wave.open(str(wav)) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                continue
        if rate != RATE:
            pcm = _sox(pcm, rate, [])
        x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        out.append((txt.read_text().strip(), Recording(f"human: {wav.stem[-4:]}", x)))
    if noisy:
        for i, (text, rec) in enumerate(list(out)):
            cond = HUMAN_CONDITIONS[i % len(HUMAN_CONDITIONS)]
            x = through_room(to_pcm16(rec.samples), RATE, cond, seed=i)
            out.append((text, Recording(f"{rec.name}, {cond.name}", x)))
    return out


def write_conversation_wav(
    path: str | Path, lines: list[tuple[str, Speaker | Recording]], *, lead_secs: float = 6.0,
    gap_secs: float = 8.0, tail_secs: float = 30.0, room: str = "pink", room_dbfs: float = -55.0,
    gaps: list[float] | None = None,
) -> tuple[Path, list[dict]]:
    """One WAV of several speakers' lines separated by pauses, over a faint room-noise bed
    (``room`` "" for digital silence). Returns the path and each line's text, speaker and
    start/end seconds in the file. ``gaps`` overrides the pause after each line."""
    clips = [speaker.samples if isinstance(speaker, Recording) else speak(text, speaker)
             for text, speaker in lines]
    pauses = gaps if gaps is not None else [gap_secs] * len(clips)
    segments, pieces, t = [], [np.zeros(int(lead_secs * RATE), np.float32)], lead_secs
    for (text, speaker), clip, pause in zip(lines, clips, pauses):
        segments.append({"text": text, "speaker": speaker.name, "start": round(t, 3),
                         "end": round(t + len(clip) / RATE, 3)})
        pieces += [clip, np.zeros(int(pause * RATE), np.float32)]
        t += len(clip) / RATE + pause
    pieces.append(np.zeros(int(tail_secs * RATE), np.float32))
    audio = np.concatenate(pieces)
    if room:
        audio = audio + noise_bed(len(audio) / RATE, room, seed=7) * 10 ** (room_dbfs / 20)
    write_wav_mono16(path, to_pcm16(audio), RATE)
    return Path(path), segments


# ---------------------------------------------------------------------------------------------
# Word error rate (Levenshtein over words after a light normalization).

_SAME = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay"}
_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
            "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation ("Don't" -> "dont", "1" -> "one")."""
    text = text.lower().replace("-", " ").replace("'", "").replace("\u2019", "")
    return [_SAME.get(w, _NUMBERS.get(w, w)) for w in re.findall(r"[a-z0-9]+", text)]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, number of reference words)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (can exceed 1 with insertions)."""
    errors, n = word_errors(reference, hypothesis)
    return errors / n if n else float(bool(words(hypothesis)))


def heard_per_line(utterances: list[tuple[float, str]], segments: list[dict]) -> list[str]:
    """What was heard of each line: each (arrival seconds, text) transcript goes to the last line
    that ended before it arrived (lines separated by pauses longer than the STT's delay)."""
    heard: list[list[str]] = [[] for _ in segments]
    for t, text in utterances:
        ended = [i for i, seg in enumerate(segments) if seg["end"] <= t]
        if ended:
            heard[ended[-1]].append(text)
    return [" ".join(h) for h in heard]


def user_utterances(events: list[dict]) -> list[tuple[float, str]]:
    """(seconds since the microphone opened, speech) of each final user utterance in a page's
    ``window.eventLog``."""
    out = []
    for entry in events:
        msg = entry.get("message") or {}
        props = msg.get("properties") or {}
        if (msg.get("event_type") == "conversation.utterance" and props.get("role") == "user"
                and entry.get("t") is not None):
            out.append((entry["t"] / 1000.0, props.get("speech", "")))
    return out
