"""Objectives and guardrails: Tavus's resource bodies, validated, and what a conversation uses.

Objectives (``POST /v2/objectives``) come as ``{"data": [objective, ...]}``; the first
objective is where a conversation starts, and each names what follows it
(``next_required_objectives``: always, in order; ``next_conditional_objectives``: the one
whose condition holds). Guardrails come one at a time (``{"guardrail_name", ...}``, the
current form) or as a legacy set (``{"name", "data": [...]}``, fields spelled
``guardrail_*`` or ``guardrails_*``).

Every problem of a document is reported at once with its JSON path
(:class:`~config.errors.ConfigError`): names with spaces, unknown names in ``next_*``,
duplicate names, objectives the first cannot reach, cycles with no way out, limits.

:class:`Policies` is what one conversation runs with, resolved from the persona's
``objectives_id`` / ``guardrail_ids`` / ``guardrail_tags`` / ``guardrails_id`` and the
conversation's own ``objectives_id`` (``conversation/policies.py`` resolves them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from config.base import ConfigModel, check_url
from config.errors import ConfigError, FieldProblem, FieldProblems, Problem

#: Limits (Tavus's where it states them: guardrail names, prompts, URLs, tags).
MAX_OBJECTIVES = 50
MAX_GUARDRAILS = 50  # on one persona (guardrail_ids + tags + a legacy set)
MAX_NAME_CHARS = 100
MAX_OBJECTIVE_PROMPT_CHARS = 4000
MAX_GUARDRAIL_PROMPT_CHARS = 1000
MAX_URL_CHARS = 2048
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_VARIABLES = 20
MAX_CONDITION_CHARS = 1000

_NO_SPACES = re.compile(r"^\S+$")
_GUARDRAIL_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Modality = Literal["verbal", "visual"]


def _url(value: str | None, what: str) -> str | None:
    if value is not None and len(value) > MAX_URL_CHARS:
        raise ValueError(f"{what} must be at most {MAX_URL_CHARS} characters")
    return check_url(value, what)


class Objective(ConfigModel):
    """One objective of an objectives document."""

    objective_name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    objective_prompt: str = Field(min_length=1, max_length=MAX_OBJECTIVE_PROMPT_CHARS)
    confirmation_mode: Literal["auto", "manual"] = "auto"
    output_variables: list[str] = Field(default_factory=list, max_length=MAX_VARIABLES)
    modality: Modality = "verbal"
    next_conditional_objectives: dict[str, str] = Field(default_factory=dict)
    next_required_objectives: list[str] = Field(default_factory=list)
    callback_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _singular(cls, data: Any) -> Any:
        # The API page's example spells it ``next_required_objective`` with one string.
        if isinstance(data, dict) and "next_required_objective" in data:
            data = dict(data)
            single = data.pop("next_required_objective")
            if "next_required_objectives" not in data and single is not None:
                data["next_required_objectives"] = [single] if isinstance(single, str) else single
        return data

    @field_validator("objective_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NO_SPACES.match(value):
            raise ValueError("must be a name without spaces (e.g. get_patient_name)")
        return value

    @field_validator("output_variables")
    @classmethod
    def _variables(cls, value: list[str]) -> list[str]:
        problems = [FieldProblem((i,), "must be a name of letters, digits and _ "
                                 "(not starting with a digit)", name)
                    for i, name in enumerate(value) if not _VARIABLE.match(name)]
        problems += [FieldProblem((i,), "is listed twice", name)
                     for i, name in enumerate(value) if name in value[:i]]
        if problems:
            raise FieldProblems(problems)
        return value

    @field_validator("next_conditional_objectives")
    @classmethod
    def _conditions(cls, value: dict[str, str]) -> dict[str, str]:
        problems = [FieldProblem((name,), f"the condition must be 1 to {MAX_CONDITION_CHARS} "
                                 "characters", condition)
                    for name, condition in value.items()
                    if not condition.strip() or len(condition) > MAX_CONDITION_CHARS]
        if problems:
            raise FieldProblems(problems)
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        return _url(value, "callback_url")

    @property
    def next_names(self) -> list[str]:
        """Every objective this one can lead to."""
        return list(dict.fromkeys([*self.next_required_objectives,
                                   *self.next_conditional_objectives]))


class ObjectivesDocument(ConfigModel):
    """``{"data": [objective, ...]}`` (``objectives_id`` etc. when read back from a store)."""

    data: list[Objective] = Field(min_length=1, max_length=MAX_OBJECTIVES)
    objectives_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @model_validator(mode="after")
    def _graph(self) -> ObjectivesDocument:
        problems = graph_problems(self.data)
        if problems:
            raise FieldProblems(problems)
        return self

    @classmethod
    def raw_problems(cls, data: dict[str, Any]) -> list[Problem]:
        """The graph's problems, judged on the raw document when a field failed."""
        items = data.get("data")
        if not isinstance(items, list):
            return []
        return [Problem(path=_path(p.parts), message=str(p), value=p.value)
                for p in graph_problems(items)]

    def by_name(self) -> dict[str, Objective]:
        return {o.objective_name: o for o in self.data}


