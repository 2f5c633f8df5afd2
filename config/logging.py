"""Logging set-up: one stderr sink, and secrets scrubbed from every log record.

The scrubber is a loguru *patcher* (logger-wide), so it keeps working after
Pipecat's development runner replaces the sinks with its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from loguru import logger

from config.redact import REDACTED

_secrets: set[str] = set()


def _scrub(record) -> None:
    if _secrets:
        record["message"] = scrub(record["message"])


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Add values that must never appear in logs (keys shorter than 4 chars are ignored)."""
    _secrets.update(s for s in secrets if s and len(s) >= 4)


def setup_logging(level: str | None = None) -> None:
    """Log to stderr at ``level`` (default ``LOG_LEVEL`` or INFO), scrubbing secrets."""
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    logger.remove()
    logger.add(sys.stderr, level=level)
    logger.configure(patcher=_scrub)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced (logs, and what is printed for the user)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
