"""What the benchmarks share: utterances, percentiles, the machine, running one file-transport turn."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

UTTERANCES = [
    "What is the capital of France?",
    "Can you tell me a joke about computers?",
    "I would like to book a table for two tomorrow evening.",
    "How long does it take to boil an egg?",
    "My internet connection keeps dropping every few minutes.",
    "What is the weather usually like in Seattle in November?",
    "Could you recommend a good book about history?",
    "Thanks, that was really helpful.",
    "Why is the sky blue?",
    "Remind me what we talked about earlier.",
]


# The hard set (``--set hard``): varied voices, rates, rooms and lines, mid-sentence pauses, a
# trailing "um", short answers and a long rambling turn. Each item: (speaker name in
# tests.speech.SPEAKERS or "piper", parts: text and pause seconds). A line with a pause inside
# must stay one turn at medium patience.
HARD_UTTERANCES: list[tuple[str, list]] = [
    ("piper", ["What is the capital of France?"]),
    ("espeak en-us", ["Can you tell me a joke about computers?"]),
    ("espeak en-gb, pink noise 15 dB", ["I would like to book a table,", 0.35,
                                        "for two tomorrow evening."]),
    ("piper", ["Yes."]),
    ("espeak en-us+f3, quiet", ["No thanks."]),
    ("piper slow, varied", ["So I was wondering,", 0.3, "what time the library opens on Sunday?"]),
    ("espeak en-us-nyc+f2, brown noise 10 dB", [
        "So yesterday I was trying to set up my new router, and it kept dropping the connection "
        "every few minutes, and I restarted it twice, but it still does not work. What should I "
        "try next?"]),
    ("espeak en-029, fast", ["Why is the sky blue?"]),
    ("piper fast, pink noise 12 dB, reverb", ["Could you recommend a good book about history?"]),
    ("espeak en-gb-scotland, reverb", ["My internet connection keeps dropping,", 0.3,
                                       "every few minutes."]),
    ("piper, telephone, quiet", ["Thanks, that was really helpful."]),
    ("piper", ["I need some help with, um,", 0.6, "resetting my password."]),
    ("espeak en-us+m7, slow, telephone, white noise 20 dB",
     ["What is the weather usually like in Seattle in November?"]),
    ("espeak en-gb-x-rp+m3, telephone", ["No, that is all for today, thank you."]),
]


def _speech_bounds(clip) -> tuple[int, int]:
    """Samples of ``clip`` (float32 at 16 kHz) where its speech starts and ends: the first and
    last 20 ms windows well above the clip's own noise floor (clips may carry room noise)."""
    import numpy as np

    window = 320
    frames = clip[: clip.size // window * window].reshape(-1, window)
    levels = np.sqrt((frames ** 2).mean(axis=1))
    floor, peak = np.percentile(levels, 10), np.percentile(levels, 99)
    loud = np.nonzero(levels > floor + 0.15 * (peak - floor))[0]
    if not loud.size:
        return 0, clip.size
    return int(loud[0] * window), int((loud[-1] + 1) * window)


def hard_utterance_wavs(count: int | None = None) -> list[dict[str, Any]]:
    """The hard set as WAVs (0.5 s lead, 1.5 s tail, the speaker's room noise throughout).

    Each item: ``text``, ``speaker``, ``wav``, ``speech_end_s`` (in the file), ``pauses``
    (the mid-line pauses, seconds).
    """
    import numpy as np

    from tests.speech import RATE, SPEAKERS, Speaker, noise_bed, speak, to_pcm16
    from transports.file import write_wav_mono16

    speakers = {sp.name: sp for sp in SPEAKERS}
    speakers["piper"] = Speaker("piper", engine="piper")
    tmp = Path(tempfile.mkdtemp(prefix="bench-hard-"))
    out = []
    for i, (name, parts) in enumerate(HARD_UTTERANCES[:count]):
        speaker = speakers[name]
        pieces, t, end = [np.zeros(int(0.5 * RATE), np.float32)], 0.5, 0.5
        for part in parts:
            if isinstance(part, str):  # the words only: a pause is then exactly as long as said
                clip = speak(part, speaker)
                start, stop = _speech_bounds(clip)
                offset = max(0, start - 480)  # 30 ms either side
                clip = clip[offset:stop + 480]
                end = t + (stop - offset) / RATE
            else:
                clip = np.zeros(int(part * RATE), np.float32)
            pieces.append(clip)
            t += clip.size / RATE
        pieces.append(np.zeros(int(1.5 * RATE), np.float32))
        audio = np.concatenate(pieces)
        if speaker.noise:  # the room does not fall silent between words
            quiet = np.abs(audio) == 0
            bed = np.resize(noise_bed(audio.size / RATE + 0.01, speaker.noise, seed=i),
                            audio.size) * (10 ** ((speaker.level_dbfs - speaker.snr_db) / 20))
            audio = np.where(quiet, bed, audio).astype(np.float32)
        path = tmp / f"h{i}.wav"
        write_wav_mono16(path, to_pcm16(audio), RATE)
        out.append({"text": " ".join(p for p in parts if isinstance(p, str)), "speaker": name,
                    "wav": path, "speech_end_s": round(end, 3),
                    "pauses": [p for p in parts if not isinstance(p, str)]})
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def ms_summary(values: list[float]) -> dict[str, Any]:
    """p50/p95/min/max in milliseconds of values in seconds."""
    if not values:
        return {"n": 0}
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50": round(statistics.median(ms)), "p95": round(percentile(ms, 95)),
            "min": round(min(ms)), "max": round(max(ms))}


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, platform and Python of this machine."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def utterance_wavs(count: int) -> list[tuple[str, Path]]:
    """The first ``count`` utterances spoken by the bundled Piper voice (0.5 s lead, 1 s tail)."""
    from transports.file import write_wav_mono16
    from tests.speech import synthesize

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    wavs = []
    for i, text in enumerate(UTTERANCES[:count]):
        pcm, rate = synthesize(text)
        path = tmp / f"u{i}.wav"
        write_wav_mono16(path, b"\x00\x00" * int(rate * 0.5) + pcm + b"\x00\x00" * rate, rate)
        wavs.append((text, path))
    return wavs


