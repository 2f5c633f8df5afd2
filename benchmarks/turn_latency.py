"""Turn latency per ``turn_taking_patience`` level.

For each spoken utterance (synthesized with the bundled Piper voice and
streamed in real time through the file transport into the real persona
pipeline), measure from the end of the user's speech to

- the turn decision (Pipecat's ``UserStoppedSpeakingFrame``), and
- the first bot audio written to the transport,

and count double replies (more than one reply started for one utterance).
Two stacks: ``local`` (Whisper tiny.en, SmolLM2 via llama.cpp, Piper) and
``standin`` (Whisper, plus zero-latency loopback stand-ins for the LLM and TTS).

    python -m benchmarks.turn_latency                      # both stacks, all levels
    python -m benchmarks.turn_latency --stack standin --levels medium --runs 10

Results: a JSON file in benchmarks/results/ and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, ms_summary, quiet_logging, run_turn, utterance_wavs  # noqa: E402


def summary(values: list[float]) -> dict[str, Any]:
    """p50/p95/min/max in milliseconds."""
    return ms_summary(values)


async def one_turn(stack: str, level: str, wav: Path, fake) -> dict[str, Any]:
    from pipecat.frames.frames import BotStartedSpeakingFrame, UserStoppedSpeakingFrame
    from pipecat.observers.base_observer import BaseObserver, FramePushed
    from pipecat.processors.frame_processor import FrameDirection

    from benchmarks.standins import StandinTTS
    from config import Settings, persona_from_dict
    from config.app import AppConfig
    from services.voice_isolation import input_filter
    from session.owner import ConversationSession
    from transports.file import FileTransport

    layers: dict[str, Any] = {"conversational_flow": {"turn_taking_patience": level}}
    if stack == "standin":
        layers["llm"] = {"model": "standin", "base_url": fake.base_url, "api_key": "test-key"}
    persona = persona_from_dict({"persona_name": "Bench", "layers": layers,
                                 "system_prompt": "Answer in one short sentence."}).value
    app = AppConfig.of(persona, settings=Settings.from_env(
        {"PERSONA_DATA_DIR": str(Path(tempfile.gettempdir()) / "bench-data")}))

    def standins(services) -> None:
        if stack == "standin":
            services.tts = StandinTTS()

    transport = FileTransport(wav, audio_in_filter=input_filter(app.options.flow))
    pcm = transport.load(16000)
    marks: dict[str, Any] = {"replies": 0}

    class Marks(BaseObserver):
        async def on_push_frame(self, data: FramePushed):
            if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
                return
            if isinstance(data.frame, UserStoppedSpeakingFrame) and "turn" not in marks:
                marks["turn"] = time.monotonic()
            elif isinstance(data.frame, BotStartedSpeakingFrame):
                marks["replies"] += 1

    async with ConversationSession(app, transport="file", replace_services=standins) as session:
        built = session.build(transport, observers=[Marks()])
        speech_end, first_audio = await run_turn(session.worker, transport, pcm, linger_secs=2.5)
    return {
        "utterance_heard": built.transcript.of("user"),
        "turn_decision_s": round(marks["turn"] - speech_end, 3) if "turn" in marks else None,
        "first_audio_s": round(first_audio - speech_end, 3) if first_audio else None,
        "replies": marks["replies"],
    }


async def run(stacks: list[str], levels: list[str], runs: int, out: Path) -> dict[str, Any]:
    from tests.fake_openai import FakeOpenAI

    wavs = utterance_wavs(runs)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer."]).start()
    results: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": {},
    }
    try:
        for stack in stacks:
            for level in levels:
                rows = []
                for text, path in wavs:
                    row = await one_turn(stack, level, path, fake)
                    row["utterance"] = text
                    rows.append(row)
                    print(f"{stack:8} {level:6} decision={row['turn_decision_s']} "
                          f"audio={row['first_audio_s']} replies={row['replies']} | {text}",
                          flush=True)
                decisions = [r["turn_decision_s"] for r in rows if r["turn_decision_s"] is not None]
                audio = [r["first_audio_s"] for r in rows if r["first_audio_s"] is not None]
                results["runs"][f"{stack}/{level}"] = {
                    "turn_decision_ms": summary(decisions),
                    "first_audio_ms": summary(audio),
                    "double_replies": sum(1 for r in rows if r["replies"] > 1),
                    "no_reply": sum(1 for r in rows if r["first_audio_s"] is None),
                    "turns": rows,
                }
    finally:
        await fake.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict[str, Any]) -> str:
    """A Markdown table of the summaries."""
    lines = ["| stack / patience | turn decision p50 / p95 (ms) | first audio p50 / p95 / min / max (ms) "
             "| double replies | no reply |", "| --- | --- | --- | --- | --- |"]
    for key, run in results["runs"].items():
        d, a = run["turn_decision_ms"], run["first_audio_ms"]
        lines.append(f"| {key} | {d.get('p50')} / {d.get('p95')} | {a.get('p50')} / {a.get('p95')} / "
                     f"{a.get('min')} / {a.get('max')} | {run['double_replies']} | {run['no_reply']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=["local", "standin", "both"], default="both")
    parser.add_argument("--levels", default="low,medium,high")
    parser.add_argument("--runs", type=int, default=10, help="utterances per level (max 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        f"turn_latency-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    quiet_logging()
    stacks = ["local", "standin"] if args.stack == "both" else [args.stack]
    results = asyncio.run(run(stacks, args.levels.split(","), min(args.runs, 10), args.out))
    print()
    print(table(results))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
