"""Logging set-up: one stderr sink at INFO, quiet about the normal, secrets scrubbed.

- The default level is INFO (``--debug`` or ``LOG_LEVEL=DEBUG`` for everything).
  At INFO a line is short: time, level, message.
- Some messages Pipecat logs as WARNING or ERROR describe normal events in this
  application; :data:`QUIETED` lists them, each with why, and they are logged at
  DEBUG instead (still there with ``--debug``).
- The scrubber and the re-levelling are a loguru *patcher* (logger-wide), so they
  keep working after Pipecat's development runner replaces the sinks; the runner's
  own DEBUG sink is replaced by ours (``services.pipecat_seam.runner_logging``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

from loguru import logger

from config.redact import REDACTED

_secrets: set[str] = set()

# (logger name prefix, message pattern, why it is not worth a line at INFO). Matched
# with re.search on the message of INFO, WARNING and ERROR records.
QUIETED: list[tuple[str, str, str]] = [
    ("pipecat", r"^ᓚᘏᗢ Pipecat \S+ \(Python", "Pipecat's version at import (--check shows ours)"),
    ("pipecat.services.tts_service", r"^\S+ audio context \S+ completed with no audio \(1 in a row\)",
     "one reply part with nothing to say (punctuation only); three in a row is still an error"),
    ("pipecat.processors.frame_processor", r"^\S+ TTS context \S+ completed with no audio$",
     "the same event, reported again as an error frame"),
    ("pipecat.pipeline.worker", r"Something went wrong: .*TTS context \S+ completed with no audio",
     "the same event, reported a third time by the worker"),
    ("pipecat.turns.user_stop", r"VAD stop_secs \(.*\) differs from the recommended default",
     "deliberate: the persona's turn_taking_patience sets the VAD pause (pipeline/turn_taking.py)"),
    ("pipecat.services.stt_service", r"ttfs_p99_latency not set, using default",
     "the default is right for local Whisper, which transcribes after the pause"),
    ("pipecat.transports.smallwebrtc.transport", r"^Timeout: No audio frame received",
     "a muted or silent microphone on the local page"),
    ("pipecat.transports.smallwebrtc.connection", r"^No screen video transceiver is available",
     "the local page never shares a screen"),
    ("pipecat.processors.frameworks.rtvi", r"^Ignoring not RTVI message",
     "Tavus interactions share the data channel; our interactions processor handles them"),
]
_QUIETED = [(name, re.compile(pattern)) for name, pattern, _why in QUIETED]

COMPACT_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message}"
FULL_FORMAT = ("<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
               "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan> - {message}")

_level = "INFO"


def _quiet(record) -> bool:
    """Whether ``record`` is a normal event that Pipecat logs too loudly."""
    if record["level"].no < 20:  # below INFO
        return False
    name = record["name"] or ""
    return any(name.startswith(prefix) and pattern.search(record["message"])
               for prefix, pattern in _QUIETED)


def _patch(record) -> None:
    if _secrets:
        record["message"] = scrub(record["message"])
    if _quiet(record):
        debug = logger.level("DEBUG")
        record["level"] = type(record["level"])("DEBUG", debug.no, debug.icon)


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Add values that must never appear in logs (keys shorter than 4 chars are ignored)."""
    _secrets.update(s for s in secrets if s and len(s) >= 4)


def log_level() -> str:
    """The level of the stderr sink."""
    return _level


def add_stderr_sink(sink=None) -> int:
    """Add the stderr sink at the configured level and format (also used for the runner's)."""
    fmt = FULL_FORMAT if logger.level(_level).no < logger.level("INFO").no else COMPACT_FORMAT
    return logger.add(sink or sys.stderr, level=_level, format=fmt)


def setup_logging(level: str | None = None, *, debug: bool = False) -> None:
    """Log to stderr at ``level`` (``debug``: DEBUG; default ``LOG_LEVEL`` or INFO)."""
    global _level
    _level = ("DEBUG" if debug else level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    logger.remove()
    add_stderr_sink()
    logger.configure(patcher=_patch)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced (logs, and what is printed for the user)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
