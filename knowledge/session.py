"""What one conversation takes from the knowledge base and memories, and gives back.

:func:`open_for_conversation` (the session's start, after its services are ready): the
documents in scope (persona's + conversation's ``document_ids`` / ``document_tags``), the
embedder warmed when any needs it, the memories of ``memory_stores`` recalled within
``MEMORY_RECALL_SECS``, the conversation's memory job opened, and extraction started for
jobs earlier conversations left pending. :meth:`ConversationKnowledge.close` (the end):
this conversation's memories extracted, within a bound; past it the job stays pending for
the next start. None of this runs on the audio path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from knowledge import memories as mem

RECALL_SECS = 1.0
EXTRACT_WAIT_SECS = 45.0
_background: set[asyncio.Task] = set()
_live_conversations: set[str] = set()
_caught_up: set[str] = set()


@dataclass
class ConversationKnowledge:
    conversation_id: str
    store: Any
    retriever: Any | None = None
    memory_tags: list[str] = field(default_factory=list)
    recalled: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    catch_up_at_end: bool = False  # extract what a killed bot left, after this conversation
    persona: str = ""  # persona_key(): jobs are extracted by conversations of their persona

    @property
    def memories_text(self) -> str | None:
        return mem.recall_message(self.recalled)

    @property
    def active(self) -> bool:
        return self.retriever is not None or bool(self.memory_tags)

    async def close(self, llm: Any, records: Any) -> None:
        """The conversation ended: extract its memories (bounded wait), and on the embedded
        model what earlier conversations left pending (in the background)."""
        _live_conversations.discard(self.conversation_id)
        if llm is None or records is None:
            return
        if self.catch_up_at_end:
            self.catch_up_at_end = False
            _spawn(_catch_up(llm, self.store, records, records.path.parent, self.persona))
        if not self.memory_tags:
            return
        task = _spawn(mem.extract(llm, self.store, records, self.conversation_id))
        try:
            await asyncio.wait_for(asyncio.shield(task), EXTRACT_WAIT_SECS)
        except TimeoutError:
            logger.warning(f"Memories of {self.conversation_id}: still extracting after "
                           f"{EXTRACT_WAIT_SECS:g}s; finished in the background, or on the next start")


def _spawn(coro) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def scope_of(app: Any) -> tuple[list[str], list[str]]:
    persona, conversation = app.persona, app.conversation
    ids = [*persona.document_ids, *(conversation.document_ids if conversation else [])]
    tags = [*persona.document_tags, *(conversation.document_tags if conversation else [])]
    return list(dict.fromkeys(ids)), list(dict.fromkeys(tags))


def wants_knowledge(app: Any) -> bool:
    ids, tags = scope_of(app)
    return bool(ids or tags or mem.tags_of(app.conversation))


async def open_for_conversation(app: Any, conversation_id: str, *, llm: Any = None,
                                records: Any = None, recall_secs: float = RECALL_SECS
                                ) -> ConversationKnowledge | None:
    """The conversation's knowledge (None when it uses neither documents nor memories)."""
    from knowledge.store import KnowledgeStore
    from services.structured import is_local

    # A killed bot's memories, once per process (and persona) on its next start. The embedded llama.cpp
    # server answers one request at a time, so there it waits for the conversation's end
    # (an extraction must never delay a reply).
    key = f"{app.settings.data_dir}|{persona_key(app)}"
    catch_up = llm is not None and records is not None and key not in _caught_up
    if catch_up:
        _caught_up.add(key)
    deferred = catch_up and is_local(llm)
    if not wants_knowledge(app):
        if catch_up and not deferred:
            _spawn(_catch_up(llm, None, records, app.settings.data_dir, persona_key(app)))
        if deferred:
            return ConversationKnowledge(conversation_id, None, catch_up_at_end=True,
                                         persona=persona_key(app))
        return None
    store = await asyncio.to_thread(KnowledgeStore.shared, app.settings.data_dir)
    ids, tags = scope_of(app)
    result = ConversationKnowledge(conversation_id, store)
    if ids or tags:
        try:
            await _open_documents(app, store, ids, tags, result)
        except Exception as exc:  # noqa: BLE001 - a broken index never stops a conversation
            result.retriever = None
            logger.error(f"Knowledge base: cannot be searched ({type(exc).__name__}: {exc}); "
                         "this conversation goes on without it")
    memory_tags = mem.tags_of(app.conversation)
    if memory_tags:
        result.memory_tags = memory_tags
        try:
            result.recalled = await asyncio.wait_for(
                asyncio.to_thread(mem.recall_now, store, memory_tags), recall_secs)
        except TimeoutError:
            logger.warning(f"Memories: recall took longer than {recall_secs:g}s; this "
                           "conversation starts without them")
        except Exception as exc:  # noqa: BLE001 - never stops a conversation starting
            logger.warning(f"Memories: recall failed ({exc})")
        await asyncio.to_thread(mem.open_job, store, conversation_id, memory_tags,
                                persona_key(app))
        _live_conversations.add(conversation_id)
        logger.info(f"Memories: {len(result.recalled)} recalled from {', '.join(memory_tags)}")
    if catch_up and not deferred:
        _spawn(_catch_up(llm, store, records, persona=persona_key(app)))
    result.catch_up_at_end = deferred
    result.persona = persona_key(app)
    return result


