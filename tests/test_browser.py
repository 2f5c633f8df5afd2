"""The local page in a real browser, offline: headless Debian Chromium driven by playwright-core
with a fake microphone playing a spoken question (tests/browser/page_check.js).

Needs /usr/bin/chromium and tests/browser/node_modules (scripts/test.sh installs both where it
can). Without them the test skips, unless REQUIRE_BROWSER=1 (as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.speech import write_question_wav

pytestmark = pytest.mark.e2e

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (apt-get install chromium)"
    if not shutil.which("node"):
        return "node not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        return "playwright-core not installed (npm install --prefix tests/browser)"
    return None


def test_local_page_in_chromium(bot_server, output_dir):
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)
    base, log = bot_server
    mic = write_question_wav(output_dir / "browser-question.wav", "What is the capital of France?",
                             lead_secs=12.0, tail_secs=60.0)
    screenshot = output_dir / "browser-page.png"
    result_path = output_dir / "browser-result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "BOT_URL": f"{base}/", "MIC_WAV": str(mic), "SCREENSHOT": str(screenshot),
           "RESULT": str(result_path), "CHROMIUM": CHROMIUM}
    proc = subprocess.run(["node", str(BROWSER_DIR / "page_check.js")], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=300)
    assert result_path.exists(), proc.stderr[-3000:]
    result = json.loads(result_path.read_text())
    context = f"{json.dumps(result, indent=1)[:3000]}\nbot log tail:\n{log.read_text()[-2000:]}"
    assert result.get("error") is None, context
    assert result["external_requests"] == [], context
    assert result["steps"] == ["connected", "user transcript", "reply", "latency", "screenshot",
                               "respond reply"], context
    assert any("capital" in t.lower() for t in result["user_turns"]), context
    assert result["bot_audio_energy"] > 0, context  # the bot's audio arrived (WebRTC stats)
    assert result["latency_secs"] > 0 and "s (last turn" in result["latency_text"], context
    assert "Please say hello to me." in result["user_turns"], context
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
