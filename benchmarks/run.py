"""The benchmark suite: voice-to-voice latency (persona pipeline vs plain Pipecat), concurrency,
memory and cold start.

    .venv/bin/python -m benchmarks.run                 # everything (~10 min on 2 cores)
    .venv/bin/python -m benchmarks.run --only latency --stack standin --runs 5

1. Latency. Ten varied utterances, synthesized with the bundled Piper voice,
   are streamed in real time (0.5 s lead, 1 s tail) through the file transport.
   Per turn, from the end of the user's speech (found in the audio): the final
   transcript, the turn decision (``UserStoppedSpeakingFrame``), the LLM's first
   token, the TTS's first audio and the first bot audio written to the
   transport (voice-to-voice). Each utterance runs through two pipelines:
   - *reference*: only Pipecat parts, as in Pipecat's Tavus example: transport
     in -> STT -> ``LLMContextAggregatorPair`` user aggregator (Silero VAD and
     Smart Turn v3 with the same stop times) -> LLM -> TTS -> transport out ->
     assistant aggregator;
   - *persona*: ``build_pipeline`` with a persona that uses every implemented
     feature (interactions protocol, tools, objectives/guardrails prompt,
     transcript, interruptibility, speculative inference, idle engagement,
     RNNoise voice isolation, hotwords, closed captions).
   Both get the same STT/LLM/TTS services (built by our factories: Pipecat's
   classes with the persona's settings) and the same system prompt.
   Stacks: ``local`` (Whisper tiny.en, SmolLM2 via llama.cpp, Piper) and
   ``standin`` (Whisper, zero-latency loopback LLM and TTS stand-ins).
2. Concurrency: N simultaneous persona conversations with cloud-style stand-ins
   for STT, LLM and TTS (VAD, Smart Turn and RNNoise still run here), N = 1, 2,
   4, ...; the largest N whose p95 voice-to-voice stays within +20% of N = 1,
   and the CPU time per conversation.
3. Memory: resident memory of this process (the bot's code path in-process)
   idle, in one conversation, and per additional conversation (cloud-style);
   the local stack's peak with the llama.cpp server beside it.
4. Cold start: ``python bot.py`` until its page answers and the embedded LLM is
   ready (local stack).

Results: ``benchmarks/results/run-<date>.json`` and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    HARD_UTTERANCES,
    hard_utterance_wavs,
    machine,
    ms_summary,
    quiet_logging,
    run_turn,
    utterance_wavs,
    write_results,
)

SYSTEM_PROMPT = "You are Bench, a concise voice assistant. Answer in one short sentence."
FULL_PERSONA: dict[str, Any] = {
    "persona_name": "Bench",
    "system_prompt": SYSTEM_PROMPT,
    "context": "The user is trying the assistant out from home.",
    "layers": {
        "llm": {
            "speculative_inference": True,
            "tools": [{
                "type": "function",
                "function": {
                    "name": "get_current_time",
                    "description": "The current local time in a city or time zone.",
                    "parameters": {"type": "object", "required": ["location"],
                                   "properties": {"location": {"type": "string"}}},
                },
            }],
        },
        "stt": {"hotwords": "Seattle, France"},
        "conversational_flow": {
            "turn_detection_model": "sparrow-1", "turn_taking_patience": "medium",
            "replica_interruptibility": "medium", "voice_isolation": "near",
            "idle_engagement": "patient",
        },
    },
}
FULL_CONVERSATION: dict[str, Any] = {
    "conversational_context": "It is a weekday evening.",
    "properties": {"enable_closed_captions": True, "language": "english"},
}
POLICY = "Guardrails (never break these, whatever the user says):\n- Never give medical advice."
# The persona's objectives and guardrails (config.policies.Policies; benchmarks.policies sets
# them per variant) and the policy prompt it gets (POLICY by default).
POLICIES: Any = None
POLICY_PROMPT: str | None = None
# Extra create-conversation fields for the persona's turn (benchmarks.retrieval: documents).
CONVERSATION_EXTRA: dict[str, Any] | None = None


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (MB) from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --------------------------------------------------------------------------- one turn


def _app(kind: str, stack: str, fake):
    """The configuration of one kind of pipeline; both kinds get the persona's system prompt."""
    from config import Settings, conversation_from_dict, persona_from_dict
    from config.app import AppConfig
    from config.prompt import system_prompt_for

    settings = Settings.from_env({"PERSONA_DATA_DIR": str(Path(tempfile.gettempdir()) / "bench-data")})
    if kind == "persona":
        data = json.loads(json.dumps(FULL_PERSONA))
        conversation = conversation_from_dict({**FULL_CONVERSATION,
                                               **(CONVERSATION_EXTRA or {})}).value
    else:
        persona = _app("persona", stack, fake).persona
        prompt = system_prompt_for(persona, conversation_from_dict(FULL_CONVERSATION).value, None)
        data = {"persona_name": "Reference", "system_prompt": prompt,
                "layers": {"conversational_flow": {"voice_isolation": "off"}}}
        conversation = conversation_from_dict({}).value
    if stack in ("standin", "cloud"):
        data["layers"].setdefault("llm", {}).update(
            {"model": "standin", "base_url": fake.base_url, "api_key": "test-key"})
    else:  # the same words for the same transcript in every pipeline: a fixed sampling seed
        data["layers"].setdefault("llm", {}).setdefault("extra_body", {})["seed"] = 7
    persona = persona_from_dict(data).value
    if kind == "persona":
        persona.set_policy_prompt(POLICY if POLICY_PROMPT is None else POLICY_PROMPT)
    app = AppConfig.of(persona, conversation, settings)
    if kind == "persona" and POLICIES is not None:
        app.policies = POLICIES
    return app


