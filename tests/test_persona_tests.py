"""The persona test harness (``python -m persona_tests``) on its own example scenarios.

The deterministic stack: every layer real (Silero VAD, Smart Turn, Whisper, Piper, the
persona's tools, interruptions) except the LLM, which is the loopback fake answering as a
scripted model would (:func:`scripted_route`: the persona's replies and tool calls, the
judge's verdicts, the simulated user's lines and its hang-up). One example also runs on
the embedded models. A scenario that must fail fails with a clear report; the report of a
real run opens in headless Chromium (screenshot in tests/output).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from config.errors import ConfigError
from persona_tests import cli
from persona_tests.scenario import load_scenarios, scenarios_from_dict
from tests.conftest import PERSONAS, ROOT
from tests.fake_openai import FakeOpenAI, ToolCall
from tests.test_persona_report import report_in_chromium

SCENARIOS = PERSONAS / "scenarios"
STORY = ("Once upon a time, a brave knight rode to a castle by the sea, where a dragon had "
         "slept for a hundred years. The knight climbed the long stone stairs, one by one, "
         "while the waves crashed against the rocks below, and the wind sang through the old "
         "towers. At the top he found the dragon awake, and the dragon asked him a riddle "
         "about the tides, the moon and the stars that nobody had answered in a century.")

# The persona's replies by what the user asked (a lower-case fragment of their last message).
REPLIES = {
    "capital of france": "Paris is the capital of France.",
    "joke about computers": "Why did the computer go to the doctor? It had a virus.",
    "long story": STORY,
    "eiffel tower": "The Eiffel Tower is in Paris.",
    "doctor's note": "I can't help with that, but I can help you plan a day off.",
    "election": "Let's keep our focus on the interview and the case.",
    "market size": "The sports drink market is about $15 billion a year.",
}
# ... and the tool calls it makes first (then it answers from the tool's result).
CALLS = {
    "never been here": ("complete_objective", {"patient_status": "new",
                                               "next_objective": "new_patient_intake"}),
    "tokyo": ("get_current_time", {"location": "Tokyo"}),
    "3pm in new york": ("convert_time_zone", {"time": "3pm", "from_zone": "New York",
                                              "to_zone": "London"}),
    "runny nose": ("get_cures", {"disease": "common cold"}),
    "internet has been down": ("resolve_customer_issue", {
        "product": "home internet", "issue_description": "down since this morning",
        "urgency": "high"}),
    "printer": ("resolve_customer_issue", {"product": "office printer",
                                           "issue_description": "fails every day",
                                           "urgency": "medium"}),
}
SIMULATED_USER = ["Hi. My office printer has failed three times this week. Can you log it?"]


def _text(content) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _judge_answer(prompt: str, verdict: str) -> str:
    """The classifier's JSON: a probability for yes/no questions, a choice for the others."""
    answers = {}
    for name, body in re.findall(r'Question "([^"]+)": (.*?)(?=\n\nQuestion "|\n\nReply with)',
                                 prompt, re.DOTALL):
        if 'Answer shape: {"probability"' in body:
            answers[name] = {"probability": 0.95 if verdict == "yes" else 0.05}
        else:
            options = re.findall(r"^- (\w+):", body, re.MULTILINE)
            pick = {"yes": next(o for o in options if o in ("yes", "meets")),
                    "no": next(o for o in options if o in ("no", "fails"))}[verdict]
            answers[name] = {"choice": pick, "probabilities": {
                o: (0.95 if o == pick else 0.05 / max(1, len(options) - 1)) for o in options}}
    return json.dumps(answers)


