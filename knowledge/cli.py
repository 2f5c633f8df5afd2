"""``python -m knowledge`` (``persona-kb``): the knowledge base and memories from the shell.

    python -m knowledge add ./handbook.pdf --tag onboarding
    python -m knowledge add https://docs.example.com/ --crawl-depth 2 --max-pages 20
    python -m knowledge list [--status ready] [--tag onboarding] [--json]
    python -m knowledge show DOCUMENT_ID
    python -m knowledge patch DOCUMENT_ID [--name NAME] [--tags a,b]
    python -m knowledge delete DOCUMENT_ID
    python -m knowledge recrawl DOCUMENT_ID [--crawl-depth 3 --max-pages 50]
    python -m knowledge search "what is the warranty" [--tag T | --document ID] [--strategy quality]
    python -m knowledge memories list TAG
    python -m knowledge memories delete TAG [--id MEMORY_ID]
    python -m knowledge memories forget USER [--yes]

Everything lives in ``PERSONA_DATA_DIR/conversations.db`` beside the conversation records.
``add`` and ``recrawl`` process in the foreground with a progress bar and print the
Document object; a document's callbacks go out before the command exits (those that
cannot be delivered within 10 s are retried by the bot's next start). Exit status 0 done,
1 the document ended in ``error``, 2 a request that cannot be done (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m knowledge", description=(
        "Documents for personas to answer from (document_ids / document_tags), and the "
        "memories of memory_stores tags. Stored in PERSONA_DATA_DIR/conversations.db."))
    sub = p.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a document from a file or an http(s) URL")
    add.add_argument("source", help="a local file (pdf, txt, md, docx, doc, pptx, csv, xlsx, html, "
                     "png, jpg; at most 50 MB) or a web page / file URL")
    add.add_argument("--name", help="document_name (default: the file name or the site)")
    add.add_argument("--tag", action="append", default=[], help="a tag (repeat for more)")
    add.add_argument("--callback-url", help="status updates are POSTed here")
    add.add_argument("--crawl-depth", type=int, help="crawl the site: link levels (1-10)")
    add.add_argument("--max-pages", type=int, help="crawl the site: at most this many pages (1-100)")
    add.add_argument("--json", action="store_true", help="print the Document object as JSON")
    ls = sub.add_parser("list", help="list documents")
    ls.add_argument("--status", choices=["started", "processing", "ready", "error", "recrawling"])
    ls.add_argument("--tag", action="append", default=[])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--page", type=int, default=0)
    ls.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one document (JSON)")
    show.add_argument("document_id")
    patch = sub.add_parser("patch", help="rename a document or replace its tags")
    patch.add_argument("document_id")
    patch.add_argument("--name")
    patch.add_argument("--tags", help="comma-separated; replaces the old tags ('' for none)")
    delete = sub.add_parser("delete", help="delete a document and its index")
    delete.add_argument("document_id")
    recrawl = sub.add_parser("recrawl", help="crawl a website document again (ready or error; "
                             "1 hour between recrawls)")
    recrawl.add_argument("document_id")
    recrawl.add_argument("--crawl-depth", type=int)
    recrawl.add_argument("--max-pages", type=int)
    recrawl.add_argument("--json", action="store_true")
    search = sub.add_parser("search", help="what a conversation would retrieve for a question")
    search.add_argument("query")
    search.add_argument("--document", action="append", default=[], help="a document_id in scope")
    search.add_argument("--tag", action="append", default=[], help="a document tag in scope")
    search.add_argument("--strategy", choices=["speed", "balanced", "quality"], default="balanced")
    search.add_argument("-k", type=int, default=3, choices=range(1, 21), metavar="1-20")
    memories = sub.add_parser("memories", help="list or delete memories (privacy)")
    msub = memories.add_subparsers(dest="memories_command", required=True)
    mlist = msub.add_parser("list", help="the memories of one memory_stores tag")
    mlist.add_argument("tag")
    mlist.add_argument("--json", action="store_true")
    mdelete = msub.add_parser("delete", help="delete a tag's memories (or one of them)")
    mdelete.add_argument("tag")
    mdelete.add_argument("--id", type=int, help="only this memory_id")
    forget = msub.add_parser("forget", help="delete every memory of a user: the tag USER and "
                             "tags USER-*, USER_*, USER:* (e.g. anna-p123)")
    forget.add_argument("user")
    forget.add_argument("--yes", action="store_true",
                        help="delete them (without it: only list the tags that would go)")
    return p


def _crawl(args: argparse.Namespace) -> dict[str, int] | None:
    if args.crawl_depth is None and args.max_pages is None:
        return None
    return {"depth": args.crawl_depth if args.crawl_depth is not None else 1,
            "max_pages": args.max_pages if args.max_pages is not None else 10}


def _table(documents: list[dict[str, Any]]) -> str:
    if not documents:
        return "No documents. Add one: python -m knowledge add PATH_OR_URL"
    lines = [f"{'document_id':<15} {'status':<15} {'chunks':>6}  {'tags':<20} name"]
    for d in documents:
        status = d["status"] + (f" {d['progress']}%" if d["status"] == "processing" else "")
        lines.append(f"{d['document_id']:<15} {status:<15} {d.get('chunk_count') or 0:>6}  "
                     f"{','.join(d['tags'])[:20]:<20} {d['document_name']}")
        if d["status"] == "error":
            lines.append(f"{'':<15} {d.get('error_code')}: {d.get('error_message')}")
    return "\n".join(lines)


async def _process(store, settings, document_id: str, quiet: bool) -> dict[str, Any]:
    from conversation.lifecycle import drain_callbacks, records
    from knowledge.documents import callback_notifier, process
    from knowledge.fetch import AddressPolicy

    _store, dispatcher = records(settings)
    policy = AddressPolicy.from_setting(settings.knowledge_allow_hosts)
    listener = None
    progress = None
    if not quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                            TextColumn("{task.fields[what]}"), transient=True)
        bar = progress.add_task(document_id, total=100, what="")
        progress.start()

        def listener(status: str, percent: int, what: str) -> None:
            progress.update(bar, completed=percent, what=what[:60], description=status)
    elif not quiet:
        last = {"status": None}

        def listener(status: str, percent: int, what: str) -> None:
            if status != last["status"] and status != "error":  # the last line says why
                last["status"] = status
                print(f"{document_id}: {status}", file=sys.stderr)

    try:
        document = await process(store, document_id, policy=policy,
                                 notify=callback_notifier(dispatcher), listener=listener)
    finally:
        if progress is not None:
            progress.stop()
    await asyncio.to_thread(drain_callbacks, settings, 10.0)
    return document


def _recover(store, settings) -> None:
    """Documents a killed command left processing: errors now, with their callbacks."""
    from conversation.lifecycle import drain_callbacks, records
    from knowledge.documents import callback_notifier, recover_documents

    if store.conn().execute("SELECT 1 FROM documents WHERE status IN ('started', 'processing', "
                            "'recrawling') LIMIT 1").fetchone() is None:
        return
    _records, dispatcher = records(settings)
    if recover_documents(store, callback_notifier(dispatcher)):
        drain_callbacks(settings, 5.0)


def run(argv: list[str]) -> int:
    from config.settings import Settings
    from knowledge import documents as docs
    from knowledge import memories as mem
    from knowledge.store import KnowledgeStore

    args = parser().parse_args(argv)
    settings = Settings.from_env()
    store = KnowledgeStore(settings.data_dir)
    _recover(store, settings)
    if args.command == "add":
        body: dict[str, Any] = {"document_url": args.source, "tags": args.tag}
        if args.name:
            body["document_name"] = args.name
        if args.callback_url:
            body["callback_url"] = args.callback_url
        crawl = _crawl(args)
        if crawl:
            body["crawl"] = crawl
        document = docs.create_document(store, body)
        if document.get("callback_url"):  # Tavus's first status, before processing starts
            from conversation.lifecycle import records

            docs.callback_notifier(records(settings)[1])(document)
        document = asyncio.run(_process(store, settings, document["document_id"], args.json))
        return _finish(document, args.json)
    if args.command == "recrawl":
        crawl = _crawl(args)
        docs.start_recrawl(store, args.document_id, {"crawl": crawl} if crawl else None)
        document = asyncio.run(_process(store, settings, args.document_id, args.json))
        return _finish(document, args.json)
    if args.command == "list":
        listing = store.list(limit=args.limit, page=args.page, status=args.status,
                             tags=args.tag or None)
        listing["data"] = [docs.shown(d) for d in listing["data"]]
        print(json.dumps(listing, indent=2) if args.json else _table(listing["data"]))
        return 0
    if args.command == "show":
        document = store.get(args.document_id)
        if document is None:
            raise docs.DocumentError(f"no document {args.document_id} (python -m knowledge list)")
        print(json.dumps(docs.shown(document), indent=2))
        return 0
    if args.command == "patch":
        body = {}
        if args.name is not None:
            body["document_name"] = args.name
        if args.tags is not None:
            body["tags"] = [t.strip() for t in args.tags.split(",") if t.strip()]
        print(json.dumps(docs.shown(docs.patch_document(store, args.document_id, body)), indent=2))
        return 0
    if args.command == "delete":
        docs.delete_document(store, args.document_id)
        print(f"Deleted {args.document_id}")
        return 0
    if args.command == "search":
        return _search(store, args)
    if args.command == "memories":
        if args.memories_command == "list":
            rows = mem.list_memories(store, args.tag)
            if args.json:
                print(json.dumps(rows, indent=2))
            elif not rows:
                print(f"No memories under {args.tag!r}")
            else:
                for r in rows:
                    print(f"{r['memory_id']:>6}  {r['created_at'][:19]}  {r['fact']}")
            return 0
        if args.memories_command == "delete":
            gone = mem.delete_memories(store, args.tag, args.id)
            print(f"Deleted {gone} memor{'y' if gone == 1 else 'ies'} under {args.tag!r}")
            return 0
        tags = mem.user_tags(store, args.user)
        if not tags:
            print(f"No memories under {args.user}, {args.user}-*, {args.user}_* or {args.user}:*")
            return 0
        if not args.yes:
            counts = {t: len(mem.list_memories(store, t)) for t in tags}
            print(f"Would delete the memories of {args.user!r} under these tags (check none is "
                  "another user's, e.g. anna-maria for anna):")
            for tag, count in counts.items():
                print(f"  {tag}: {count}")
            print("Run again with --yes to delete them, or delete one tag: "
                  "python -m knowledge memories delete TAG")
            return 0
        tags, gone = mem.forget_user(store, args.user, tags)
        print(f"Forgot {args.user!r}: {gone} memor{'y' if gone == 1 else 'ies'} under "
              f"{', '.join(tags)}")
        return 0
    return EXIT_USAGE


def _search(store, args) -> int:
    from knowledge.retrieval import Retriever

    documents, problems = store.scope(args.document, args.tag)
    if not args.document and not args.tag:
        documents, problems = store.scope([d["document_id"] for d in store.list(
            limit=10_000, status="ready")["data"]], [])
    for problem in problems:
        print(problem, file=sys.stderr)
    if not documents:
        print("No ready documents in scope", file=sys.stderr)
        return EXIT_FAILED
    for n, passage in enumerate(Retriever(store, documents, args.strategy, args.k)
                                .search_now(args.query), 1):
        print(f"[{n}] {passage.document_name} ({passage.source}) score {passage.score:.3f}\n"
              f"    {passage.text[:400]}")
    return 0


def _finish(document: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(docs_shown(document), indent=2))
    elif document["status"] == "ready":
        chunks = document["chunk_count"]
        print(f"{document['document_id']} ready: {document['document_name']}, "
              f"{chunks} chunk{'' if chunks == 1 else 's'}"
              + (f" from {len(document['crawled_urls'] or [])} page(s)"
                 if document.get("crawl_config") else ""))
    elif document["status"] == "deleted":
        print(f"{document['document_id']} was deleted while it was processed", file=sys.stderr)
    else:
        print(f"{document['document_id']} error: {document.get('error_code')}: "
              f"{document.get('error_message')}", file=sys.stderr)
    return 0 if document["status"] == "ready" else EXIT_FAILED


def docs_shown(document: dict[str, Any]) -> dict[str, Any]:
    from knowledge.documents import shown

    return shown(document)


def main(argv: list[str] | None = None) -> int:
    from config.cli import load_env, run_command
    from config.logging import setup_logging

    load_env()
    argv = sys.argv[1:] if argv is None else argv
    setup_logging(os.environ.get("LOG_LEVEL") or "ERROR")  # its own lines say what happened
    return run_command(run, argv)
