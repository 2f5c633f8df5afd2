"""Perception (issue 16): the sampling rate and CPU budget held in a conversation, and what it
costs a turn.

    .venv/bin/python -m benchmarks.perception                 # both parts (~5 min on 2 cores)
    .venv/bin/python -m benchmarks.perception budget --secs 30
    .venv/bin/python -m benchmarks.perception v2v --runs 10
    .venv/bin/python -m benchmarks.perception budget --camera-only   # no screen share

``budget``: one conversation (the persona of ``benchmarks.run``, standin stack: Whisper,
loopback LLM and TTS stand-ins, file transport in real time) with ``layers.perception``
``raven-1`` on the local detectors, while spoken turns go on (the suite's utterances, 3 s
apart, ~30 s): camera frames at 30 fps (640x480, matplotlib's grace_hopper.jpg inset, as a
webcam gives) and screen-share frames at 5 fps (a generated 1280x720 screen with text) are
queued into the pipeline (``worker.queue_frames``, ``transport_source`` ``camera`` /
``screenVideo``). Per source: frames offered, what the runner received, processed and
dropped, processed frames/s against ``PERCEPTION_FPS``, and the perception CPU share (the
runner's ``cpu_secs`` summed over sources / wall seconds) against ``PERCEPTION_CPU_BUDGET``;
also the whole process's CPU (``time.process_time``) over the same window, against the same
conversation without perception and without frames. Settings: the defaults (1 fps, 0.25)
and 2 fps / 0.5.

``v2v``: ``benchmarks.run``'s persona turn on the standin stack (as ``benchmarks.retrieval
v2v``), with perception (raven-1, defaults) and camera frames at 30 fps during the turn
(``on``), the same plus screen frames at 5 fps (``on_screen``), and without (``off``),
interleaved. The detectors are loaded once beforehand and shared by the turns (each
turn is a fresh pipeline; a conversation loads them once, at its first frame), so a turn
measures steady-state perception, not loading.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, ms_summary, quiet_logging, write_results  # noqa: E402

CAMERA_FPS = 30
SCREEN_FPS = 5
CAMERA_SIZE = (640, 480)
SCREEN_SIZE = (1280, 720)
PERCEPTION = {"perception_model": "raven-1"}
SETTINGS = [(1.0, 0.25), (2.0, 0.5)]  # (PERCEPTION_FPS, PERCEPTION_CPU_BUDGET)


# --------------------------------------------------------------------------- frames


def camera_images(count: int = 8) -> list[bytes]:
    """640x480 RGB webcam-like frames: a grey-blue room, the photo inset, moving a little."""
    import matplotlib
    import numpy as np
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photo = Image.open(path).convert("RGB")
    width, height = CAMERA_SIZE
    inset = np.asarray(photo.resize((int(height * 0.9 * photo.width / photo.height),
                                     int(height * 0.9))))
    out = []
    rng = np.random.default_rng(3)
    for i in range(count):
        canvas = np.full((height, width, 3), (92, 104, 120), np.uint8)
        x = (width - inset.shape[1]) // 2 + int(8 * np.sin(i))
        y = (height - inset.shape[0]) // 2 + int(4 * np.cos(i))
        canvas[y:y + inset.shape[0], x:x + inset.shape[1]] = inset
        noise = rng.integers(-6, 7, canvas.shape, dtype=np.int16)  # sensor noise
        out.append(np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8).tobytes())
    return out


def screen_images(count: int = 3) -> list[bytes]:
    """1280x720 RGB screens: a title bar, a sidebar and paragraphs of text."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=20)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    lines = ["Quarterly report: revenue grew 12 percent to 4.2 million",
             "Action items for the design review on Thursday",
             "1. Update the onboarding flow and the pricing page",
             "2. Fix the login timeout reported by three customers",
             "3. Ship the new dashboard to the beta group",
             "Notes: the team agreed to move the launch to March 14",
             "Contact support@example.com for access to the staging server"]
    out = []
    for i in range(count):
        image = Image.new("RGB", SCREEN_SIZE, (250, 250, 250))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, SCREEN_SIZE[0], 40), fill=(40, 44, 52))
        draw.text((16, 10), f"Document {i + 1} - Editor", fill=(230, 230, 230), font=font)
        draw.rectangle((0, 40, 220, SCREEN_SIZE[1]), fill=(230, 233, 238))
        for j, name in enumerate(("Inbox", "Drafts", "Reports", "Archive")):
            draw.text((20, 70 + 40 * j), name, fill=(30, 30, 30), font=font)
        for j, line in enumerate(lines[i:] + lines[:i]):
            draw.text((260, 80 + 44 * j), line, fill=(20, 20, 20), font=font)
        out.append(np.asarray(image).tobytes())
    return out


