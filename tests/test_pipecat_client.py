"""Pipecat's own web client SDK connects to the local bot, offline, and hears a reply.

`@pipecat-ai/client-js` + `@pipecat-ai/small-webrtc-transport` (npm, tests/browser/node_modules),
bundled by esbuild into the test's tmp dir and run in headless Debian Chromium as a page on the
bot's origin (tests/browser/pipecat_client_check.js). Its `WavMediaManager` opens the (fake)
microphone with getUserMedia; the SDK's default media manager would download daily-js from
Daily's CDN. Two flows, as Pipecat front ends use them:

1. `startBotAndConnect({endpoint: "/start"})`: POST /start, then POST (offer) and PATCH (trickle
   ICE) /sessions/{id}/api/offer through the runner's session proxy. The microphone asks a
   question; the SDK reports the user's transcript, then the bot speaking the stand-in LLM's
   answer, and WebRTC stats show the bot's audio arriving after the transcript.
2. `connect({webrtcRequestParams: {endpoint: "/api/offer"}})`: POST / PATCH /api/offer; bot-ready
   and the greeting's audio.

Each flow also POSTs its offer again when the bot asks to renegotiate (Pipecat's SmallWebRTC does
when the client offers video; the SDK always does). The bot runs with an ACCESS_TOKEN, which the
SDK sends as an app passes it (`headers` of /start or of the offer request: the SDK sends them
with the session's offers and ICE candidates); without it the SDK is refused (401). With a low
OFFERS_PER_MINUTE (burst 2), both sessions go through: a session counts once.

Every request the page makes stays on the bot's origin. Needs /usr/bin/chromium and
tests/browser/node_modules (scripts/test.sh installs them); without them the test skips, unless
REQUIRE_BROWSER=1 (as in CI), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.conftest import ROOT
from tests.speech import write_question_wav

pytestmark = pytest.mark.e2e

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NPM_PACKAGES = ("playwright-core", "esbuild", "@pipecat-ai/client-js",
                "@pipecat-ai/small-webrtc-transport")

GREETING = "Hi, I am Ava. What can I do for you?"
ANSWER = "The library opens at nine on Sunday mornings."
QUESTION = "What time does the library open on Sunday mornings?"
# The microphone opens when the SDK initialises its devices (before /start). Connecting, the
# session's models and the greeting take ~4-7 s on 2 cores: the question starts after them.
LEAD_SECS = 9.0
TOKEN = "pipecat-client-test-token"
# The signalling rate for the test's two sessions: a burst of 2 (OFFERS_PER_MINUTE // 2). Each
# session is one start, whatever the SDK's flow sends: /start and its offer, and the offer of the
# renegotiation the bot asks for (Pipecat's SmallWebRTC does when the client offers video).
OFFERS_PER_MINUTE = 4


def _require_browser() -> None:
    """Skip without Chromium, node or the npm packages; fail instead under REQUIRE_BROWSER=1."""
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (apt-get install chromium)"
    if not shutil.which("node"):
        return "node not installed"
    for package in NPM_PACKAGES:
        if not (BROWSER_DIR / "node_modules" / package).exists():
            return f"{package} not installed (npm install --prefix tests/browser)"
    return None


@pytest.fixture
def client_bot(tmp_path, monkeypatch):
    """`python bot.py --port N` with the default persona (embedded Whisper, Piper, Smart Turn)
    whose LLM is a zero-latency stand-in (tests/fake_openai.py): the greeting, then ANSWER.
    Checks for the browser first: nothing starts when the test will skip."""
    _require_browser()
    from tests.conftest import running_bot_with_fake_llm

    monkeypatch.setenv("OFFERS_PER_MINUTE", str(OFFERS_PER_MINUTE))
    monkeypatch.setenv("ACCESS_TOKEN", TOKEN)
    with running_bot_with_fake_llm(tmp_path, [GREETING, ANSWER]) as running:
        yield running


def _events(log: list[dict], name: str) -> list[dict]:
    return [e for e in log if e["event"] == name]


def _energy_at(audio: list[dict], t_ms: float) -> float:
    """The inbound audio's totalAudioEnergy at the last stats sample before ``t_ms``."""
    before = [a["energy"] for a in audio if a["t"] <= t_ms]
    return before[-1] if before else 0.0


