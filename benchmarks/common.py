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
                   give_up_secs: float = 15.0) -> tuple[float, float | None]:
    """Run ``worker`` until the reply has played ``linger_secs`` (or no reply comes), then end it.

    Returns (end of the user's speech, first bot audio) as monotonic times.
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
        if first is not None and time.monotonic() > first + linger_secs:
            break
        started = transport.stats.input_started
        if first is None and started and time.monotonic() > started + len(pcm) / 32000 + give_up_secs:
            break  # no reply
        await asyncio.sleep(0.02)
    transport.finish()
    await worker.queue_frames([EndFrame()])
    try:
        await asyncio.wait_for(task, 20)
    except TimeoutError:
        await runner.cancel()
    speech_end = transport.stats.input_started + (last_speech_secs(pcm, 16000) or 0)
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