def graph_problems(objectives: list[Objective] | list[dict[str, Any]]) -> list[FieldProblem]:
    """Duplicate names, unknown ``next_*`` names, objectives the first one cannot reach and
    cycles with no way out, each at its JSON path under ``data``. Takes the models or the
    raw items (so that these are reported beside field problems, all at once)."""
    items = [_links(o) for o in objectives]
    problems: list[FieldProblem] = []
    first_at: dict[str, int] = {}
    for i, (name, _required, _conditional) in enumerate(items):
        if name is None:
            continue
        if name in first_at:
            problems.append(FieldProblem(("data", i, "objective_name"),
                                         f"is also the name of data[{first_at[name]}]", name))
        else:
            first_at[name] = i
    graph: dict[str, list[str]] = {}
    for i, (name, required, conditional) in enumerate(items):
        nexts = []
        for j, other in enumerate(required):
            if other not in first_at:
                problems.append(FieldProblem(("data", i, "next_required_objectives", j),
                                             "names no objective in data", other))
            nexts.append(other)
        for other in conditional:
            if other not in first_at:
                problems.append(FieldProblem(("data", i, "next_conditional_objectives", other),
                                             "names no objective in data", other))
            nexts.append(other)
        if name is not None and name not in graph:
            graph[name] = [n for n in nexts if n in first_at]
    if not items or items[0][0] is None:
        return problems
    start = items[0][0]
    reachable = _reach(graph, [start])
    for name, index in first_at.items():
        if name not in reachable:
            problems.append(FieldProblem(
                ("data", index, "objective_name"),
                f"cannot be reached from the first objective ({start}) through next_* names",
                name))
    reverse: dict[str, list[str]] = {name: [] for name in graph}
    for name, nexts in graph.items():
        for other in nexts:
            reverse[other].append(name)
    can_finish = _reach(reverse, [name for name, nexts in graph.items() if not nexts])
    for name, index in first_at.items():
        if name in reachable and name not in can_finish:
            problems.append(FieldProblem(
                ("data", index, "objective_name"),
                "leads only into a cycle with no way out: some objective it leads to must "
                "have no next_* objectives", name))
    return problems


def _links(item: Objective | dict[str, Any]) -> tuple[str | None, list[str], list[str]]:
    """(name, required next names, conditional next names) of a model or a raw item."""
    if isinstance(item, Objective):
        return (item.objective_name, list(item.next_required_objectives),
                list(item.next_conditional_objectives))
    if not isinstance(item, dict):
        return None, [], []
    name = item.get("objective_name")
    required = item.get("next_required_objectives", item.get("next_required_objective")) or []
    if isinstance(required, str):
        required = [required]
    conditional = item.get("next_conditional_objectives") or {}
    return (name if isinstance(name, str) else None,
            [r for r in required if isinstance(r, str)] if isinstance(required, list) else [],
            [c for c in conditional if isinstance(c, str)] if isinstance(conditional, dict) else [])


def _path(parts: tuple[str | int, ...]) -> str:
    from config.errors import json_path

    return json_path(parts)