def make_frame(image: bytes, size: tuple[int, int], source: str):
    from pipecat.frames.frames import UserImageRawFrame

    frame = UserImageRawFrame(user_id="u1", image=image, size=size, format="RGB")
    frame.transport_source = source
    return frame


async def feed(worker: Any, stop: asyncio.Event, *, camera: list[bytes],
               screen: list[bytes] | None, offered: dict[str, int]) -> None:
    """Camera (and screen) frames into the pipeline at their rates until ``stop``."""
    started = time.monotonic()
    streams = [("camera", CAMERA_FPS, camera, CAMERA_SIZE)]
    if screen:
        streams.append(("screenVideo", SCREEN_FPS, screen, SCREEN_SIZE))
    sent = {name: 0 for name, *_ in streams}
    while not stop.is_set():
        now = time.monotonic() - started
        frames = []
        for name, fps, images, size in streams:
            while sent[name] <= now * fps:
                frames.append(make_frame(images[sent[name] % len(images)], size, name))
                sent[name] += 1
        if frames:
            await worker.queue_frames(frames)
        nxt = min((sent[n] / fps for n, fps, *_ in streams)) - (time.monotonic() - started)
        await asyncio.sleep(max(0.001, nxt))
    for name, count in sent.items():
        offered[name] = offered.get(name, 0) + count


_SHARED: dict[str, Any] = {}


def share_detectors() -> float:
    """One warmed LocalDetectors for every conversation of this process; its load seconds."""
    import numpy as np

    import perception.detectors as detectors

    if "instance" not in _SHARED:
        original = detectors.LocalDetectors
        instance = original()
        started = time.perf_counter()
        instance.camera(np.frombuffer(camera_images(1)[0], np.uint8)
                        .reshape(CAMERA_SIZE[1], CAMERA_SIZE[0], 3))
        instance.screen(np.frombuffer(screen_images(1)[0], np.uint8)
                        .reshape(SCREEN_SIZE[1], SCREEN_SIZE[0], 3))
        _SHARED["load_s"] = time.perf_counter() - started
        _SHARED["instance"] = instance
        detectors.LocalDetectors = lambda *a, **k: instance  # noqa: ARG005
    return _SHARED["load_s"]


def detector_costs(n: int = 10) -> dict[str, Any]:
    """One frame of each source through the warmed detectors: wall, thread and process CPU."""
    import numpy as np

    from pipeline.perception import _jpeg

    detectors = _SHARED["instance"]
    out = {}
    for source, image, size, call in (
            ("camera", camera_images(1)[0], CAMERA_SIZE, detectors.camera),
            ("screenVideo", screen_images(1)[0], SCREEN_SIZE, detectors.screen)):
        rgb = np.frombuffer(image, np.uint8).reshape(size[1], size[0], 3)
        walls, threads, procs = [], [], []
        for _ in range(n):
            w, t, p = time.perf_counter(), time.thread_time(), time.process_time()
            call(rgb)
            _jpeg(rgb)
            walls.append(time.perf_counter() - w)
            threads.append(time.thread_time() - t)
            procs.append(time.process_time() - p)
        out[source] = {"wall": ms_summary(walls), "thread_cpu": ms_summary(threads),
                       "process_cpu": ms_summary(procs)}
    return out


# --------------------------------------------------------------------------- budget


def _app_with(fake, perception: bool, fps: float, budget: float, app_fn: Any = None):
    from benchmarks import run as suite

    app_fn = app_fn or suite._app
    saved = suite.FULL_PERSONA
    try:
        if perception:
            data = json.loads(json.dumps(saved))
            data["layers"]["perception"] = dict(PERCEPTION)
            suite.FULL_PERSONA = data
        app = app_fn("persona", "standin", fake)
    finally:
        suite.FULL_PERSONA = saved
    app.settings = dataclasses.replace(app.settings, perception_fps=fps,
                                       perception_cpu_budget=budget)
    return app


def speech_track(count: int, gap_secs: float) -> tuple[Path, list[float], float]:
    """The first ``count`` utterances in one WAV, ``gap_secs`` of silence between them."""
    from benchmarks.common import utterance_wavs
    from transports.file import last_speech_secs, read_wav_mono16, write_wav_mono16

    pieces, ends, t = [], [], 0.0
    rate = 16000
    for _text, wav in utterance_wavs(count):
        pcm = read_wav_mono16(wav, rate)
        end = last_speech_secs(pcm, rate)
        ends.append(t + (end or len(pcm) / 2 / rate))
        pieces.append(pcm + b"\x00\x00" * int(rate * gap_secs))
        t += len(pieces[-1]) / 2 / rate
    path = Path(tempfile.mkdtemp(prefix="bench-perception-")) / "turns.wav"
    write_wav_mono16(path, b"".join(pieces), rate)
    return path, ends, t


