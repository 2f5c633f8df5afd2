"""The persona test reports (persona_tests/report.py) of a synthetic run: JUnit XML, the JSON
summary and the self-contained HTML page, the page also in headless Chromium
(tests/browser/report_check.js: its WAVs decode, nothing from the data runs, a timeline click
seeks the audio).

The browser test needs /usr/bin/chromium and tests/browser/node_modules; without them it skips,
unless REQUIRE_BROWSER=1 (as in CI), where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import wave
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from persona_tests import results as r
from persona_tests.report import write_html, write_json, write_junit, write_reports
from tests.conftest import ROOT

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
XSS = "<script>alert(1)</script>"


def _tone(rate: int, secs: float = 1.0, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * secs)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def _timeline() -> list[r.TimelineEntry]:
    return [
        r.TimelineEntry(0.05, r.USER_SPEECH, "What is the capital of France?", end=0.4),
        r.TimelineEntry(0.42, r.TURN, "what is the capital of france", detail={"stt": "whisper"}),
        r.TimelineEntry(0.5, r.TOOL_CALL, "lookup_city", detail={"args": {"q": "France"}}),
        r.TimelineEntry(0.55, r.REPLY, "Paris is the capital."),
        r.TimelineEntry(0.6, r.BOT_SPEECH, "Paris is the capital.", end=0.95),
        r.TimelineEntry(0.7, r.BARGE_IN, "user spoke over the bot"),
        r.TimelineEntry(0.8, r.OBJECTIVE, "capital_known completed", detail={"state": "completed"}),
    ]


def _conversation(run: int, passed: bool) -> r.ConversationResult:
    reply = "Paris is the capital." if passed else f"Paris {XSS} is the capital."
    turn = r.TurnResult(
        index=1, input="speech", user="What is the capital of France?",
        heard="what is the capital of france", reply=reply, started=0.05, user_ended=0.4,
        first_audio=0.6, latency_ms=200.0, interrupted=not passed,
        expectations=[
            r.ExpectationResult("reply_contains", 'reply contains "Paris"', True, turn=1,
                                detail="Paris"),
            r.ExpectationResult("judge", "the reply is polite", passed, turn=1,
                                detail="" if passed else f"reply was {XSS}",
                                reason=None if passed else "It injected <b>markup</b>."),
        ])
    timeline = _timeline()
    if not passed:
        timeline.append(r.TimelineEntry(0.9, r.GUARDRAIL, f"held {XSS}", detail={"x": XSS}))
    return r.ConversationResult(
        scenario="capital question", run=run, kind="script", persona="ava",
        conversation_id=f"c-{run}", engines={"stt": "whisper", "llm": "fake", "tts": "piper"},
        duration_s=1.0, turns=[turn],
        expectations=[r.ExpectationResult("no_errors", "no system errors", True)],
        timeline=timeline, user_audio=_tone(16000), bot_audio=_tone(24000),
        user_rate=16000, bot_rate=24000)


@pytest.fixture
def run() -> r.RunResult:
    return r.RunResult(
        persona_path="personas/ava.json", scenario_path="scenarios/capital.yaml",
        started_at="2026-12-03T09:00:00Z", machine={"host": "ci", "cpus": 2}, repeat=2,
        conversations=[_conversation(1, True), _conversation(2, False)], duration_s=2.5)


def test_junit(run, tmp_path):
    root = ET.parse(write_junit(run, tmp_path / "junit.xml")).getroot()
    suites = root.findall(".//testsuite") if root.tag == "testsuites" else [root]
    assert [s.get("name") for s in suites] == ["capital question"]
    suite = suites[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["capital question [run 1]", "capital question [run 2]"]
    assert {c.get("classname") for c in cases} == {"persona_tests.ava"}
    assert float(cases[0].get("time")) == pytest.approx(1.0)
    failures = root.findall(".//failure")
    assert len(failures) == 1 and cases[1].find("failure") is not None
    assert failures[0].get("message") == "the reply is polite"
    assert failures[0].get("type") == "expectation"
    assert "turn 1" in failures[0].text and XSS in failures[0].text  # escaped by ElementTree
    assert "It injected <b>markup</b>." in failures[0].text
    assert not root.findall(".//error")


def test_junit_run_error(run, tmp_path):
    run.conversations[0].error = "pipeline did not start\ntraceback..."
    run.repeat = 1
    run.conversations = run.conversations[:1]
    root = ET.parse(write_junit(run, tmp_path / "junit.xml")).getroot()
    case = root.find(".//testcase")
    assert case.get("name") == "capital question"
    assert case.find("error").get("message") == "pipeline did not start"
    assert root.find(".//testsuite").get("errors") == "1"


def test_json_summary(run, tmp_path):
    text = write_json(run, tmp_path / "summary.json").read_text()
    data = json.loads(text)
    assert data["passed"] is False and data["repeat"] == 2
    assert [c["passed"] for c in data["conversations"]] == [True, False]
    assert [f["description"] for f in data["conversations"][1]["failures"]] == [
        "the reply is polite"]
    assert data["flakiness"] == {"capital question": {"passed": 1, "failed": 1}}
    assert all("user_audio" not in c and "bot_audio" not in c for c in data["conversations"])
    assert "base64" not in text and len(text) < 20000


def _wavs(page: str) -> list[tuple[str, bytes]]:
    return [(cls, base64.b64decode(data)) for cls, data in re.findall(
        r'<audio class="(audio-\w+)" controls[^>]*src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"',
        page)]


def test_html_page(run, tmp_path):
    page = write_html(run, tmp_path / "report.html").read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;markup&lt;/b&gt;" in page
    assert page.count("<script>") == 1  # the report's own
    sections = re.findall(r'<section id="(conv-\d+)" class="conversation (passed|failed)"', page)
    assert sections == [("conv-0", "passed"), ("conv-1", "failed")]
    wavs = _wavs(page)
    assert [cls for cls, _ in wavs] == ["audio-user", "audio-bot"] * 2
    for _, data in wavs:
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            assert w.getnframes() / w.getframerate() == pytest.approx(1.0, abs=0.01)
    assert page.count('class="tl-item') == 2 * len(_timeline()) + 1
    for kind in ("user_speech", "bot_speech", "turn", "reply", "tool_call", "barge_in",
                 "objective", "guardrail"):
        assert f"tl-{kind}" in page
    assert 'title="0.05–0.40 s · user_speech · What is the capital of France?"' in page
    assert page.count('class="failed-expectation"') == 1
    assert "Flakiness" in page and "flaky" in page
    assert "200 ms" in page and "personas/ava.json" in page
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page


def test_html_empty_audio_and_error(run, tmp_path):
    c = run.conversations[0]
    c.bot_audio, c.error = b"", "LLM <timeout>"
    c.simulation = {"goal": "learn the capital", "end_reason": "goal reached",
                    "claim": "I got <Paris>"}
    page = write_html(run, tmp_path / "report.html").read_text()
    assert [cls for cls, _ in _wavs(page)] == ["audio-user", "audio-user", "audio-bot"]
    assert "no bot audio recorded" in page
    assert 'class="run-error">Run error: LLM &lt;timeout&gt;' in page
    assert "learn the capital" in page and "I got &lt;Paris&gt;" in page


def test_write_reports(run, tmp_path):
    paths = write_reports(run, tmp_path / "a" / "b")
    assert {k: p.name for k, p in paths.items()} == {
        "html": "report.html", "json": "summary.json", "junit": "junit.xml"}
    assert all(p.stat().st_size > 0 for p in paths.values())


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (apt-get install chromium)"
    if not shutil.which("node"):
        return "node not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        return "playwright-core not installed (npm install --prefix tests/browser)"
    return None


def report_in_chromium(report, output_dir, name: str) -> dict:
    """tests/browser/report_check.js on ``report``: its findings (screenshot
    ``output_dir/<name>.png``). Skips without Chromium or playwright-core, unless
    REQUIRE_BROWSER=1, where it fails."""
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)
    screenshot = output_dir / f"{name}.png"
    result_path = output_dir / f"{name}-result.json"
    screenshot.unlink(missing_ok=True)
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "REPORT": str(report), "RESULT": str(result_path),
           "SCREENSHOT": str(screenshot), "CHROMIUM": CHROMIUM}
    proc = subprocess.run(["node", str(BROWSER_DIR / "report_check.js")], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert result_path.exists(), proc.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result.get("error") is None, result
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    return result


@pytest.mark.e2e
def test_report_in_chromium(run, output_dir):
    report = write_html(run, output_dir / "persona-report.html")
    result = report_in_chromium(report, output_dir, "persona-report")

    convs = result["conversations"]
    assert [(c["id"], c["passed"], c["failed"]) for c in convs] == [
        ("conv-0", True, False), ("conv-1", False, True)]
    assert [c["tl_items"] for c in convs] == [len(_timeline()), len(_timeline()) + 1]
    assert [c["audio"] for c in convs] == [2, 2]
    assert len(result["audio"]) == 4
    for audio in result["audio"]:
        assert audio["error"] is None and audio["duration"] > 0.5, result["audio"]
    assert result["failed_expectations"] == 1
    assert result["failed_expectation_bg"] not in (None, "rgba(0, 0, 0, 0)")
    assert XSS in result["failed_texts"][0]  # shown as text
    assert result["alerts"] == [] and result["scripts"] == 1
    assert result["requests"] == []  # self-contained: nothing fetched
    clicked = result["clicked"]
    assert clicked["t"] > 0.2
    assert result["current_times"] == [pytest.approx(clicked["t"], abs=0.05)] * 2, result
    assert result["cursor_shown"] is True
