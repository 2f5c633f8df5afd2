"""Sequential sessions against ``python bot.py``: does each one give back what it took?

    .venv/bin/python -m benchmarks.soak                      # 50 sessions (~15 min on 2 cores)
    .venv/bin/python -m benchmarks.soak --sessions 10 --hold 6
    .venv/bin/python -m benchmarks.soak --env LOG_LEVEL=DEBUG   # also the memory release's cost

``python bot.py`` runs as a user starts it (embedded models, default persona, no keys). A
headless WebRTC peer (aiortc, as the local page does it: ``POST /api/offer``) joins, plays a
spoken question, listens for ``--hold`` seconds (the greeting, usually the reply starting) and
leaves mid-conversation, as people do. After the bot has recorded the conversation's end, and
the process has settled, its resident memory, thread count and open file descriptors are read
from ``/proc``. A flat series is the goal: a conversation that ends releases everything it took.

Writes ``benchmarks/results/soak-<date>.json`` (every sample, the machine) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
ENDED = re.compile(r"Conversation \S+ ended")
RELEASED = re.compile(r"Released a finished conversation: (\d+) objects in cycles, gc (\d+) ms, "
                      r"malloc_trim (\d+) ms")


def proc_stats(pid: int) -> dict[str, float]:
    """Resident memory (MB), threads and open file descriptors of a process."""
    stats: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                stats["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
            elif line.startswith("Threads:"):
                stats["threads"] = int(line.split()[1])
    stats["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return stats


async def one_session(base: str, wav: Path, hold: float) -> int:
    """Join, speak, listen ``hold`` seconds, leave. Returns audio frames heard."""
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    pc = RTCPeerConnection()
    player = MediaPlayer(str(wav))
    pc.addTrack(player.audio)
    heard = 0

    @pc.on("track")
    def on_track(track):
        async def consume():
            nonlocal heard
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                heard += 1

        asyncio.ensure_future(consume())

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/offer", json={
                "sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as resp:
            resp.raise_for_status()
            answer = await resp.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    await asyncio.sleep(hold)
    await pc.close()
    return heard


def wait_for(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def start_bot(log: Path, data_dir: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PERSONA_DOTENV": "0", "PERSONA_DATA_DIR": str(data_dir), **extra_env})
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "bot.py"), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"bot exited:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    if not wait_for(up, 180, 0.5):
        proc.kill()
        raise RuntimeError("bot did not start listening within 180 s")
    return proc, f"http://127.0.0.1:{port}"


def settle(pid: int, quiet_secs: float = 3.0, timeout: float = 30.0) -> dict[str, float]:
    """Stats once the thread count has not changed for ``quiet_secs``."""
    last = proc_stats(pid)
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = proc_stats(pid)
        if now["threads"] != last["threads"] or now["fds"] != last["fds"]:
            since = time.monotonic()
        last = now
        if time.monotonic() - since >= quiet_secs:
            break
    return last


def run(sessions: int, hold: float, extra_env: dict[str, str]) -> dict[str, Any]:
    from benchmarks.common import machine
    from tests.speech import write_question_wav

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    wav = write_question_wav(work / "q.wav", "What is the capital of France?",
                             lead_secs=0.5, tail_secs=1.0)
    log = work / "bot.log"
    proc, base = start_bot(log, work / "data", extra_env)
    samples: list[dict[str, Any]] = []
    try:
        baseline = settle(proc.pid)
        print(f"baseline: {baseline}", flush=True)
        for i in range(sessions):
            ended_before = len(ENDED.findall(log.read_text()))
            started = time.monotonic()
            heard = asyncio.run(one_session(base, wav, hold))
            left = time.monotonic()
            ended = wait_for(lambda: len(ENDED.findall(log.read_text())) > ended_before, 60)
            end_secs = time.monotonic() - left
            stats = settle(proc.pid)
            sample = {"session": i + 1, "heard_frames": heard, "ended": ended,
                      "secs_from_leave_to_end": round(end_secs, 1),
                      "secs": round(time.monotonic() - started, 1), **stats}
            samples.append(sample)
            print(json.dumps(sample), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    releases = [tuple(map(int, m)) for m in RELEASED.findall(log.read_text())]
    first, last = samples[0], samples[-1]
    half = samples[len(samples) // 2:]
    return {
        "benchmark": "soak", "date": datetime.date.today().isoformat(), "machine": machine(),
        "sessions": sessions, "hold_secs": hold, "env": extra_env,
        "baseline": baseline, "samples": samples, "log": str(log),
        # session/memory.py's DEBUG line (run with --env LOG_LEVEL=DEBUG): (objects, gc ms, trim ms)
        "releases": releases,
        "summary": {
            "rss_mb_after_first": first["rss_mb"], "rss_mb_after_last": last["rss_mb"],
            "rss_mb_max": max(s["rss_mb"] for s in samples),
            "rss_mb_growth_per_session_second_half": round(
                (half[-1]["rss_mb"] - half[0]["rss_mb"]) / max(1, len(half) - 1), 2),
            "threads": [baseline["threads"], first["threads"], last["threads"]],
            "fds": [baseline["fds"], first["fds"], last["fds"]],
            "max_secs_from_leave_to_end": max(s["secs_from_leave_to_end"] for s in samples),
            "gc_ms_max": max((r[1] for r in releases), default=None),
            "malloc_trim_ms_max": max((r[2] for r in releases), default=None),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--hold", type=float, default=6.0,
                        help="seconds the peer stays after joining (default 6)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the bot (e.g. to compare a setting)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    result = run(args.sessions, args.hold, extra)
    out = args.out or RESULTS / f"soak-{result['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(f"\n| sessions | RSS MB baseline / after 1 / after {args.sessions} / max | growth per session "
          f"(2nd half) | threads | fds | max leave -> end s |\n| --- | --- | --- | --- | --- | --- |\n"
          f"| {args.sessions} | {result['baseline']['rss_mb']} / {s['rss_mb_after_first']} / "
          f"{s['rss_mb_after_last']} / {s['rss_mb_max']} | {s['rss_mb_growth_per_session_second_half']} "
          f"| {' / '.join(map(str, s['threads']))} | {' / '.join(map(str, s['fds']))} "
          f"| {s['max_secs_from_leave_to_end']} |")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