async def _open_documents(app: Any, store: Any, ids: list[str], tags: list[str],
                          result: ConversationKnowledge) -> None:
    from knowledge.retrieval import Retriever

    documents, problems = await asyncio.to_thread(store.scope, ids, tags)
    result.problems = problems
    for problem in problems:
        logger.warning(f"Knowledge base: {problem}")
    if documents:
        strategy = app.conversation.document_retrieval_strategy if app.conversation else "balanced"
        result.retriever = Retriever(store, documents, strategy)
        if strategy != "speed":
            from knowledge import embeddings

            await asyncio.to_thread(embeddings.warm)
        # The scope's vectors into the cache now, not on the first question.
        await result.retriever.search("warm up")
        logger.info(f"Knowledge base: {len(documents)} document(s), strategy {strategy}")
    elif tags and not ids:
        logger.warning(f"Knowledge base: no ready document has the tags {', '.join(tags)}")


def persona_key(app: Any) -> str:
    """Which persona a conversation had (where it was loaded from, and its name)."""
    return f"{app.persona_source}:{app.persona.display_name}"


async def _catch_up(llm: Any, store: Any, records: Any, data_dir: Any = None,
                    persona: str = "") -> None:
    """Extract what this persona's conversations that ended without it (a killed bot) left
    pending."""
    try:
        if store is None:
            from knowledge.store import KnowledgeStore

            store = await asyncio.to_thread(KnowledgeStore.shared, data_dir)
        pending = await asyncio.to_thread(mem.orphaned_jobs, store, set(_live_conversations),
                                          persona)
        for conversation_id in pending:
            await mem.extract(llm, store, records, conversation_id)
    except Exception as exc:  # noqa: BLE001
        logger.warning(f"Memories: catching up failed ({exc})")


def describe_knowledge(app: Any, warnings: list[str] | None = None) -> list[str]:
    """``--check``'s lines: the documents in scope, the strategy, the memory tags (read-only:
    ``--check`` writes nothing, so the database is opened read-only and never created).
    Documents that will not be searched are added to ``warnings`` too."""
    warnings = [] if warnings is None else warnings
    import json
    import sqlite3

    from conversation.records import DB_NAME

    ids, tags = scope_of(app)
    memory_tags = mem.tags_of(app.conversation)
    if not (ids or tags or memory_tags):
        return ["  none (document_ids / document_tags / memory_stores unset)"]
    lines = []
    path = app.settings.data_dir / DB_NAME
    rows: dict[str, dict] = {}
    counts: dict[str, int] = {}
    if path.exists():
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            conn.row_factory = sqlite3.Row
            rows = {r["document_id"]: dict(r) for r in conn.execute(
                "SELECT document_id, document_name, status, tags, chunk_count FROM documents")}
            if memory_tags:
                marks = ", ".join("?" * len(memory_tags))
                counts = dict(conn.execute(f"SELECT tag, count(*) FROM memories WHERE tag IN "
                                           f"({marks}) GROUP BY tag", memory_tags).fetchall())
            conn.close()
        except sqlite3.Error:
            pass  # no knowledge tables yet
    if ids or tags:
        strategy = app.conversation.document_retrieval_strategy if app.conversation else "balanced"
        lines.append(f"  retrieval strategy: {strategy}")
        for document_id in ids:
            row = rows.get(document_id)
            lines.append(f"  {document_id}: " + (
                f"{row['document_name']} ({row['status']}, {row['chunk_count']} chunks)" if row
                else "not in the local knowledge base (python -m knowledge add PATH_OR_URL)"))
            if row is None or (row["status"] not in ("ready", "recrawling")
                               and not row["chunk_count"]):
                warnings.append(f"document {document_id} "
                                + ("is not in the local knowledge base" if row is None
                                   else f"is {row['status']}") + ": it is not searched")
        for tag in tags:
            tagged = [r for r in rows.values() if tag in json.loads(r["tags"] or "[]")]
            ready = sum(1 for r in tagged if r["status"] == "ready")
            lines.append(f"  tag {tag}: {len(tagged)} document(s), {ready} ready")
    for tag in memory_tags:
        lines.append(f"  memories {tag}: {counts.get(tag, 0)} stored")
    return lines