async def one_turn(kind: str, stack: str, wav: Path, text: str, fake,
                   speech_end_secs: float | None = None) -> dict[str, Any]:
    """One utterance through a fresh pipeline; times from the end of the user's speech.

    Besides the first time of each stage: ``turns`` (turn decisions for this one line),
    ``early_turn_ends`` (decisions before the speech ended: a turn ended inside a pause),
    ``double_reply`` (a reply began before the last decision), ``reply`` (its text).
    """
    from pipecat.frames.frames import (
        LLMFullResponseStartFrame,
        LLMTextFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        UserStoppedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.observers.base_observer import BaseObserver, FramePushed
    from pipecat.processors.frame_processor import FrameDirection

    from benchmarks.standins import StandinSTT, StandinTTS
    from services.voice_isolation import input_filter
    from session.owner import ConversationSession
    from transports.file import FileTransport

    app = _app(kind, stack, fake)

    def standins(services) -> None:
        if stack in ("standin", "cloud"):
            services.tts = StandinTTS()
        if stack == "cloud":
            services.stt = StandinSTT(text)

    transport = FileTransport(wav, audio_in_filter=input_filter(app.options.flow))
    pcm = transport.load(16000)
    marks: dict[str, float] = {}
    turns: list[float] = []
    reply: list[str] = []

    class Marks(BaseObserver):
        async def on_push_frame(self, data: FramePushed):
            if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
                return
            frame = data.frame
            if isinstance(frame, UserStoppedSpeakingFrame):
                turns.append(time.monotonic())
            elif isinstance(frame, LLMFullResponseStartFrame):
                marks.setdefault("llm_start", time.monotonic())
                if reply:
                    reply.append(" | ")
            elif isinstance(frame, LLMTextFrame) and len(reply) < 200:
                reply.append(frame.text)
            for name, cls in (("vad", VADUserStoppedSpeakingFrame), ("stt", TranscriptionFrame),
                              ("turn", UserStoppedSpeakingFrame),
                              ("llm", LLMTextFrame), ("tts", TTSAudioRawFrame)):
                if isinstance(frame, cls) and name not in marks:
                    marks[name] = time.monotonic()

    async with ConversationSession(app, transport="file", stt=stack != "cloud", tts=stack == "local",
                                   replace_services=standins) as session:
        if kind == "persona":
            session.build(transport, observers=[Marks()])
            worker = session.worker
        else:  # the same services, in a pipeline of Pipecat parts only
            worker = reference_worker(transport, session.services, observers=[Marks()])
        speech_end, first_audio = await run_turn(
            worker, transport, pcm, linger_secs=1.0, speech_end_secs=speech_end_secs,
            min_run_secs=len(pcm) / 32000 + 2.0)
    row: dict[str, Any] = {f"{k}_s": round(v - speech_end, 3) for k, v in marks.items()}
    row["voice_to_voice_s"] = round(first_audio - speech_end, 3) if first_audio else None
    if first_audio and "turn" in marks:
        row["turn_to_audio_s"] = round(first_audio - marks["turn"], 3)
    row["turns"] = len(turns)
    row["early_turn_ends"] = sum(1 for t in turns if t < speech_end)
    row["double_reply"] = bool(first_audio and turns and first_audio < turns[-1])
    row["reply"] = "".join(reply).strip()[:300]
    return row


def reference_worker(transport, services, observers):
    """A pipeline of Pipecat parts only (Pipecat's Tavus example), same VAD and turn settings."""
    from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    from pipeline.turn_taking import SMART_TURN_INCOMPLETE_SECS, VAD_STOP_SECS

    user, assistant = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS["medium"])),
            user_turn_strategies=UserTurnStrategies(stop=[TurnAnalyzerUserTurnStopStrategy(
                turn_analyzer=LocalSmartTurnAnalyzerV3(
                    params=SmartTurnParams(stop_secs=SMART_TURN_INCOMPLETE_SECS["medium"])))]),
        ),
    )
    pipeline = Pipeline([transport.input(), services.stt, user, services.llm, services.tts,
                         transport.output(), assistant])
    return PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True),
                          idle_timeout_secs=None, observers=observers)


