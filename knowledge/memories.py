"""Memories per ``memory_stores`` tag: extracted at the end of a conversation, recalled at
the start of the next one with the same tag.

- **Durable extraction.** When a conversation with ``memory_stores`` opens, a
  ``memory_jobs`` row is written (pending). When it ends, its transcript is given to the
  conversation's own LLM under a JSON schema (``{"facts": [...]}``: so even the embedded
  SmolLM2 answers the shape, sampled under a grammar) off the audio path, and each new
  fact is stored under every tag. A bot killed before that leaves the job pending: the
  next conversation to start (any persona, same data directory) claims it and extracts
  from the recorded transcript. A job is claimed by one process at a time (its pid) and
  tried at most :data:`MAX_ATTEMPTS` times.
- **Budgeted recall.** At the start, the newest facts of the conversation's tags, at most
  :data:`RECALL_FACTS` and :data:`RECALL_CHARS`, read within ``MEMORY_RECALL_SECS``
  (default 1 s); past that the conversation starts with none (logged) — recall can never
  hold up a reply (cf. pipecat#1741, where a memory service blocked replies for 10 s).
- **Privacy.** ``python -m knowledge memories list|delete TAG`` and ``forget USER``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import Any

from loguru import logger

from conversation.records import _process_alive, iso_now
from knowledge.store import KnowledgeStore

MAX_ATTEMPTS = 3
MAX_FACTS = 8
FACT_CHARS = 200
RECALL_FACTS = 20
RECALL_CHARS = 1500
TRANSCRIPT_CHARS = 6000
TRANSCRIPT_CHARS_LOCAL = 2400  # the embedded model's 4k-token window also holds the schema

SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "maxItems": MAX_FACTS,
                             "items": {"type": "string", "maxLength": FACT_CHARS}}},
    "required": ["facts"],
}
INSTRUCTION = (
    "You keep notes about the user for future conversations. From the conversation below, "
    "list short facts the user said about themselves (name, preferences, situation, plans, "
    "what they asked for). Only what the user said, one fact per item, in the third person "
    "('The user ...'). No facts about the assistant. An empty list if there is nothing new."
)


def tags_of(conversation: Any) -> list[str]:
    return [t for t in dict.fromkeys(getattr(conversation, "memory_stores", []) or []) if t.strip()]


# --------------------------------------------------------------------------- store side

def open_job(store: KnowledgeStore, conversation_id: str, tags: list[str], persona: str = ""
             ) -> None:
    """``persona``: which persona (its source) had the conversation; a job left pending is
    only ever extracted by a conversation of the same persona, so its transcript goes to
    no other LLM provider than the one it was said to."""
    now = iso_now()
    store.conn().execute(
        "INSERT OR IGNORE INTO memory_jobs (conversation_id, tags, status, created_at, updated_at, "
        "host, pid, persona) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?)",
        (conversation_id, json.dumps(tags), now, now, socket.gethostname(), os.getpid(), persona))


def claim_job(store: KnowledgeStore, conversation_id: str) -> list[str] | None:
    """Take the job (its tags) if it is pending, or left running by a dead process."""
    conn = store.conn()
    row = conn.execute("SELECT * FROM memory_jobs WHERE conversation_id = ?",
                       (conversation_id,)).fetchone()
    if row is None or row["status"] == "done" or row["attempts"] >= MAX_ATTEMPTS:
        return None
    if row["status"] == "running" and _process_alive(row["pid"], row["host"]):
        return None  # being extracted now (by this process or another)
    cur = conn.execute(
        "UPDATE memory_jobs SET status = 'running', attempts = attempts + 1, host = ?, pid = ?, "
        "updated_at = ? WHERE conversation_id = ? AND status = ? AND attempts = ?",
        (socket.gethostname(), os.getpid(), iso_now(), conversation_id, row["status"],
         row["attempts"]))
    return json.loads(row["tags"]) if cur.rowcount else None


def finish_job(store: KnowledgeStore, conversation_id: str, error: str | None = None) -> None:
    status = "done" if error is None else "pending"
    store.conn().execute("UPDATE memory_jobs SET status = ?, last_error = ?, updated_at = ? "
                         "WHERE conversation_id = ? AND coalesce(last_error, '') != ?",
                         (status, error, iso_now(), conversation_id, DELETED))


def orphaned_jobs(store: KnowledgeStore, live: set[str], persona: str = "") -> list[str]:
    """Jobs of ended conversations (or of dead processes) of ``persona`` not done yet,
    oldest first."""
    rows = store.conn().execute(
        "SELECT j.conversation_id, j.status, j.host, j.pid, c.status AS cstatus FROM memory_jobs j "
        "LEFT JOIN conversations c ON c.conversation_id = j.conversation_id "
        "WHERE j.status != 'done' AND j.attempts < ? AND coalesce(j.persona, '') = ? "
        "ORDER BY j.created_at", (MAX_ATTEMPTS, persona)).fetchall()
    out = []
    for r in rows:
        if r["conversation_id"] in live:
            continue
        if r["cstatus"] == "ended" or not _process_alive(r["pid"], r["host"]):
            out.append(r["conversation_id"])
    return out


def add_facts(store: KnowledgeStore, tags: list[str], facts: list[str], conversation_id: str
              ) -> int:
    """Store new facts under each tag, unless the tag's memories were deleted while they
    were being extracted (the job is then marked so; checked in the same transaction)."""
    from knowledge.store import _transaction

    conn = store.conn()
    added = 0
    with _transaction(conn):
        job = conn.execute("SELECT last_error FROM memory_jobs WHERE conversation_id = ?",
                           (conversation_id,)).fetchone()
        if job is not None and job[0] == DELETED:
            return 0
        added = _insert_facts(conn, tags, facts, conversation_id)
    return added


DELETED = "memories deleted"


def _insert_facts(conn, tags: list[str], facts: list[str], conversation_id: str) -> int:
    added = 0
    for tag in tags:
        known = {_norm(r[0]) for r in conn.execute("SELECT fact FROM memories WHERE tag = ?", (tag,))}
        for fact in facts:
            if _norm(fact) and _norm(fact) not in known:
                known.add(_norm(fact))
                conn.execute("INSERT INTO memories (tag, fact, conversation_id, created_at) "
                             "VALUES (?, ?, ?, ?)", (tag, fact, conversation_id, iso_now()))
                added += 1
    return added


def _norm(text: str) -> str:
    return " ".join(text.lower().strip(" .").split())


def recall_now(store: KnowledgeStore, tags: list[str]) -> list[dict[str, Any]]:
    """The newest facts of ``tags`` within the recall budget (newest first)."""
    if not tags:
        return []
    marks = ", ".join("?" * len(tags))
    rows = store.conn().execute(
        f"SELECT memory_id, tag, fact, created_at FROM memories WHERE tag IN ({marks}) "
        f"ORDER BY memory_id DESC LIMIT ?", (*tags, RECALL_FACTS * 3)).fetchall()
    out, seen, size = [], set(), 0
    for r in rows:
        if _norm(r["fact"]) in seen:
            continue
        if len(out) >= RECALL_FACTS or size + len(r["fact"]) > RECALL_CHARS:
            break
        seen.add(_norm(r["fact"]))
        size += len(r["fact"])
        out.append(dict(r))
    return out


def list_memories(store: KnowledgeStore, tag: str) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn().execute(
        "SELECT memory_id, tag, fact, conversation_id, created_at FROM memories WHERE tag = ? "
        "ORDER BY memory_id", (tag,))]


def delete_memories(store: KnowledgeStore, tag: str, memory_id: int | None = None) -> int:
    from knowledge.store import _transaction

    conn = store.conn()
    if memory_id is not None:
        return conn.execute("DELETE FROM memories WHERE tag = ? AND memory_id = ?",
                            (tag, memory_id)).rowcount
    with _transaction(conn):  # an extraction's add_facts cannot slip in between
        gone = conn.execute("DELETE FROM memories WHERE tag = ?", (tag,)).rowcount
        _drop_jobs(store, lambda tags: tag in tags)
    return gone


def user_tags(store: KnowledgeStore, user: str) -> list[str]:
    """The tags that may belong to ``user``: the tag itself, or ``user`` then ``-``/``_``/``:``
    then the rest (Tavus's advice: ``anna-p123``, ``anna_p456``); tags are case-sensitive. Another
    user's tag can match too (``anna-maria``): the command line shows them and deletes only
    with ``--yes``."""
    user = user.strip()
    tags = [r[0] for r in store.conn().execute("SELECT DISTINCT tag FROM memories")]
    return [t for t in tags if t == user or any(t.startswith(user + sep) for sep in "-_:")]


def forget_user(store: KnowledgeStore, user: str, tags: list[str] | None = None
                ) -> tuple[list[str], int]:
    """Delete every memory under the user's tags (those given, else :func:`user_tags`) and
    their pending extractions."""
    tags = user_tags(store, user) if tags is None else tags
    gone = sum(delete_memories(store, tag) for tag in tags)
    return tags, gone


def _drop_jobs(store: KnowledgeStore, matches) -> None:
    """Pending extractions for deleted tags would re-create what was just deleted."""
    conn = store.conn()
    for r in conn.execute("SELECT conversation_id, tags FROM memory_jobs WHERE status != 'done'"
                          ).fetchall():
        tags = json.loads(r["tags"])
        if matches(tags):
            conn.execute("UPDATE memory_jobs SET status = 'done', last_error = ? "
                         "WHERE conversation_id = ?", (DELETED, r["conversation_id"]))


def transcript_text(rows: list[dict[str, Any]], limit: int) -> str:
    lines = []
    for row in rows:
        if row["role"] not in ("user", "assistant"):
            continue
        who = "User" if row["role"] == "user" else "Assistant"
        lines.append(f"{who}: {' '.join(str(row['content']).split())}")
    text = "\n".join(lines)
    return text[-limit:]


# --------------------------------------------------------------------------- the LLM side

async def extract(llm: Any, store: KnowledgeStore, records: Any, conversation_id: str) -> int | None:
    """Extract and store the facts of one conversation (a claimed job); the number added,
    None when there was nothing to do or the extraction failed (the job stays pending)."""
    from services.structured import is_local, json_completion

    tags = await asyncio.to_thread(claim_job, store, conversation_id)
    if not tags:
        return None
    try:
        rows = await records.call(records.transcript, conversation_id)
        limit = TRANSCRIPT_CHARS_LOCAL if is_local(llm) else TRANSCRIPT_CHARS
        text = transcript_text(rows, limit)
        if "User:" not in text:
            await asyncio.to_thread(finish_job, store, conversation_id)
            return 0
        answer = await json_completion(
            llm, [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}],
            SCHEMA, name="user_memories", timeout_secs=60, max_tokens=300,
            what=f"Memories of conversation {conversation_id}")
        if answer is None:
            await asyncio.to_thread(finish_job, store, conversation_id, "no answer")
            return None
        facts = [" ".join(str(f).split())[:FACT_CHARS] for f in answer.get("facts") or []
                 if isinstance(f, str | int | float)][:MAX_FACTS]
        added = await asyncio.to_thread(add_facts, store, tags, [f for f in facts if f],
                                        conversation_id)
        await asyncio.to_thread(finish_job, store, conversation_id)
        logger.info(f"Memories: {added} new fact(s) from {conversation_id} under {', '.join(tags)}")
        return added
    except Exception as exc:  # noqa: BLE001 - memories never take anything down
        from config.logging import scrub

        await asyncio.to_thread(finish_job, store, conversation_id, scrub(str(exc))[:200])
        logger.warning(f"Memories of {conversation_id}: {scrub(str(exc))}")
        return None


def recall_message(facts: list[dict[str, Any]]) -> str | None:
    if not facts:
        return None
    lines = "\n".join(f"- {f['fact']}" for f in reversed(facts))
    return ("What you remember about this user from earlier conversations (use it naturally, "
            f"do not recite it):\n{lines}")
