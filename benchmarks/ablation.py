"""Which persona feature costs what: the persona pipeline with one feature off at a time.

    .venv/bin/python -m benchmarks.ablation                # standin stack, 10 utterances

Same turns as ``benchmarks.run`` (file transport, real time); prints the
voice-to-voice and STT-final medians per variant next to the plain-Pipecat
reference, and writes ``benchmarks/results/ablation-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import run as suite  # noqa: E402
from benchmarks.common import machine, ms_summary, quiet_logging, utterance_wavs, write_results  # noqa: E402

FULL = copy.deepcopy(suite.FULL_PERSONA)


def variant(name: str) -> dict:
    persona = copy.deepcopy(FULL)
    layers = persona["layers"]
    if name == "no voice isolation":
        layers["conversational_flow"]["voice_isolation"] = "off"
    elif name == "no hotwords":
        layers.pop("stt")
    elif name == "no speculative inference":
        layers["llm"]["speculative_inference"] = False
    elif name == "no voice isolation, no hotwords":
        layers["conversational_flow"]["voice_isolation"] = "off"
        layers.pop("stt")
    return persona


VARIANTS = ["full", "no voice isolation", "no hotwords", "no speculative inference",
            "no voice isolation, no hotwords"]


async def main_async(args) -> dict:
    from tests.fake_openai import FakeOpenAI

    wavs = utterance_wavs(args.runs)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer."]).start()
    rows: dict[str, list[dict]] = {name: [] for name in ["reference", *VARIANTS]}
    try:
        for text, wav in wavs:
            rows["reference"].append(await suite.one_turn("reference", args.stack, wav, text, fake))
            for name in VARIANTS:
                suite.FULL_PERSONA = variant(name)
                rows[name].append(await suite.one_turn("persona", args.stack, wav, text, fake))
            print(f"  {text}", flush=True)
    finally:
        suite.FULL_PERSONA = FULL
        await fake.stop()
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stack": args.stack,
           "variants": {}}
    for name, items in rows.items():
        out["variants"][name] = {
            metric: ms_summary([r[f"{metric}_s"] for r in items if r.get(f"{metric}_s") is not None])
            for metric in ("voice_to_voice", "vad", "stt", "turn", "turn_to_audio")
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=["standin", "local"], default="standin")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        f"ablation-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    quiet_logging()
    result = asyncio.run(main_async(args))
    write_results(args.out, result)
    ref = result["variants"]["reference"]["voice_to_voice"]["p50"]
    print("| variant | v2v p50 / p95 | VAD stop p50 | STT final p50 | turn -> audio p50 / p95 "
          "| ratio to reference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, v in result["variants"].items():
        a, s_, t = v["voice_to_voice"], v["stt"], v["turn_to_audio"]
        print(f"| {name} | {a.get('p50')} / {a.get('p95')} | {v['vad'].get('p50')} | {s_.get('p50')} "
              f"| {t.get('p50')} / {t.get('p95')} "
              f"| {round(a['p50'] / ref, 3) if a.get('p50') and ref else None} |")
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