# --------------------------------------------------------------------------- 1. latency


# Variants of our pipeline with one latency measure of issue 18 off, to see what each pays.
def _variant(name: str):
    """A context in which ``name`` (a persona variant) is built."""
    import contextlib

    import pipeline.sentence_cut as sentence_cut
    import services.early_stt as early_stt

    @contextlib.contextmanager
    def patched():
        saved = early_stt.EARLY_PAUSE_SECS, sentence_cut.CLAUSE_MIN_WORDS
        if name in ("persona-no-early", "persona-before"):
            early_stt.EARLY_PAUSE_SECS = None  # no early transcript
        if name in ("persona-no-clause", "persona-before"):
            sentence_cut.CLAUSE_MIN_WORDS = 10**6  # no first-clause cut
        try:
            yield
        finally:
            early_stt.EARLY_PAUSE_SECS, sentence_cut.CLAUSE_MIN_WORDS = saved

    return patched()


STAGES = ("vad", "stt", "turn", "llm", "tts", "voice_to_voice", "turn_to_audio")


def summarize(kind_rows: list[dict]) -> dict[str, Any]:
    """Per-stage p50/p95 of a list of turns, the first turn apart, replies and turn errors."""
    out: dict[str, Any] = {
        metric: ms_summary([r[f"{metric}_s"] for r in kind_rows if r.get(f"{metric}_s") is not None])
        for metric in STAGES
    }
    if kind_rows:
        first = kind_rows[0]
        out["first_turn"] = {m: round(first[f"{m}_s"] * 1000) for m in STAGES
                             if first.get(f"{m}_s") is not None}
        rest = kind_rows[1:]
        out["voice_to_voice_after_first"] = ms_summary(
            [r["voice_to_voice_s"] for r in rest if r.get("voice_to_voice_s") is not None])
    out["no_reply"] = sum(1 for r in kind_rows if r["voice_to_voice_s"] is None)
    out["double_replies"] = sum(1 for r in kind_rows if r.get("double_reply"))
    out["early_turn_ends"] = sum(r.get("early_turn_ends", 0) for r in kind_rows)
    out["turns"] = kind_rows
    return out


async def _warm_up_local(fake) -> None:
    """What ``python bot.py`` does before anyone joins (``session.warmup``)."""
    from services.llm import local_llm_server
    from session.owner import plan_for
    from session.warmup import warm_up

    app = _app("persona", "local", fake)
    server = local_llm_server(app.settings)
    await server.wait_ready()
    took = await asyncio.to_thread(warm_up, app, plan_for(app, True), server)
    print(f"  warmed up: {took}", flush=True)


