"""Scenario files: YAML (or JSON) validated like personas, every problem with its path.

::

    persona: ../customer_service_agent.json     # optional; the command line's wins
    defaults: {input: text, voice: piper, reply_timeout_s: 30}
    tool_results: {resolve_customer_issue: {ticket: "T-1"}}
    scenarios:
      - name: a broken router is logged as urgent
        conversation: {conversational_context: "The caller is a premium customer."}
        turns:
          - user: My internet drops every few minutes and I work from home.
            input: speech
            voice: espeak:en-gb
            expect:
              - tool_called: {name: resolve_customer_issue, arguments: {urgency: high}}
              - not_contains: as an AI
              - latency_ms: 4000
              - eval: The reply is empathetic and says what happens next.
        expect:
          - guardrail_held: no_medical_advice
      - name: an impatient caller
        simulate: {user: A busy parent whose router keeps failing., goal: Get a ticket number.,
                   max_turns: 6}
        expect: [{eval: The caller got a ticket number.}]

See the README's "Testing a persona" for every expectation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.errors import ConfigError, Problem, problems_from_validation
from config.loader import document_problems, read_text
from persona_tests.voices import voice_problem

MAX_SCENARIO_BYTES = 1024 * 1024
MAX_SCENARIOS = 200
MAX_TURNS = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _regex_problem(pattern: str) -> str | None:
    from config.tool_schema import pattern_error

    problem = pattern_error(pattern)
    return problem and f"is not a valid regular expression (RE2 syntax): {problem}"


class ToolCalled(_Strict):
    name: str = Field(min_length=1, max_length=64)
    #: Each given argument must be equal in the call (other arguments may be there too); a
    #: string value may also be matched case-insensitively as a substring with ``~text``.
    arguments: dict[str, Any] = Field(default_factory=dict)


class ObjectiveCompleted(_Strict):
    name: str = Field(min_length=1, max_length=200)
    variables: dict[str, Any] = Field(default_factory=dict)


class Latency(_Strict):
    max: float = Field(gt=0, le=600_000)


class Expectation(_Strict):
    """Exactly one key: what is expected of a turn's reply (under a turn) or of the whole
    conversation (under the scenario)."""

    contains: str | list[str] | None = None
    not_contains: str | list[str] | None = None
    matches: str | None = Field(default=None, max_length=2000)
    heard: str | None = Field(default=None, max_length=2000)  # STT heard this (substring)
    tool_called: ToolCalled | str | None = None
    no_tool_called: str | bool | None = None  # a name, or true: none at all
    objective_completed: ObjectiveCompleted | str | None = None
    guardrail_triggered: str | None = None
    guardrail_held: str | None = None
    latency_ms: Latency | float | None = None
    interrupted: bool | None = None
    eval: str | None = Field(default=None, max_length=4000)
    document_used: Any = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k, v in data.items() if v is not None]
            if len(given) != 1:
                names = ", ".join(sorted(cls.model_fields))
                raise ValueError(f"an expectation has exactly one of: {names} "
                                 f"(got {', '.join(given) or 'none'})")
        elif isinstance(data, str):
            bare = 'an expectation is a mapping such as {contains: "..."}, not a bare string'
            raise ValueError(bare)  # noqa: TRY004 - pydantic reports a ValueError with its path
        return data

    @field_validator("contains", "not_contains")
    @classmethod
    def _texts(cls, value: str | list[str] | None) -> str | list[str] | None:
        texts = [value] if isinstance(value, str) else value or []
        if value is not None and (not texts or any(not t.strip() for t in texts)):
            raise ValueError("needs a non-empty text (or a list of them): an empty one always "
                             "matches")
        return value

    @field_validator("latency_ms")
    @classmethod
    def _positive(cls, value: Latency | float | None) -> Latency | float | None:
        if isinstance(value, (int, float)) and not 0 < value <= 600_000:
            raise ValueError("must be a number of milliseconds above 0 (at most 600000)")
        return value

    @field_validator("no_tool_called")
    @classmethod
    def _name_or_true(cls, value: str | bool | None) -> str | bool | None:
        if value is False or value == "":
            raise ValueError("is a tool's name, or true for no tool at all")
        return value

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        problem = value is not None and _regex_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("document_used")
    @classmethod
    def _no_knowledge_base(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("document_used needs the knowledge base, which this version does "
                             "not have yet (documents are parsed and not retrieved); remove it")
        return value

    @property
    def key(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, self.key)


class Defaults(_Strict):
    input: Literal["text", "speech"] = "text"
    voice: str = "piper"
    #: How long the bot has to finish replying to a turn before the turn fails.
    reply_timeout_s: float = Field(default=45.0, gt=0, le=600)
    #: Silence between the bot's reply and the next scripted turn.
    pause_s: float = Field(default=0.8, ge=0, le=60)
    #: Every turn's voice-to-voice budget (``latency_ms`` expectations override it per turn).
    latency_budget_ms: float | None = Field(default=None, gt=0, le=600_000)

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str) -> str:
        problem = voice_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Turn(_Strict):
    user: str = Field(min_length=1, max_length=4000)
    input: Literal["text", "speech"] | None = None
    voice: str | None = None
    #: Speak this long after the bot's reply to the previous turn starts to be heard
    #: (a barge-in), instead of waiting for the reply to end.
    barge_in_after_ms: float | None = Field(default=None, ge=0, le=600_000)
    pause_s: float | None = Field(default=None, ge=0, le=60)
    expect_reply: bool = True
    expect: list[Expectation] = Field(default_factory=list, max_length=50)

    @field_validator("voice")
    @classmethod
    def _voice(cls, value: str | None) -> str | None:
        problem = value is not None and voice_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class Simulation(_Strict):
    user: str = Field(min_length=1, max_length=4000)  # who the simulated user is
    goal: str = Field(min_length=1, max_length=4000)
    max_turns: int = Field(default=6, ge=1, le=50)
    input: Literal["text", "speech"] | None = None
    voice: str | None = None

    _voice = field_validator("voice")(Turn._voice.__func__)
    #: Judged on every bot turn (judge needed): name -> criterion.
    criteria: dict[str, str] = Field(default_factory=dict)


class Scenario(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    conversation: dict[str, Any] = Field(default_factory=dict)
    greeting: bool = True  # wait for the persona's greeting before the first turn
    tool_results: dict[str, Any] = Field(default_factory=dict)
    turns: list[Turn] = Field(default_factory=list, max_length=MAX_TURNS)
    simulate: Simulation | None = None
    expect: list[Expectation] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _script_or_simulation(self) -> Scenario:
        if bool(self.turns) == (self.simulate is not None):
            raise ValueError("a scenario has either turns (a script) or simulate (a simulated "
                             "user), not both and not neither")
        for i, turn in enumerate(self.turns):
            if turn.barge_in_after_ms is not None and i == 0 and not self.greeting:
                raise ValueError("turns[0].barge_in_after_ms: the first turn can only barge in "
                                 "on the greeting; set greeting: true")
        for expectation in self.expect:
            if expectation.key in ("interrupted", "heard"):
                raise ValueError(f"expect: {expectation.key} is a turn's expectation; put it "
                                 "under the turn")
        return self


class ScenarioFile(_Strict):
    persona: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    #: Answers to client tool calls (``conversation.tool_call``), by tool name; a scenario's
    #: own ``tool_results`` win. A call with no answer here gets {"status": "ok"}.
    tool_results: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, str] = Field(default_factory=dict)  # base_url, model (no key: see llms)
    scenarios: list[Scenario] = Field(min_length=1, max_length=MAX_SCENARIOS)

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioFile:
        seen: set[str] = set()
        for scenario in self.scenarios:
            if scenario.name in seen:
                raise ValueError(f"two scenarios are named {scenario.name!r}; names must be "
                                 "unique (reports and JUnit go by them)")
            seen.add(scenario.name)
        unknown = set(self.judge) - {"base_url", "model"}
        if unknown:
            raise ValueError(f"judge: unknown keys {sorted(unknown)} (base_url, model; its key "
                             "comes from the command line's --judge-key-env, never the file)")
        return self

    def uses_judge(self) -> bool:
        return any(e.key == "eval" for s in self.scenarios
                   for e in [*s.expect, *(x for t in s.turns for x in t.expect)]) or any(
            s.simulate is not None for s in self.scenarios)


def _parse(text: str, source: str) -> Any:
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(source, [Problem("", f"is not valid JSON: {exc}")]) from None
    import yaml

    try:
        # Aliases can expand a small file into a huge document ("billion laughs"): refused.
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, (yaml.AliasToken, yaml.AnchorToken)):
                mark = token.start_mark
                raise ConfigError(source, [Problem("", f"uses a YAML anchor or alias (line "
                                                   f"{mark.line + 1}); write the value out")])
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, [Problem("", f"is not valid YAML{where}: {problem}")]) from None


def _parsed(text: str, source: str) -> Any:
    try:
        return _parse(text, source)
    except RecursionError:
        raise ConfigError(source, [Problem("", "is nested too deeply to read")]) from None


def scenarios_from_dict(data: Any, source: str = "scenarios") -> ScenarioFile:
    """Validate a parsed scenario document; every problem at once, with its path."""
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "must be a mapping with a 'scenarios' list",
                                           type(data).__name__)])
    refused = document_problems(data)
    if refused:
        raise ConfigError(source, refused)
    try:
        return ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc)) from None


def load_scenarios(path: str | Path) -> ScenarioFile:
    """Read and validate a scenario file (YAML, or JSON by its extension)."""
    source = str(path)
    return scenarios_from_dict(_parsed(read_text(path, MAX_SCENARIO_BYTES), source), source)
