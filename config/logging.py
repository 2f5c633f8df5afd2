"""Logging set-up: one stderr sink at INFO, quiet about the normal, secrets scrubbed.

- The default level is INFO (``--debug`` or ``LOG_LEVEL=DEBUG`` for everything).
  At INFO a line is short: time, level, message.
- Some messages Pipecat logs as WARNING or ERROR describe normal events in this
  application; :data:`QUIETED` lists them, each with why, and they are logged at
  DEBUG instead (still there with ``--debug``).
- Privacy: what was said and what clients sent are logged at DEBUG only, through
  :func:`loggable` (cut to 200 characters, control characters escaped). The transcript
  lines ("User: ...", "<persona>: ...") are at INFO with ``LOG_TRANSCRIPT=1``
  (:func:`transcript_level`). Pipecat's own lines that carry a client's message
  (:data:`BODIES`) show it the same way, and only its size above DEBUG.
- Every line: secrets scrubbed (``config.redact``: the registered secrets and every
  credential shape), control characters escaped (``\n`` and ``\t`` aside), at most
  :data:`MAX_MESSAGE_CHARS` characters.
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

from config.redact import redact_text
from config.redact import register_secrets as _register

# A client's message, or an utterance, in a DEBUG line: this many characters at most.
LOGGED_CHARS = 200
# Any log message: this many characters at most (a safety net; tracebacks are not cut).
MAX_MESSAGE_CHARS = 4000

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

# Pipecat lines that carry what a client sent (logger name prefix, message pattern with a
# ``body`` group, the level to log at (None: unchanged), why). The body becomes
# ``loggable(body)`` when the sink is at DEBUG, its size otherwise.
BODIES: list[tuple[str, str, str | None, str]] = [
    ("pipecat.transports.smallwebrtc.connection",
     r"(?s)^Error parsing JSON message (?P<body>.*), (?P<why>(?:(?!, ).)*)$", "WARNING",
     ("a data-channel message that is not a JSON object is dropped by Pipecat (one without "
      "a \"type\" key no longer: transports/webrtc_messages.py); "
      "verbatim, one audio echo burst wrote megabytes of log; the conversation goes on")),
    ("pipecat.processors.frameworks.rtvi", r"(?s)^Ignoring not RTVI message: (?P<body>.*)$", None,
     "every interactions message (also QUIETED to DEBUG)"),
    ("pipecat.transports.smallwebrtc.transport",
     r"(?s)^Received app message inside SmallWebRTCInputTransport +(?P<body>.*)$", None,
     "every data-channel message (TRACE)"),
]
_BODIES = [(name, re.compile(pattern), level) for name, pattern, level, _why in BODIES]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group(0)
    return _ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… (+{len(text) - limit} chars)"


def loggable(text: object, limit: int = LOGGED_CHARS) -> str:
    """``text`` fit for one log line: at most ``limit`` characters (then ``… (+N chars)``),
    every control character escaped (``\\n``, ``\\x1b``, ...). For utterances and what
    clients send, at DEBUG."""
    text = text if isinstance(text, str) else str(text)
    return _CONTROL_ALL.sub(_escape, _cut(text, limit))


_transcript: bool | None = None


def transcript_level() -> str:
    """The level of the transcript lines: DEBUG, or INFO with ``LOG_TRANSCRIPT=1``."""
    on = _transcript
    if on is None:
        on = os.environ.get("LOG_TRANSCRIPT", "").strip().lower() in ("1", "true", "yes", "on")
    return "INFO" if on else "DEBUG"


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


def _relevel(record, name: str) -> None:
    level = logger.level(name)
    record["level"] = type(record["level"])(name, level.no, level.icon)


def _body(record) -> None:
    """A Pipecat line carrying a client's message: the message cut and escaped (DEBUG sink)
    or only its size."""
    name = record["name"] or ""
    for prefix, pattern, level in _BODIES:
        if not name.startswith(prefix):
            continue
        match = pattern.match(record["message"])
        if match is None:
            continue
        body = match.group("body")
        shown = (loggable(body) if logger.level(_level).no < logger.level("INFO").no
                 else f"<{len(body)} chars; shown with --debug>")
        if "why" in pattern.groupindex:
            shown = f"{shown} ({loggable(match.group('why'), 80)})"
        start, end = match.span("body")
        if "why" in pattern.groupindex:
            end = match.end("why")
        record["message"] = record["message"][:start] + shown + record["message"][end:]
        if level:
            _relevel(record, level)
        return


def _patch(record) -> None:
    _body(record)
    message = _CONTROL.sub(_escape, scrub(record["message"]))
    record["message"] = _cut(message, MAX_MESSAGE_CHARS)
    if _quiet(record):
        _relevel(record, "DEBUG")


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Add values that must never appear in logs, client messages, callbacks or reports
    (``config.redact.register_secrets``; values shorter than 4 chars are ignored)."""
    _register(secrets)


def log_level() -> str:
    """The level of the stderr sink."""
    return _level


def add_stderr_sink(sink=None) -> int:
    """Add the stderr sink at the configured level and format (also used for the runner's)."""
    fmt = FULL_FORMAT if logger.level(_level).no < logger.level("INFO").no else COMPACT_FORMAT
    return logger.add(sink or sys.stderr, level=_level, format=fmt)


def setup_logging(level: str | None = None, *, debug: bool = False,
                  transcript: bool | None = None) -> None:
    """Log to stderr at ``level`` (``debug``: DEBUG; default ``LOG_LEVEL`` or INFO);
    ``transcript``: the transcript lines at INFO (default ``LOG_TRANSCRIPT``)."""
    global _level, _transcript
    _level = ("DEBUG" if debug else level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    _transcript = transcript
    logger.remove()
    add_stderr_sink()
    logger.configure(patcher=_patch)


def scrub(text: str) -> str:
    """``text`` with every registered secret and every credential shape hidden (logs, and
    what is printed for the user; ``config.redact.redact_text``)."""
    return redact_text(text)
