"""Logs a privacy-minded operator accepts (``config/logging.py``).

At the default level (INFO) no utterance, no message body, no control character and no
callback token is logged; utterances and bodies are DEBUG lines, cut and escaped
(:func:`config.logging.loggable`); ``LOG_TRANSCRIPT=1`` brings the transcript back at INFO.
Also the inbound message size limit, which is the data channel's.
"""

from __future__ import annotations

import inspect
import io
import re
import sys

import pytest
from loguru import logger

from config import logging as our_logging
from config.logging import LOGGED_CHARS, MAX_MESSAGE_CHARS, loggable, transcript_level
from pipeline.interactions import MAX_MESSAGE_BYTES, ProtocolError, parse_interaction
from tests.conftest import wait_until
from tests.fake_rest import WebhookReceiver
from tests.harness import Harness

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture
def log_at():
    """``log_at(level, transcript=None)``: our logging set up as ``bot.py`` does, into a buffer."""

    def start(level: str = "INFO", transcript: bool | None = None) -> io.StringIO:
        buffer = io.StringIO()
        our_logging.setup_logging(level, transcript=transcript)
        logger.remove()
        our_logging.add_stderr_sink(buffer)
        return buffer

    yield start
    logger.remove()
    logger.configure(patcher=lambda record: None)
    our_logging._level, our_logging._transcript = "INFO", None
    logger.add(sys.stderr)


class _Level:
    def __init__(self, name, no, icon):
        self.name, self.no, self.icon = name, no, icon


def _patched(name: str, level: str, message: str) -> dict:
    lv = logger.level(level)
    record = {"name": name, "message": message, "level": _Level(lv.name, lv.no, lv.icon)}
    our_logging._patch(record)
    return record


# --------------------------------------------------------------------------- the helper


def test_loggable_cuts_and_escapes():
    assert loggable("plain words") == "plain words"
    assert loggable("a\x1b[2Jb\r\nc\td\x00é\u2028") == "a\\x1b[2Jb\\r\\nc\\td\\x00é\\u2028"
    long = loggable("x" * 1000)
    assert long == "x" * LOGGED_CHARS + f"… (+{1000 - LOGGED_CHARS} chars)"
    assert loggable("y" * 50, 10) == "y" * 10 + "… (+40 chars)"
    assert loggable({"a": 1}) == "{'a': 1}"


def test_every_line_has_control_characters_escaped_and_a_length_cap():
    record = _patched("pipecat.anything", "INFO", "line one\nline\ttwo \x1b[31mred\x07\r")
    assert record["message"] == "line one\nline\ttwo \\x1b[31mred\\x07\\r"
    record = _patched("tools.mine", "INFO", "z" * (MAX_MESSAGE_CHARS + 500))
    assert len(record["message"]) < MAX_MESSAGE_CHARS + 30 and record["message"].endswith("(+500 chars)")


def test_pipecat_lines_with_a_clients_message_show_only_its_size_above_debug(log_at):
    # The exact line Pipecat's SmallWebRTC connection logs for a data-channel message without
    # a "type" key: it logged the whole message (an audio echo chunk: ~100 KB a line) at ERROR.
    source = inspect.getsource(__import__("pipecat.transports.smallwebrtc.connection",
                                          fromlist=["x"]))
    assert 'logger.error(f"Error parsing JSON message {message}, {e}")' in source
    body = '{"event_type": "conversation.echo", "properties": {"audio": "' + "A" * 200_000 + '\x1b"}}'
    log_at("INFO")
    record = _patched("pipecat.transports.smallwebrtc.connection", "ERROR",
                      f"Error parsing JSON message {body}, 'type'")
    assert record["level"].name == "WARNING"
    assert record["message"] == (f"Error parsing JSON message <{len(body)} chars; shown with "
                                 f"--debug> ('type')")
    log_at("DEBUG")
    record = _patched("pipecat.transports.smallwebrtc.connection", "ERROR",
                      f"Error parsing JSON message {body}, 'type'")
    assert len(record["message"]) < 400 and "AAAA" in record["message"]
    assert not CONTROL.search(record["message"])
    record = _patched("pipecat.processors.frameworks.rtvi.processor", "WARNING",
                      f"Ignoring not RTVI message: {body}")
    assert record["level"].name == "DEBUG" and len(record["message"]) < 400


