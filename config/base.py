"""Shared pydantic base for configuration models.

Unknown fields are accepted at parse time so that they can be reported as
warnings naming their JSON path (Tavus adds fields over time; a persona
exported from a newer API must still load), then dropped.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

# How a call of a tool the bot runs itself is announced (persona layers.llm and conversation
# properties local_tool_call_events; pipeline/interactions/processor.py acts on it).
LocalToolCallEvents = Literal["local", "tool_call", "none"]


class ConfigModel(BaseModel):
    """Base for every persona / conversation model."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)


def note(info: ValidationInfo | None, message: str) -> None:
    """Record a load-time note (legacy migration, ignored value) in the validation context."""
    if info is not None and isinstance(info.context, dict):
        info.context.setdefault("notes", []).append(message)


def pop_unknown_fields(model: BaseModel, path: str = "") -> list[str]:
    """Remove unknown fields from ``model`` and its children; return their JSON paths."""
    found: list[str] = []
    extra = getattr(model, "__pydantic_extra__", None)
    if extra:
        found += [f"{path}.{key}" if path else key for key in extra]
        extra.clear()
    for name in type(model).model_fields:
        found += _walk(getattr(model, name), f"{path}.{name}" if path else name)
    return found


def _walk(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return pop_unknown_fields(value, path)
    if isinstance(value, list):
        out: list[str] = []
        for i, item in enumerate(value):
            out += _walk(item, f"{path}[{i}]")
        return out
    return []


def check_url(value: str | None, what: str) -> str | None:
    """Validate an http(s) URL; ``None`` passes."""
    if value is None:
        return None
    if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value):
        raise ValueError(f"{what} must be an http:// or https:// URL")
    return value
