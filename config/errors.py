"""The error tree, and configuration errors that list every problem at once.

:class:`AgentError` is the base of everything a user can cause or fix: a bad
persona or conversation request, a missing key, an unreachable service, a
missing local model, a server that will not start, a bad audio file, a mode
the persona cannot run in. ``bot.py`` has one handler for it: the message
(one line; a bad persona lists one line per problem: JSON path, the bad
value, what is allowed; a file that cannot be read as JSON is one line),
exit code 2, no traceback.

| error | module | raised when |
| --- | --- | --- |
| ``ConfigError`` | ``config.errors`` | a persona / conversation / setting fails validation |
| ``EngineSelectionError`` | ``services.selection`` | an engine's key is missing, or an engine is unknown |
| ``ApiError`` | ``services.rest`` | Tavus or Daily rejects a request or cannot be reached |
| ``TavusError`` | ``services.tavus.api`` | Tavus cannot be used as configured (no key, no replica) |
| ``LocalModelError`` | ``services.local.models`` | an embedded model's files are missing |
| ``LlamaServerError`` | ``services.local.llama_server`` | the embedded LLM server will not start |
| ``AudioFileError`` | ``transports.file`` | a WAV cannot be read (missing, not a regular file, not PCM) |
| ``RecordsError`` | ``conversation.records`` | ``PERSONA_DATA_DIR`` cannot hold ``conversations.db`` |
| ``SessionError`` and its ``ModeError``, ``OneShotError`` | ``session.errors`` | a conversation cannot run |

Errors inside a running conversation (a bad app message, a failing tool) are
not here: they are answered in the conversation and the pipeline keeps going.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from config.redact import is_secret_key

_MISSING = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration document."""

    path: str
    message: str
    value: Any = _MISSING

    def render(self, where: str | None = None) -> str:
        """One line: ``path: message (got value)`` (``where`` in place of the path)."""
        where = where or self.path or "(document)"
        if self.value is _MISSING:
            return f"{where}: {self.message}"
        return f"{where}: {self.message} (got {_short(self.value)})"


class FieldProblem(ValueError):
    """Raised by cross-field validators to point at a field below the validated model.

    ``path`` is dotted (``voice_settings.speed``) or a tuple of keys and list indices, for
    paths whose keys may hold dots themselves (a tool schema's ``patternProperties``).
    """

    def __init__(self, path: str | tuple[str | int, ...], message: str, value: Any = _MISSING):
        super().__init__(message)
        self.path = path
        self.value = value

    @property
    def parts(self) -> tuple[str | int, ...]:
        """The path as location parts."""
        if isinstance(self.path, tuple):
            return self.path
        return tuple(self.path.split(".")) if self.path else ()


class FieldProblems(ValueError):
    """Several :class:`FieldProblem` below one field, all reported (e.g. every bad spot in a
    tool's JSON schema), where pydantic would keep only one error per validator."""

    def __init__(self, problems: list[FieldProblem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class AgentError(Exception):
    """Something the user can fix; ``str(error)`` is the message to show (one line)."""

    def render(self) -> str:
        """What to print for the user."""
        return f"error: {self}"


class ConfigError(AgentError):
    """A configuration document failed validation; carries every problem."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        """All problems, one per line, under a header naming the source; a problem with the
        document as a whole (a missing or unreadable file, bad JSON) is one line."""
        if len(self.problems) == 1 and not self.problems[0].path:
            return f"error: {self.problems[0].render(where=self.source)}"
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{self.source}: {count} {noun}:"]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)


def json_path(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic location tuple into a JSON path like ``layers.llm.tools[0].type``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not allowed here"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("Input should be"):
        msg = "must be" + msg[len("Input should be") :]
    return msg


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """Translate pydantic errors into :class:`Problem` lines, secrets redacted."""
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err.get("loc", ()) if not _is_union_tag(p))
        cause = (err.get("ctx") or {}).get("error")
        value: Any = err.get("input", _MISSING)
        if isinstance(cause, FieldProblems):
            found = [(loc + p.parts, str(p), p.value) for p in cause.problems]
        elif isinstance(cause, FieldProblem):
            found = [(loc + cause.parts, _message(err), cause.value)]
        else:
            found = [(loc, _message(err), _MISSING if err.get("type") == "missing" else value)]
        for where, message, value in found:
            path = json_path(where)
            if (path, message) in seen:
                continue
            seen.add((path, message))
            if any(isinstance(p, str) and is_secret_key(p) for p in where):
                value = "***" if value is not _MISSING else value
            elif isinstance(value, dict) and len(json.dumps(value, default=str)) > 80:
                value = _MISSING  # a whole object is not useful in one line
            problems.append(Problem(path=path, message=message, value=value))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the union member's type name to locations (e.g. "float", "str").
    return isinstance(part, str) and part in {"float", "str", "int", "bool", "list[str]"}
