"""No secret in anything a client, a callback receiver or ``--check`` sees.

``config/redact.py`` (what a secret is, how text is redacted) and its chokepoints:
``pipeline/secret_fence.py`` (every message to the client), ``conversation/callbacks.py``
(every payload), ``session/launch.py:render_check``. The key used here is too short for
Pipecat's own ``sk-`` pattern (``pipecat.utils.security.redaction``, applied to
``ErrorFrame.error``): only our known secrets catch it.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from config import conversation_from_dict, persona_from_dict
from config.app import AppConfig
from config.redact import (
    REDACTED,
    is_secret_key,
    redact_text,
    register_secrets,
    safe_url,
    url_secrets,
)
from config.settings import Settings
from conversation.callbacks import CallbackDispatcher
from conversation.records import ConversationStore
from pipeline.secret_fence import SecretFence, redact_message
from tests.harness import Harness

SECRET = "sk-test-SECRET-7f3a"
HEADER_TOKEN = "hdrtok-SECRET-31"
EXTRA_AUTH = "xb-SECRET-auth-77"
EXTRA_NESTED = "Bearer nest-SECRET-9"
URL_PASSWORD = "urlpw-SECRET-12"
URL_QUERY_KEY = "qk-SECRET-4242"
CALLBACK_TOKEN = "cbtok-SECRET-8086"


def _app() -> AppConfig:
    persona = persona_from_dict({
        "persona_name": "Ava", "system_prompt": "You are Ava.",
        "layers": {"llm": {
            "model": "m", "api_key": SECRET,
            "base_url": f"https://proxy:{URL_PASSWORD}@llm.example/v1?api-key={URL_QUERY_KEY}",
            "headers": {"Authorization": f"Bearer {HEADER_TOKEN}"},
            "default_query": {"api-version": "2024-06-01"},
            "extra_body": {"max_tokens": 60, "auth": {"token": EXTRA_AUTH},
                           "metadata": {"note": EXTRA_NESTED}},
        }}}).value
    conversation = conversation_from_dict(
        {"callback_url": f"https://hooks.example/cb?token={CALLBACK_TOKEN}&v=2"}).value
    return AppConfig.of(persona, conversation, Settings.from_env({"OPENAI_API_KEY": "sk-env-KEY-55"}))


ALL = [SECRET, HEADER_TOKEN, EXTRA_AUTH, "nest-SECRET-9", URL_PASSWORD, URL_QUERY_KEY,
       CALLBACK_TOKEN, "sk-env-KEY-55"]


def assert_clean(text: str) -> None:
    leaked = [s for s in ALL if s in text]
    assert not leaked, f"{leaked} in {text[:3000]}"


# --------------------------------------------------------------------------- what a secret is


@pytest.mark.parametrize("key,secret", [
    ("api_key", True), ("apiKey", True), ("X-Api-Key", True), ("Authorization", True),
    ("Ocp-Apim-Subscription-Key", True), ("access_token", True), ("auth", True), ("sig", True),
    ("password", True), ("key", True),
    ("max_tokens", False), ("max_completion_tokens", False), ("api-version", False),
    ("prompt_cache_key", False), ("top_k", False), ("model", False), ("X-Org", False),
])
def test_secret_names(key, secret):
    assert is_secret_key(key) is secret


def test_every_secret_of_the_configuration_is_known():
    secrets = set(_app().secrets())
    assert set(ALL) <= secrets
    assert "2024-06-01" not in secrets and "60" not in secrets


def test_redact_text_hides_known_secrets_and_credential_shapes():
    text = (f"401 - {{'error': {{'message': 'Incorrect API key provided: {SECRET}'}}}} "
            "Authorization: Bearer unknown-1234567 at https://bob:pw9@h.example/x?token=zz9&v=1 "
            "\"password\": \"hunter2\" api_key=abc123 sk-unknownKEY123 max_tokens=60")
    out = redact_text(text, [SECRET])
    for gone in (SECRET, "unknown-1234567", "pw9", "zz9", "hunter2", "abc123", "sk-unknownKEY123"):
        assert gone not in out, out
    assert "Bearer ***" in out and "https://***@h.example" in out and "max_tokens=60" in out
    assert "Incorrect API key provided" in out  # what went wrong is still said
    # Conversation content keeps secret-named pairs (a tool argument may be called token).
    assert redact_text("token_count=5", names=False) == "token_count=5"
    assert redact_text("The bearer positively knows", names=False) == "The bearer positively knows"


def test_urls_in_logs_and_their_credentials():
    url = f"https://user:{URL_PASSWORD}@hooks.example:8443/cb?token={CALLBACK_TOKEN}"
    assert safe_url(url) == "https://hooks.example:8443/cb?***"
    assert set(url_secrets(url)) == {"user", URL_PASSWORD, CALLBACK_TOKEN}


# --------------------------------------------------------------------------- --check


def test_check_report_has_no_secret():
    from session.launch import render_check

    report, _ok = render_check(_app(), force_local=False)
    assert_clean(report)
    assert "llm.example/v1" in report  # the endpoint is still shown, without its credentials
    assert '"max_tokens": 60' in report and '"api-version": "2024-06-01"' in report
    assert "hooks.example/cb" in report


# --------------------------------------------------------------------------- the client


def test_fence_redacts_error_messages_whole_and_others_by_shape():
    rtvi = {"label": "rtvi-ai", "type": "error", "data": {"error": f"bad key {SECRET} token=x1y2z3"}}
    out = redact_message(rtvi, [SECRET])
    assert SECRET not in json.dumps(out) and "x1y2z3" not in json.dumps(out)
    assert rtvi["data"]["error"].startswith("bad key sk-")  # the original is not changed
    tool_call = {"event_type": "conversation.tool_call",
                 "properties": {"arguments": '{"token_count": "12345"}'}}
    assert redact_message(tool_call) is tool_call  # nothing to hide: the same object


async def test_a_provider_401_echoing_the_key_never_reaches_the_client(tmp_path):
    """The persona's LLM endpoint answers 401 with the Authorization header in its body:
    the RTVI error the client gets says so, without the key; so do our app messages."""
    h = Harness(tmp_path)
    persona = {"persona_name": "Ava", "system_prompt": "You are Ava.",
               "layers": {"llm": {"model": "m", "api_key": SECRET}}}
    await h.start(persona=persona)
    try:
        # An RTVI client (our page, Pipecat's SDK) says client-ready first; until then no
        # RTVI message goes out at all (the RTVI gate in SecretFence).
        await h.transport.receive_message({"label": "rtvi-ai", "type": "client-ready",
                                           "id": "ready-1", "data": {"version": "1.0.0"}})
        await h.send({"event_type": "conversation.respond", "properties": {"text": "Hello?"}})

        def rtvi_errors():
            return [m for m in h.transport.sent_messages
                    if isinstance(m, dict) and m.get("label") == "rtvi-ai" and m.get("type") == "error"]

        deadline = asyncio.get_running_loop().time() + 20
        while not rtvi_errors() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert h.fake.rejected >= 1  # the endpoint was asked, with the key, and said 401
        (error,) = rtvi_errors()[:1]
        assert "401" in error["data"]["error"] and "Incorrect API key" in error["data"]["error"]
        # A client's own message quoting the key comes back in a system.error: redacted too.
        await h.send({"event_type": "conversation.respond", "conversation_id": SECRET,
                      "properties": {"text": "x"}})
        # (The failed turn has its own system.error, "no reply: ... 401 ...", redacted too.)
        (system_error,) = await h.wait_for(
            "system.error", where=lambda e: "received_event_type" in e["properties"])
        assert "is not this conversation" in system_error["properties"]["error"]
        assert SECRET not in json.dumps(h.transport.sent_messages)
        processors = h.built.pipeline.processors
        fences = [i for i, p in enumerate(processors) if isinstance(p, SecretFence)]
        assert len(fences) == 1 and processors[fences[0] + 1] is h.transport.output()
    finally:
        await h.stop()


# --------------------------------------------------------------------------- callbacks


def test_callback_payloads_have_no_known_secret(tmp_path):
    register_secrets([SECRET])
    store = ConversationStore(tmp_path)
    dispatcher = CallbackDispatcher(store)  # not started: only queue
    payload = dispatcher.emit("c1", None, "application.transcription_ready", "application",
                              {"transcript": [{"role": "user", "content": f"my key is {SECRET}"}]})
    assert payload["properties"]["transcript"][0]["content"] == f"my key is {REDACTED}"
    store.flush()
    store.close()


async def test_no_rtvi_message_reaches_a_room_where_no_rtvi_client_asked(tmp_path):
    """A Tavus front end in a Daily room speaks only the Interactions Protocol: Pipecat's RTVI
    traffic (transcripts, speaking events, metrics, errors) never reaches it; an RTVI
    client's client-ready opens it."""
    h = Harness(tmp_path)
    await h.start(answers=["Hello there."])
    try:
        def rtvi():
            return [m for m in h.transport.sent_messages
                    if isinstance(m, dict) and m.get("label") == "rtvi-ai"]

        await h.send({"event_type": "conversation.respond", "properties": {"text": "Hi?"}})
        await h.wait_for("conversation.replica.stopped_speaking")
        assert rtvi() == [] and h.of("conversation.utterance")
        await h.transport.receive_message({"label": "rtvi-ai", "type": "client-ready",
                                           "id": "ready-1", "data": {"version": "1.0.0"}})
        await h.send({"event_type": "conversation.respond", "properties": {"text": "Again?"}})
        await h.wait_for("conversation.replica.stopped_speaking", count=2)
        types = [m["type"] for m in rtvi()]
        assert types[0] == "bot-ready" and "bot-started-speaking" in types, types
    finally:
        await h.stop()


