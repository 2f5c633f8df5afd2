"""Checking a finished conversation against its scenario's expectations.

Under a turn an expectation is about that turn: its reply (what the bot said between this
turn and the next), the tools called, objectives completed and guard verdicts in that
window, its latency, whether its reply was cut by a barge-in. Under the scenario it is
about the whole conversation (every reply, the greeting included). ``eval`` asks the LLM
judge: under a turn whether the reply satisfies the criterion, under the scenario whether
the conversation achieves it. Every turn also checks that the bot replied (or, with
``expect_reply: false``, that it did not), and ``defaults.latency_budget_ms`` adds a
latency check to every turn.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from persona_tests import results as R
from persona_tests.scenario import Expectation

if TYPE_CHECKING:
    from persona_tests.runner import Conversation


def _quote(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _arguments_match(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """Why ``actual`` does not have ``expected``'s arguments (None when it does). A string
    starting with ``~`` matches as a case-insensitive substring."""
    for key, want in expected.items():
        if key not in actual:
            return f"no argument {key!r}"
        got = actual[key]
        if isinstance(want, str) and want.startswith("~"):
            if want[1:].lower() not in str(got).lower():
                return f"{key}={json.dumps(got)} does not contain {want[1:]!r}"
        elif got != want:
            return f"{key}={json.dumps(got)}, not {json.dumps(want)}"
    return None


class _Window:
    """What happened in one turn (or, with no bounds, the whole conversation)."""

    def __init__(self, conv: Conversation, start: float, end: float, text: str,
                 turn: R.TurnResult | None):
        self.conv = conv
        self.start, self.end = start, end
        self.text = text
        self.turn = turn

    def calls(self):
        return [c for c in self.conv.calls if self.start <= c.t < self.end]

    def events(self, kind: str) -> list[dict]:
        return [e for t, e in self.conv.events
                if self.start <= t < self.end and e["event_type"] == kind]

    def verdicts(self):
        return [v for v in self.conv.verdicts if self.start <= v.t < self.end]


def _check(x: Expectation, w: _Window, number: int | None) -> R.ExpectationResult:
    """One expectation other than ``eval``."""
    key, value = x.key, x.value
    where = "the reply" if number is not None else "the conversation"
    text = w.text

    def result(description: str, passed: bool, detail: str = "") -> R.ExpectationResult:
        return R.ExpectationResult(key, description, passed, detail, number)

    if key == "contains":
        missing = [v for v in _texts(value) if v.lower() not in text.lower()]
        return result(f"{where} contains {', '.join(_quote(v) for v in _texts(value))}",
                      not missing, f"missing {', '.join(map(_quote, missing))}; it said "
                      f"{_quote(text)}" if missing else "")
    if key == "not_contains":
        found = [v for v in _texts(value) if v.lower() in text.lower()]
        return result(f"{where} does not contain "
                      f"{', '.join(_quote(v) for v in _texts(value))}", not found,
                      f"found {', '.join(map(_quote, found))} in {_quote(text)}" if found else "")
    if key == "matches":
        from config.tool_schema import compile_pattern

        match = compile_pattern(value).search(text)
        return result(f"{where} matches /{value}/", match is not None,
                      f"matched {_quote(match.group(0))}" if match else f"it said {_quote(text)}")
    if key == "heard":
        from persona_tests.runner import normalized

        heard = w.turn.heard if w.turn else ""
        ok = normalized(value) in normalized(heard)
        return result(f"the bot heard {_quote(value)}", ok, "" if ok else
                      f"it heard {_quote(heard)}")
    if key == "tool_called":
        name = value if isinstance(value, str) else value.name
        arguments = {} if isinstance(value, str) else value.arguments
        calls = [c for c in w.calls() if c.name == name]
        described = f"{name} was called" + (f" with {json.dumps(arguments)}" if arguments else "")
        if not calls:
            others = ", ".join(sorted({c.name for c in w.calls()})) or "none"
            return result(described, False, f"not called (calls: {others})")
        problems = [_arguments_match(arguments, c.arguments) for c in calls]
        if any(p is None for p in problems):
            good = calls[problems.index(None)]
            return result(described, True, f"{name}({json.dumps(good.arguments)})")
        return result(described, False, "; ".join(
            f"{name}({json.dumps(c.arguments)}): {p}" for c, p in zip(calls, problems)))
    if key == "no_tool_called":
        calls = w.calls() if value is True else [c for c in w.calls() if c.name == value]
        described = "no tool was called" if value is True else f"{value} was not called"
        return result(described, not calls, ", ".join(
            f"{c.name}({json.dumps(c.arguments)})" for c in calls))
    if key == "objective_completed":
        name = value if isinstance(value, str) else value.name
        variables = {} if isinstance(value, str) else value.variables
        described = f"objective {name} completed" + (
            f" with {json.dumps(variables)}" if variables else "")
        done = [e["properties"] for e in w.events("conversation.objective.completed")
                if e["properties"].get("objective_name") == name]
        if not done:
            seen = [e["properties"].get("objective_name") for e in
                    w.events("conversation.objective.completed")]
            return result(described, False, f"not completed (completed: "
                          f"{', '.join(map(str, seen)) or 'none'})")
        got = done[-1].get("output_variables") or {}
        problem = _arguments_match(variables, got)
        return result(described, problem is None, problem or json.dumps(got))
    if key in ("guardrail_triggered", "guardrail_held"):
        if value not in w.conv.guardrail_names:
            known = ", ".join(w.conv.guardrail_names) or "none"
            return result(f"guardrail {value} {key.rsplit('_', 1)[1]}", False,
                          f"the persona has no guardrail {value!r} (its guardrails: {known})")
        verdicts = w.verdicts()
        broken = [v for v in verdicts if v.guardrail == value]
        if key == "guardrail_triggered":
            return result(f"guardrail {value} triggered", bool(broken),
                          f"by the {broken[0].role}: {broken[0].reason}" if broken else
                          f"not triggered ({len(verdicts)} guard verdicts)")
        if not verdicts:
            return result(f"guardrail {value} held", False, "no guard verdict was given "
                          "(the guard call failed or did not run)")
        return result(f"guardrail {value} held", not broken,
                      f"triggered by the {broken[0].role}: {broken[0].reason}" if broken else
                      f"{len(verdicts)} guard verdicts, none against it")
    if key == "latency_ms":
        limit = value if isinstance(value, (int, float)) else value.max
        turns = [w.turn] if w.turn else w.conv.result.turns
        slow = [t for t in turns if t.latency_ms is None or t.latency_ms > limit]
        described = f"voice-to-voice latency ≤ {limit:g} ms" + (
            "" if w.turn else " on every turn")
        return result(described, not slow, ", ".join(
            f"turn {t.index}: " + ("no reply audio" if t.latency_ms is None
                                   else f"{t.latency_ms:g} ms") for t in slow)
            or ", ".join(f"{t.latency_ms:g} ms" for t in turns))
    if key == "interrupted":
        got = bool(w.turn and w.turn.interrupted)
        return result("the reply was interrupted" if value else "the reply was not interrupted",
                      got == value, f"interrupted: {str(got).lower()}")
    raise ValueError(f"unknown expectation {key}")  # the schema allows no other


async def check_conversation(conv: Conversation) -> None:
    """Fill in every turn's and the conversation's expectation results."""
    result = conv.result
    scenario = conv.scenario
    defaults = conv.file.defaults
    turns = result.turns
    scripted = list(scenario.turns)
    judge = conv.options.judge
    evaluator = None
    if judge is not None and (scenario.simulate is not None or any(
            x.key == "eval" for x in [*scenario.expect, *(e for t in scripted for e in t.expect)])):
        from persona_tests.llms import make_judge

        evaluator = make_judge(judge)
    try:
        greeting = conv.said("replica", end=turns[0].started if turns else float("inf"))
        if evaluator is not None and greeting:
            evaluator.add_assistant_message(greeting)
        for i, turn in enumerate(turns):
            end = turns[i + 1].started if i + 1 < len(turns) else float("inf")
            window = _Window(conv, turn.started, end, turn.reply, turn)
            spec = scripted[i] if i < len(scripted) else None
            expect_reply = spec.expect_reply if spec is not None else True
            if expect_reply:
                turn.expectations.append(R.ExpectationResult(
                    "replied", "the bot replied", bool(turn.reply), "" if turn.reply else
                    f"no reply within {defaults.reply_timeout_s:g}s", turn.index))
            else:
                turn.expectations.append(R.ExpectationResult(
                    "replied", "the bot did not reply", not turn.reply,
                    f"it said {_quote(turn.reply)}" if turn.reply else "", turn.index))
            budget_given = spec is not None and any(x.key == "latency_ms" for x in spec.expect)
            if defaults.latency_budget_ms and not budget_given and expect_reply:
                turn.expectations.append(_check(Expectation(latency_ms=defaults.latency_budget_ms),
                                                window, turn.index))
            if evaluator is not None:
                evaluator.add_user_message(turn.heard or turn.user)
                for call in window.calls():
                    evaluator.add_tool_call(f"{call.name}({json.dumps(call.arguments)})")
                evaluator.add_assistant_message(turn.reply)
            for x in spec.expect if spec is not None else []:
                if x.key == "eval":
                    verdict = await evaluator.evaluate(x.value)
                    turn.expectations.append(R.ExpectationResult(
                        "eval", f"judge: {x.value}", verdict.passed, verdict.verdict,
                        turn.index, verdict.reason))
                else:
                    turn.expectations.append(_check(x, window, turn.index))
        everything = " ".join(filter(None, [greeting, *(t.reply for t in turns)]))
        whole = _Window(conv, float("-inf"), float("inf"), everything, None)
        criteria = scenario.simulate.criteria if scenario.simulate is not None else {}
        goals = [x.value for x in scenario.expect if x.key == "eval"]
        if scenario.simulate is not None and not goals:
            goals = [scenario.simulate.goal]
        for goal in goals or ([None] if criteria else []):
            verdicts = await evaluator.evaluate_run(criteria, goal or "The conversation is "
                                                    "coherent.")
            if goal is not None:
                result.expectations.append(R.ExpectationResult(
                    "eval", f"judge: {goal}", verdicts.goal.passed, verdicts.goal.verdict, None,
                    verdicts.goal.reason))
            bot_turns = [t for t in turns if t.reply]
            for name, per_turn in verdicts.turns.items():
                offset = len(per_turn) - len(bot_turns)  # the greeting is a bot turn too
                for k, verdict in enumerate(per_turn):
                    target = bot_turns[k - offset] if k >= offset else None
                    item = R.ExpectationResult("eval", f"judge ({name}): {criteria[name]}",
                                               verdict.passed, verdict.verdict,
                                               target.index if target else None, verdict.reason)
                    (target.expectations if target else result.expectations).append(item)
            criteria = {}  # per-turn criteria judged once
        for x in scenario.expect:
            if x.key != "eval":
                result.expectations.append(_check(x, whole, None))
    finally:
        if evaluator is not None:
            await evaluator.close()