def _reach(graph: dict[str, list[str]], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += graph.get(name, [])
    return seen


class Guardrail(ConfigModel):
    """One guardrail (the current individual form; a legacy set's items too)."""

    guardrail_name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    guardrail_prompt: str = Field(min_length=1, max_length=MAX_GUARDRAIL_PROMPT_CHARS)
    modality: Modality = "verbal"
    callback_url: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    app_message: bool = True
    uuid: str | None = None  # the id the store (or Tavus) gave it
    created_at: str | None = None
    updated_at: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_spelling(cls, data: Any) -> Any:
        # The older concept page spells them guardrails_name / guardrails_prompt.
        if isinstance(data, dict):
            data = dict(data)
            for old, new in (("guardrails_name", "guardrail_name"),
                             ("guardrails_prompt", "guardrail_prompt")):
                if old in data and new not in data:
                    data[new] = data.pop(old)
            if "guardrail_uuid" in data and "uuid" not in data:
                data["uuid"] = data.pop("guardrail_uuid")
        return data

    @field_validator("guardrail_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _GUARDRAIL_NAME.match(value):
            raise ValueError("must be letters, digits and _ only (e.g. no_competitors)")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        problems = [FieldProblem((i,), f"must be 1 to {MAX_TAG_CHARS} characters", tag)
                    for i, tag in enumerate(value) if not tag.strip() or len(tag) > MAX_TAG_CHARS]
        if problems:
            raise FieldProblems(problems)
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str | None) -> str | None:
        return _url(value, "callback_url")


class GuardrailSet(ConfigModel):
    """A legacy guardrails set: ``{"name", "data": [guardrail, ...]}``."""

    name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    data: list[Guardrail] = Field(min_length=1, max_length=MAX_GUARDRAILS)
    guardrails_id: str | None = None
    created_at: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "guardrails_name" in data and "name" not in data:
            data = dict(data)
            data["name"] = data.pop("guardrails_name")
        return data

    @model_validator(mode="after")
    def _unique(self) -> GuardrailSet:
        seen: dict[str, int] = {}
        problems = []
        for i, item in enumerate(self.data):
            if item.guardrail_name in seen:
                problems.append(FieldProblem(("data", i, "guardrail_name"),
                                             f"is also the name of data[{seen[item.guardrail_name]}]",
                                             item.guardrail_name))
            seen.setdefault(item.guardrail_name, i)
        if problems:
            raise FieldProblems(problems)
        return self


def is_guardrail_set(body: Any) -> bool:
    """Whether a guardrails body is a legacy set (routed by shape, as Tavus does)."""
    return isinstance(body, dict) and isinstance(body.get("data"), list)


def parse_objectives(body: Any, source: str) -> ObjectivesDocument:
    """An objectives document, or a :class:`ConfigError` listing every problem."""
    from config.loader import _validate

    return _validate(ObjectivesDocument, body, source).value


def parse_guardrails(body: Any, source: str) -> Guardrail | GuardrailSet:
    """A guardrail or a legacy set (by shape), or a :class:`ConfigError`."""
    from config.loader import _validate

    model = GuardrailSet if is_guardrail_set(body) else Guardrail
    return _validate(model, body, source).value


@dataclass
class Policies:
    """The objectives and guardrails one conversation runs with (resolved, validated)."""

    objectives: list[Objective] = field(default_factory=list)
    objectives_id: str | None = None
    guardrails: list[Guardrail] = field(default_factory=list)
    #: Where they came from, for ``--check`` and the record (e.g. "local store", "Tavus").
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.objectives:
            problems = graph_problems(self.objectives)
            if problems:
                raise ConfigError(f"objectives {self.objectives_id or ''}".strip(), [
                    Problem(path=_path(pr.parts), message=str(pr), value=pr.value)
                    for pr in problems])
        if len(self.guardrails) > MAX_GUARDRAILS:
            raise ConfigError("guardrails", [Problem(
                "guardrail_ids", f"a persona may have at most {MAX_GUARDRAILS} guardrails",
                len(self.guardrails))])

    @property
    def verbal_guardrails(self) -> list[Guardrail]:
        return [g for g in self.guardrails if g.modality == "verbal"]

    @property
    def waiting_for_perception(self) -> list[str]:
        """Visual objectives and guardrails: accepted, not enforced until perception exists."""
        return ([f"objective {o.objective_name}" for o in self.objectives
                 if o.modality == "visual"]
                + [f"guardrail {g.guardrail_name}" for g in self.guardrails
                   if g.modality == "visual"])

    def __bool__(self) -> bool:
        return bool(self.objectives or self.guardrails)
