"""The command: ``python -m persona_tests [PERSONA] SCENARIOS [options]``.

Exit status: 0 when every conversation passed, 1 when an expectation failed or a
conversation could not run, 2 for input that cannot be used (a bad persona or scenario
file, a judge needed and not configured), with every problem on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from config.errors import ConfigError, Problem

EXIT_FAILED = 1
EXIT_USAGE = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m persona_tests",
        description="Run scripted and simulated conversations against a persona's real "
                    "pipeline and report on them (HTML with timeline and audio, JSON, JUnit).")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="[PERSONA.json] SCENARIOS.yaml (the persona may be named in the "
                        "scenario file's 'persona:' instead, relative to that file)")
    p.add_argument("--out", default="persona-test-results", metavar="DIR",
                   help="where report.html, summary.json and junit.xml go "
                        "(default: %(default)s)")
    p.add_argument("--junit", metavar="PATH", help="JUnit XML here instead of DIR/junit.xml")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run every scenario N times (flakiness; default 1)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run the scenarios whose name contains NAME (repeatable)")
    p.add_argument("--local", action="store_true",
                   help="every layer on the embedded models (as bot.py --local)")
    g = p.add_argument_group("the persona's LLM")
    g.add_argument("--llm-url", metavar="URL",
                   help="replace the persona's LLM with this OpenAI-compatible endpoint")
    g.add_argument("--llm-model", metavar="MODEL", help="its model (default: the persona's)")
    g.add_argument("--llm-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="the environment variable holding its key (default: %(default)s)")
    g = p.add_argument_group("the judge (eval expectations) and the simulated user")
    g.add_argument("--judge-url", metavar="URL",
                   help="OpenAI-compatible endpoint (default: the scenario's judge: block, "
                        "else OpenAI when OPENAI_API_KEY is set)")
    g.add_argument("--judge-model", metavar="MODEL", help="default gpt-4.1-mini")
    g.add_argument("--judge-key-env", metavar="VAR", help="default OPENAI_API_KEY")
    g.add_argument("--user-llm-url", metavar="URL",
                   help="the simulated user's endpoint (default: the judge's)")
    g.add_argument("--user-llm-model", metavar="MODEL")
    g.add_argument("--user-llm-key-env", metavar="VAR")
    p.add_argument("--verbose", action="store_true", help="the bot's log at INFO")
    return p


def _paths(files: list[str], scenario_persona: str | None) -> tuple[Path, Path]:
    if len(files) > 2:
        raise ConfigError("command line", [Problem("", "give at most two files: [PERSONA.json] "
                                                   "SCENARIOS.yaml")])
    scenarios = Path(files[-1])
    if len(files) == 2:
        return Path(files[0]), scenarios
    if not scenario_persona:
        raise ConfigError(str(scenarios), [Problem(
            "persona", "no persona given: name it on the command line or as 'persona:' in "
                       "the scenario file")])
    persona = Path(scenario_persona)
    persona = persona if persona.is_absolute() else scenarios.parent / persona
    return Path(os.path.normpath(persona)), scenarios


def _line(result, repeat: int) -> str:
    status = "PASS" if result.passed else "FAIL"
    run = f" [run {result.run}]" if repeat > 1 else ""
    line = f"{status}  {result.scenario}{run}  ({result.duration_s:.1f}s)"
    if result.error:
        line += f"\n      error: {result.error}"
    for failure in result.failures[:8]:
        where = f"turn {failure.turn}: " if failure.turn else ""
        detail = f" — {failure.detail}" if failure.detail else ""
        reason = f" (judge: {failure.reason})" if failure.reason else ""
        line += f"\n      ✗ {where}{failure.description}{detail}{reason}"
    return line


def run(argv: list[str]) -> int:
    from persona_tests.llms import endpoint_from
    from persona_tests.report import write_html, write_json, write_junit
    from persona_tests.runner import Options, check_inputs, run_scenarios, selected_problem
    from persona_tests.scenario import load_scenarios

    args = parser().parse_args(argv)
    if args.repeat < 1 or args.repeat > 100:
        raise ConfigError("--repeat", [Problem("", "must be between 1 and 100", args.repeat)])
    scenario_path = Path(args.files[-1])
    scenarios = load_scenarios(scenario_path)
    persona_path, scenario_path = _paths(args.files, scenarios.persona)
    judge = endpoint_from(args.judge_url, args.judge_model, args.judge_key_env, scenarios.judge)
    user_llm = (endpoint_from(args.user_llm_url, args.user_llm_model, args.user_llm_key_env)
                if args.user_llm_url else judge)
    options = Options(force_local=args.local, llm_url=args.llm_url, llm_model=args.llm_model,
                      llm_key_env=args.llm_key_env, judge=judge, user_llm=user_llm,
                      repeat=args.repeat, only=args.only)
    problem = selected_problem(scenarios, options)
    if problem:
        raise ConfigError("command line", [Problem("", problem)])
    check_inputs(persona_path, scenarios, options, str(scenario_path))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = sum(1 for s in scenarios.scenarios if not args.only
                 or any(k.lower() in s.name.lower() for k in args.only))
    print(f"Testing {persona_path} with {scenario_path}: {chosen} scenario"
          f"{'s' if chosen != 1 else ''}"
          f"{f', {args.repeat} runs each' if args.repeat > 1 else ''}"
          + (f"; judge {judge.describe()}" if judge else ""), flush=True)
    result = asyncio.run(run_scenarios(
        persona_path, scenarios, options, str(scenario_path),
        progress=lambda r: print(_line(r, args.repeat), flush=True)))
    html = write_html(result, out / "report.html")
    write_json(result, out / "summary.json")
    write_junit(result, Path(args.junit) if args.junit else out / "junit.xml")
    failed = sum(not c.passed for c in result.conversations)
    print(f"{len(result.conversations) - failed} passed, {failed} failed in "
          f"{result.duration_s:.0f}s. Report: {html}")
    if args.repeat > 1:
        for name, counts in result.flakiness().items():
            if counts["passed"] and counts["failed"]:
                print(f"flaky: {name} passed {counts['passed']}, failed {counts['failed']}")
    return 0 if result.passed else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    from config.cli import load_env, run_command
    from config.logging import setup_logging

    load_env()
    argv = sys.argv[1:] if argv is None else argv
    setup_logging("INFO" if "--verbose" in argv else os.environ.get("LOG_LEVEL") or "WARNING")
    return run_command(run, argv)
