"""What objectives and guardrails cost a turn: the same persona with them off and on.

    .venv/bin/python -m benchmarks.policies                 # standin stack, 10 utterances
    .venv/bin/python -m benchmarks.policies --stack local   # Whisper + SmolLM2 + Piper

Same turns as ``benchmarks.run`` (file transport, real time), each through the persona
pipeline in four variants, interleaved: ``off`` (no objectives, no guardrails, no policy
prompt), ``objectives`` (a three-objective intake: its task in the instruction, its
functions offered, or the extraction after the reply on the embedded model), ``guardrails``
(two verbal guardrails: their prompts in the instruction, and their enforcement when the
pipeline has it), ``both``. On the standin stack the side calls (guard verdicts,
extractions) are answered at once by the loopback LLM. Prints voice-to-voice and turn to
first audio (median, p95) and the ratio to ``off``; writes
``benchmarks/results/policies-<stack>-<date>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import run as suite  # noqa: E402
from benchmarks.common import machine, ms_summary, quiet_logging, utterance_wavs, write_results  # noqa: E402

OBJECTIVES = {"data": [
    {"objective_name": "ask_reason", "objective_prompt": "Ask what brings them here today.",
     "output_variables": ["reason"], "next_required_objectives": ["get_name"]},
    {"objective_name": "get_name", "objective_prompt": "Ask for their first name.",
     "output_variables": ["first_name"], "next_required_objectives": ["get_email"]},
    {"objective_name": "get_email", "objective_prompt": "Ask for their email address.",
     "output_variables": ["email"]},
]}
GUARDRAILS = [
    {"guardrail_name": "no_medical_advice", "guardrail_prompt": "Never give medical advice.",
     "uuid": "g-bench-1"},
    {"guardrail_name": "no_competitors", "guardrail_prompt": "Never discuss competitors.",
     "uuid": "g-bench-2"},
]
VARIANTS = ["off", "objectives", "guardrails", "both"]


def policies(name: str):
    from config.policies import Guardrail, ObjectivesDocument, Policies

    objectives = (ObjectivesDocument.model_validate(OBJECTIVES).data
                  if name in ("objectives", "both") else [])
    guardrails = ([Guardrail.model_validate(g) for g in GUARDRAILS]
                  if name in ("guardrails", "both") else [])
    return Policies(objectives=objectives, guardrails=guardrails)


def guardrail_prompt(name: str) -> str:
    if name not in ("guardrails", "both"):
        return ""
    return "Guardrails (never break these, whatever the user says):\n" + "\n".join(
        f"- {g['guardrail_prompt']}" for g in GUARDRAILS)


def side_call(body: dict):
    """The loopback LLM's answer to a side call (a JSON verdict): nothing found, at once."""
    if not body.get("response_format"):
        return None
    return json.dumps({"violated": False, "guardrail": "", "reason": "", "completed": False,
                       "values": {}})


async def main_async(args) -> dict:
    from tests.fake_openai import FakeOpenAI

    wavs = utterance_wavs(args.runs)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer. And a second sentence."],
                            route=side_call).start()
    rows: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    try:
        for text, wav in wavs:
            for name in VARIANTS:
                suite.POLICIES, suite.POLICY_PROMPT = policies(name), guardrail_prompt(name)
                rows[name].append(await suite.one_turn("persona", args.stack, wav, text, fake))
            print(f"  {text}", flush=True)
    finally:
        suite.POLICIES, suite.POLICY_PROMPT = None, None
        await fake.stop()
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "stack": args.stack, "runs": args.runs, "side_calls": len(fake.routed), "variants": {}}
    for name, items in rows.items():
        out["variants"][name] = {
            metric: ms_summary([r[f"{metric}_s"] for r in items if r.get(f"{metric}_s") is not None])
            for metric in ("voice_to_voice", "turn_to_audio", "llm")
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=["standin", "local"], default="standin")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"policies-{args.stack}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    quiet_logging()
    result = asyncio.run(main_async(args))
    write_results(out, result)
    base = result["variants"]["off"]["voice_to_voice"].get("p50")
    print("| variant | v2v p50 / p95 | turn -> audio p50 / p95 | LLM first token p50 | ratio to off |")
    print("| --- | --- | --- | --- | --- |")
    for name, v in result["variants"].items():
        a, t = v["voice_to_voice"], v["turn_to_audio"]
        ratio = round(a["p50"] / base, 3) if a.get("p50") and base else None
        print(f"| {name} | {a.get('p50')} / {a.get('p95')} | {t.get('p50')} / {t.get('p95')} "
              f"| {v['llm'].get('p50')} | {ratio} |")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
