"""The local page in a real browser, offline: headless Debian Chromium driven by playwright-core
with a fake microphone playing several synthetic voices (espeak-ng, with room noise, reverb and
a quiet talker) separated by pauses (tests/browser/page_check.js).

Needs /usr/bin/chromium, tests/browser/node_modules, espeak-ng and sox (scripts/test.sh installs
them where it can). Without them the test skips, unless REQUIRE_BROWSER=1 (as in CI), where it
fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.speech import (
    SPEAKERS,
    have_speech_tools,
    heard_per_line,
    user_utterances,
    word_errors,
    words,
    write_conversation_wav,
)

pytestmark = pytest.mark.e2e

BROWSER_DIR = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# The microphone: line 0 starts 6.5 s after the microphone opens and lasts ~6 s. The bot's
# greeting began 5.8-13.8 s after it in this test's runs (connection ~2-3 s, the session's model
# loading, a loaded machine), so line 0 is usually a turn spoken over the greeting (the test says
# whether it was). The others follow after pauses long enough for each reply.
LINES = [
    (("Hello there, could you tell me how the weather looks for the weekend, and whether it will "
      "rain?"), SPEAKERS[0]),
    ("I would like to change the delivery address on my order.", SPEAKERS[1]),  # pink noise 15 dB
    ("What time does the library open on Sunday mornings?", SPEAKERS[2]),  # Scottish, reverb
    ("Please remind me to call my sister after lunch.", SPEAKERS[3]),  # quiet (-32 dBFS) female
]
LEAD_SECS = 6.5
GAPS = [12.0, 12.0, 12.0, 0.0]
# Word error rate bound over lines 1-3 (the over-greeting line 0 is asserted separately).
# benchmarks/page_wer.py measured the page path now shipped (echo cancellation only, no RNNoise
# on speech) at 10.6 % on real recordings and 18.6-29 % on 12 synthetic voices; these three
# espeak-ng lines gave 17-34 % in this test's runs (e.g. "order" -> "board", "What time" ->
# "Well, time"; Whisper tiny.en on espeak-ng's formant voices). The setup reported as nonsense
# (Chrome's processing + Pipecat's RNNoise) measured 48 % with whole lines lost, and one lost line
# alone is a third of these words: 0.45 passes a healthy page and fails a mangled one.
WER_BOUND = 0.45


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (apt-get install chromium)"
    if not shutil.which("node"):
        return "node not installed"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").exists():
        return "playwright-core not installed (npm install --prefix tests/browser)"
    return have_speech_tools()


def _speaking_intervals(events: list[dict]) -> list[tuple[float, float, str]]:
    """(start s, stop s, inference id) of each replica speaking segment, from the event log."""
    out, start = [], {}
    for e in events:
        m, t = e["message"], (e.get("t") or 0) / 1000
        if m.get("event_type") == "conversation.replica.started_speaking":
            start[m.get("inference_id")] = t
        elif m.get("event_type") == "conversation.replica.stopped_speaking":
            out.append((start.pop(m.get("inference_id"), t), t, m.get("inference_id")))
    return out


def _in_order(states: list[str], wanted: list[str]) -> bool:
    it = iter(states)
    return all(any(s == w for s in it) for w in wanted)


def _tavus(event_type, inference_id=None, **properties):
    message = {"message_type": "conversation", "event_type": event_type, "conversation_id": "c1"}
    if inference_id:
        message["inference_id"] = inference_id
    if properties:
        message["properties"] = properties
    return message


def _rtvi(kind, data=None):
    return {"label": "rtvi-ai", "type": kind, "data": data or {}}


def _streaming(role, inference_id, speech, index, final=False, **extra):
    return _tavus("conversation.utterance.streaming", inference_id, role=role, speech=speech,
                  content_index=index, final=final, **extra)


# What the bot sends over the data channel in one greeting and one turn (shapes as in
# pipeline/interactions/tracker.py): the user's streaming lines carry other inference ids than
# the final utterance (a second VAD segment and speculative inference start new ids), and the
# reply is spoken in two segments, each streaming only its own text.
REPLAY = [
    _rtvi("bot-llm-started"),
    _tavus("conversation.replica.started_speaking", "g1"), _rtvi("bot-started-speaking"),
    _streaming("replica", "g1", "Hi, I am Ava.", 0),
    _tavus("conversation.utterance", "g1", role="replica", speech="Hi, I am Ava. How can I help?"),
    _streaming("replica", "g1", "Hi, I am Ava. How can I help?", 1),
    _streaming("replica", "g1", "Hi, I am Ava. How can I help?", 2, final=True, is_interrupted=False),
    _tavus("conversation.replica.stopped_speaking", "g1", duration=2.1, interrupted=False),
    _rtvi("bot-stopped-speaking"),
    _tavus("conversation.user.started_speaking", "u1a"), _rtvi("user-started-speaking"),
    _streaming("user", "u1a", "What is the", 0),
    _tavus("conversation.user.started_speaking", "u1b"),
    _streaming("user", "u1b", "What is the capital", 0),
    {"mic_speech_end": True},
    _tavus("conversation.user.stopped_speaking", "u1b"), _rtvi("user-stopped-speaking"),
    _rtvi("metrics", {"processing": [{"processor": "LocalWhisperSTTService#0", "value": 0.45}]}),
    _streaming("user", "u1c", "What is the capital of France?", 1, final=True),
    _tavus("conversation.utterance", "u1c", role="user", speech="What is the capital of France?"),
    _rtvi("bot-llm-started"),
    _rtvi("metrics", {"ttfb": [{"processor": "PersonaOpenAILLMService#0", "value": 0.6}]}),
    _rtvi("metrics", {"ttfb": [{"processor": "PiperTTSService#0", "value": 0.12}]}),
    _tavus("conversation.replica.started_speaking", "u1c"), _rtvi("bot-started-speaking"),
    {"bot_sound": True},
    _tavus("conversation.utterance", "u1c", role="replica",
           speech="Paris is the capital. It is in the north."),
    _streaming("replica", "u1c", "Paris is the capital.", 0),
    _streaming("replica", "u1c", "Paris is the capital.", 1, final=True, is_interrupted=False),
    _tavus("conversation.replica.stopped_speaking", "u1c", duration=1.4, interrupted=False),
    _rtvi("bot-stopped-speaking"),
    _tavus("conversation.replica.started_speaking", "u1c"), _rtvi("bot-started-speaking"),
    _streaming("replica", "u1c", "It is in the north.", 0),
    _streaming("replica", "u1c", "It is in the north.", 1, final=True, is_interrupted=False),
    _tavus("conversation.replica.stopped_speaking", "u1c", duration=1.2, interrupted=False),
    _rtvi("bot-stopped-speaking"),
    # A partial of the next turn still carrying the last turn's id: a new line, not an overwrite.
    _tavus("conversation.user.started_speaking", "u2"),
    _streaming("user", "u1c", "And what about", 0),
]


def test_page_shows_an_event_stream(output_dir):
    """The page's view of a recorded message sequence, without a bot (fast)."""
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)
    events = output_dir / "replay-events.json"
    events.write_text(json.dumps(REPLAY))
    result_path = output_dir / "replay-result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "EVENTS": str(events), "RESULT": str(result_path), "CHROMIUM": CHROMIUM,
           "SCREENSHOT": str(output_dir / "replay-page.png")}
    proc = subprocess.run(["node", str(BROWSER_DIR / "page_replay.js")], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert result_path.exists(), proc.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result.get("error") is None, result
    assert result["persona_name"] == "Ava"
    assert "wait for the greeting" in result["hint_before"].lower() or "press connect" in result["hint_before"].lower()
    assert [(ln["role"], ln["text"], ln["streaming"]) for ln in result["lines"]] == [
        ("replica", "Hi, I am Ava. How can I help?", False),
        ("user", "What is the capital of France?", False),
        ("replica", "Paris is the capital. It is in the north.", False),
        ("user", "And what about", True),
    ], result
    assert result["lines"][0]["who"] == "Ava"
    states = result["states"]
    assert states[0] == "greeting" and _in_order(states, ["speaking", "listening", "thinking",
                                                          "speaking", "listening"]), states
    assert result["state_text"].startswith("Listening")
    assert result["caption"].endswith("And what about")
    assert result["chart_bars"] == 1
    assert len(result["chart_rects"]) == 4, result  # STT, LLM, TTS and the rest
    assert result["console_open"] is False


ANSWER = "Sure, I can help with that. Tell me a little more, please."


@pytest.fixture
def page_bot(tmp_path):
    """`python bot.py --port N --persona P` (as conftest's bot_server starts it) whose persona's
    LLM is a zero-latency stand-in (tests/fake_openai.py) answering ANSWER: the embedded SmolLM2
    on a shared, loaded 2-core machine took 5-12 s to a first sentence, so replies were still
    being generated when the next line began and were interrupted (measured in this test)."""
    from tests.conftest import running_bot_with_fake_llm

    with running_bot_with_fake_llm(tmp_path, [ANSWER]) as running:
        yield running


def test_local_page_in_chromium(page_bot, output_dir):
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {missing}")
        pytest.skip(missing)
    base, log = page_bot
    mic, segments = write_conversation_wav(output_dir / "browser-mic.wav", LINES, lead_secs=LEAD_SECS,
                                           gaps=GAPS, tail_secs=100.0)
    screenshot = output_dir / "browser-page.png"
    result_path = output_dir / "browser-result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "BOT_URL": f"{base}/", "MIC_WAV": str(mic), "SCREENSHOT": str(screenshot),
           "RESULT": str(result_path), "CHROMIUM": CHROMIUM,
           "LISTEN_SECS": str(segments[-1]["end"] + 8.0)}  # the last line's turn is over
    proc = subprocess.run(["node", str(BROWSER_DIR / "page_check.js")], cwd=BROWSER_DIR, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert result_path.exists(), proc.stderr[-3000:]
    result = json.loads(result_path.read_text())
    lines = result.get("lines") or []
    brief = {k: v for k, v in result.items() if k not in ("events", "event_rows")}
    context = f"{json.dumps(brief, indent=1)[:4000]}\nbot log tail:\n{log.read_text()[-2000:]}"
    assert result.get("error") is None, context
    assert result["external_requests"] == [], context
    assert result["steps"] == ["connected", "listened", "last reply", "latency", "screenshot",
                               "respond reply", "two-part reply", "console screenshot"], context

    # Who you are talking to, and the developer console collapsed by default.
    assert result["persona_name"] == "Ava", context
    assert result["console_open_before"] is False, context

    # What was heard: one final line per utterance, assigned to the spoken lines by time.
    heard = heard_per_line(user_utterances(result["events"]), segments)
    report = [{"said": s["text"], "speaker": s["speaker"], "heard": h,
               "errors/words": "{}/{}".format(*word_errors(s["text"], h))} for s, h in zip(segments, heard)]
    context = f"heard: {json.dumps(report, indent=1)}\n{context}"
    errors = sum(word_errors(s["text"], h)[0] for s, h in zip(segments[1:], heard[1:]))
    n = sum(len(words(s["text"])) for s in segments[1:])
    print(f"\nbrowser WER lines 1-3: {errors}/{n} = {errors / n:.1%}; per line: {json.dumps(report)}")
    assert errors / n <= WER_BOUND, context

    # The whole conversation is on the page once: no duplicate lines, nothing left half-final.
    # (The stand-in LLM always answers the same text, so replica lines are told apart by inference.)
    user_texts = [ln["text"].strip() for ln in lines if ln["role"] == "user" and ln["text"].strip()]
    assert len(user_texts) == len(set(user_texts)), context
    keys = [(ln["role"], ln["inference"]) for ln in lines]
    assert len(keys) == len(set(keys)), context
    texts = [(ln["role"], ln["text"].strip()) for ln in lines if ln["text"].strip()]
    assert not [ln for ln in lines if ln["role"] == "user" and ln["streaming"]], context
    assert sum(1 for role, text in texts if text == "Please say hello to me.") == 1, context
    # A reply spoken in several segments (the bot stops and starts speaking within one inference;
    # each segment's streaming text holds only that segment) is one line holding every segment.
    segments_of: dict[str, list[str]] = {}
    for e in result["events"]:
        m = e["message"]
        p = m.get("properties") or {}
        if (m.get("event_type") == "conversation.utterance.streaming" and p.get("role") == "replica"
                and p.get("final") and p.get("speech")):
            segments_of.setdefault(m.get("inference_id"), []).append(p["speech"])
    replica_lines = [ln for ln in lines if ln["role"] == "replica"]
    assert len({ln["inference"] for ln in replica_lines}) == len(replica_lines), context
    multi = {k: v for k, v in segments_of.items() if len(v) >= 2}
    assert result["echo_segments"] >= 1 and multi, context  # the echo's parts, the long reply
    for inference, parts in multi.items():
        line = next(ln for ln in replica_lines if ln["inference"] == inference)
        assert all(part in line["text"] for part in parts), (parts, line)
    shown = " ".join(ln["text"] for ln in replica_lines)
    assert "two parts" in shown and "second part" in shown, context

    # The state cue: listening -> thinking -> speaking was shown.
    states = [s["state"] for s in result["state_log"]]
    assert _in_order(states, ["connecting", "listening", "thinking", "speaking", "listening"]), states

    # Latency: shown per turn, as a chart with one bar per measured turn.
    assert result["bot_audio_energy"] > 0, context  # the bot's audio arrived (WebRTC stats)
    assert result["latency_secs"] > 0 and "s (last turn" in result["latency_text"], context
    assert result["chart_bars"] >= 1, context

    # A turn spoken over the greeting is answered (heard, and a persona line follows it).
    speaking = _speaking_intervals(result["events"])
    line0 = segments[0]
    over = [iv for iv in speaking if iv[0] < line0["end"] and iv[1] > line0["start"]]
    print(f"greeting/replica speaking {speaking[:2]}; line 0 {line0['start']}-{line0['end']} s: "
          f"{'overlapped' if over else 'did NOT overlap'} the bot's speech")
    said0 = set(words(line0["text"])) - {"the", "for", "how", "you", "me"}
    assert len(said0 & set(words(heard[0]))) >= 2, f"line spoken over the greeting was not heard\n{context}"
    user_idx = [i for i, ln in enumerate(lines) if ln["role"] == "user"
                and len(said0 & set(re.findall(r"[a-z]+", ln["text"].lower()))) >= 2]
    assert user_idx and any(ln["role"] == "replica" and ln["text"].strip()
                            for ln in lines[user_idx[0] + 1:]), context
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
