"""Reports of a persona test run: a JSON summary, JUnit XML for CI and one self-contained HTML page.

The HTML page needs nothing but itself: both sides' audio are inline WAV data URIs, the timeline
is positioned divs, the CSS and the bit of JS (click a timeline item to seek the audio) inline.
Everything from the run (replies, labels, details) is HTML-escaped: it comes from an LLM and
from untrusted personas.
"""

from __future__ import annotations

import base64
import io
import json
import wave
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from persona_tests.results import (
    BARGE_IN,
    BOT_SPEECH,
    ERROR,
    GUARDRAIL,
    OBJECTIVE,
    REPLY,
    TOOL_CALL,
    TURN,
    USER_SPEECH,
    USER_TEXT,
    ConversationResult,
    ExpectationResult,
    RunResult,
    TimelineEntry,
    TurnResult,
    summary,
)

AUDIO_RATE = 16000  # both sides are embedded at this rate (small files, enough for speech)

# Timeline lanes: which kinds are drawn on which lane.
LANES = (
    ("user", (USER_SPEECH, USER_TEXT, TURN, BARGE_IN)),
    ("bot", (BOT_SPEECH, REPLY, TOOL_CALL)),
    ("events", (OBJECTIVE, GUARDRAIL, ERROR)),
)
SPANS = (USER_SPEECH, BOT_SPEECH)  # drawn as bars from t to end


def write_json(run: RunResult, path: str | Path) -> Path:
    """Write :func:`summary` of ``run`` (no audio) as indented JSON to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(summary(run), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


# --- JUnit ------------------------------------------------------------------------------------


def _case_name(run: RunResult, c: ConversationResult) -> str:
    return f"{c.scenario} [run {c.run}]" if run.repeat > 1 else c.scenario


def _failure_line(e: ExpectationResult) -> str:
    where = f"turn {e.turn}" if e.turn is not None else "conversation"
    line = f"[{where}] {e.description}"
    if e.detail:
        line += f"\n    found: {e.detail}"
    if e.reason:
        line += f"\n    judge: {e.reason}"
    return line


def write_junit(run: RunResult, path: str | Path) -> Path:
    """Write JUnit XML to ``path``: a <testsuite> per scenario, a <testcase> per conversation run.

    A run whose expectations failed gets a <failure> (message: the first failed expectation,
    body: all of them); a run that itself failed (``error``) gets an <error>.
    """
    root = ET.Element("testsuites", name=f"persona_tests {Path(run.persona_path).name}")
    suites: dict[str, list[ConversationResult]] = {}
    for c in run.conversations:
        suites.setdefault(c.scenario, []).append(c)
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    for scenario, convs in suites.items():
        failures = sum(1 for c in convs if c.error is None and c.failures)
        errors = sum(1 for c in convs if c.error is not None)
        time = sum(c.duration_s for c in convs)
        suite = ET.SubElement(root, "testsuite", name=scenario, tests=str(len(convs)),
                              failures=str(failures), errors=str(errors), skipped="0",
                              time=f"{time:.3f}", timestamp=run.started_at)
        for key, value in (("tests", len(convs)), ("failures", failures), ("errors", errors),
                           ("time", time)):
            totals[key] += value
        for c in convs:
            persona = c.persona or Path(run.persona_path).stem
            case = ET.SubElement(suite, "testcase", name=_case_name(run, c),
                                 classname=f"persona_tests.{persona}", time=f"{c.duration_s:.3f}")
            if c.error is not None:
                err = ET.SubElement(case, "error", message=c.error.splitlines()[0] if c.error
                                    else "error", type="run")
                err.text = c.error
            failed = c.failures
            if failed:
                failure = ET.SubElement(case, "failure", message=failed[0].description,
                                        type="expectation")
                failure.text = "\n".join(_failure_line(e) for e in failed)
            if c.conversation_id:
                ET.SubElement(case, "system-out").text = f"conversation_id: {c.conversation_id}"
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", str(totals["errors"]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    path = Path(path)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


# --- audio --------------------------------------------------------------------------------------


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or samples.size == 0:
        return samples
    n_out = max(1, round(samples.size * target / rate))
    x_out = np.arange(n_out) * (rate / target)
    return np.interp(x_out, np.arange(samples.size), samples.astype(np.float64))


def wav_bytes(pcm: bytes, rate: int, target: int = AUDIO_RATE) -> bytes:
    """A mono 16-bit WAV file of raw 16-bit PCM ``pcm`` at ``rate``, resampled to ``target``."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2")
    out = np.clip(np.round(_resample(samples, rate, target)), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(target)
        w.writeframes(out.tobytes())
    return buf.getvalue()


def wav_data_uri(pcm: bytes, rate: int) -> str:
    """``data:audio/wav;base64,...`` of :func:`wav_bytes`."""
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(pcm, rate)).decode("ascii")