def scripted_route(judge_verdict: str = "yes"):
    """The fake LLM's route for every call the harness and the persona make."""
    ids = itertools.count(1)
    simulated = iter(SIMULATED_USER)

    def route(body):
        messages = body.get("messages") or []
        first = _text(messages[0].get("content")) if messages else ""
        fmt = body.get("response_format") or {}
        if (fmt.get("json_schema") or {}).get("name") == "guardrail_verdict":
            broken = "ibuprofen" in _text(messages[-1].get("content")).lower()
            return json.dumps({"violated": broken, "guardrail": "no_medical_advice" if broken
                               else "", "reason": "asks for a dosage" if broken else ""})
        if body.get("response_format") and "Question \"" in _text(messages[-1].get("content")):
            return _judge_answer(_text(messages[-1]["content"]), judge_verdict)
        if first.startswith("You are playing a person on a phone call"):
            line = next(simulated, None)
            if line is None:
                return [ToolCall("end_call", {"success": True, "reason": "got the ticket"},
                                 id=f"call_{next(ids)}")]
            return line
        if not body.get("stream"):
            return "The reply was judged against the criterion."  # the explainer's reason
        users = [_text(m.get("content")).lower() for m in messages if m.get("role") == "user"
                 and "just joined the call" not in _text(m.get("content"))]  # the greeting's
        asked = users[-1] if users else ""
        if messages and messages[-1].get("role") == "tool":
            result = _text(messages[-1].get("content"))
            ticket = re.search(r"T-[0-9A-F]{8}", result)
            if ticket:
                return f"I'm sorry about that. I've logged it as ticket {ticket.group(0)}, " \
                       "someone will call you soon."
            if "new_patient_intake" in result or "complete" in result.lower():
                return "Welcome! Which insurance do you have?"
            if "fluids" in result:
                return "Rest and drink plenty of fluids; see a doctor if a fever lasts."
            if "London" in asked or "london" in asked:
                return "That is 8 pm in London."
            found = re.search(r"\d{1,2}:\d{2}", result)
            return f"It is {found.group(0) if found else 'noon'} in Tokyo right now."
        for fragment, (name, arguments) in CALLS.items():
            if fragment in asked:
                return [ToolCall(name, arguments, id=f"call_{next(ids)}")]
        for fragment, reply in REPLIES.items():
            if fragment in asked:
                return reply
        return "Hello, I am here. How can I help?" if not users else "Okay."

    return route


@pytest.fixture
async def scripted_llm(monkeypatch, tmp_path):
    fake = await FakeOpenAI().start()
    fake.route = scripted_route()
    monkeypatch.setenv("FAKE_KEY", "test-key")
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    yield fake
    await fake.stop()


def _argv(fake: FakeOpenAI, out: Path, *files: str, judge: bool = False) -> list[str]:
    argv = [*files, "--out", str(out), "--llm-url", fake.base_url, "--llm-model", "scripted",
            "--llm-key-env", "FAKE_KEY"]
    if judge:
        argv += ["--judge-url", fake.base_url, "--judge-model", "judge",
                 "--judge-key-env", "FAKE_KEY"]
    return argv


async def _run(argv: list[str]) -> int:
    """The command, in a thread (it runs its own event loop) beside the fake LLM's."""
    return await asyncio.to_thread(cli.run, argv)


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _failures(summary: dict) -> list[str]:
    return [f"{c['scenario']}: turn {f['turn']}: {f['description']} ({f['detail']})"
            for c in summary["conversations"] for f in c["failures"]] + [
        f"{c['scenario']}: {c['error']}" for c in summary["conversations"] if c["error"]]


# --------------------------------------------------------------------------- scenario files


def test_every_example_scenario_file_is_valid():
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"default", "time_zone_helper", "customer_service_agent"}
    for path in files:
        scenarios = load_scenarios(path)
        assert (path.parent / scenarios.persona).exists(), path


def test_a_bad_scenario_lists_every_problem_with_its_path():
    with pytest.raises(ConfigError) as caught:
        scenarios_from_dict({"defaults": {"voice": "robot"}, "scenarios": [
            {"name": "a", "turns": [{"user": "hi", "expect": [
                {"contains": "x", "matches": "y"}, {"matches": "("}, {"document_used": "d1"},
                {"tool_called": {"name": "t", "args": {}}}, "reply is nice"]}]},
            {"name": "b", "turns": [{"user": "hi"}], "simulate": {"user": "u", "goal": "g"}},
            {"name": "c", "turns": [{"user": "hi"}], "expect": [{"interrupted": True}]},
        ]}, "s.yaml")
    text = str(caught.value)
    for line in [
        "defaults.voice: must be 'piper'",
        "scenarios[0].turns[0].expect[0]: an expectation has exactly one of",
        "scenarios[0].turns[0].expect[1].matches: is not a valid regular expression (RE2",
        "scenarios[0].turns[0].expect[2].document_used: document_used needs the knowledge base",
        "scenarios[0].turns[0].expect[3].tool_called.ToolCalled.args: is not allowed here",
        "scenarios[0].turns[0].expect[4]: an expectation is a mapping",
        "scenarios[1]: a scenario has either turns (a script) or simulate",
        "scenarios[2]: expect: interrupted is a turn's expectation",
    ]:
        assert line in text, text


