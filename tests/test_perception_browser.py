"""Perception from the local page in a real browser, offline: headless Debian Chromium ticks
"send my camera" (a fake camera playing a real photograph, matplotlib's grace_hopper.jpg, as a
Y4M file) and "share my screen" (Chrome's fake picker selects the entire screen), connects to
`bot.py` running a persona with ``layers.perception`` on, stays ~15 s, and the bot's log shows
the camera's frames arriving (tests/browser/perception_check.js).

Needs /usr/bin/chromium, node and tests/browser/node_modules (scripts/test.sh installs them where
it can). Without them the test skips, unless REQUIRE_BROWSER=1 (as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import wave
from pathlib import Path

import pytest

from tests.conftest import ROOT, running_bot, wait_until

pytestmark = pytest.mark.e2e

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STAY_SECS = 15.0
MIN_FRAMES = 5  # of a source, offered to perception during the stay
# `Perception: camera 1.0 frames/s (12 processed, 0 dropped); screenVideo 0.0 frames/s (...)`
RATE = re.compile(r"Perception: .*?\b(camera|screenVideo) ([0-9.]+) frames/s \((\d+) processed, (\d+) dropped")


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (apt-get install chromium)"
    if not shutil.which("node"):
        return "node not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        return "playwright-core not installed (npm install --prefix tests/browser)"
    try:
        import cv2  # noqa: F401
        import matplotlib  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} not installed (the fake camera's picture)"
    return None


def _require_browser() -> None:
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)


def write_camera_y4m(path: Path, frames: int = 10, size: tuple[int, int] = (480, 640)) -> Path:
    """A YUV4MPEG2 (4:2:0) clip of a real photograph for Chromium's fake camera
    (``--use-file-for-fake-video-capture``): matplotlib's grace_hopper.jpg, drifting a pixel a
    frame so the encoder sees motion. ``size`` is (width, height), both even."""
    import cv2
    import matplotlib
    import numpy as np
    from PIL import Image

    width, height = size
    photo = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    rgb = np.asarray(photo.convert("RGB").resize((width + frames, height)))
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            frame = np.ascontiguousarray(rgb[:, i:i + width])
            fh.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def write_silence(path: Path, secs: float = 60.0, rate: int = 48000) -> Path:
    """A silent WAV for the fake microphone (Chrome's default fake device beeps every second)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(secs * rate))
    return path


@pytest.fixture
def perception_bot(tmp_path):
    """`python bot.py --port N --persona P` whose persona sees (layers.perception with
    perception_model raven-0) and whose LLM is the zero-latency stand-in (tests/fake_openai.py).
    Skips (or with REQUIRE_BROWSER=1 fails) before starting the bot when the browser is missing."""
    _require_browser()
    import asyncio
    import threading

    from tests.fake_openai import FakeOpenAI

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = asyncio.run_coroutine_threadsafe(FakeOpenAI(answers=["I can see you."]).start(), loop).result(10)
    persona = json.loads((ROOT / "personas" / "default.json").read_text())
    persona["layers"]["llm"].update({"base_url": fake.base_url, "model": "fake", "api_key": "test-key"})
    persona["layers"]["perception"] = {"perception_model": "raven-0"}
    persona_path = tmp_path / "persona.json"
    persona_path.write_text(json.dumps(persona))
    try:
        with running_bot(tmp_path, "--persona", str(persona_path)) as running:
            yield running
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def _run_page(base: str, tmp_path: Path, output_dir: Path, share_screen: bool) -> dict:
    result_path = output_dir / "perception-result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "BOT_URL": f"{base}/", "CHROMIUM": CHROMIUM, "RESULT": str(result_path),
           "CAMERA_Y4M": str(write_camera_y4m(tmp_path / "camera.y4m")),
           "MIC_WAV": str(write_silence(tmp_path / "silence.wav")),
           "SHARE_SCREEN": "1" if share_screen else "0", "STAY_SECS": str(STAY_SECS),
           "SCREENSHOT": str(output_dir / "perception-page.png")}
    proc = subprocess.run(["node", str(BROWSER_DIR / "perception_check.js")], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert result_path.exists(), proc.stderr[-3000:]
    return json.loads(result_path.read_text())


def _rates(log_text: str) -> dict[str, list[tuple[float, int, int]]]:
    """Each source's (frames/s, processed, dropped) from the bot's periodic and final Perception lines."""
    out: dict[str, list[tuple[float, int, int]]] = {}
    for line in log_text.splitlines():
        if "Perception:" not in line or "frames/s" not in line:
            continue
        for part in line.split(";"):
            m = RATE.search(part if "Perception:" in part else f"Perception: {part}")
            if m:
                out.setdefault(m.group(1), []).append((float(m.group(2)), int(m.group(3)), int(m.group(4))))
    return out


def _page_session(base, log, tmp_path, output_dir, share_screen: bool):
    """One page session; the bot's log lines it caused (the log is shared by the sessions)."""
    offset = len(log.read_text())
    result = _run_page(base, tmp_path, output_dir, share_screen=share_screen)
    # The conversation's end (the page disconnected) logs the final Perception line.
    wait_until(lambda: "frames/s" in log.read_text()[offset:], timeout=10)
    time.sleep(1.0)
    log_text = log.read_text()[offset:]
    brief = json.dumps(result, indent=1)[:4000]
    context = f"{brief}\nbot log tail:\n{log_text[-3000:]}"
    # The page: connected, no errors, nothing off the machine.
    assert result.get("error") is None, context
    assert result["page_errors"] == [], context
    assert result["external_requests"] == [], context
    assert result["steps"][:2] == ["connected", "stayed"] and result["steps"][-1] == "disconnected", context
    assert result["sent_video"]["camera"] is True, context
    tx = result["transceivers"]
    # Pipecat's SmallWebRTC reads transceivers by index: 0 microphone, 1 camera, 2 screenVideo.
    assert [t["kind"] for t in tx[:2]] == ["audio", "video"], context
    assert tx[1]["direction"] == "sendrecv" and tx[1]["sent"] and tx[1]["sent"]["frames"] > 0, context
    assert "Perception: receiving camera frames" in log_text, context
    return result, log_text, _rates(log_text), context


def test_the_camera_reaches_the_bot_at_its_sampling_rate(perception_bot, tmp_path, output_dir):
    base, log = perception_bot
    _result, _log, rates, context = _page_session(base, log, tmp_path, output_dir, False)
    assert any(rate > 0 and processed > 0 for rate, processed, _ in rates.get("camera", [])), context
    # And kept arriving: the transport passes on ~1 frame/s, so ~15 in the stay (processed or
    # dropped by perception's budget). A camera that stalls after its first frame gives 1.
    assert max(p + d for _, p, d in rates["camera"]) >= MIN_FRAMES, context
    print(f"\nperception rates (camera): {rates}")


def test_a_shared_screen_reaches_the_bot(perception_bot, tmp_path, output_dir):
    """Camera and screen together. Known problem, not asserted here: with both sources the
    camera often stops after its first frame (aiortc/Pipecat's SmallWebRTC receive path; the
    page keeps sending it), so only the screen's steady arrival is checked."""
    base, log = perception_bot
    result, log_text, rates, context = _page_session(base, log, tmp_path, output_dir, True)
    tx = result["transceivers"]
    assert result["sent_video"]["screen"], context  # headless Chromium's picker gives a screen
    assert len(tx) == 3 and tx[2]["kind"] == "video" and tx[2]["direction"] == "sendonly", context
    assert tx[2]["current"] == "sendonly" and tx[2]["sent"]["frames"] > 0, context
    assert "stopped sharing" in result["screen_note_after_stop"], context
    assert "Perception: receiving screenVideo frames" in log_text, context
    assert any(rate > 0 for rate, _, _ in rates.get("screenVideo", [])), context
    assert max(p + d for _, p, d in rates["screenVideo"]) >= MIN_FRAMES, context
    print(f"\nperception rates (camera + screen): {rates}")