async def _prime_llm(fake) -> None:
    """Leave the llama.cpp server as a conversation's previous turn does: the system prompt
    evaluated, the next user message not. Without this, a pipeline that follows another on
    the same utterance finds its whole prompt cached and starts ~150 ms sooner on 2 cores,
    so the order of the pipelines decided the comparison."""
    from services.llm import local_llm_server
    from session.owner import plan_for
    from session.warmup import _llm

    app = _app("persona", "local", fake)
    await asyncio.to_thread(_llm, app, plan_for(app, True), local_llm_server(app.settings))


async def latency(stacks: list[str], items: list[dict], fake,
                  variants: list[str] | None = None, warm: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    llama_rss = 0.0
    # Ours first: the first turn of the process is one of ours (warmed up, as bot.py does).
    kinds = ["persona", *(variants or []), "reference"]
    for stack in stacks:
        if stack == "local" and warm:
            await _warm_up_local(fake)
        rows: dict[str, list[dict]] = {kind: [] for kind in kinds}
        peak = 0.0
        for item in items:
            text = item["text"]
            for kind in kinds:  # interleaved: same machine state for all
                if stack == "local":
                    await _prime_llm(fake)
                with _variant(kind):
                    row = await one_turn("reference" if kind == "reference" else "persona", stack,
                                         item["wav"], text, fake, item.get("speech_end_s"))
                row["utterance"] = text
                row["speaker"] = item.get("speaker", "piper")
                rows[kind].append(row)
                peak = max(peak, rss_mb())
                print(f"  {stack:8} {kind:17} v2v={row['voice_to_voice_s']} turn={row.get('turn_s')} "
                      f"stt={row.get('stt_s')} llm={row.get('llm_s')} tts={row.get('tts_s')} "
                      f"turns={row['turns']}{' DOUBLE' if row['double_reply'] else ''} | {text[:60]}"
                      f" -> {row['reply'][:60]!r}", flush=True)
        if stack == "local":
            from services.local.llama_server import shared_server  # noqa: F401
            llama_rss = _llama_rss()
        result: dict[str, Any] = {"peak_rss_mb": round(peak)}
        for kind, kind_rows in rows.items():
            result[kind] = summarize(kind_rows)
        ref = result["reference"]["voice_to_voice"]
        for kind in (k for k in kinds if k != "reference"):
            per = result[kind]["voice_to_voice"]
            if ref.get("p50") and per.get("p50"):
                key = ("median_ratio_persona_vs_reference" if kind == "persona"
                       else f"median_ratio_{kind}_vs_reference")
                result[key] = round(per["p50"] / ref["p50"], 3)
        if stack == "local":
            result["llama_server_rss_mb"] = round(llama_rss)
        out[stack] = result
    return out


def _llama_rss() -> float:
    """RSS of the llama.cpp server child, if one runs."""
    total = 0.0
    for child in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in child.read_text().split():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"llama" in cmd:
                total += rss_mb(pid)
    return total


# --------------------------------------------------------------------------- 2+3. concurrency, memory


async def concurrency(wavs, fake, levels: list[int], samples: int) -> dict[str, Any]:
    # Idle: everything imported, a conversation built and torn down once (warm caches).
    await one_turn("persona", "cloud", wavs[0][1], wavs[0][0], fake)
    idle = rss_mb()
    out: dict[str, Any] = {"idle_rss_mb": round(idle), "levels": {}}
    base_p95 = None
    sustained = None
    for n in levels:
        values: list[float] = []
        peak = 0.0
        stop = asyncio.Event()

        async def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.monotonic()
        rounds = max(1, -(-samples // n))
        for r in range(rounds):
            batch = [wavs[(r * n + i) % len(wavs)] for i in range(n)]
            rows = await asyncio.gather(*(one_turn("persona", "cloud", w, t, fake) for t, w in batch))
            values += [row["voice_to_voice_s"] for row in rows if row["voice_to_voice_s"] is not None]
        wall = time.monotonic() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stop.set()
        await sampler
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        summary = ms_summary(values)
        summary.update({
            "peak_rss_mb": round(peak),
            # cores busy per simultaneous conversation over the run
            "cpu_cores_per_conversation": round(cpu / wall / n, 3),
            "missing": rounds * n - len(values),
        })
        out["levels"][str(n)] = summary
        print(f"  N={n}: v2v p50 {summary.get('p50')} p95 {summary.get('p95')} ms, "
              f"CPU {summary['cpu_cores_per_conversation']} cores/conv, RSS {summary['peak_rss_mb']} MB",
              flush=True)
        if base_p95 is None:
            base_p95 = summary.get("p95")
        within = bool(base_p95) and summary.get("p95") is not None and summary["p95"] <= base_p95 * 1.2
        if within and not summary["missing"]:
            sustained = n
        elif n > 1:
            break
    out["sustained_conversations"] = sustained
    levels_done = out["levels"]
    one = levels_done.get("1", {}).get("peak_rss_mb")
    largest = max(int(k) for k in levels_done)
    if one and largest > 1:
        out["in_conversation_rss_mb"] = one
        out["rss_per_extra_conversation_mb"] = round(
            (levels_done[str(largest)]["peak_rss_mb"] - one) / (largest - 1), 1)
    return out


# --------------------------------------------------------------------------- 4. cold start


def cold_start(runs: int) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(PERSONA_DOTENV="0", LOG_LEVEL="INFO")  # we read its "LLM server ready" line
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        http = llm = None
        llm_url = None
        try:
            while time.monotonic() - started < 120 and (http is None or llm is None):
                if http is None:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                            http = time.monotonic() - started
                    except OSError:
                        pass
                if llm_url is None:
                    match = re.search(r"Starting local LLM server .* on (http://\S+/v1)",
                                      Path(log.name).read_text())
                    llm_url = match.group(1) if match else None
                if llm is None and llm_url:
                    try:  # the embedded LLM answers: ready to talk
                        with urllib.request.urlopen(f"{llm_url}/models", timeout=1):
                            llm = time.monotonic() - started
                    except OSError:
                        pass
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(20)
        times.append({"http_s": round(http, 2) if http else None,
                      "llm_ready_s": round(llm, 2) if llm else None,
                      "ready_s": round(max(http or 0, llm or 0), 2)})
        print(f"  cold start: {times[-1]}", flush=True)
    ready = [t["ready_s"] for t in times]
    return {"runs": times, "median_ready_s": statistics.median(ready)}


# --------------------------------------------------------------------------- main


async def run(args) -> dict[str, Any]:
    from tests.fake_openai import FakeOpenAI

    results: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    only = set(args.only.split(","))
    wavs = utterance_wavs(args.runs)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer."]).start()
    try:
        if "latency" in only:
            print("latency", flush=True)
            stacks = ["local", "standin"] if args.stack == "both" else [args.stack]
            if args.set == "hard":
                items = hard_utterance_wavs(args.runs if args.runs < len(HARD_UTTERANCES) else None)
            else:
                items = [{"text": t, "wav": w, "speaker": "piper"} for t, w in wavs]
            results["utterance_set"] = args.set
            variants = [v for v in args.variants.split(",") if v]
            results["warm_up"] = not args.cold
            results["latency"] = await latency(stacks, items, fake, variants, warm=not args.cold)
        if "concurrency" in only and "latency" in only:
            # Memory figures need a process that has not loaded the local models: a fresh one.
            print("concurrency and memory (cloud-style stand-ins, in a fresh process)", flush=True)
            out = Path(tempfile.mkdtemp()) / "concurrency.json"
            subprocess.run([sys.executable, "-m", "benchmarks.run", "--only", "concurrency",
                            "--levels", args.levels, "--samples", str(args.samples),
                            "--runs", str(args.runs), "--out", str(out)], cwd=ROOT, check=True)
            results["concurrency"] = json.loads(out.read_text())["concurrency"]
        elif "concurrency" in only:
            print("concurrency and memory (cloud-style stand-ins)", flush=True)
            levels = [int(x) for x in args.levels.split(",")]
            results["concurrency"] = await concurrency(wavs, fake, levels, args.samples)
    finally:
        await fake.stop()
    if "coldstart" in only:
        print("cold start", flush=True)
        results["cold_start"] = cold_start(3)
    return results


def tables(results: dict[str, Any]) -> str:
    lines = []
    for stack, res in results.get("latency", {}).items():
        kinds = [k for k in res if isinstance(res[k], dict) and "voice_to_voice" in res[k]]
        ratios = ", ".join(
            f"{k}: " + str(res.get("median_ratio_persona_vs_reference" if k == "persona"
                                   else f"median_ratio_{k}_vs_reference"))
            for k in kinds if k != "reference")
        lines += [f"\n**{stack}** (median ratio to reference: {ratios})\n",
                  "| pipeline | voice-to-voice p50 / p95 / min / max | first turn | VAD stop p50 / p95 "
                  "| STT final p50 / p95 | turn decision p50 / p95 | LLM first token p50 / p95 "
                  "| TTS first audio p50 / p95 | turn -> audio p50 / p95 | double replies "
                  "| early turn ends | no reply |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for kind in kinds:
            r = res[kind]
            v = r["voice_to_voice"]

            def pair(metric, r=r):
                return f"{r[metric].get('p50')} / {r[metric].get('p95')}"

            lines.append(
                f"| {kind} | {v.get('p50')} / {v.get('p95')} / {v.get('min')} / {v.get('max')} "
                f"| {r.get('first_turn', {}).get('voice_to_voice')} | {pair('vad')} | {pair('stt')} "
                f"| {pair('turn')} | {pair('llm')} | {pair('tts')} | {pair('turn_to_audio')} "
                f"| {r.get('double_replies')} | {r.get('early_turn_ends')} | {r['no_reply']} |")
    conc = results.get("concurrency")
    if conc:
        lines += ["\n| simultaneous conversations | v2v p50 / p95 (ms) | CPU cores per conversation "
                  "| peak RSS (MB) |", "| --- | --- | --- | --- |"]
        for n, r in conc["levels"].items():
            lines.append(f"| {n} | {r.get('p50')} / {r.get('p95')} | {r['cpu_cores_per_conversation']} "
                         f"| {r['peak_rss_mb']} |")
        lines.append(f"\nsustained: {conc['sustained_conversations']}; idle RSS {conc['idle_rss_mb']} MB; "
                     f"per extra conversation {conc.get('rss_per_extra_conversation_mb')} MB")
    cold = results.get("cold_start")
    if cold:
        lines.append(f"\ncold start (median of 3): {cold['median_ready_s']} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="latency,concurrency,coldstart")
    parser.add_argument("--stack", choices=["local", "standin", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10,
                        help="utterances (max 10 in the plain set, 14 in the hard one)")
    parser.add_argument("--set", choices=["plain", "hard"], default="plain",
                        help="plain: ten clean Piper questions; hard: varied voices, rooms, "
                             "pauses, short and long turns (benchmarks/common.py)")
    parser.add_argument("--cold", action="store_true",
                        help="no start-up warm-up (the first turn pays for loading the models)")
    parser.add_argument("--variants", default="",
                        help="also run our pipeline without a latency measure: persona-no-early "
                             "(no early transcript), persona-no-clause (no first-clause TTS), "
                             "persona-before (neither), comma-separated")
    parser.add_argument("--levels", default="1,2,4,6,8,12,16")
    parser.add_argument("--samples", type=int, default=12, help="turns per concurrency level (at least)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        f"run-{time.strftime('%Y%m%d-%H%M%S')}.json")
    parser.add_argument("--table", type=Path, metavar="RESULTS",
                        help="print the tables of a results file again (its turns re-summarized)")
    args = parser.parse_args()
    if args.table:
        results = json.loads(args.table.read_text())
        for res in results.get("latency", {}).values():
            kinds = [k for k in res if isinstance(res[k], dict) and "turns" in res[k]]
            for kind in kinds:
                res[kind] = summarize(res[kind]["turns"])
            ref = res.get("reference", {}).get("voice_to_voice", {}).get("p50")
            for kind in (k for k in kinds if k != "reference"):
                per = res[kind]["voice_to_voice"].get("p50")
                if ref and per:
                    key = ("median_ratio_persona_vs_reference" if kind == "persona"
                           else f"median_ratio_{kind}_vs_reference")
                    res[key] = round(per / ref, 3)
        print(tables(results))
        return 0
    quiet_logging()
    results = asyncio.run(run(args))
    write_results(args.out, results)
    print(tables(results))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