async def run_turn(worker: Any, transport: Any, pcm: bytes, *, linger_secs: float,
                   give_up_secs: float = 15.0,
                   speech_end_secs: float | None = None,
                   min_run_secs: float = 0.0) -> tuple[float, float | None]:
    """Run ``worker`` until the reply has played ``linger_secs`` (or no reply comes), then end it.

    Returns (end of the user's speech, first bot audio) as monotonic times; the speech end is
    ``speech_end_secs`` into the file when given, else found in the audio. It runs at least
    ``min_run_secs`` from the start of the input (to see a second reply, if any).
    """
    from pipecat.frames.frames import EndFrame
    from pipecat.workers.runner import WorkerRunner

    from transports.file import last_speech_secs

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        first = transport.stats.first_output_audio
        started = transport.stats.input_started
        if (first is not None and time.monotonic() > first + linger_secs
                and started and time.monotonic() > started + min_run_secs):
            break
        if first is None and started and time.monotonic() > started + len(pcm) / 32000 + give_up_secs:
            break  # no reply
        await asyncio.sleep(0.02)
    transport.finish()
    await worker.queue_frames([EndFrame()])
    try:
        await asyncio.wait_for(task, 20)
    except TimeoutError:
        await runner.cancel()
    if speech_end_secs is None:
        speech_end_secs = last_speech_secs(pcm, 16000) or 0
    speech_end = transport.stats.input_started + speech_end_secs
    return speech_end, transport.stats.first_output_audio


def quiet_logging() -> None:
    """Benchmarks log at ``LOG_LEVEL`` (default WARNING) and never read a developer's .env."""
    import sys

    from loguru import logger

    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("PERSONA_DOTENV", "0")
    logger.remove()
    logger.add(sys.stderr, level=os.environ["LOG_LEVEL"])


def write_results(path: Path, results: dict[str, Any]) -> None:
    """The JSON file of one run."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
