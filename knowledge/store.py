"""The knowledge base's tables in the records database (``PERSONA_DATA_DIR/conversations.db``).

- ``documents``: Tavus's Document object (status, progress, tags, crawl config, ...), the
  ``generation`` of its current chunks, and the process that is processing it;
- ``chunks``: a document's text in retrieval chunks (source, order), each with its dense
  vector (float32 BLOB, :mod:`knowledge.embeddings`); ``chunks_fts``: the same text in an
  FTS5 table (porter stemming) for BM25, its rowid the chunk's id;
- ``memories`` and ``memory_jobs``: see :mod:`knowledge.memories`.

A (re)processed document's chunks are written in batches under a new generation, which one
short transaction then makes the document's current one (marking it ready); searches read
only a document's current generation, so a conversation searching meanwhile sees the old
chunks or the new, never a mix or none; the old generation is deleted afterwards.

Connections are per thread (WAL: readers never wait for the writer). This Python's
sqlite3 cannot load extensions, so vectors are searched with numpy: the scoped documents'
matrices are loaded once per generation and kept in a process-wide cache.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from conversation.records import DB_NAME, _process_alive, ensure_data_dir, iso_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    document_name TEXT,
    document_url TEXT NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER,
    error_code TEXT,
    error_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    callback_url TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    crawl_config TEXT,
    crawled_urls TEXT,
    last_crawled_at TEXT,
    crawl_count INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    file_format TEXT,
    host TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    source TEXT,
    text TEXT NOT NULL,
    vector BLOB
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id, generation, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, document_id UNINDEXED, generation UNINDEXED, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS memories (
    memory_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tag TEXT NOT NULL,
    fact TEXT NOT NULL,
    conversation_id TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_tag ON memories(tag, memory_id);
CREATE TABLE IF NOT EXISTS memory_jobs (
    conversation_id TEXT PRIMARY KEY,
    tags TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    host TEXT,
    pid INTEGER,
    last_error TEXT,
    persona TEXT
);
"""

#: What the Document object shows (Tavus's fields, plus ``error_code`` and our counts).
PUBLIC = ("document_id", "document_name", "document_url", "status", "progress", "error_message",
          "error_code", "created_at", "updated_at", "callback_url", "tags", "crawl_config",
          "crawled_urls", "last_crawled_at", "crawl_count", "chunk_count", "file_format")
