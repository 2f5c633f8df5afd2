"""Word error rate through the local page vs the file path, stage by stage.

    .venv/bin/python -m benchmarks.page_wer                  # every configuration (~25 min, 2 cores)
    .venv/bin/python -m benchmarks.page_wer --configs default,off --isolation near

The same varied speech (``tests.speech.SPEAKERS``: espeak-ng voices and Piper settings, speed
changes, room noise, reverb, telephone band, quiet and loud talkers; one line each, separated by
long pauses over a faint room-noise bed) is heard two ways:

- **file path**: each line cut from the same WAV and given straight to the bot's Whisper
  (tiny.en, the bot's own settings: greedy, no timestamps, ``no_speech_prob`` 0.6): raw
  (``isolation=off``), through Pipecat's ``RNNoiseFilter`` (``isolation=rnnoise``, what
  ``voice_isolation: near`` ran before) and through ours (``isolation=near``: RNNoise gated by
  its speech probability, services/voice_isolation.py), each run offline at 16 kHz in 20 ms
  chunks as the transport runs it;
- **page path**: ``python bot.py`` (default persona, its RNNoise on or off) and the local page in
  headless Chromium whose fake microphone plays the WAV: getUserMedia (browser processing per
  ``?ec= &ns= &agc=``) -> WebRTC/Opus -> the bot's resampling -> RNNoise -> Silero VAD -> Whisper.
  The page's ``conversation.utterance`` (role user) events are assigned to the line they follow
  by time. The bot answers each line (the embedded LLM, replies capped by ``LLM_MAX_TOKENS``), so
  echo cancellation has the bot's voice as its far-end reference, as on a real call.

WER = (substitutions + deletions + insertions) / reference words over all lines (a line never
heard counts as all deletions). Results: ``benchmarks/results/page_wer-<date>.json`` and a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, quiet_logging, write_results
from tests.speech import (
    RATE,
    SENTENCES,
    SPEAKERS,
    have_speech_tools,
    heard_per_line,
    human_recordings,
    user_utterances,
    word_errors,
    write_conversation_wav,
)

BROWSER_DIR = ROOT / "tests" / "browser"
# Browser processing configurations: the page's query string.
BROWSER_CONFIGS = {  # explicit, so the page's own defaults can change
    "all-on": "ec=1&ns=1&agc=1",  # what `audio: true` gave (the page's default before)
    "ec0": "ec=0&ns=1&agc=1",
    "ns0": "ec=1&ns=0&agc=1",
    "agc0": "ec=1&ns=1&agc=0",
    "ec-only": "ec=1&ns=0&agc=0",  # the page's default now
    "off": "ec=0&ns=0&agc=0",
}


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def summarize(per_line: list[dict]) -> dict[str, Any]:
    errors = sum(line["errors"] for line in per_line)
    n = sum(line["words"] for line in per_line)
    return {"wer": round(errors / n, 4) if n else None, "errors": errors, "words": n,
            "lines_missed": sum(1 for line in per_line if not line["heard"].strip())}


def score(segments: list[dict], heard: list[str]) -> list[dict]:
    out = []
    for seg, hyp in zip(segments, heard):
        errors, n = word_errors(seg["text"], hyp)
        out.append({"speaker": seg["speaker"], "text": seg["text"], "heard": hyp,
                    "errors": errors, "words": n})
    return out


# ------------------------------------------------------------------ file path

async def _rnnoise(pcm: np.ndarray, gated: bool = False) -> np.ndarray:
    from pipecat.audio.filters.rnnoise_filter import RNNoiseFilter

    from services.voice_isolation import speech_gated_rnnoise

    filt = speech_gated_rnnoise() if gated else RNNoiseFilter()
    await filt.start(RATE)
    chunk = RATE // 50  # 20 ms, as the transport delivers it
    out = []
    data = np.concatenate([pcm, np.zeros(RATE // 2, np.int16)])  # flush the filter's lag
    for i in range(0, len(data), chunk):
        out.append(np.frombuffer(await filt.filter(data[i:i + chunk].tobytes()), np.int16))
    await filt.stop()
    return np.concatenate(out)[: len(pcm) + RATE // 4]


def file_path(audio: np.ndarray, segments: list[dict]) -> dict[str, Any]:
    from services.local.models import whisper_model_dir
    from services.stt import load_whisper_model

    model = load_whisper_model(whisper_model_dir())

    def transcribe(pcm: np.ndarray) -> str:
        segs, _ = model.transcribe(pcm.astype(np.float32) / 32768.0, language="en")
        return " ".join(s.text.strip() for s in segs if s.no_speech_prob < 0.6).strip()

    results = {}
    for isolation in ("off", "rnnoise", "near"):
        heard = []
        for seg in segments:
            a = int(max(0.0, seg["start"] - 0.3) * RATE)
            b = int((seg["end"] + 0.3) * RATE)
            clip = audio[a:b]
            if isolation != "off":  # rnnoise: Pipecat's filter; near: ours (speech-gated)
                clip = asyncio.run(_rnnoise(clip, gated=isolation == "near"))
            heard.append(transcribe(clip))
        lines = score(segments, heard)
        results[f"file/isolation={isolation}"] = {**summarize(lines), "lines": lines}
    return results


# ------------------------------------------------------------------ page path

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bot:
    """``python bot.py --port N --persona FILE`` as a user starts it."""

    def __init__(self, persona: Path, log: Path, max_tokens: int):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update({"PERSONA_DOTENV": "0", "LLM_MAX_TOKENS": str(max_tokens)})
        self._log = open(log, "w")  # noqa: SIM115 - open while the bot runs
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), "--port", str(self.port), "--persona", str(persona)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bot exited early; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("bot did not start")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def assign(events: list[dict], segments: list[dict]) -> list[str]:
    """Each final user utterance goes to the last line that ended before it arrived."""
    return heard_per_line(user_utterances(events), segments)


def page_session(base: str, query: str, wav: Path, listen_secs: float, out: Path,
                 screenshot: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "BOT_URL": f"{base}/" + (f"?{query}" if query else ""), "MIC_WAV": str(wav),
           "LISTEN_SECS": str(listen_secs), "RESULT": str(out),
           "SCREENSHOT": str(screenshot or "")}
    subprocess.run(["node", str(BROWSER_DIR / "listen_session.js")], cwd=BROWSER_DIR, env=env,
                   timeout=listen_secs + 120, check=False, capture_output=True)
    return json.loads(out.read_text())


def persona_file(directory: Path, isolation: str) -> Path:
    persona = json.loads((ROOT / "personas" / "default.json").read_text())
    persona.setdefault("layers", {}).setdefault("conversational_flow", {})["voice_isolation"] = isolation
    path = directory / f"persona-{isolation}.json"
    path.write_text(json.dumps(persona))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(BROWSER_CONFIGS),
                        help=f"browser configurations, comma-separated ({', '.join(BROWSER_CONFIGS)})")
    parser.add_argument("--isolation", default="near,off", help="bot RNNoise settings: near,off")
    parser.add_argument("--gap", type=float, default=7.0, help="seconds of pause after each line")
    parser.add_argument("--max-tokens", type=int, default=24, help="LLM_MAX_TOKENS for the bot's replies")
    parser.add_argument("--lines", type=int, default=len(SENTENCES), help="how many lines to say")
    parser.add_argument("--human-dir", default=os.environ.get("PAGE_WER_HUMAN_DIR"),
                        help="also say real recordings: a folder of WAV + TXT pairs (pocketsphinx's "
                        "sdist test/data/librivox; see benchmarks/README.md)")
    parser.add_argument("--no-file", action="store_true", help="skip the file path")
    parser.add_argument("--out", default=None, help="results JSON (default results/page_wer-<date>.json)")
    args = parser.parse_args(argv)
    missing = have_speech_tools()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    quiet_logging()
    work = Path(tempfile.mkdtemp(prefix="page-wer-"))
    lines = list(zip(SENTENCES, SPEAKERS))[: args.lines]
    if args.human_dir:
        lines += human_recordings(args.human_dir, noisy=True)
    wav, segments = write_conversation_wav(work / "conversation.wav", lines, lead_secs=10.0,
                                           gap_secs=args.gap, tail_secs=20.0)
    audio = read_wav(wav)
    listen_secs = segments[-1]["end"] + 8.0
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(), "machine": machine(), "segments": segments,
        "gap_secs": args.gap, "llm_max_tokens": args.max_tokens, "runs": {}}
    if not args.no_file:
        results["runs"].update(file_path(audio, segments))
        for name, run in results["runs"].items():
            print(f"{name}: WER {run['wer']}", flush=True)
    for isolation in args.isolation.split(","):
        bot = Bot(persona_file(work, isolation), work / f"bot-{isolation}.log", args.max_tokens)
        try:
            for config in args.configs.split(","):
                name = f"page/{config}/isolation={isolation}"
                for attempt in range(2):  # a loaded machine can miss the connection: once more
                    session = page_session(f"http://localhost:{bot.port}", BROWSER_CONFIGS[config],
                                           wav, listen_secs, work / f"{config}-{isolation}.json",
                                           work / f"{config}-{isolation}.png")
                    if session.get("events") or not session.get("error"):
                        break
                line_results = score(segments, assign(session.get("events", []), segments))
                results["runs"][name] = {
                    **summarize(line_results), "query": BROWSER_CONFIGS[config],
                    "mic_settings": session.get("mic_settings"), "error": session.get("error"),
                    "external_requests": session.get("external_requests"), "lines": line_results}
                print(f"{name}: WER {results['runs'][name]['wer']} "
                      f"(error: {session.get('error')})", flush=True)
                write_results(work / "partial.json", results)  # a long run keeps what it has
        finally:
            bot.close()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"page_wer-{results['date']}.json"
    write_results(out, results)
    print(f"\nwork files: {work}\n")
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    rows = ["| path / browser processing / RNNoise | WER | errors / words | lines missed |",
            "| --- | --- | --- | --- |"]
    for name, run in results["runs"].items():
        rows.append(f"| {name} | {run['wer']:.1%} | {run['errors']} / {run['words']} | {run['lines_missed']} |"
                    if run["wer"] is not None else f"| {name} | - | - | - |")
    speakers = [seg["speaker"] for seg in results["segments"]]
    rows += ["", "| line (speaker) | " + " | ".join(results["runs"]) + " |",
             "| --- |" + " --- |" * len(results["runs"])]
    for i, speaker in enumerate(speakers):
        cells = []
        for run in results["runs"].values():
            line = run["lines"][i]
            cells.append(f"{line['errors']}/{line['words']}")
        rows.append(f"| {speaker} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
