"""Conversation records, lifecycle timeouts and callbacks: nothing lost.

Callbacks go to a loopback webhook receiver that fails, hangs or is down; every
event must be acknowledged exactly once per delivery id. The audio path is
shown not to wait for them by ordering, never by timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from config import conversation_from_dict, persona_from_dict
from conversation.callbacks import CallbackDispatcher, sign, verify
from conversation.lifecycle import (
    MAX_CALL_DURATION,
    PARTICIPANT_ABSENT,
    PARTICIPANT_LEFT,
    ConversationLifecycle,
    recover,
)
from conversation.records import (
    ABANDONED_REASON,
    DB_NAME,
    ConversationStore,
    RecordsError,
    data_dir_problem,
)
from tests.conftest import ROOT, free_port, unwritable_dir, wait_until
from tests.fake_openai import FakeOpenAI
from tests.fake_rest import WebhookReceiver
from tests.harness import Harness


async def _until_async(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


def _dispatcher(store, **kwargs) -> CallbackDispatcher:
    kwargs.setdefault("timeout_secs", 1.0)
    kwargs.setdefault("backoff_secs", 0.1)
    return CallbackDispatcher(store, **kwargs).start()


def _persona():
    return persona_from_dict({"persona_name": "Ava", "system_prompt": "You are Ava."}).value


# --------------------------------------------------------------------------- store


def test_store_records_a_conversation_and_its_transcript(tmp_path):
    store = ConversationStore(tmp_path)
    store.submit(store.create, "c1", conversation_name="Demo", persona_name="Ava", replica_id="r1")
    store.submit(store.append_transcript, "c1", {"role": "user", "content": "Hi", "timestamp": 1.0,
                                                  "seconds_from_start": 0.5})
    store.submit(store.append_transcript, "c1", {"role": "assistant", "content": "Hello!",
                                                  "timestamp": 2.0, "seconds_from_start": 1.5,
                                                  "interrupted": True})
    store.submit(store.end, "c1", "participant_left_timeout reached")
    store.flush()
    record = store.run(store.verbose, "c1")
    assert record["status"] == "ended" and record["shutdown_reason"] == "participant_left_timeout reached"
    assert record["replica_id"] == "r1" and record["created_at"].endswith("Z")
    assert [(t["role"], t["content"]) for t in record["transcript"]] == [("user", "Hi"), ("assistant", "Hello!")]
    assert record["transcript"][1]["interrupted"] is True
    assert store.run(store.list)["total_count"] == 1
    assert store.run(store.end, "c1", "again") is False  # ended once
    store.close()


def test_recovery_closes_what_a_dead_process_left_active(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = ConversationStore(tmp_path)
    store.submit(store.create, "c-dead", persona_name="Ava", callback_url="http://127.0.0.1:9/hook")
    store.submit(store.create, "c-alive", persona_name="Ava")
    store.flush()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE conversations SET pid = ? WHERE conversation_id = 'c-dead'", (dead.pid,))
    store.submit(store.append_transcript, "c-dead", {"role": "user", "content": "Hi"})
    dispatcher = CallbackDispatcher(store)  # not started: only queue
    assert recover(store, dispatcher) == ["c-dead"]
    dead_row = store.run(store.get, "c-dead")
    assert dead_row["status"] == "ended" and dead_row["shutdown_reason"] == ABANDONED_REASON
    assert store.run(store.get, "c-alive")["status"] == "active"  # this process: alive
    with sqlite3.connect(store.path) as db:
        pending = db.execute("SELECT event_type, status, payload FROM deliveries ORDER BY rowid").fetchall()
    assert [(e, s) for e, s, _ in pending] == [("system.shutdown", "pending"),
                                                ("application.transcription_ready", "pending")]
    transcript = json.loads(pending[1][2])["properties"]["transcript"]
    assert transcript == [{"role": "user", "content": "Hi", "timestamp": None, "seconds_from_start": None}]
    store.close()


def test_undecodable_names_and_text_are_stored_escaped(tmp_path):
    store = ConversationStore(tmp_path)  # a file name argument with a byte that is not UTF-8:
    store.submit(store.create, "c1", persona_source="/tmp/\udcff.json", persona_name="Ava")
    store.submit(store.append_transcript, "c1", {"role": "user", "content": "caf\udce9"})
    store.flush()
    record = store.run(store.verbose, "c1")
    assert record["persona_source"] == "/tmp/\\udcff.json"
    assert record["transcript"][0]["content"] == "caf\\udce9"
    store.close()


def test_data_dir_missing_is_created_with_its_parents(tmp_path):
    data = tmp_path / "a" / "b" / "data"
    assert data_dir_problem(data) is None and not (tmp_path / "a").exists()  # judging creates nothing
    store = ConversationStore(data)
    assert store.path == data / DB_NAME and store.path.is_file()
    store.close()


def test_data_dir_that_cannot_hold_the_records_is_one_line(tmp_path):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    db_dir = tmp_path / "db-is-a-dir"
    (db_dir / DB_NAME).mkdir(parents=True)
    not_a_db = tmp_path / "not-a-db"
    not_a_db.mkdir()
    (not_a_db / DB_NAME).write_text("this is not SQLite " * 100)
    ro = unwritable_dir(tmp_path)
    cases = {
        a_file: f"PERSONA_DATA_DIR {a_file}: is a file, not a directory (conversations.db is kept in it)",
        a_file / "data": f"PERSONA_DATA_DIR {a_file / 'data'}: cannot be created: {a_file} is a file, "
                         "not a directory",
        ro: f"PERSONA_DATA_DIR {ro}: is not writable (conversations.db is kept in it)",
        ro / "data": f"PERSONA_DATA_DIR {ro / 'data'}: cannot be created: {ro} is not writable",
        db_dir: f"PERSONA_DATA_DIR {db_dir}: {db_dir / DB_NAME} is not a file",
        not_a_db: f"PERSONA_DATA_DIR {not_a_db}: cannot use conversations.db: file is not a database",
    }
    for data_dir, message in cases.items():
        with pytest.raises(RecordsError) as info:
            ConversationStore(data_dir)
        assert info.value.render() == f"error: {message}"
    assert not (ro / "data").exists()


def test_data_dir_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # what the checks cannot see
    with pytest.raises(RecordsError) as info:
        ConversationStore(tmp_path / "data")
    assert info.value.render() == (f"error: PERSONA_DATA_DIR {tmp_path / 'data'}: cannot be created: "
                                   "Read-only file system")


# --------------------------------------------------------------------------- callbacks


def test_callback_retried_after_failures_arrives_once_with_a_valid_signature(tmp_path):
    with WebhookReceiver() as hook:
        hook.fail_next("POST /hook", 500, 502)
        store = ConversationStore(tmp_path)
        dispatcher = _dispatcher(store, secret="s3cret")
        payload = dispatcher.emit("c1", hook.url, "system.replica_joined", "system", {"replica_id": "r1"})
        assert wait_until(lambda: hook.acked)
        dispatcher.drain(5)
    assert list(hook.acked.values()) == [1]
    attempts = [r for r in hook.requests if r.path == "/hook"]
    assert len(attempts) == 3
    assert {r.headers["X-Delivery-Id"] for r in attempts} == set(hook.acked)
    assert [r.headers["X-Delivery-Attempt"] for r in attempts] == ["1", "2", "3"]
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert attempts[-1].body == payload
    assert verify("s3cret", attempts[-1].headers["X-Signature"], body)
    assert not verify("wrong", attempts[-1].headers["X-Signature"], body)
    assert set(payload) == {"properties", "conversation_id", "webhook_url", "event_type",
                            "message_type", "timestamp"}
    (row,) = store.run(store.deliveries, "c1")
    assert row["status"] == "delivered" and row["attempts"] == 3
    store.close()


def test_a_hanging_receiver_is_timed_out_and_retried(tmp_path):
    with WebhookReceiver(hang_next=1, hang_secs=3) as hook:
        store = ConversationStore(tmp_path)
        dispatcher = _dispatcher(store, timeout_secs=0.5)
        dispatcher.emit("c1", hook.url, "system.shutdown", "system", {"shutdown_reason": "x"})
        dispatcher.emit("c1", hook.url, "application.transcription_ready", "application", {"transcript": []})
        assert wait_until(lambda: len(hook.acked) == 2)
        dispatcher.drain(5)
    assert sorted(hook.acked.values()) == [1, 1]
    assert sorted(hook.events()) == ["application.transcription_ready", "system.shutdown"]
    rows = store.run(store.deliveries, "c1")
    assert {r["status"] for r in rows} == {"delivered"}
    assert any("Timeout" in (r["last_error"] or "") or r["attempts"] == 2 for r in rows)
    store.close()


def test_a_receiver_down_until_after_a_restart_gets_everything_once(tmp_path):
    port = free_port()
    store = ConversationStore(tmp_path)
    dispatcher = _dispatcher(store, max_attempts=50)
    url = f"http://127.0.0.1:{port}/hook"
    for event in ("system.replica_joined", "system.shutdown", "application.transcription_ready"):
        dispatcher.emit("c1", url, event, "system", {})
    # In order: the first is retried, the others wait behind it.
    assert wait_until(lambda: store.run(store.deliveries, "c1")[0]["attempts"] >= 2)
    assert dispatcher.drain(0.2) == 3  # still pending at "exit"
    dispatcher.stop()
    store.close()
    # The next start: a new store and dispatcher on the same database; the receiver is up now.
    with WebhookReceiver(bind_port=port) as hook:
        store = ConversationStore(tmp_path)
        dispatcher = _dispatcher(store)
        assert wait_until(lambda: len(hook.acked) == 3)
        time.sleep(0.3)
        dispatcher.stop()
    assert list(hook.acked.values()) == [1, 1, 1]
    assert hook.events() == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
    store.close()


def test_gives_up_after_max_attempts(tmp_path):
    with WebhookReceiver() as hook:
        hook.fail_next("POST /hook", *[500] * 10)
        store = ConversationStore(tmp_path)
        dispatcher = _dispatcher(store, max_attempts=3)
        dispatcher.emit("c1", hook.url, "system.shutdown", "system", {})
        assert wait_until(lambda: store.run(store.deliveries, "c1")[0]["status"] == "failed")
    (row,) = store.run(store.deliveries, "c1")
    assert row["attempts"] == 3 and row["last_error"] == "HTTP 500" and not hook.acked
    store.close()


def test_signature_helpers():
    header = sign("k", int(time.time()), b"{}")
    assert header.startswith("t=") and ",v1=" in header
    assert verify("k", header, b"{}") and not verify("k", header, b"{ }")
    old = sign("k", int(time.time()) - 3600, b"{}")
    assert not verify("k", old, b"{}")


# --------------------------------------------------------------------------- lifecycle timeouts


async def _conversation(tmp_path, hook_url: str, properties: dict, *, join: bool = True):
    store = ConversationStore(tmp_path / "db")
    dispatcher = _dispatcher(store)
    conversation = conversation_from_dict({"callback_url": hook_url, "properties": properties}).value
    lifecycle = ConversationLifecycle(store=store, callbacks=dispatcher, conversation_id="c-test",
                                      conversation=conversation, persona=_persona(),
                                      replica_id="r1", system_prompt="You are Ava.")

    harness = await Harness(tmp_path).start(conversation={"callback_url": hook_url,
                                                          "properties": properties},
                                            lifecycle=lifecycle)
    if join:
        await lifecycle.participant_joined()
    return harness, lifecycle, store, dispatcher


async def _ended(harness, lifecycle) -> None:
    await asyncio.wait_for(harness.task, 30)
    lifecycle.finish()
    await harness.stop()


@pytest.mark.e2e
async def test_max_call_duration_ends_gracefully_with_its_reason_and_callbacks(tmp_path):
    from pipecat.frames.frames import TTSSpeakFrame

    with WebhookReceiver() as hook:
        harness, lifecycle, store, dispatcher = await _conversation(
            tmp_path, hook.url, {"max_call_duration": 2})
        await harness.worker.queue_frames([TTSSpeakFrame("Hello there, nice to meet you.")])
        await _ended(harness, lifecycle)  # the pipeline ends on its own
        assert await _until_async(lambda: len(hook.acked) == 3)
    assert lifecycle.shutdown_reason == MAX_CALL_DURATION
    assert hook.events() == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
    shutdown, ready = hook.payloads[1], hook.payloads[2]
    assert shutdown["properties"] == {"replica_id": "r1", "shutdown_reason": MAX_CALL_DURATION}
    transcript = ready["properties"]["transcript"]
    assert transcript[0] == {"role": "system", "content": "You are Ava."}
    # Graceful: what the replica was saying was finished and recorded.
    assert transcript[1]["role"] == "assistant" and "nice to meet you" in transcript[1]["content"]
    record = store.run(store.verbose, "c-test")
    assert record["status"] == "ended" and record["shutdown_reason"] == MAX_CALL_DURATION
    assert [e["event_type"] for e in record["events"]] == hook.events()
    store.close()


@pytest.mark.e2e
async def test_participant_absent_timeout(tmp_path):
    with WebhookReceiver() as hook:
        harness, lifecycle, store, _ = await _conversation(
            tmp_path, hook.url, {"participant_absent_timeout": 1}, join=False)
        await _ended(harness, lifecycle)
        assert await _until_async(lambda: len(hook.acked) == 3)
    assert lifecycle.shutdown_reason == PARTICIPANT_ABSENT
    assert hook.payloads[1]["properties"]["shutdown_reason"] == PARTICIPANT_ABSENT
    store.close()


@pytest.mark.e2e
async def test_participant_left_timeout_waits_and_a_rejoin_cancels_it(tmp_path):
    with WebhookReceiver() as hook:
        harness, lifecycle, store, _ = await _conversation(
            tmp_path, hook.url, {"participant_left_timeout": 1})
        await lifecycle.participant_left()
        await asyncio.sleep(0.5)
        await lifecycle.participant_joined()  # back within the timeout
        await asyncio.sleep(1.0)
        assert not harness.task.done() and lifecycle.shutdown_reason is None
        left_at = time.monotonic()
        await lifecycle.participant_left()
        await _ended(harness, lifecycle)
        assert time.monotonic() - left_at >= 0.9  # it waited for the timeout
        assert await _until_async(lambda: len(hook.acked) == 3)
    assert lifecycle.shutdown_reason == PARTICIPANT_LEFT
    assert hook.payloads[1]["properties"]["shutdown_reason"] == PARTICIPANT_LEFT
    store.close()


# --------------------------------------------------------------------------- the bot process


class _FakeLLMThread:
    """FakeOpenAI on a loop of its own (for subprocess tests)."""

    def __init__(self, answers: list[str]):
        self.fake = FakeOpenAI(answers=answers)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            self._loop.run_until_complete(self.fake.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _bot_env(data_dir: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PERSONA_DOTENV": "0", "PERSONA_DATA_DIR": str(data_dir),
                "CALLBACK_BACKOFF_SECS": "0.2", "CALLBACK_TIMEOUT_SECS": "2", **extra})
    return env


def _files(tmp_path: Path, llm_url: str, hook_url: str) -> tuple[Path, Path]:
    persona = tmp_path / "persona.json"
    persona.write_text(json.dumps({
        "persona_name": "Ava", "system_prompt": "You are Ava.",
        "layers": {"llm": {"model": "fake", "base_url": llm_url, "api_key": "test-key"}},
    }))
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps({"callback_url": hook_url, "conversation_name": "Kill test"}))
    return persona, conversation


def test_text_conversation_is_recorded_and_the_cli_shows_it(tmp_path):
    llm = _FakeLLMThread(["Paris is the capital of France."])
    with WebhookReceiver() as hook:
        persona, conversation = _files(tmp_path, llm.fake.base_url, hook.url)
        data = tmp_path / "data"
        out = subprocess.run(
            [sys.executable, str(ROOT / "bot.py"), "--text", "--no-greeting", "--persona", str(persona),
             "--conversation", str(conversation)],
            input="What is the capital of France?\n", capture_output=True, text=True, timeout=120,
            cwd=ROOT, env=_bot_env(data))
        assert out.returncode == 0, out.stderr[-3000:]
        # the process drained its callbacks before exiting
        assert hook.events() == ["system.replica_joined", "system.shutdown",
                                 "application.transcription_ready"]
    llm.stop()
    listing = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--list-conversations"],
                             capture_output=True, text=True, cwd=ROOT, env=_bot_env(data), timeout=60)
    assert "Kill test" not in listing.stdout  # the table shows ids, persona and reason
    assert "ended" in listing.stdout and "participant_left_timeout reached" in listing.stdout
    cid = hook.payloads[0]["conversation_id"]
    shown = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--show-conversation", cid, "--json"],
                           capture_output=True, text=True, cwd=ROOT, env=_bot_env(data), timeout=60)
    record = json.loads(shown.stdout)
    assert record["conversation_name"] == "Kill test" and record["transport"] == "text"
    assert [(t["role"], t["content"]) for t in record["transcript"]] == [
        ("user", "What is the capital of France?"), ("assistant", "Paris is the capital of France.")]
    assert [c["status"] for c in record["callbacks"]] == ["delivered"] * 3
    missing = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--show-conversation", "c-nope"],
                             capture_output=True, text=True, cwd=ROOT, env=_bot_env(data), timeout=60)
    assert missing.returncode == 2 and "no conversation 'c-nope'" in missing.stderr


def test_replies_do_not_wait_for_a_hanging_webhook(tmp_path):
    llm = _FakeLLMThread(["First answer.", "Second answer."])
    with WebhookReceiver(hang_next=100, hang_secs=30) as hook:
        persona, conversation = _files(tmp_path, llm.fake.base_url, hook.url)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bot.py"), "--text", "--no-greeting", "--persona", str(persona),
             "--conversation", str(conversation)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=ROOT, env=_bot_env(tmp_path / "data", CALLBACK_TIMEOUT_SECS="60"))
        proc.stdin.write("One?\n")
        proc.stdin.flush()
        assert "First answer." in proc.stdout.readline()
        proc.stdin.write("Two?\n")
        proc.stdin.flush()
        assert "Second answer." in proc.stdout.readline()
        # Both replies came while the first callback (replica_joined) was still hanging.
        assert [r.path for r in hook.requests] == ["/hook"] and not hook.acked
        proc.kill()
        proc.wait(10)
    llm.stop()


def test_sigkill_mid_conversation_keeps_the_transcript_and_the_next_start_closes_it(tmp_path):
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/hook"  # down while the first process runs
    llm = _FakeLLMThread(["Paris is the capital of France."])
    persona, conversation = _files(tmp_path, llm.fake.base_url, hook_url)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bot.py"), "--text", "--no-greeting", "--persona", str(persona),
         "--conversation", str(conversation)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=ROOT, env=_bot_env(data))
    proc.stdin.write("What is the capital of France?\n")
    proc.stdin.flush()
    assert "Paris" in proc.stdout.readline()
    db = data / "conversations.db"

    def rows(sql):
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    assert wait_until(lambda: len(rows("SELECT * FROM transcript")) == 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    llm.stop()
    (cid, status), = rows("SELECT conversation_id, status FROM conversations")
    assert status == "active"
    assert rows("SELECT role, content FROM transcript ORDER BY id") == [
        ("user", "What is the capital of France?"), ("assistant", "Paris is the capital of France.")]
    assert rows("SELECT event_type, status FROM deliveries") == [("system.replica_joined", "pending")]

    with WebhookReceiver(bind_port=port) as hook:  # the receiver is up; the bot starts again
        shown = subprocess.run(
            [sys.executable, str(ROOT / "bot.py"), "--show-conversation", cid, "--json"],
            capture_output=True, text=True, cwd=ROOT, env=_bot_env(data), timeout=60)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert wait_until(lambda: len(hook.acked) == 3)
    record = json.loads(shown.stdout)
    assert record["status"] == "ended" and record["shutdown_reason"] == ABANDONED_REASON
    assert hook.events() == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
    assert list(hook.acked.values()) == [1, 1, 1]
    assert hook.payloads[1]["properties"]["shutdown_reason"] == ABANDONED_REASON
    assert [t["content"] for t in hook.payloads[2]["properties"]["transcript"]] == [
        "What is the capital of France?", "Paris is the capital of France."]


# --------------------------------------------------------------------------- closed captions


@pytest.mark.e2e
@pytest.mark.parametrize("enabled", [True, False])
async def test_closed_captions_for_user_and_replica(tmp_path, enabled):
    from pipecat.frames.frames import TTSSpeakFrame

    harness = await Harness(tmp_path).start(
        answers=["Sure, I can help with that."],
        conversation={"properties": {"enable_closed_captions": enabled}})
    try:
        await harness.send({"event_type": "conversation.respond", "properties": {"text": "Can you help me?"}})
        await harness.wait_for("conversation.replica.stopped_speaking")
        await harness.worker.queue_frames([TTSSpeakFrame("One more thing.")])
        await harness.wait_for("conversation.replica.stopped_speaking", count=2)
    finally:
        await harness.stop()
    captions = [e["properties"] for e in harness.of("conversation.closed_caption")]
    if not enabled:
        assert captions == []
        return
    assert {"role": "user", "text": "Can you help me?", "final": True} in captions
    replica = [c for c in captions if c["role"] == "replica"]
    assert replica[-1] == {"role": "replica", "text": "One more thing.", "final": True}
    finals = [c["text"] for c in replica if c["final"]]
    assert finals[0] == "Sure, I can help with that."
    assert any(not c["final"] for c in replica)  # live, word by word as spoken


def test_closed_captions_turn_on_dailys_transcription():
    from transports.runner import transport_params

    from config.options import ConversationOptions

    captions = ConversationOptions.resolve(_persona(), conversation_from_dict(
        {"properties": {"enable_closed_captions": True}}).value)
    plain = ConversationOptions.resolve(_persona())
    assert transport_params(captions)["daily"]().transcription_enabled is True
    assert transport_params(plain)["daily"]().transcription_enabled is False
    video = transport_params(plain, video=True)["webrtc"]()
    assert video.video_out_enabled and (video.video_out_width, video.video_out_height) == (1280, 720)