async def conversation(fake, track: Path, secs: float, *, perception: bool, fps: float,
                       budget: float, screen: bool = True) -> dict[str, Any]:
    """One conversation over ``track`` with frames flowing (when ``perception``)."""
    from pipecat.frames.frames import EndFrame, TTSAudioRawFrame, UserStoppedSpeakingFrame
    from pipecat.observers.base_observer import BaseObserver, FramePushed
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.workers.runner import WorkerRunner

    from benchmarks.standins import StandinTTS
    from services.voice_isolation import input_filter
    from session.owner import ConversationSession
    from transports.file import FileTransport

    app = _app_with(fake, perception, fps, budget)
    transport = FileTransport(track, audio_in_filter=input_filter(app.options.flow))
    transport.load(16000)
    turns: list[float] = []
    replies: list[float] = []

    class Marks(BaseObserver):
        async def on_push_frame(self, data: FramePushed):
            if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
                return
            if isinstance(data.frame, UserStoppedSpeakingFrame):
                turns.append(time.monotonic())
            elif isinstance(data.frame, TTSAudioRawFrame):
                if not replies or time.monotonic() - replies[-1] > 1.0:
                    replies.append(time.monotonic())

    def standins(services) -> None:
        services.tts = StandinTTS()

    camera, screens = camera_images(), screen_images() if screen else None
    offered: dict[str, int] = {}
    async with ConversationSession(app, transport="file", stt=True, tts=False,
                                   replace_services=standins) as session:
        session.build(transport, observers=[Marks()])
        worker = session.worker
        runner = session.built.perception
        wr = WorkerRunner(handle_sigint=False)
        await wr.add_workers(worker)
        task = asyncio.create_task(wr.run())
        for _ in range(500):
            if transport.stats.input_started:
                break
            await asyncio.sleep(0.01)
        stop = asyncio.Event()
        cpu0, wall0 = time.process_time(), time.monotonic()
        feeder = (asyncio.create_task(feed(worker, stop, camera=camera, screen=screens,
                                           offered=offered)) if perception else None)
        await asyncio.sleep(secs)
        stop.set()
        if feeder is not None:
            await feeder
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        stats = ({s: dataclasses.asdict(st) for s, st in runner.stats.items()}
                 if runner is not None else {})
        transport.finish()
        await worker.queue_frames([EndFrame()])
        try:
            await asyncio.wait_for(task, 20)
        except TimeoutError:
            await wr.cancel()
    out: dict[str, Any] = {"perception": perception, "wall_s": round(wall, 2),
                           "process_cpu_s": round(cpu, 2),
                           "process_cpu_cores": round(cpu / wall, 3),
                           "turn_decisions": len(turns), "replies": len(replies)}
    if perception:
        out.update({"perception_fps": fps, "cpu_budget": budget, "sources": {}})
        total_cpu = 0.0
        for source, st in stats.items():
            if not offered.get(source):
                continue
            total_cpu += st["cpu_secs"]
            out["sources"][source] = {
                "offered": offered[source], "received": st["received"],
                "processed": st["processed"], "dropped": st["dropped"],
                "processed_fps": round(st["processed"] / wall, 3),
                "cpu_secs": round(st["cpu_secs"], 2),
                "cpu_per_frame_ms": round(1000 * st["cpu_secs"] / max(1, st["processed"]))}
        out["perception_cpu_share"] = round(total_cpu / wall, 3)
        out["processed_fps_total"] = round(sum(s["processed_fps"]
                                               for s in out["sources"].values()), 3)
    return out


async def budget_part(secs: float, screen: bool = True) -> dict[str, Any]:
    from tests.fake_openai import FakeOpenAI

    load_s = share_detectors()
    costs = detector_costs()
    track, _ends, length = speech_track(10, 3.0)
    secs = min(secs, length)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer. And a second sentence."]).start()
    runs = []
    try:
        for perception, fps, budget in [(False, 1.0, 0.25), *((True, f, b) for f, b in SETTINGS)]:
            row = await conversation(fake, track, secs, perception=perception, fps=fps,
                                     budget=budget, screen=screen)
            runs.append(row)
            print(f"  {json.dumps(row)}", flush=True)
    finally:
        await fake.stop()
    off = runs[0]["process_cpu_s"]
    for row in runs[1:]:
        row["process_cpu_over_off_cores"] = round((row["process_cpu_s"] - off) / row["wall_s"], 3)
    return {"secs": secs, "camera_fps": CAMERA_FPS, "screen_fps": SCREEN_FPS if screen else 0,
            "detectors_load_s": round(load_s, 2), "detector_cost_per_frame": costs,
            "conversations": runs}