async def test_rtvi_errors_before_client_ready_are_held_for_the_rtvi_client():
    """The greeting's LLM call fails before the page's client-ready arrives: the RTVI error
    is sent (redacted) right after bot-ready; the other early RTVI messages are dropped."""
    from pipecat.frames.frames import OutputTransportMessageUrgentFrame
    from pipecat.processors.frame_processor import FrameDirection

    fence = SecretFence([SECRET])
    out: list[dict] = []

    async def capture(frame, _direction=FrameDirection.DOWNSTREAM):
        out.append(frame.message)

    fence.push_frame = capture  # the fence's own logic, no pipeline needed

    def rtvi(kind: str, **data) -> OutputTransportMessageUrgentFrame:
        return OutputTransportMessageUrgentFrame(message={"label": "rtvi-ai", "type": kind,
                                                          "data": data})

    async def send(frame):
        await SecretFence.process_frame(fence, frame, FrameDirection.DOWNSTREAM)

    fence.process_frame = send
    await fence.process_frame(rtvi("error", error=f"401 key {SECRET}", fatal=False))
    await fence.process_frame(rtvi("user-started-speaking"))
    await fence.process_frame(OutputTransportMessageUrgentFrame(message={
        "event_type": "system.replica_joined", "message_type": "system"}))
    assert [m.get("type") or m["event_type"] for m in out] == ["system.replica_joined"]
    await fence.process_frame(rtvi("bot-ready", version="1.0.0"))
    await fence.process_frame(rtvi("bot-started-speaking"))
    kinds = [m.get("type") or m["event_type"] for m in out]
    assert kinds == ["system.replica_joined", "bot-ready", "error", "bot-started-speaking"]
    assert SECRET not in json.dumps(out)
