"""Conversation records in an embedded SQLite database (``PERSONA_DATA_DIR/conversations.db``).

Every run of the bot is a conversation: id, name, status, ``created_at``,
persona and replica, ``shutdown_reason``, its transcript (appended as each
utterance is committed, so a killed process loses at most the one in flight),
its events (the callback payloads, as Tavus's verbose Get Conversation shows
them) and the callbacks still to deliver.

Writes go through one background thread per store, in order, so nothing on
the audio path waits for the disk. WAL journaling: a committed write survives
the process being killed.

On open, conversations left ``active`` by a process that no longer runs are
closed as ended abnormally (see :meth:`ConversationStore.recover`).

``PERSONA_DATA_DIR`` is created (with its parents) when missing; one that is a
file, cannot be created or written, or holds a ``conversations.db`` SQLite cannot
open is a :class:`RecordsError`, one line naming the directory.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from config.errors import AgentError
from config.files import creation_problem
from config.redact import redact_url

T = TypeVar("T")

DB_NAME = "conversations.db"
# Our shutdown reason for a conversation whose process died (SIGKILL, power loss, OOM):
# Tavus's "internal error occurred at step x" with the step named.
ABANDONED_REASON = "internal error occurred at step process (the bot process ended unexpectedly)"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY,
    conversation_name TEXT,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ended_at TEXT,
    persona_name TEXT,
    persona_id TEXT,
    persona_source TEXT,
    replica_id TEXT,
    callback_url TEXT,
    shutdown_reason TEXT,
    transport TEXT,
    language TEXT,
    properties TEXT,
    host TEXT,
    pid INTEGER,
    tavus_conversation_id TEXT
);
CREATE TABLE IF NOT EXISTS transcript (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp REAL,
    seconds_from_start REAL,
    interrupted INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transcript_conversation ON transcript(conversation_id, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    message_type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    properties TEXT
);
CREATE INDEX IF NOT EXISTS events_conversation ON events(conversation_id, id);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS objectives (
    objectives_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS guardrails (
    guardrail_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    tags TEXT,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
# objectives: the documents of conversation/policies.py (``o`` + 12 hex); guardrails: an
# individual guardrail (kind 'guardrail', its ``uuid``) or a legacy set (kind 'set', its
# ``guardrails_id``), both ``g`` + 12 hex; ``tags`` is a JSON array (individual ones).


# Columns added after the first release: ALTER TABLE on a database that lacks them.
_ADDED_COLUMNS = (("tavus_conversation_id", "TEXT"),)


def _storable(value: Any) -> Any:
    """A string SQLite can store: a lone surrogate (an undecodable byte of a file name given
    on the command line, typed into --text) is kept as its ``\\udcff`` escape."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def iso_now() -> str:
    """Now as Tavus writes timestamps (ISO 8601, UTC, microseconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _process_alive(pid: int | None, host: str | None) -> bool:
    if not pid or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid that is not a Python process is not ours
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


class RecordsError(AgentError):
    """The conversation records cannot be kept in ``PERSONA_DATA_DIR``."""


def _where(data_dir: Path) -> str:
    return f"PERSONA_DATA_DIR {data_dir}"


def data_dir_problem(data_dir: str | Path) -> str | None:
    """What stops ``data_dir`` from holding the records, judged without creating or writing
    anything (``None``: usable, or creatable); the message names the directory."""
    path = Path(data_dir)
    where = _where(path)
    try:
        if path.exists():
            if not path.is_dir():
                return f"{where}: is a file, not a directory ({DB_NAME} is kept in it)"
            if not os.access(path, os.W_OK | os.X_OK):
                return f"{where}: is not writable ({DB_NAME} is kept in it)"
            db = path / DB_NAME
            if db.exists() and not db.is_file():
                return f"{where}: {db} is not a file"
            return None
        problem = creation_problem(path)
        return f"{where}: {problem}" if problem else None
    except OSError as exc:
        return f"{where}: cannot be used: {exc.strerror or exc}"
    return None


def ensure_data_dir(data_dir: str | Path) -> Path:
    """``data_dir``, created if missing; a :class:`RecordsError` when it cannot hold the records."""
    path = Path(data_dir)
    problem = data_dir_problem(path)
    if problem is None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # what the checks cannot see: a read-only file system, a race
            problem = f"{_where(path)}: cannot be created: {exc.strerror or exc}"
        else:
            problem = data_dir_problem(path)
    if problem is not None:
        raise RecordsError(problem)
    return path


class ConversationStore:
    """The SQLite database of conversations; safe to share between sessions of one process."""

    def __init__(self, data_dir: str | Path):
        """Open (create) ``data_dir/conversations.db``; a :class:`RecordsError` if it cannot."""
        self.path = ensure_data_dir(data_dir) / DB_NAME
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        self._local = threading.local()
        self._closed = False
        try:
            self._run(self._init).result()
        except sqlite3.Error as exc:  # read-only file system or database, not a database, ...
            self.close()
            raise RecordsError(f"{_where(Path(data_dir))}: cannot use {DB_NAME}: {exc}") from None

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def _init(self) -> None:
        conn = self._conn()
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(conversations)")}
        for column, kind in _ADDED_COLUMNS:  # a database written by an older version
            if column not in columns:
                try:
                    conn.execute(f"ALTER TABLE conversations ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as exc:  # another process added it just now
                    if "duplicate column" not in str(exc):
                        raise

    def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` on the store's thread (in submission order)."""
        return self._pool.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run ``fn`` on the store's thread and wait for its result (from synchronous code)."""
        return self._run(fn, *args, **kwargs).result(timeout)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn`` on the store's thread (from any event loop)."""
        import asyncio

        return await asyncio.wrap_future(self._run(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Fire and forget (ordered); errors are logged."""
        def logged(*a: Any) -> None:
            try:
                fn(*a, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a failed write must not kill the session
                from loguru import logger

                logger.error(f"Conversation records: {exc}")

        if not self._closed:
            self._run(logged, *args)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every write submitted so far is done."""
        self._run(lambda: None).result(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ writes (store thread)

    def create(self, conversation_id: str, **fields: Any) -> None:
        now = iso_now()
        row = {
            "conversation_id": conversation_id, "status": "active", "created_at": now,
            "updated_at": now, "host": socket.gethostname(), "pid": os.getpid(), **fields,
        }
        if isinstance(row.get("properties"), dict):
            row["properties"] = json.dumps(row["properties"])
        row = {k: _storable(v) for k, v in row.items()}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._conn().execute(f"INSERT INTO conversations ({cols}) VALUES ({marks})", list(row.values()))

    def end(self, conversation_id: str, shutdown_reason: str) -> bool:
        """Mark ended (once); returns whether this call ended it."""
        now = iso_now()
        cur = self._conn().execute(
            "UPDATE conversations SET status = 'ended', ended_at = ?, updated_at = ?, "
            "shutdown_reason = ? WHERE conversation_id = ? AND status = 'active'",
            (now, now, shutdown_reason, conversation_id),
        )
        return cur.rowcount > 0

    def append_transcript(self, conversation_id: str, entry: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT INTO transcript (conversation_id, role, content, timestamp, seconds_from_start, "
            "interrupted) VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, entry["role"], _storable(entry["content"]), entry.get("timestamp"),
             entry.get("seconds_from_start"), int(bool(entry.get("interrupted")))),
        )

    def add_event(self, conversation_id: str, event: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT INTO events (conversation_id, event_type, message_type, timestamp, properties) "
            "VALUES (?, ?, ?, ?, ?)",
            (conversation_id, event["event_type"], event["message_type"], event["timestamp"],
             json.dumps(event.get("properties", {}))),
        )

    def add_delivery(self, conversation_id: str, event_type: str, url: str, payload: dict) -> str:
        delivery_id = str(uuid.uuid4())
        self._conn().execute(
            "INSERT INTO deliveries (delivery_id, conversation_id, event_type, url, payload, status, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
            (delivery_id, conversation_id, event_type, url, json.dumps(payload), time.time(), iso_now()),
        )
        return delivery_id

    def delivery_attempted(self, delivery_id: str, *, ok: bool, error: str | None = None,
                           next_attempt_at: float | None = None) -> None:
        if ok:
            self._conn().execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, "
                "delivered_at = ?, last_error = NULL WHERE delivery_id = ?", (iso_now(), delivery_id))
        else:
            status = "pending" if next_attempt_at is not None else "failed"
            self._conn().execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at) WHERE delivery_id = ?",
                (status, (error or "")[:500], next_attempt_at, delivery_id))

    # ------------------------------------------------------------------ reads (store thread)

    # The oldest pending delivery of each conversation and URL: a receiver gets one
    # conversation's callbacks in order.
    _HEAD = ("status = 'pending' AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.status = 'pending' "
             "AND e.conversation_id = d.conversation_id AND e.url = d.url AND (e.created_at < d.created_at "
             "OR (e.created_at = d.created_at AND e.rowid < d.rowid)))")

    def due_deliveries(self, now: float, limit: int = 20) -> list[dict[str, Any]]:
        """Pending deliveries that are due (heads of their conversation's queue), oldest first."""
        rows = self._conn().execute(
            f"SELECT * FROM deliveries d WHERE {self._HEAD} AND next_attempt_at <= ? "
            "ORDER BY created_at, rowid LIMIT ?", (now, limit)).fetchall()
        return [dict(r) for r in rows]

    def next_due(self) -> float | None:
        """When the next delivery (a queue head) is due."""
        row = self._conn().execute(
            f"SELECT MIN(next_attempt_at) FROM deliveries d WHERE {self._HEAD}").fetchone()
        return row[0] if row else None

    def pending_count(self) -> int:
        return self._conn().execute(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        """The record of a conversation, by its id or by its Tavus replica's conversation id."""
        conn = self._conn()
        row = conn.execute(
            "SELECT * FROM conversations WHERE conversation_id = ?", (conversation_id,)).fetchone()
        if row is None:
            row = conn.execute("SELECT * FROM conversations WHERE tavus_conversation_id = ? "
                               "ORDER BY created_at DESC", (conversation_id,)).fetchone()
        return dict(row) if row else None

    def transcript(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT role, content, timestamp, seconds_from_start, interrupted FROM transcript "
            "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
        out = []
        for r in rows:
            item = {"role": r["role"], "content": r["content"], "timestamp": r["timestamp"],
                    "seconds_from_start": r["seconds_from_start"]}
            if r["interrupted"]:
                item["interrupted"] = True
            out.append(item)
        return out

    def events(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT event_type, message_type, timestamp, properties FROM events "
            "WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
        return [{"event_type": r["event_type"], "message_type": r["message_type"],
                 "timestamp": r["timestamp"], "properties": json.loads(r["properties"] or "{}")}
                for r in rows]

    def deliveries(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT delivery_id, event_type, status, attempts, last_error, delivered_at FROM deliveries "
            "WHERE conversation_id = ? ORDER BY created_at", (conversation_id,)).fetchall()
        return [dict(r) for r in rows]

    def list(self, *, status: str | None = None, limit: int = 20, page: int = 1) -> dict[str, Any]:
        where, args = "", []
        if status:
            where, args = "WHERE status = ?", [status]
        total = self._conn().execute(f"SELECT COUNT(*) FROM conversations {where}", args).fetchone()[0]
        rows = self._conn().execute(
            f"SELECT * FROM conversations {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",
            [*args, limit, (page - 1) * limit]).fetchall()
        return {"data": [self._public(dict(r)) for r in rows], "total_count": total}

    def verbose(self, conversation_id: str) -> dict[str, Any] | None:
        """Get Conversation with ``verbose=true``: the record, its transcript and its events."""
        row = self.get(conversation_id)
        if row is None:
            return None
        out = self._public(row)
        conversation_id = row["conversation_id"]  # asked for by its Tavus id, perhaps
        out["transcript"] = self.transcript(conversation_id)
        out["events"] = self.events(conversation_id)
        out["callbacks"] = self.deliveries(conversation_id)
        from conversation.policies import policy_outcomes  # completed objectives, guardrails

        out.update({k: v for k, v in policy_outcomes(out["events"]).items() if v})
        return out

    @staticmethod
    def _public(row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        row.pop("host", None)
        row.pop("pid", None)
        if row.get("properties"):
            row["properties"] = json.loads(row["properties"])
        return {k: v for k, v in row.items() if v is not None}

    # ------------------------------------------------------------------ recovery (store thread)

    def abandoned(self) -> list[dict[str, Any]]:
        """Active conversations whose process is gone."""
        rows = self._conn().execute(
            "SELECT * FROM conversations WHERE status = 'active'").fetchall()
        return [dict(r) for r in rows if not _process_alive(r["pid"], r["host"])]


# --------------------------------------------------------------------------- CLI rendering


def render_list(listing: dict[str, Any], path: Path) -> str:
    """``--list-conversations`` as a table."""
    rows = listing["data"]
    if not rows:
        return f"No conversations in {path}."
    lines = [f"{listing['total_count']} conversation(s) in {path} (newest first):", ""]
    header = ("conversation_id", "status", "created_at", "persona", "transport", "shutdown_reason")
    table = [header] + [
        (r["conversation_id"], r["status"], r["created_at"][:19].replace("T", " "),
         r.get("persona_name", ""), r.get("transport", ""), r.get("shutdown_reason", ""))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def render_conversation(record: dict[str, Any]) -> str:
    """``--show-conversation``: the verbose record, readable."""
    lines = [f"Conversation {record['conversation_id']} ({record['status']})"]
    for key in ("conversation_name", "persona_name", "persona_id", "persona_source", "replica_id",
                "tavus_conversation_id", "transport", "language", "created_at", "ended_at", "shutdown_reason", "callback_url"):
        if record.get(key):
            value = redact_url(record[key], all_query=True) if key == "callback_url" else record[key]
            lines.append(f"  {key}: {value}")  # a token in the callback URL stays hidden
    lines += ["", f"Transcript ({len(record['transcript'])} utterances):"]
    for item in record["transcript"]:
        who = "user" if item["role"] == "user" else "replica"
        mark = " (interrupted)" if item.get("interrupted") else ""
        lines.append(f"  [{item.get('seconds_from_start') or 0:7.2f}s] {who}: {item['content']}{mark}")
    lines += ["", "Events:"]
    for event in record["events"]:
        props = {k: v for k, v in event["properties"].items() if k != "transcript"}
        extra = f" ({len(event['properties']['transcript'])} transcript items)" \
            if "transcript" in event["properties"] else ""
        lines.append(f"  {event['timestamp']} {event['event_type']} {json.dumps(props)}{extra}")
    from conversation.policies import policy_outcomes, render_outcomes

    lines += render_outcomes(policy_outcomes(record["events"]))
    if record.get("callbacks"):
        lines += ["", "Callbacks:"]
        for cb in record["callbacks"]:
            state = cb["status"] + (f" after {cb['attempts']} attempt(s)" if cb["attempts"] else "")
            err = f" (last error: {cb['last_error']})" if cb.get("last_error") else ""
            lines.append(f"  {cb['event_type']}: {state}{err} [{cb['delivery_id']}]")
    return "\n".join(lines)