# --------------------------------------------------------------------------- v2v


async def v2v_part(runs: int) -> dict[str, Any]:
    from benchmarks import run as suite
    from benchmarks.common import utterance_wavs
    from tests.fake_openai import FakeOpenAI

    share_detectors()
    wavs = utterance_wavs(runs)
    camera = camera_images()
    fake = await FakeOpenAI(answers=["Sure, here is a short answer. And a second sentence."]).start()
    rows: dict[str, list[dict]] = {"off": [], "on": [], "on_screen": []}
    processed: dict[str, list[int]] = {"on": [], "on_screen": []}
    screens = screen_images()
    original_app, original_turn = suite._app, suite.run_turn
    state: dict[str, Any] = {"on": False}

    def app_on(kind, stack, fake_):
        app = original_app(kind, stack, fake_)
        if not state["on"] or kind != "persona":
            return app
        return _app_with(fake_, True, app.settings.perception_fps,
                         app.settings.perception_cpu_budget, app_fn=original_app)

    async def turn_with_frames(worker, transport, pcm, **kwargs):
        if not state["on"]:
            return await original_turn(worker, transport, pcm, **kwargs)
        stop = asyncio.Event()
        offered: dict[str, int] = {}

        async def start_when_running():
            for _ in range(500):
                if transport.stats.input_started:
                    break
                await asyncio.sleep(0.01)
            await feed(worker, stop, camera=camera,
                       screen=screens if state["name"] == "on_screen" else None, offered=offered)

        feeder = asyncio.create_task(start_when_running())
        try:
            return await original_turn(worker, transport, pcm, **kwargs)
        finally:
            stop.set()
            await feeder
            if runners:
                processed[state["name"]].append(sum(st.processed
                                                    for st in runners[-1].stats.values()))

    import session.builder as builder

    original_runner = builder._perception_runner
    runners: list[Any] = []

    def keep_runner(*args, **kwargs):
        runners.append(original_runner(*args, **kwargs))
        return runners[-1]

    suite._app, suite.run_turn = app_on, turn_with_frames
    builder._perception_runner = keep_runner
    try:
        for text, wav in wavs:
            for name in ("off", "on", "on_screen"):
                state["on"], state["name"] = name != "off", name
                rows[name].append(await suite.one_turn("persona", "standin", wav, text, fake))
            print(f"  {text}: " + ", ".join(f"{n} {rows[n][-1].get('voice_to_voice_s')} s"
                                            for n in rows), flush=True)
    finally:
        suite._app, suite.run_turn = original_app, original_turn
        builder._perception_runner = original_runner
        await fake.stop()
    with_perception = sum(1 for body in fake.requests if "<user_appearance>" in json.dumps(body))
    out: dict[str, Any] = {"runs": runs, "camera_fps": CAMERA_FPS,
                           "requests_with_perception_message": with_perception,
                           "frames_processed_per_turn": processed, "variants": {}}
    for name, items in rows.items():
        out["variants"][name] = {
            metric: ms_summary([r[f"{metric}_s"] for r in items if r.get(f"{metric}_s") is not None])
            for metric in ("voice_to_voice", "turn_to_audio", "turn", "llm")}
        out["variants"][name]["double_replies"] = sum(1 for r in items if r.get("double_reply"))
    for name in ("on", "on_screen"):
        for q in ("p50", "p95"):
            base = out["variants"]["off"]["voice_to_voice"].get(q)
            on = out["variants"][name]["voice_to_voice"].get(q)
            out[f"ratio_{q}_{name}"] = round(on / base, 3) if base and on else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["all", "budget", "v2v"], default="all")
    parser.add_argument("--secs", type=float, default=30.0, help="seconds of each conversation")
    parser.add_argument("--runs", type=int, default=10, help="turns per variant (v2v)")
    parser.add_argument("--camera-only", action="store_true",
                        help="budget: camera frames only (no screen share)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet_logging()
    import os

    result: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "load_average_at_start": os.getloadavg()}
    if args.what in ("all", "budget"):
        print("budget:", flush=True)
        result["budget"] = asyncio.run(budget_part(args.secs, screen=not args.camera_only))
    if args.what in ("all", "v2v"):
        print("v2v:", flush=True)
        result["v2v"] = asyncio.run(v2v_part(args.runs))
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"perception-{args.what}{'-camera' if args.camera_only else ''}-"
                       f"{result['machine']['cpus']}cpu-"
                       f"{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_results(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
