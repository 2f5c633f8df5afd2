"""Loading personas and conversation requests from files and dicts.

Every loader returns the validated model plus the warnings to show the user
(unknown fields, legacy migrations). Every failure is a :class:`ConfigError`
listing all problems, each with its JSON path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from config.base import pop_unknown_fields
from config.conversation import ConversationRequest
from config.errors import ConfigError, Problem, json_path, problems_from_validation
from config.files import kind_problem, read_problem
from config.persona import Persona

M = TypeVar("M", bound=BaseModel)

# Fields users put on a persona that belong elsewhere: say where.
_HINTS = {
    "audio_only": "audio_only is a conversation field; put it in the --conversation file",
    "custom_greeting": "custom_greeting is a conversation field; put it in the --conversation file",
    "conversational_context": (
        "conversational_context is a conversation field; put it in the --conversation file"
    ),
}


@dataclass
class Loaded(Generic[M]):
    """A validated document and what the user should be told about it."""

    value: M
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _validate(model: type[M], data: Any, source: str) -> Loaded[M]:
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [Problem(path="", message="must be a JSON object", value=type(data).__name__)],
        )
    refused = document_problems(data)
    if refused:
        raise ConfigError(source, refused)
    context: dict[str, Any] = {"notes": []}
    try:
        value = model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        # Cross-field checks do not run when fields fail; add the ones we can still judge.
        extra = getattr(model, "raw_problems", None)
        if extra is not None:
            seen = {p.path for p in problems}
            problems += [p for p in extra(data) if p.path not in seen]
        raise ConfigError(source, problems) from None
    warnings = []
    for path in pop_unknown_fields(value):
        hint = _HINTS.get(path)
        warnings.append(hint or f"unknown field {path!r} ignored")
    return Loaded(value=value, warnings=warnings, notes=list(context["notes"]))


#: The largest persona or conversation file read (bytes). The longest legitimate fields
#: (``system_prompt``, ``context``, ``conversational_context``) have no schema limit; 1 MiB
#: is about 250,000 tokens of prompt, several times what an LLM context here holds, and
#: comfortably more than ``conversation.overwrite_llm_context`` accepts (100,000 characters).
MAX_FILE_BYTES = 1024 * 1024
#: The deepest nesting of arrays and objects accepted in a document. The deepest legitimate
#: part is a tool's JSON Schema (``layers.llm.tools[i].function.parameters``), a dozen levels;
#: deeper documents would exhaust the recursion of the validators and printers below.
MAX_DEPTH = 64

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"),
)


def _refuse(source: str, message: str) -> ConfigError:
    return ConfigError(source, [Problem(path="", message=message)])


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """A regular file of at most ``limit`` bytes, decoded as UTF-8 (a UTF-8 BOM is skipped).

    Anything else is a :class:`ConfigError` saying what is wrong: a missing or unreadable
    file, a directory, a FIFO or device (never opened for a blocking read), a file over the
    limit, another encoding (a UTF-16/32 BOM, NUL bytes) or bytes that are not UTF-8.
    """
    path = Path(path)
    source = str(path)
    try:
        problem = kind_problem(path.stat().st_mode)
        if problem:
            raise _refuse(source, problem)
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it
        # does not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            problem = kind_problem(os.fstat(fh.fileno()).st_mode)
            if problem:
                raise _refuse(source, problem)
            data = fh.read(limit + 1)
    except OSError as exc:
        raise _refuse(source, read_problem(exc)) from None
    if len(data) > limit:
        size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
        raise _refuse(source, f"is larger than {size}, the limit for this file")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise _refuse(source, f"is {encoding} encoded; save it as UTF-8")
    if b"\x00" in data:  # never in JSON text (a string has it escaped)
        raise _refuse(source, "is not UTF-8 text (it has NUL bytes: UTF-16 without a BOM, "
                      "or not a text file); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _refuse(source, f"is not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); "
                      "save it as UTF-8") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file (see :func:`read_text`); a bad file or bad JSON is a :class:`ConfigError`."""
    source = str(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg.startswith("Expecting property name") or exc.msg.startswith("Expecting value"):
            hint = " (a trailing comma?)"
        raise _refuse(source, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                      f"{exc.msg}{hint}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise _refuse(source, f"invalid JSON: {str(exc).split(':')[0]}") from None
    except RecursionError:  # Python's parser gives up near a thousand nested levels
        raise _refuse(source, _TOO_DEEP) from None


_TOO_DEEP = f"is nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _lone_surrogate(text: str) -> str | None:
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (f"has a lone surrogate escape (\\u{ord(found.group()):04x} without its pair), "
            "which is not text")


def document_problems(data: Any) -> list[Problem]:
    """What no document may hold, found without recursion: nesting deeper than
    :data:`MAX_DEPTH`, and strings or keys with a lone surrogate (a ``"\\ud800"`` escape
    names no character: it cannot be printed, logged or stored as UTF-8)."""
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str):
            message = _lone_surrogate(value)
            if message:
                problems.append(Problem(json_path(loc), message))
            continue
        if not isinstance(value, dict | list):
            continue
        if len(loc) >= MAX_DEPTH:
            return [Problem(json_path(loc[:8]) + "...", _TOO_DEEP)]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            message = _lone_surrogate(key) if isinstance(key, str) else None
            if message:  # the path shows the key escaped, so that it can be printed
                key = key.encode("utf-8", "backslashreplace").decode()
                problems.append(Problem(json_path((*loc, key)), f"this key {message}"))
            stack.append((item, (*loc, key)))
    return sorted(problems, key=lambda p: p.path)


def persona_from_dict(data: Any, source: str = "persona") -> Loaded[Persona]:
    """Validate a persona given as a dict."""
    return _validate(Persona, data, source)


def load_persona(path: str | Path) -> Loaded[Persona]:
    """Load and validate a persona JSON file."""
    return persona_from_dict(read_json(path), str(path))


def conversation_from_dict(data: Any, source: str = "conversation") -> Loaded[ConversationRequest]:
    """Validate a create-conversation request given as a dict."""
    return _validate(ConversationRequest, data, source)


def load_conversation(path: str | Path) -> Loaded[ConversationRequest]:
    """Load and validate a create-conversation JSON file."""
    return conversation_from_dict(read_json(path), str(path))