BUSY = ("started", "processing", "recrawling")
SEARCHABLE = ("ready", "recrawling")  # a recrawling document serves its old chunks meanwhile
_JSON_COLUMNS = ("tags", "crawl_config", "crawled_urls")
BATCH = 500  # chunks written per transaction (the records share this database)
STRATEGIES = ("speed", "balanced", "quality")
INTERRUPTED = "processing was interrupted (the process handling it ended); add it again or recrawl"
_STOP = frozenset(["a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "do", "does", "did", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "so", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your"])
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 8  # the longest (usually rarest) content words: BM25 over 100k chunks stays fast


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk (``text`` may include its neighbours, strategy ``quality``)."""

    chunk_id: int
    document_id: str
    document_name: str
    source: str
    text: str
    score: float


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression for free text: its content words, quoted, OR'd."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]
    words = sorted(dict.fromkeys(words), key=len, reverse=True)[:MAX_TERMS]  # rarer first
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


class KnowledgeStore:
    """Documents, chunks, vectors and memories in ``data_dir/conversations.db``."""

    _shared: ClassVar[dict[Path, KnowledgeStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, data_dir: str | Path):
        self.path = ensure_data_dir(data_dir) / DB_NAME
        self._local = threading.local()
        conn = self.conn()
        conn.executescript(SCHEMA)
        jobs = {r[1] for r in conn.execute("PRAGMA table_info(memory_jobs)")}
        if "persona" not in jobs:  # a database from before jobs named their persona
            try:
                conn.execute("ALTER TABLE memory_jobs ADD COLUMN persona TEXT")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise
        columns = {r[1] for r in conn.execute("PRAGMA table_info(chunks_fts)")}
        if "generation" not in columns:  # an index from before generations: rebuilt once
            with _transaction(conn):
                conn.execute("DROP TABLE chunks_fts")
                conn.execute("CREATE VIRTUAL TABLE chunks_fts USING fts5(text, document_id "
                             "UNINDEXED, generation UNINDEXED, tokenize='porter unicode61')")
                conn.execute("INSERT INTO chunks_fts (rowid, text, document_id, generation) "
                             "SELECT chunk_id, text, document_id, generation FROM chunks")

    @classmethod
    def shared(cls, data_dir: str | Path) -> KnowledgeStore:
        """The process's store of ``data_dir`` (conversations share it and its per-thread
        connections, rather than opening new ones each)."""
        key = Path(data_dir).resolve()
        with cls._shared_lock:
            store = cls._shared.get(key)
            if store is None:
                store = cls._shared[key] = cls(data_dir)
            return store

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    # ------------------------------------------------------------------ documents

    @staticmethod
    def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
        """The JSON columns (tags, crawl config, crawled URLs) as stored."""
        return {k: json.dumps(v) if k in _JSON_COLUMNS and v is not None and not isinstance(v, str)
                else v for k, v in fields.items()}

    def insert_document(self, row: dict[str, Any]) -> None:
        now = iso_now()
        row = self._encoded({"created_at": now, "updated_at": now, "host": socket.gethostname(),
                             "pid": os.getpid(), **row})
        cols = ", ".join(row)
        self.conn().execute(f"INSERT INTO documents ({cols}) VALUES ({', '.join('?' * len(row))})",
                            list(row.values()))

    def update_document(self, document_id: str, **fields: Any) -> int:
        """Set ``fields`` (and ``updated_at``); how many rows changed (0: no such document)."""
        fields = self._encoded({**fields, "updated_at": iso_now()})
        sets = ", ".join(f"{k} = ?" for k in fields)
        return self.conn().execute(f"UPDATE documents SET {sets} WHERE document_id = ?",
                                   [*fields.values(), document_id]).rowcount

    def _row(self, document_id: str) -> dict[str, Any] | None:
        row = self.conn().execute("SELECT * FROM documents WHERE document_id = ?",
                                  (document_id,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def public(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row.get(k) for k in PUBLIC}
        out["tags"] = json.loads(row.get("tags") or "[]")
        for key in ("crawl_config", "crawled_urls"):
            out[key] = json.loads(row[key]) if row.get(key) else None
        return out

    def get(self, document_id: str) -> dict[str, Any] | None:
        """The Document object (one left processing by a dead process shows as the error it
        is; :func:`knowledge.documents.recover_documents` records that and sends its callback)."""
        row = self._row(document_id)
        if row is None:
            return None
        return self._shown(row)

    def _shown(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.abandoned(row):
            row = {**row, "status": "error", "error_code": "contact_support",
                   "error_message": INTERRUPTED, "progress": None}
        return self.public(row)

    @staticmethod
    def abandoned(row: dict[str, Any]) -> bool:
        return row["status"] in BUSY and not _process_alive(row.get("pid"), row.get("host"))

    def busy(self, document_id: str) -> bool:
        """Being processed by a live process."""
        row = self._row(document_id)
        return bool(row) and row["status"] in BUSY and not self.abandoned(row)

    def claim_if(self, document_id: str, status: str, allowed: tuple[str, ...], **fields: Any
                 ) -> bool:
        """Atomically: the document becomes ``status`` (this process's) if it is one of
        ``allowed`` (or left busy by a dead process); whether it did."""
        conn = self.conn()
        with _transaction(conn):
            row = self._row(document_id)
            if row is None or not (row["status"] in allowed or self.abandoned(row)):
                return False
            self.update_document(document_id, status=status, progress=0,
                                 host=socket.gethostname(), pid=os.getpid(), error_code=None,
                                 error_message=None, **fields)
            return True

    def list(self, *, limit: int = 20, page: int = 0, status: str | None = None,
             tags: list[str] | None = None, name_or_uuid: str | None = None,
             sort: str = "descending") -> dict[str, Any]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if name_or_uuid:
            where.append("(document_id = ? OR document_name LIKE ?)")
            args += [name_or_uuid, f"%{name_or_uuid}%"]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ASC" if sort == "ascending" else "DESC"
        rows = [dict(r) for r in self.conn().execute(
            f"SELECT * FROM documents {clause} ORDER BY created_at {order}, document_id", args)]
        if tags:
            rows = [r for r in rows if set(json.loads(r["tags"] or "[]")) & set(tags)]
        total = len(rows)
        chosen = rows[page * limit:(page + 1) * limit]
        return {"data": [self._shown(r) for r in chosen], "total_count": total,
                "page": page, "limit": limit}

    def delete(self, document_id: str) -> bool:
        conn = self.conn()
        with _transaction(conn):
            gone = conn.execute("DELETE FROM documents WHERE document_id = ?",
                                (document_id,)).rowcount
        self._drop_generations(document_id, None, keep=-1)  # every generation, in batches
        _VECTORS.forget(self.path, document_id)
        return gone > 0

    def count_crawls(self, *, busy_only: bool = False) -> int:
        rows = self.conn().execute(
            "SELECT status, host, pid FROM documents WHERE crawl_config IS NOT NULL").fetchall()
        if not busy_only:
            return len(rows)
        return sum(1 for r in rows if r["status"] in BUSY and _process_alive(r["pid"], r["host"]))

    def replace_chunks(self, document_id: str, chunks: list[tuple[str, str]],
                       vectors: np.ndarray, **fields: Any) -> int:
        """The document's chunks (``(text, source)``) and vectors become these, and its row
        gets ``fields`` (status ready ...); the new generation. A :class:`LookupError` if the
        document was deleted meanwhile (what was written is removed)."""
        conn = self.conn()
        row = conn.execute("SELECT generation FROM documents WHERE document_id = ?",
                           (document_id,)).fetchone()
        if row is None:
            raise LookupError(document_id)
        highest = conn.execute("SELECT max(generation) FROM chunks WHERE document_id = ?",
                               (document_id,)).fetchone()[0]
        generation = max(row[0], highest or 0) + 1  # above any a killed run left behind
        items = list(zip(chunks, vectors, strict=True))
        for start in range(0, len(items), BATCH):
            with _transaction(conn):
                for seq, ((text, source), vector) in enumerate(items[start:start + BATCH], start):
                    cur = conn.execute(
                        "INSERT INTO chunks (document_id, generation, seq, source, text, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (document_id, generation, seq, source, text,
                         np.asarray(vector, dtype=np.float32).tobytes()))
                    conn.execute("INSERT INTO chunks_fts (rowid, text, document_id, generation) "
                                 "VALUES (?, ?, ?, ?)", (cur.lastrowid, text, document_id, generation))
        with _transaction(conn):
            switched = self.update_document(document_id, generation=generation,
                                            chunk_count=len(chunks), **fields)
        if not switched:  # deleted while it was processed: what was written goes too
            self._drop_generations(document_id, generation)
            raise LookupError(document_id)
        self._drop_generations(document_id, None, keep=generation)
        return generation

    def _drop_generations(self, document_id: str, only: int | None, keep: int | None = None
                          ) -> None:
        """Delete a document's chunks of generation ``only`` (or of every generation but
        ``keep``), in batches."""
        conn = self.conn()
        where = "generation = ?" if only is not None else "generation != ?"
        value = only if only is not None else keep
        while True:
            with _transaction(conn):
                ids = [r[0] for r in conn.execute(
                    f"SELECT chunk_id FROM chunks WHERE document_id = ? AND {where} LIMIT ?",
                    (document_id, value, BATCH * 4))]
                if not ids:
                    return
                marks = ", ".join("?" * len(ids))
                conn.execute(f"DELETE FROM chunks_fts WHERE rowid IN ({marks})", ids)
                conn.execute(f"DELETE FROM chunks WHERE chunk_id IN ({marks})", ids)

    def current(self, document_ids: list[str]) -> dict[str, dict]:
        """The searchable rows of these documents now (a recrawl may have moved them on)."""
        if not document_ids:
            return {}
        marks = ", ".join("?" * len(document_ids))
        rows = self.conn().execute(
            f"SELECT document_id, document_name, status, generation, tags FROM documents "
            f"WHERE document_id IN ({marks})", document_ids).fetchall()
        return {r["document_id"]: dict(r) for r in rows if self.searchable(dict(r))}

    @staticmethod
    def searchable(row: dict[str, Any]) -> bool:
        """Ready or recrawling, or failed with an earlier generation (a failed recrawl keeps
        serving what it had)."""
        return row["status"] in SEARCHABLE or (row["status"] == "error"
                                               and int(row.get("generation") or 0) > 0)

    # ------------------------------------------------------------------ scope and search

    def scope(self, document_ids: list[str], tags: list[str]) -> tuple[dict[str, dict], list[str]]:
        """The ready (or recrawling) documents of ``document_ids`` plus those with any of ``tags``
        (``{id: row}``), and a line for each id that cannot be used."""
        problems: list[str] = []
        chosen: dict[str, dict] = {}
        rows = {r["document_id"]: dict(r) for r in self.conn().execute("SELECT * FROM documents")}
        for document_id in dict.fromkeys(document_ids):
            row = rows.get(document_id)
            if row is None:
                problems.append(f"document {document_id} is not in the local knowledge base "
                                f"(add it: python -m knowledge add PATH_OR_URL)")
            elif not self.searchable(row):
                problems.append(f"document {document_id} is {row['status']}, not ready: "
                                "it is not searched")
            else:
                if row["status"] == "error":
                    problems.append(f"document {document_id}: its last recrawl failed "
                                    f"({row['error_code']}); its previous content is searched")
                chosen[document_id] = row
        wanted = set(tags)
        if wanted:
            for row in rows.values():
                if set(json.loads(row["tags"] or "[]")) & wanted and self.searchable(row):
                    chosen.setdefault(row["document_id"], row)
        return chosen, problems

    def bm25(self, query: str, generations: dict[str, dict], k: int) -> list[tuple[int, float]]:
        """The best ``k`` chunks by BM25 among ``generations`` (rows of :meth:`current`)."""
        expression = fts_query(query)
        if expression is None or not generations:
            return []
        marks = ", ".join("?" * len(generations))
        try:  # FTS5's own rank (BM25) sorts faster than bm25(); other generations filtered after
            rows = self.conn().execute(
                f"SELECT rowid, rank, document_id, generation FROM chunks_fts WHERE chunks_fts "
                f"MATCH ? AND document_id IN ({marks}) ORDER BY rank LIMIT ?",
                (expression, *generations, k * 2 + 10)).fetchall()
        except sqlite3.OperationalError:
            return []
        rows = [r for r in rows if generations[r[2]]["generation"] == r[3]][:k]
        return [(r[0], -float(r[1])) for r in rows]

    def dense(self, vector: np.ndarray, documents: dict[str, dict], k: int
              ) -> list[tuple[int, float]]:
        ids, matrix = _VECTORS.matrix(self, documents)
        if len(ids) == 0:
            return []
        scores = matrix @ vector
        top = min(k, len(ids))
        best = np.argpartition(-scores, top - 1)[:top]
        best = best[np.argsort(-scores[best])]
        return [(int(ids[i]), float(scores[i])) for i in best]

    def chunks_by_id(self, chunk_ids: list[int]) -> dict[int, dict[str, Any]]:
        if not chunk_ids:
            return {}
        marks = ", ".join("?" * len(chunk_ids))
        rows = self.conn().execute(
            f"SELECT chunk_id, document_id, generation, seq, source, text FROM chunks "
            f"WHERE chunk_id IN ({marks})", chunk_ids).fetchall()
        return {r["chunk_id"]: dict(r) for r in rows}

    def neighbours(self, chunk: dict[str, Any]) -> tuple[str, str]:
        """The text of the chunks before and after ``chunk`` (same source), or ''."""
        rows = self.conn().execute(
            "SELECT seq, source, text FROM chunks WHERE document_id = ? AND generation = ? "
            "AND seq IN (?, ?)", (chunk["document_id"], chunk["generation"], chunk["seq"] - 1,
                                  chunk["seq"] + 1)).fetchall()
        by_seq = {r["seq"]: r for r in rows if r["source"] == chunk["source"]}
        before = by_seq.get(chunk["seq"] - 1)
        after = by_seq.get(chunk["seq"] + 1)
        return (before["text"] if before else "", after["text"] if after else "")


class _VectorCache:
    """The dense matrices of documents, per (database, document, generation), shared by
    every conversation of the process; an entry goes when its document is regenerated or
    deleted, so the cache never holds more than the store's current vectors."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple[Path, str], tuple[int, np.ndarray, np.ndarray]] = {}
        self._joined: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def forget(self, path: Path, document_id: str) -> None:
        with self._lock:
            self._entries.pop((path, document_id), None)
            self._joined = {key: v for key, v in self._joined.items()
                            if not (key[0] == path and any(d == document_id for d, _g in key[1]))}

    def _document(self, store: KnowledgeStore, document_id: str, generation: int):
        key = (store.path, document_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == generation:
            return entry[1], entry[2]
        rows = store.conn().execute(
            "SELECT chunk_id, vector FROM chunks WHERE document_id = ? AND generation = ? "
            "ORDER BY seq", (document_id, generation)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(
            len(rows), -1) if rows else np.zeros((0, 384), dtype=np.float32))
        with self._lock:
            self._entries[key] = (generation, ids, matrix)
        return ids, matrix

    def matrix(self, store: KnowledgeStore, documents: dict[str, dict]):
        key = (store.path, tuple(sorted((d, r["generation"]) for d, r in documents.items())))
        joined = self._joined.get(key)
        if joined is not None:
            return joined
        parts = [self._document(store, d, r["generation"]) for d, r in sorted(documents.items())]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 384), dtype=np.float32)
        joined = (np.concatenate([p[0] for p in parts]),
                  np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1])
        with self._lock:
            # Joined scopes of superseded generations go (bounded by the live scopes).
            live = {(store.path, d): r["generation"] for d, r in documents.items()}
            self._joined = {k: v for k, v in self._joined.items()
                            if all(live.get((k[0], d), g) == g for d, g in k[1])}
            while len(self._joined) >= 16:  # distinct scopes in use at once: a handful
                self._joined.pop(next(iter(self._joined)))
            self._joined[key] = joined
        return joined


_VECTORS = _VectorCache()


class _transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False
