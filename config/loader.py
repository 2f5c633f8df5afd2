"""Loading personas and conversation requests from files and dicts.

Every loader returns the validated model plus the warnings to show the user
(unknown fields, legacy migrations). Every failure is a :class:`ConfigError`
listing all problems, each with its JSON path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from config.base import pop_unknown_fields
from config.conversation import ConversationRequest
from config.errors import ConfigError, Problem, problems_from_validation
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


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing file or bad JSON is a :class:`ConfigError`."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [Problem(path="", message="file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(source, [Problem(path="", message="is a directory, not a file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [Problem(path="", message=f"cannot read: {exc}")]) from None
    try:
        return json.loads(text)
    except RecursionError:  # Python's parser gives up near a thousand nested levels
        raise ConfigError(source, [Problem(path="", message="invalid JSON: nested too deeply "
                                           "(objects and arrays hundreds of levels deep)")]) from None
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg.startswith("Expecting property name") or exc.msg.startswith("Expecting value"):
            hint = " (a trailing comma?)"
        raise ConfigError(
            source,
            [Problem(path="", message=f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                     f"{exc.msg}{hint}")],
        ) from None


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