# --- HTML ---------------------------------------------------------------------------------------

CSS = """
:root { --ok: #1a7f37; --ok-bg: #e6f4ea; --bad: #b42318; --bad-bg: #fde8e6; --muted: #667085;
  --line: #e4e7ec; --bg: #f8f9fb; --user: #2f6fdb; --bot: #7a4fd6; --ev: #b7791f; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; margin: 0; padding: 24px 32px; color: #1d2939; background: var(--bg);
  font-size: 14px; line-height: 1.45; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 18px; margin: 0; }
h3 { font-size: 15px; margin: 18px 0 8px; color: #344054; }
header, section.conversation { background: #fff; border: 1px solid var(--line);
  border-radius: 8px; padding: 16px 20px; margin-bottom: 20px; }
section.conversation.passed { border-left: 6px solid var(--ok); }
section.conversation.failed { border-left: 6px solid var(--bad); }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600;
  font-size: 13px; }
.badge.pass { background: var(--ok-bg); color: var(--ok); }
.badge.fail { background: var(--bad-bg); color: var(--bad); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 10px 0; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; word-break: break-word; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; }
table.flaky { width: auto; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.run-error { background: var(--bad-bg); color: var(--bad); border: 1px solid var(--bad);
  border-radius: 6px; padding: 10px 14px; margin: 10px 0; font-weight: 600;
  white-space: pre-wrap; }
.audio { display: grid; grid-template-columns: max-content 1fr; gap: 6px 12px;
  align-items: center; margin: 10px 0; }
.audio audio { width: 100%; max-width: 640px; height: 36px; }
.note { color: var(--muted); font-style: italic; }
.timeline { position: relative; margin: 12px 0 4px; padding-left: 60px; }
.tl-lane { position: relative; height: 26px; border-bottom: 1px dashed var(--line); }
.tl-lane-name { position: absolute; left: -60px; top: 4px; width: 54px; color: var(--muted);
  font-size: 12px; text-align: right; }
.tl-item { position: absolute; top: 5px; height: 16px; cursor: pointer; border-radius: 3px; }
.tl-item.span { opacity: .75; min-width: 2px; }
.tl-item.span:hover, .tl-item.point:hover { opacity: 1; outline: 2px solid #101828; }
.tl-item.point { width: 10px; height: 10px; top: 8px; margin-left: -5px; border-radius: 50%;
  border: 1px solid #fff; }
.tl-user_speech { background: var(--user); } .tl-bot_speech { background: var(--bot); }
.tl-user_text { background: #5b8def; border-radius: 2px; }
.tl-turn { background: #1849a9; } .tl-reply { background: #53389e; }
.tl-tool_call { background: #0e9384; border-radius: 2px; transform: rotate(45deg); }
.tl-objective { background: var(--ev); } .tl-guardrail { background: #dc6803; }
.tl-barge_in { background: #c11574; } .tl-error { background: var(--bad); border-radius: 0; }
.tl-axis { position: relative; height: 20px; }
.tl-tick { position: absolute; top: 0; height: 5px; border-left: 1px solid #98a2b3; }
.tl-tick span { position: absolute; top: 5px; left: -10px; width: 20px; text-align: center;
  font-size: 10px; color: var(--muted); }
.tl-cursor { position: absolute; top: 0; bottom: 20px; border-left: 2px solid #f04438;
  pointer-events: none; display: none; }
.legend { font-size: 12px; color: var(--muted); margin: 4px 0 0 60px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px;
  border-radius: 2px; vertical-align: -1px; }
table.entries td.detail { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; font-size: 12px; color: #475467; word-break: break-all; }
table.entries tr { cursor: pointer; } table.entries tr:hover { background: #f2f4f7; }
details > summary { cursor: pointer; color: #344054; font-weight: 600; margin: 14px 0 6px; }
.turn { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; margin: 8px 0; }
.turn.failed { border-color: #f9b4ac; }
.turn-head { display: flex; gap: 14px; flex-wrap: wrap; align-items: baseline; color: var(--muted);
  font-size: 12px; }
.turn-head b { color: #1d2939; font-size: 14px; }
.said { display: grid; grid-template-columns: 90px 1fr; gap: 2px 10px; margin: 6px 0; }
.said .k { color: var(--muted); } .said .v { white-space: pre-wrap; word-break: break-word; }
ul.expectations { list-style: none; padding: 0; margin: 6px 0 0; }
ul.expectations li { padding: 4px 8px; border-radius: 4px; margin: 2px 0; }
ul.expectations li .mark { font-weight: 700; margin-right: 6px; }
li.passed-expectation .mark { color: var(--ok); }
li.failed-expectation { background: var(--bad-bg); }
li.failed-expectation .mark { color: var(--bad); }
.exp-detail, .exp-reason { display: block; margin-left: 22px; color: #475467; font-size: 13px;
  white-space: pre-wrap; word-break: break-word; }
.simulation { background: #f4f3ff; border: 1px solid #d9d6fe; border-radius: 6px;
  padding: 8px 14px; margin: 10px 0; }
"""