def test_pipecat_client_sdk_hears_a_reply(client_bot, tmp_path, output_dir):
    base, bot_log = client_bot
    mic = write_question_wav(tmp_path / "question.wav", QUESTION, lead_secs=LEAD_SECS, tail_secs=60.0)
    result_path = output_dir / "pipecat-client-result.json"
    result_path.unlink(missing_ok=True)
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    env = {**os.environ, "BOT_URL": base, "TOKEN": TOKEN, "MIC_WAV": str(mic),
           "BUNDLE_DIR": str(bundle_dir), "RESULT": str(result_path), "CHROMIUM": CHROMIUM}
    started = time.monotonic()
    proc = subprocess.run(["node", str(BROWSER_DIR / "pipecat_client_check.js")], cwd=BROWSER_DIR,
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    print(f"\nPipecat client run: {time.monotonic() - started:.1f} s")
    assert result_path.exists(), proc.stderr[-3000:]
    result = json.loads(result_path.read_text())
    brief = {k: v for k, v in result.items() if k != "phases"}
    context = f"{json.dumps(brief, indent=1)[:4000]}\nbot log tail:\n{bot_log.read_text()[-3000:]}"
    assert result.get("error") is None, (
        f"{context}\nphases: {json.dumps(result.get('phases'))[-4000:]}")
    assert result["steps"] == ["bundled", "start connected", "start replied", "offer connected",
                               "offer heard", "no token refused"], context

    # Offline: nothing left the bot's origin (no CDN, no STUN server, no telemetry).
    assert result["off_origin_requests"] == [], context
    # Every signalling request the SDK made with the token was accepted (none refused by our
    # guard or the runner): /start, offers, renegotiations, trickle-ICE PATCHes.
    with_token = [r for r in result["requests"] if r["phase"] != "no token"]
    calls = sorted({(r["method"], re.sub(r"^/sessions/[^/]+/", "/sessions/{id}/", r["path"]))
                    for r in with_token})
    refused = [r for r in with_token if not 200 <= r["status"] < 300]
    assert not refused, context
    assert {("POST", "/start"), ("POST", "/sessions/{id}/api/offer"), ("POST", "/api/offer")} <= set(calls), calls
    print(f"SDK requests: {calls}")
    # Without it: /start refused, nothing else tried.
    assert [(r["method"], r["path"], r["status"]) for r in result["requests"]
            if r["phase"] == "no token"] == [("POST", "/start", 401)], context
    assert result["no_token"]["status"] == 401 and "access token" in result["no_token"]["message"], context

    # 1. startBotAndConnect: the user's question was transcribed, then the bot answered it.
    start = result["phases"]["start"]
    log, audio = start["log"], start["audio"]
    names = [e["event"] for e in log]
    phase_context = f"events: {json.dumps(log)[-5000:]}\n{context}"
    assert "botReady" in names and "connect-resolved" in names, phase_context
    # The SDK's WavMediaManager opened the fake microphone (getUserMedia), without the voice
    # processing that mangles a WAV (tests/browser/browser.js rawMicrophone).
    assert _events(log, "connect-resolved")[0]["data"]["mic"] == {
        "echoCancellation": False, "noiseSuppression": False, "autoGainControl": False}, phase_context
    finals = [e for e in _events(log, "userTranscript") if e["data"].get("final") and e["data"]["text"].strip()]
    assert finals, phase_context
    heard = finals[0]
    said = {"library", "open", "sunday"}
    assert len(said & set(heard["data"]["text"].lower().replace("?", " ").replace(".", " ").split())) >= 2, (
        f"heard {heard['data']['text']!r}\n{phase_context}")
    after = [e for e in log if e["t"] >= heard["t"]]
    replies = [e["data"].get("text", "") for e in after if e["event"] == "botOutput"]
    assert "library opens at nine" in " ".join(replies).lower(), phase_context  # ANSWER, not the greeting
    spoke = [e for e in after if e["event"] == "botStartedSpeaking"]
    assert spoke, phase_context
    stopped = [e for e in after if e["event"] == "botStoppedSpeaking" and e["t"] >= spoke[0]["t"]]
    assert stopped, phase_context
    # The reply's audio arrived over WebRTC: inbound energy grew while the bot spoke the answer.
    energy_before = _energy_at(audio, spoke[0]["t"])
    energy_after = _energy_at(audio, stopped[0]["t"] + 600)
    assert energy_after > energy_before, (
        f"inbound audio energy {energy_before} -> {energy_after}\n{phase_context}")
    assert max(a["level"] for a in audio if spoke[0]["t"] <= a["t"] <= stopped[0]["t"] + 600) > 0, phase_context
    print(f"user said {heard['data']['text']!r} at {heard['t'] / 1000:.1f} s; bot spoke "
          f"{spoke[0]['t'] / 1000:.1f}-{stopped[0]['t'] / 1000:.1f} s; reply audio energy "
          f"{energy_before:.4f} -> {energy_after:.4f}")

    # 2. connect() to /api/offer: the bot is ready and its greeting's audio arrives.
    offer = result["phases"]["offer"]
    names = [e["event"] for e in offer["log"]]
    assert "botReady" in names and "botStartedSpeaking" in names, json.dumps(offer["log"])[-4000:]
    # (the stand-in LLM's scripted answers are per process: this greeting is ANSWER's text)
    assert any(e["data"].get("text", "").strip() for e in _events(offer["log"], "botOutput")), (
        json.dumps(offer["log"])[-4000:])
    assert max(a["energy"] for a in offer["audio"]) > 0, context
