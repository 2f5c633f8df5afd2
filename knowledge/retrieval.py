"""Searching a conversation's documents, by ``document_retrieval_strategy``.

| strategy | how | cost on 2 cores (see benchmarks/README.md) |
| --- | --- | --- |
| ``speed`` | FTS5 BM25 over the chunks (lexical, stemmed) | no model call |
| ``balanced`` (default) | dense top-k: the e5 query vector against the chunks' vectors | one query embedding |
| ``quality`` | hybrid: BM25 and dense top-30 fused by reciprocal rank, each passage with its neighbour chunks | both, plus neighbours |

The scope is the union of the persona's and the conversation's ``document_ids`` and
``document_tags`` (ready documents only), fixed when the conversation starts. Searches run
in a small thread pool of their own (SQLite reads, numpy, the C embedder: all release the
GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from knowledge import embeddings
from knowledge.store import KnowledgeStore, Passage

RRF_K = 60
CANDIDATES = 30
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="knowledge")


@dataclass
class Retriever:
    store: KnowledgeStore
    documents: dict[str, dict]  # the scope: {document_id: row}
    strategy: str = "balanced"
    k: int = 3

    def search_now(self, query: str) -> list[Passage]:
        """The best ``k`` passages for ``query`` (synchronously, on the calling thread)."""
        if not query.strip() or not self.documents:
            return []
        # The scope's current generations (a recrawl or a delete since the conversation began).
        documents = self.store.current(list(self.documents))
        if not documents:
            return []
        if self.strategy == "speed":
            ranked = self.store.bm25(query, documents, self.k)
        elif self.strategy == "balanced":
            ranked = self.store.dense(embeddings.query(query), documents, self.k)
        else:
            lexical = self.store.bm25(query, documents, CANDIDATES)
            dense = self.store.dense(embeddings.query(query), documents, CANDIDATES)
            fused: dict[int, float] = {}
            for ranking in (lexical, dense):
                for rank, (chunk_id, _score) in enumerate(ranking):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank + 1)
            ranked = sorted(fused.items(), key=lambda item: -item[1])[:self.k]
        chunks = self.store.chunks_by_id([chunk_id for chunk_id, _ in ranked])
        names = {d: r.get("document_name") or d for d, r in documents.items()}
        passages = []
        for chunk_id, score in ranked:
            chunk = chunks.get(chunk_id)
            if chunk is None:  # the document was re-processed between the two reads
                continue
            text = chunk["text"]
            if self.strategy == "quality":
                before, after = self.store.neighbours(chunk)
                text = " ".join(t for t in (before[-400:], text, after[:400]) if t)
            passages.append(Passage(chunk_id, chunk["document_id"],
                                    names.get(chunk["document_id"], chunk["document_id"]),
                                    chunk["source"] or "", text, score))
        return passages

    async def search(self, query: str) -> list[Passage]:
        return await asyncio.get_running_loop().run_in_executor(_POOL, self.search_now, query)