JS = """
(function () {
  function seek(section, t) {
    section.querySelectorAll('audio').forEach(function (a) {
      try { a.currentTime = t; } catch (e) { /* not loaded yet */ }
    });
    var tl = section.querySelector('.timeline'), cur = section.querySelector('.tl-cursor');
    if (tl && cur) { cur.style.left = 'calc(60px + (100% - 60px) * ' + (t / tl.dataset.span) + ')';
      cur.style.display = 'block'; }
  }
  document.addEventListener('click', function (ev) {
    var item = ev.target.closest('[data-t]');
    if (!item) return;
    var section = item.closest('section.conversation');
    if (section) seek(section, parseFloat(item.dataset.t));
  });
})();
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _fmt_s(t: float | None) -> str:
    return "—" if t is None else f"{t:.2f} s"


def _latency(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.0f} ms"


def _badge(passed: bool) -> str:
    return '<span class="badge pass">PASS</span>' if passed else '<span class="badge fail">FAIL</span>'


def _meta(rows: list[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows if v not in (None, ""))
    return f'<dl class="meta">{items}</dl>'


def _audio_secs(c: ConversationResult) -> float:
    return max(len(c.user_audio) / 2 / max(c.user_rate, 1), len(c.bot_audio) / 2 / max(c.bot_rate, 1))


def _span(c: ConversationResult) -> float:
    ends = [max(e.t, e.end or 0.0) for e in c.timeline]
    return max([c.duration_s, _audio_secs(c), 1.0, *ends])


def _tick_step(span: float) -> int:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300):
        if span / step <= 30:
            return step
    return 600


def _timeline(c: ConversationResult) -> str:
    span = _span(c)

    def pct(t: float) -> str:
        return f"{max(0.0, min(100.0, t / span * 100)):.3f}%"

    lanes = []
    for lane, kinds in LANES:
        items = []
        for e in sorted((e for e in c.timeline if e.kind in kinds), key=lambda e: e.t):
            tip = f"{e.t:.2f} s · {e.kind} · {e.label}"
            cls = f"tl-item tl-{_e(e.kind)}"
            if e.kind in SPANS and e.end is not None and e.end > e.t:
                tip = f"{e.t:.2f}–{e.end:.2f} s · {e.kind} · {e.label}"
                width = f"{(min(e.end, span) - e.t) / span * 100:.3f}%"
                style = f"left:{pct(e.t)};width:{width}"
                cls += " span"
            else:
                style = f"left:{pct(e.t)}"
                cls += " point"
            items.append(f'<div class="{cls}" style="{style}" data-t="{e.t:.3f}" '
                         f'title="{_e(tip)}"></div>')
        lanes.append(f'<div class="tl-lane" data-lane="{lane}">'
                     f'<span class="tl-lane-name">{lane}</span>{"".join(items)}</div>')
    step = _tick_step(span)
    ticks = "".join(f'<div class="tl-tick" style="left:{pct(s)}"><span>{s}</span></div>'
                    for s in range(0, int(span) + 1, step))
    legend_kinds = sorted({e.kind for e in c.timeline})
    legend = "".join(f'<i class="tl-{_e(k)}"></i>{_e(k)}' for k in legend_kinds)
    return (f'<div class="timeline" data-span="{span:.3f}">{"".join(lanes)}'
            f'<div class="tl-axis">{ticks}</div><div class="tl-cursor"></div></div>'
            f'<div class="legend">seconds · click an item to seek the audio{legend and " · "}'
            f'{legend}</div>')


def _entries_table(entries: list[TimelineEntry]) -> str:
    if not entries:
        return '<p class="note">No timeline entries.</p>'
    rows = []
    for e in sorted(entries, key=lambda e: e.t):
        when = f"{e.t:.2f}" if e.end is None else f"{e.t:.2f}–{e.end:.2f}"
        detail = json.dumps(e.detail, separators=(",", ":"), ensure_ascii=False,
                            default=str) if e.detail else ""
        rows.append(f'<tr data-t="{e.t:.3f}"><td class="num">{when}</td><td>{_e(e.kind)}</td>'
                    f'<td>{_e(e.label)}</td><td class="detail">{_e(detail)}</td></tr>')
    return ('<details open><summary>Timeline entries</summary><table class="entries"><thead>'
            '<tr><th>t (s)</th><th>kind</th><th>label</th><th>detail</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></details>")


def _expectations(expectations: list[ExpectationResult]) -> str:
    if not expectations:
        return ""
    items = []
    for x in expectations:
        cls = "passed-expectation" if x.passed else "failed-expectation"
        mark = "✓" if x.passed else "✗"
        extra = ""
        if x.detail:
            extra += f'<span class="exp-detail">{"found" if not x.passed else "matched"}: ' \
                     f"{_e(x.detail)}</span>"
        if x.reason:
            extra += f'<span class="exp-reason">judge: {_e(x.reason)}</span>'
        items.append(f'<li class="{cls}" data-kind="{_e(x.kind)}"><span class="mark">{mark}</span>'
                     f"{_e(x.description)}{extra}</li>")
    return f'<ul class="expectations">{"".join(items)}</ul>'


def _turn(t: TurnResult) -> str:
    state = "passed" if t.passed else "failed"
    rows = [("user", t.user)]
    if t.input == "speech" or t.heard:
        rows.append(("bot heard", t.heard or "—"))
    rows.append(("reply", t.reply or "—"))
    said = "".join(f'<span class="k">{_e(k)}</span><span class="v">{_e(v)}</span>' for k, v in rows)
    seek = f' data-t="{t.started:.3f}"'
    head = (f"<b>Turn {t.index}</b><span>{_e(t.input)}</span>"
            f"<span>at {_fmt_s(t.started)}</span><span>latency {_latency(t.latency_ms)}</span>"
            f"<span>{'interrupted' if t.interrupted else 'not interrupted'}</span>"
            f"{_badge(t.passed) if t.expectations else ''}")
    return (f'<div class="turn {state}"><div class="turn-head"{seek}>{head}</div>'
            f'<div class="said">{said}</div>{_expectations(t.expectations)}</div>')


def _audio(c: ConversationResult) -> str:
    parts = []
    for side, pcm, rate in (("user", c.user_audio, c.user_rate), ("bot", c.bot_audio, c.bot_rate)):
        label = f'<span>{side} side</span>'
        if len(pcm) < 2:
            parts.append(f'{label}<span class="note">no {side} audio recorded</span>')
        else:
            parts.append(f'{label}<audio class="audio-{side}" controls preload="metadata" '
                         f'src="{wav_data_uri(pcm, rate)}"></audio>')
    return f'<div class="audio">{"".join(parts)}</div>'


def _simulation(sim: dict[str, Any] | None) -> str:
    if not sim:
        return ""
    known = [("goal", sim.get("goal")), ("ended by", sim.get("ended_by", sim.get("end_reason"))),
             ("user's claim", sim.get("claim", sim.get("user_claim")))]
    seen = {"goal", "ended_by", "end_reason", "claim", "user_claim"}
    other = [(k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str))
             for k, v in sim.items() if k not in seen]
    return f'<div class="simulation"><h3>Simulation</h3>{_meta(known + other)}</div>'


def _conversation(index: int, run: RunResult, c: ConversationResult) -> str:
    state = "passed" if c.passed else "failed"
    title = f"{_e(c.scenario)}" + (f" · run {c.run}" if run.repeat > 1 else "")
    engines = ", ".join(f"{k}: {v}" for k, v in c.engines.items())
    error = f'<div class="run-error">Run error: {_e(c.error)}</div>' if c.error else ""
    meta = _meta([("run", c.run), ("kind", c.kind), ("persona", c.persona),
                  ("conversation id", c.conversation_id), ("engines", engines),
                  ("duration", _fmt_s(c.duration_s)),
                  ("expectations", (f"{len(c.all_expectations) - len(c.failures)}/"
                                    f"{len(c.all_expectations)} held"))])
    turns = "".join(_turn(t) for t in c.turns) or '<p class="note">No turns.</p>'
    conv_exp = ""
    if c.expectations:
        conv_exp = f"<h3>Conversation expectations</h3>{_expectations(c.expectations)}"
    return (f'<section id="conv-{index}" class="conversation {state}">'
            f"<h2>{_badge(c.passed)} {title}</h2>{error}{meta}{_simulation(c.simulation)}"
            f"<h3>Audio</h3>{_audio(c)}<h3>Timeline</h3>{_timeline(c)}"
            f"{_entries_table(c.timeline)}<h3>Turns</h3>{turns}{conv_exp}</section>")


def _header(run: RunResult) -> str:
    convs = run.conversations
    passed = sum(1 for c in convs if c.passed)
    errors = sum(1 for c in convs if c.error is not None)
    machine = ", ".join(f"{k}: {v}" for k, v in run.machine.items())
    counts = f"{passed} passed, {len(convs) - passed} failed ({errors} with a run error), " \
             f"{len(convs)} conversations"
    meta = _meta([("persona", run.persona_path), ("scenarios", run.scenario_path),
                  ("started", run.started_at), ("machine", machine), ("repeat", run.repeat),
                  ("duration", _fmt_s(run.duration_s)), ("result", counts)])
    flaky = ""
    if run.repeat > 1:
        rows = "".join(
            f'<tr><td>{_e(name)}</td><td class="num">{n["passed"]}</td>'
            f'<td class="num">{n["failed"]}</td>'
            f'<td>{"stable" if not n["passed"] or not n["failed"] else "flaky"}</td></tr>'
            for name, n in run.flakiness().items())
        flaky = ('<h3>Flakiness</h3><table class="flaky"><thead><tr><th>scenario</th>'
                 '<th>passed runs</th><th>failed runs</th><th></th></tr></thead>'
                 f"<tbody>{rows}</tbody></table>")
    links = "".join(
        f'<li><a href="#conv-{i}">{"✓" if c.passed else "✗"} {_e(_case_name(run, c))}</a></li>'
        for i, c in enumerate(convs))
    toc = f"<h3>Conversations</h3><ul>{links}</ul>" if convs else ""
    return (f"<header><h1>{_badge(run.passed)} Persona test: {_e(Path(run.persona_path).name)}"
            f"</h1>{meta}{flaky}{toc}</header>")


def render_html(run: RunResult) -> str:
    """The report page of ``run`` as one self-contained HTML string."""
    body = "".join(_conversation(i, run, c) for i, c in enumerate(run.conversations))
    title = f"Persona test {'PASS' if run.passed else 'FAIL'}: {Path(run.persona_path).name}"
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"{_header(run)}{body}<script>{JS}</script></body></html>\n")


def write_html(run: RunResult, path: str | Path) -> Path:
    """Write :func:`render_html` of ``run`` to ``path``."""
    path = Path(path)
    path.write_text(render_html(run), encoding="utf-8")
    return path


def write_reports(run: RunResult, out_dir: str | Path) -> dict[str, Path]:
    """Write report.html, summary.json and junit.xml into ``out_dir``; their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"html": write_html(run, out / "report.html"),
            "json": write_json(run, out / "summary.json"),
            "junit": write_junit(run, out / "junit.xml")}