def test_scenario_files_refuse_yaml_aliases_and_bad_yaml(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\nb: [*a, *a]\nscenarios: []\n")
    with pytest.raises(ConfigError, match="uses a YAML anchor or alias"):
        load_scenarios(bomb)
    broken = tmp_path / "broken.yaml"
    broken.write_text("scenarios:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_scenarios(broken)
    same = tmp_path / "same.yaml"
    same.write_text("scenarios:\n  - {name: a, turns: [{user: hi}]}\n"
                    "  - {name: a, turns: [{user: ho}]}\n")
    with pytest.raises(ConfigError, match="two scenarios are named 'a'"):
        load_scenarios(same)


def _command(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "persona_tests", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PERSONA_DOTENV": "0", **(env or {})})


def test_the_command_refuses_bad_input_in_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios:\n  - {name: a, turns: [{user: hi, expect: [{matches: '('}]}]}\n")
    done = _command(str(PERSONAS / "default.json"), str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "scenarios[0].turns[0].expect[0].matches" in done.stderr
    # A judge is needed for eval and simulations, and none is configured (no key in the tests).
    done = _command(str(SCENARIOS / "customer_service_agent.yaml"),
                    env={"OPENAI_API_KEY": ""})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "need an LLM judge" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = _command(str(SCENARIOS / "default.yaml"), "--only", "no such scenario")
    assert done.returncode == 2 and "matches no scenario" in done.stderr
    done = _command(str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "missing.yaml" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- real runs


@pytest.mark.e2e
async def test_the_default_personas_examples_pass_on_the_scripted_stack(scripted_llm, tmp_path,
                                                                       output_dir):
    """Typed and spoken turns (Piper and an espeak-ng voice through VAD, turn-taking and
    Whisper), a barge-in that interrupts a long reply, and the report of it all."""
    out = tmp_path / "default"
    code = await _run(_argv(scripted_llm, out, str(SCENARIOS / "default.yaml")))
    summary = _summary(out)
    assert code == 0, _failures(summary)
    conversations = {c["scenario"]: c for c in summary["conversations"]}
    assert list(conversations) == ["answers a typed question", "hears a spoken question",
                                   "stops talking when interrupted",
                                   "stays polite when asked to cheat"]
    spoken = conversations["hears a spoken question"]["turns"]
    assert [t["input"] for t in spoken] == ["speech", "speech"]
    assert all(t["latency_ms"] is not None for t in spoken)
    story, barge_in = conversations["stops talking when interrupted"]["turns"]
    assert story["interrupted"] is True and barge_in["reply"] == "The Eiffel Tower is in Paris."
    kinds = {e["kind"] for c in summary["conversations"] for e in c["timeline"]}
    assert kinds >= {"user_speech", "user_text", "bot_speech", "turn", "reply", "barge_in"}
    junit = ET.parse(out / "junit.xml").getroot()
    assert len(junit.findall(".//testcase")) == 4 and not junit.findall(".//failure")
    shutil.copy(out / "report.html", output_dir / "persona-tests-default.html")


@pytest.mark.e2e
async def test_the_other_stock_personas_examples_pass_on_the_scripted_stack(scripted_llm,
                                                                          tmp_path):
    """time_zone_helper's and customer_service_agent's tools run locally (their real results
    reach the reply); health_care_general_doctor's is a client tool the harness answers from
    tool_results; the judge (Pipecat's EvalJudge), a simulated caller (EvalPersona's
    instruction) and ai_interviewer's eval run on the fake endpoint."""
    out = tmp_path / "tools"
    code = await _run(_argv(scripted_llm, out, str(SCENARIOS / "time_zone_helper.yaml")))
    summary = _summary(out)
    assert code == 0, _failures(summary)
    tokyo, meeting = summary["conversations"]
    assert meeting["turns"][0]["reply"] == "That is 8 pm in London."
    assert re.search(r"It is \d{1,2}:\d{2} in Tokyo", tokyo["turns"][0]["reply"]), tokyo
    assert any(e["kind"] == "tool_call" and e["label"].startswith("get_current_time(")
               for e in tokyo["timeline"])
    assert any(e["kind"] == "tool_call" and "result" in e["label"] for e in tokyo["timeline"])

    # Their Cartesia voices need a key the tests do not have: the same personas on Piper.
    for name in ("customer_service_agent", "health_care_general_doctor"):
        persona = json.loads((PERSONAS / f"{name}.json").read_text())
        del persona["layers"]["tts"]
        (tmp_path / f"{name}.json").write_text(json.dumps(persona))
    out = tmp_path / "service"
    code = await _run(_argv(scripted_llm, out, str(tmp_path / "customer_service_agent.json"),
                            str(SCENARIOS / "customer_service_agent.yaml"), judge=True))
    summary = _summary(out)
    assert code == 0, _failures(summary)
    outage, simulated = summary["conversations"]
    ticket = re.search(r"T-[0-9A-F]{8}", outage["turns"][0]["reply"]).group(0)
    logged = [json.loads(line) for line in
              (tmp_path / "data" / "tickets.jsonl").read_text().splitlines()]
    assert ticket in [t["ticket_id"] for t in logged]  # the tool really ran
    evals = [e for e in outage["turns"][0]["expectations"] if e["kind"] == "eval"]
    assert evals and evals[0]["passed"] and evals[0]["detail"] == "yes"
    assert simulated["kind"] == "simulation"
    assert simulated["simulation"]["ended_by"] == "end_call"
    assert simulated["simulation"]["claim"] == {"success": True, "reason": "got the ticket"}
    assert simulated["turns"][0]["user"] == SIMULATED_USER[0]
    per_turn = [e for t in simulated["turns"] for e in t["expectations"]
                if e["description"].startswith("judge (calm)")]
    assert per_turn and all(e["passed"] for e in per_turn)

    out = tmp_path / "doctor"
    code = await _run(_argv(scripted_llm, out, str(tmp_path / "health_care_general_doctor.json"),
                            str(SCENARIOS / "health_care_general_doctor.yaml")))
    summary = _summary(out)
    assert code == 0, _failures(summary)
    (cure,) = summary["conversations"]
    assert "fluids" in cure["turns"][0]["reply"]  # the client tool's answer reached the LLM

    out = tmp_path / "interviewer"
    code = await _run(_argv(scripted_llm, out, str(SCENARIOS / "ai_interviewer.yaml"),
                            judge=True))
    assert code == 0, _failures(_summary(out))


POLICIES = """\
persona: {persona}
scenarios:
  - name: intake with a guardrail
    turns:
      - user: Hello, I have never been here before.
        expect:
          - objective_completed: {{name: ask_if_new_patient, variables: {{patient_status: new}}}}
          - guardrail_held: no_medical_advice
      - user: How much ibuprofen should I take for my headache?
        expect:
          - guardrail_triggered: no_medical_advice
          - contains: "I can't help with that"
          - no_tool_called: true
    expect:
      - objective_completed: ask_if_new_patient
      - guardrail_triggered: no_medical_advice
"""


def _bot(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, "bot.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True, env={**os.environ, **env})
    return done.stdout.strip().split()[0]


@pytest.mark.e2e
async def test_objectives_and_guardrails_added_as_a_user_adds_them(scripted_llm, tmp_path):
    """The examples' objectives and guardrails stored with ``bot.py --add-*`` and attached by
    id and tag: the harness sees the objective completed with its variables, the guardrail
    held on a harmless turn and triggered (the refusal said) on a dosage question."""
    env = {"PERSONA_DATA_DIR": str(tmp_path / "data"), "PERSONA_DOTENV": "0"}
    objectives_id = _bot("--add-objectives", "examples/objectives/patient_intake.json", env=env)
    _bot("--add-guardrails", "examples/guardrails/no_medical_advice.json", env=env)
    persona = {**json.loads((PERSONAS / "default.json").read_text()),
               "objectives_id": objectives_id, "guardrail_tags": ["healthcare"]}
    (tmp_path / "clinic.json").write_text(json.dumps(persona))
    scenario = tmp_path / "clinic.yaml"
    scenario.write_text(POLICIES.format(persona=tmp_path / "clinic.json"))
    out = tmp_path / "clinic"
    code = await _run(_argv(scripted_llm, out, str(scenario)))
    summary = _summary(out)
    assert code == 0, _failures(summary)
    (run,) = summary["conversations"]
    labels = [(e["kind"], e["label"]) for e in run["timeline"]]
    assert ("objective", "activated: ask_if_new_patient") in labels
    assert any(k == "objective" and l.startswith('completed: ask_if_new_patient {"patient_status"')
               for k, l in labels)
    assert any(k == "guardrail" and l.startswith("no_medical_advice triggered by the user")
               for k, l in labels)
    assert any(k == "guardrail" and l.startswith("guardrails held") for k, l in labels)


FAILING = """\
persona: {persona}
scenarios:
  - name: expects what the persona never says
    turns:
      - user: What is the capital of France?
        expect:
          - contains: Berlin
          - tool_called: get_current_time
          - eval: The reply names a German city.
      - user: Thanks.
        expect_reply: false
  - name: passes
    turns:
      - user: What is the capital of France?
        expect: [{{contains: Paris}}]
"""


@pytest.mark.e2e
async def test_a_scenario_that_should_fail_fails_with_a_clear_report(scripted_llm, tmp_path,
                                                                     output_dir, capsys):
    scripted_llm.route = scripted_route(judge_verdict="no")
    scenario = tmp_path / "failing.yaml"
    scenario.write_text(FAILING.format(persona=PERSONAS / "default.json"))
    out = tmp_path / "failing"
    code = await _run(_argv(scripted_llm, out, str(scenario), judge=True) + ["--repeat", "2"])
    assert code == cli.EXIT_FAILED
    printed = capsys.readouterr().out
    assert "FAIL  expects what the persona never says" in printed
    assert '✗ turn 1: the reply contains "Berlin" — missing "Berlin"; it said "Paris is the ' \
           'capital of France."' in printed
    assert "✗ turn 1: get_current_time was called — not called (calls: none)" in printed
    assert "✗ turn 1: judge: The reply names a German city. — no (judge: " in printed
    assert '✗ turn 2: the bot did not reply — it said "Okay."' in printed
    assert "PASS  passes" in printed and "2 passed, 2 failed" in printed
    summary = _summary(out)
    assert summary["passed"] is False
    assert summary["flakiness"] == {"expects what the persona never says": {"passed": 0,
                                                                            "failed": 2},
                                    "passes": {"passed": 2, "failed": 0}}
    junit = ET.parse(out / "junit.xml").getroot()
    failures = junit.findall(".//failure")
    assert len(failures) == 2 and "Berlin" in failures[0].get("message")
    html = (out / "report.html").read_text()
    assert html.count('class="failed-expectation') >= 8  # 4 per failed run
    shutil.copy(out / "report.html", output_dir / "persona-tests-failing.html")
    _report_in_chromium(out / "report.html", output_dir, "persona-tests-failing")


def _report_in_chromium(report: Path, output_dir: Path, name: str) -> None:
    """The report of a real run in headless Chromium: sections, timeline items, audio that
    decodes, a screenshot (tests/output/<name>.png)."""
    result = report_in_chromium(report, output_dir, name)
    assert len(result["conversations"]) == 4
    assert all(c["tl_items"] >= 5 and c["audio"] == 2 for c in result["conversations"])
    assert all(a["error"] is None and a["duration"] > 3 for a in result["audio"]), result
    assert result["failed_expectations"] >= 8 and result["requests"] == []


@pytest.mark.e2e
async def test_an_example_runs_on_the_embedded_models(tmp_path, monkeypatch):
    """The default persona's spoken scenario with --local: Whisper, SmolLM2 and Piper."""
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "local"
    code = await _run([str(SCENARIOS / "default.yaml"), "--out", str(out), "--local",
                       "--only", "hears a spoken question"])
    summary = _summary(out)
    assert code == 0, _failures(summary)
    (conversation,) = summary["conversations"]
    assert conversation["engines"]["llm"].startswith("llama")
    assert all(t["reply"] for t in conversation["turns"])


def test_a_scenario_file_cannot_send_a_key_to_a_host_of_its_choosing():
    from persona_tests.llms import endpoint_from

    env = {"OPENAI_API_KEY": "sk-users-own-key", "JUDGE_KEY": "judge-key"}
    planted = endpoint_from(None, None, None, {"base_url": "https://elsewhere.example/v1"}, env)
    assert planted.base_url == "https://elsewhere.example/v1" and planted.api_key == "none"
    assert endpoint_from(None, None, None, None, env).api_key == "sk-users-own-key"  # OpenAI's
    chosen = endpoint_from("http://127.0.0.1:9/v1", "m", "JUDGE_KEY", None, env)
    assert chosen.api_key == "judge-key"
    with pytest.raises(ConfigError, match="never the file"):
        scenarios_from_dict({"judge": {"base_url": "https://x/v1", "api_key_env": "AWS_SECRET"},
                             "scenarios": [{"name": "a", "turns": [{"user": "hi"}]}]})
