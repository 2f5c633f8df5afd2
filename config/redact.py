"""Redaction of secrets in configuration before it is printed or logged."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# Keys whose values are secrets wherever they appear (persona layers, headers,
# default_query parameters such as Azure's ``api-key``).
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|authorization|bearer)", re.I)
# Keys whose *every* value is a secret (HTTP headers may carry credentials under any name).
_ALL_VALUES_SECRET = {"headers"}


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret value."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """Return a deep copy of ``value`` with secret values replaced by ``***``."""
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in _ALL_VALUES_SECRET and isinstance(item, dict):
                out[key] = {k: REDACTED if v not in (None, "") else v for k, v in item.items()}
            elif isinstance(key, str) and is_secret_key(key) and item not in (None, ""):
                out[key] = REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def redact_text(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of the given secret strings in ``text``."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