def test_transcript_level(monkeypatch):
    assert transcript_level() == "DEBUG"
    monkeypatch.setenv("LOG_TRANSCRIPT", "1")
    assert transcript_level() == "INFO"


# --------------------------------------------------------------------------- the size limit


def test_the_message_size_limit_is_the_data_channels():
    from aiortc.rtcsctptransport import LOCAL_MAX_MESSAGE_SIZE  # what the bot's SDP advertises

    assert MAX_MESSAGE_BYTES == LOCAL_MAX_MESSAGE_SIZE == 262144
    envelope = {"event_type": "conversation.echo", "properties": {"modality": "audio", "audio": ""}}
    room = MAX_MESSAGE_BYTES - len('{"event_type":"conversation.echo","properties":{"modality":'
                                   '"audio","audio":""}}')
    envelope["properties"]["audio"] = "A" * (room - room % 4)
    parse_interaction(envelope, "c1")  # just under the limit: accepted
    envelope["properties"]["audio"] = "A" * (room + 4)
    with pytest.raises(ProtocolError) as info:
        parse_interaction(envelope, "c1")
    assert "limit is 262144 bytes (256 KiB)" in str(info.value)
    with pytest.raises(ProtocolError, match="262144"):
        parse_interaction("x" * (MAX_MESSAGE_BYTES + 1), "c1")
    with pytest.raises(ProtocolError) as info:  # a client's value is quoted short
        parse_interaction({"event_type": "conversation." + "q" * 5000}, "c1")
    assert len(str(info.value)) < 400


# --------------------------------------------------------------------------- a session's log


async def test_a_scripted_session_logs_no_words_bodies_control_characters_or_tokens(
        tmp_path, log_at):
    token = "cbtok-SECRET-LOG-77"
    log = log_at("INFO")
    with WebhookReceiver() as hook:
        hook.fail_next("POST /hook", 500, 500)
        h = Harness(tmp_path)
        await h.start(answers=["Lovely springtime in Lisbon."],
                      conversation={"callback_url": f"{hook.url}?token={token}"},
                      env={"CALLBACK_BACKOFF_SECS": "0.05", "CALLBACK_MAX_ATTEMPTS": "4"})
        try:
            await h.send({"event_type": "conversation.respond",
                          "properties": {"text": "I would like to visit Reykjavik."}})
            await h.wait_for("conversation.utterance", where=lambda e: e["properties"]["role"] == "replica")
            await h.wait_for("conversation.replica.stopped_speaking")
            await h.send({"event_type": "conversation.echo",
                          "properties": {"text": "Echo \x1b[31mcrimson\x1b[0m words."}})
            await h.wait_for("conversation.replica.stopped_speaking", count=2)
            await h.send({"event_type": "conversation.\x1b[2Jwipe"})
            await h.send({"event_type": "conversation.respond", "properties": {"text": "z" * 300_000}})
            errors = await h.wait_for("system.error", count=2)
            assert "limit is 262144 bytes (256 KiB)" in errors[1]["properties"]["error"]
            assert wait_until(lambda: len(hook.calls("POST", "/hook")) >= 3, timeout=10)

            # Who opts in sees the transcript at INFO.
            opted = log_at("INFO", transcript=True)
            await h.send({"event_type": "conversation.respond",
                          "properties": {"text": "Tell me about Quito."}})
            await h.wait_for("conversation.utterance", count=2,
                             where=lambda e: e["properties"]["role"] == "replica")
        finally:
            await h.stop()
    text = log.getvalue()
    assert "Conversation " in text and " started (Ava)" in text  # the log is there
    for word in ("Reykjavik", "Lisbon", "crimson", "zzzz", token):
        assert word not in text, text
    assert not re.search(r"\bINFO +(User|Ava): ", text)
    assert not CONTROL.search(text), text
    assert max(len(line) for line in text.splitlines()) < 600
    assert "Interactions: rejected message (conversation.\\x1b[2Jwipe)" in text
    assert f"Callback system.replica_joined to {hook.url}?***: HTTP 500; retry 1/3" in text
    assert re.search(r"\bINFO +User: Tell me about Quito\.$", opted.getvalue(), re.M), opted.getvalue()
