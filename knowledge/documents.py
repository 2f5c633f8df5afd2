"""Documents as resources, with Tavus's fields and behaviour.

:func:`create_document` validates a create body (``document_url`` an http(s) URL, a
``file://`` URL or a local path; ``document_name``, ``tags``, ``callback_url``,
``crawl {depth, max_pages}``), stores the Document as ``started`` and returns it;
:func:`process` does the work: ``processing`` (``progress`` 0-100 as it reads, chunks and
embeds) -> ``ready``, or ``error`` with Tavus's ``error_code`` and a one-line
``error_message``. :func:`recrawl` re-runs a crawl document (``recrawling``), keeping
its old chunks until the new ones are ready. Each status change is a callback to the
document's ``callback_url`` (the Document object as its body), queued in the records'
durable outbox like every other callback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.errors import AgentError
from knowledge import embeddings
from knowledge.chunks import chunk_sections
from knowledge.fetch import MAX_BYTES, AddressPolicy, Fetcher, FetchError, crawl
from knowledge.parsers import FORMATS, ParseError, Section, extract, format_of, html_text, sniff
from knowledge.store import BUSY, KnowledgeStore

RECRAWL_COOLDOWN_SECS = 3600
MAX_CRAWL_DOCUMENTS = 100
MAX_CONCURRENT_CRAWLS = 5
MAX_CHUNKS = 200_000
_TAG = r"^[^\s,][^,]{0,63}$"


class DocumentError(AgentError):
    """A request about documents that cannot be done (the message says why; ``status`` the
    HTTP status it would be)."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


class CrawlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = Field(ge=1, le=10)
    max_pages: int = Field(ge=1, le=100)


class DocumentCreate(BaseModel):
    """``POST /v2/documents`` (plus local paths)."""

    model_config = ConfigDict(extra="forbid")
    document_url: str = Field(min_length=1, max_length=4096)
    document_name: str | None = Field(default=None, min_length=1, max_length=256)
    callback_url: str | None = Field(default=None, max_length=2048)
    tags: list[str] = Field(default_factory=list, max_length=50)
    crawl: CrawlConfig | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        import re

        for tag in tags:
            if not re.match(_TAG, tag):
                raise ValueError(f"tag {tag[:70]!r}: 1-64 characters, no commas, not starting "
                                 "with a space")
        return list(dict.fromkeys(tags))

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, url: str | None) -> str | None:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return url


class DocumentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_name: str | None = Field(default=None, min_length=1, max_length=256)
    tags: list[str] | None = Field(default=None, max_length=50)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else DocumentCreate._tags(tags)


def shown(document: dict[str, Any]) -> dict[str, Any]:
    """The Document object as printed: credentials in its URLs hidden (a signed URL's
    token, ``user:password@``), as in callbacks and logs."""
    from config.redact import redact_url

    out = dict(document)
    for key in ("document_url", "callback_url"):
        if out.get(key) and "://" in out[key]:
            out[key] = redact_url(out[key])
    if out.get("crawled_urls"):
        out["crawled_urls"] = [redact_url(u) for u in out["crawled_urls"]]
    return out


def validate(model: type[BaseModel], body: Any, source: str) -> Any:
    from config.loader import _validate

    return _validate(model, body, source).value


def local_path(url: str) -> Path | None:
    """The file a ``document_url`` names (a path or ``file://``), None for http(s)."""
    if url.startswith(("http://", "https://")):
        return None
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return Path(url).expanduser()


def create_document(store: KnowledgeStore, body: Any) -> dict[str, Any]:
    """Validate and store a new document as ``started``; returns the Document object."""
    request: DocumentCreate = validate(DocumentCreate, body, "document")
    scheme = urlsplit(request.document_url).scheme.lower()
    if "://" in request.document_url and scheme not in ("http", "https", "file"):
        raise DocumentError(f"document_url: {scheme}:// URLs are not fetched (http, https, "
                            "file:// or a local path)")
    path = local_path(request.document_url)
    if path is not None:
        if request.crawl is not None:
            raise DocumentError("crawl: only a website URL can be crawled, not a file")
        if not path.is_file():
            raise DocumentError(f"document_url: {path} is not a file", 400)
        url = str(path.resolve())
    else:
        url = request.document_url
    if request.crawl is not None and store.count_crawls() >= MAX_CRAWL_DOCUMENTS:
        raise DocumentError(f"at most {MAX_CRAWL_DOCUMENTS} crawl documents; delete one first", 429)
    from conversation.policies import unique_id

    document_id = unique_id(store.conn(), "documents", "document_id", "d")
    name = request.document_name or (path.name if path else (urlsplit(url).hostname or url))
    store.insert_document({
        "document_id": document_id, "document_name": name, "document_url": url,
        "status": "started", "progress": None, "callback_url": request.callback_url,
        "tags": request.tags, "crawl_config": request.crawl.model_dump() if request.crawl else None,
    })
    return store.get(document_id)


def patch_document(store: KnowledgeStore, document_id: str, body: Any) -> dict[str, Any]:
    patch: DocumentPatch = validate(DocumentPatch, body, "patch")
    if store.get(document_id) is None:
        raise DocumentError(f"no document {document_id}", 404)
    fields = patch.model_dump(exclude_none=True)
    if fields:
        store.update_document(document_id, **fields)
    return store.get(document_id)


def start_recrawl(store: KnowledgeStore, document_id: str, body: Any = None,
                  now: float | None = None) -> dict[str, Any]:
    """Check a recrawl's preconditions and mark it ``recrawling``; run :func:`process` next."""
    document = store.get(document_id)
    if document is None:
        raise DocumentError(f"no document {document_id}", 404)
    override = None
    if body and body.get("crawl") is not None:
        override = validate(CrawlConfig, body["crawl"], "crawl").model_dump()
    if local_path(document["document_url"]) is not None:
        raise DocumentError(f"document {document_id} is a file, not a website: add the file "
                            "again instead", 400)
    if document["status"] not in ("ready", "error"):
        raise DocumentError(f"document {document_id} is {document['status']}: only a ready or "
                            "failed document can be recrawled", 409)
    config = override or document["crawl_config"]
    if not config:
        raise DocumentError(f"document {document_id} was not created with a crawl "
                            "configuration; give one (--crawl-depth N --max-pages N; over HTTP "
                            "crawl: {depth, max_pages})", 400)
    last = document.get("last_crawled_at")
    if last:
        since = (now or time.time()) - datetime.fromisoformat(last).timestamp()
        if since < RECRAWL_COOLDOWN_SECS:
            wait = int(RECRAWL_COOLDOWN_SECS - since)
            raise DocumentError(f"document {document_id} was crawled {int(since)} s ago: recrawl "
                                f"again in {wait // 60} min {wait % 60} s (1 hour cooldown)", 429)
    if store.count_crawls(busy_only=True) >= MAX_CONCURRENT_CRAWLS:
        raise DocumentError(f"{MAX_CONCURRENT_CRAWLS} crawls are running; try again later", 429)
    # The check above and this claim race with another process; the claim is atomic.
    if not store.claim_if(document_id, "recrawling", ("ready", "error"),
                          crawl_config=json.dumps(config)):
        raise DocumentError(f"document {document_id} is already being processed", 409)
    return store.get(document_id)


class Progress:
    """Reports a document's progress: the store (at most every half second), the
    callback on status changes, and an optional listener (the command line's bar)."""

    def __init__(self, store: KnowledgeStore, document_id: str, notify: Callable[[dict], None],
                 listener: Callable[[str, int, str], None] | None = None):
        self.store, self.document_id, self.notify, self.listener = store, document_id, notify, listener
        self._last = 0.0
        self.percent = 0

    def status(self, status: str, **fields: Any) -> dict[str, Any]:
        self.store.update_document(self.document_id, status=status, **fields)
        document = self.store.get(self.document_id)
        self.notify(document)
        if self.listener:
            self.listener(status, self.percent, fields.get("error_message") or "")
        return document

    def step(self, percent: float, what: str) -> None:
        self.percent = max(self.percent, min(99, int(percent)))
        if self.listener:
            self.listener("processing", self.percent, what)
        if time.monotonic() - self._last > 0.5:
            self._last = time.monotonic()
            self.store.update_document(self.document_id, progress=self.percent)


async def _read_source(document: dict[str, Any], fetcher: Fetcher, progress: Progress
                       ) -> tuple[list[Section], str, list[str] | None]:
    """The document's sections, its format and (website) the crawled URLs."""
    url = document["document_url"]
    path = local_path(url)
    if path is not None:
        fmt = format_of(path.name)
        if fmt is None:
            kind = f".{path.suffix.lstrip('.')} files are" if path.suffix else "a file without an extension is"
            raise ParseError("file_format_unsupported", f"{path.name}: {kind} not supported "
                             f"(the formats: {', '.join(FORMATS)})")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ParseError("invalid_file_url", f"{path}: {exc.strerror}") from None
        if size > MAX_BYTES:
            raise ParseError("file_size_too_large", f"{path.name} is {size // (1024 * 1024)} MB "
                             "(the limit is 50 MB)")
        progress.step(5, f"reading {path.name}")
        data = await asyncio.to_thread(path.read_bytes)
        progress.step(15, f"extracting text ({fmt})")
        return await asyncio.to_thread(extract, data, path.name, fmt), fmt, None
    config = document.get("crawl_config")
    if config:
        sections: list[Section] = []

        async def on_page(page, count):
            if sniff(page.body) == "html":
                text = await asyncio.to_thread(html_text, page.body.decode("utf-8", "replace"),
                                               page.url)
                if text.strip():
                    sections.append(Section(text, page.url))
            progress.step(5 + 40 * count / config["max_pages"], f"crawled {count} page(s)")

        pages = await crawl(fetcher, url, depth=config["depth"], max_pages=config["max_pages"],
                            on_page=on_page)
        if not sections:
            raise ParseError("website_processing_failed", f"{url}: no readable text on "
                             f"{len(pages)} crawled page(s)")
        return sections, "html", [p.url for p in pages]
    if not await fetcher.allowed(url):
        raise ParseError("website_processing_failed",
                         f"{url}: the site's robots.txt does not allow fetching it")
    response = await fetcher.get(url, progress=lambda done, total: progress.step(
        5 + (25 * done / total if total else 0), "downloading"))
    if response.status >= 400:
        raise ParseError("invalid_file_url", f"{url} answered HTTP {response.status}")
    fmt = format_of(urlsplit(response.url).path, None)
    by_type = format_of("", response.content_type)
    if by_type and (fmt is None or by_type in ("html",) and sniff(response.body) == "html"):
        fmt = by_type
    if fmt is None:
        looks = sniff(response.body)
        fmt = {"pdf": "pdf", "png": "png", "jpg": "jpg", "html": "html", "text": "txt"}.get(looks)
    if fmt is None:
        raise ParseError("file_format_unsupported", f"{url}: {response.content_type or 'unknown'} "
                         "content is not a supported format")
    progress.step(30, f"extracting text ({fmt})")
    name = urlsplit(response.url).path.rsplit("/", 1)[-1] or response.url
    sections = await asyncio.to_thread(extract, response.body, name, fmt, source=response.url)
    return sections, fmt, [response.url] if fmt == "html" else None


async def process(store: KnowledgeStore, document_id: str, *, policy: AddressPolicy,
                  notify: Callable[[dict], None],
                  listener: Callable[[str, int, str], None] | None = None) -> dict[str, Any]:
    """Read, chunk, embed and index a ``started`` (or ``recrawling``) document."""
    document = store.get(document_id)
    if document is None:
        raise DocumentError(f"no document {document_id}", 404)
    recrawl = document["status"] == "recrawling"
    progress = Progress(store, document_id, notify, listener)
    if recrawl:
        notify(document)
    elif store.claim_if(document_id, "processing", ("started",)):
        progress.status("processing", progress=0)
    else:
        raise DocumentError(f"document {document_id} is {document['status']}: only a new "
                            "document is processed (recrawl a website one)", 409)
    code = "contact_support"
    try:
        async with Fetcher(policy) as fetcher:
            sections, fmt, crawled = await _read_source(document, fetcher, progress)
        code = "chunking_failed"
        chunks = chunk_sections(sections)
        if not chunks:
            raise ParseError("file_empty", "the document contains no readable text")
        if len(chunks) > MAX_CHUNKS:
            raise ParseError("chunking_failed", f"{len(chunks)} chunks (at most {MAX_CHUNKS})")
        progress.step(50, f"embedding {len(chunks)} chunks")
        code = "embedding_failed"
        vectors = await asyncio.to_thread(
            embeddings.passages, [c.text for c in chunks],
            lambda done: progress.step(50 + 45 * done / len(chunks), f"embedded {done}/{len(chunks)}"))
        code = "vector_store_failed"
        fields: dict[str, Any] = {"status": "ready", "progress": 100, "file_format": fmt,
                                  "error_code": None, "error_message": None}
        if crawled is not None:
            fields["crawled_urls"] = crawled
        if document.get("crawl_config"):
            from conversation.records import iso_now

            fields["last_crawled_at"] = iso_now()
            fields["crawl_count"] = int(document.get("crawl_count") or 0) + 1
        await asyncio.to_thread(store.replace_chunks, document_id,
                                [(c.text, c.source) for c in chunks], vectors, **fields)
        progress.percent = 100
        document = store.get(document_id)
        notify(document)
        if listener:
            listener("ready", 100, f"{len(chunks)} chunks")
        return document
    except LookupError:
        logger.warning(f"Document {document_id} was deleted while it was processed")
        return {**document, "status": "deleted"}
    except (ParseError, FetchError) as exc:
        return _failed(progress, exc.code, str(exc), document)
    except asyncio.CancelledError:
        _failed(progress, "contact_support", "processing was cancelled", document)
        raise
    except Exception as exc:  # noqa: BLE001 - a bug or a library failure: on record, one line
        logger.opt(exception=True).debug(f"Document {document_id}: {code}")  # LOG_LEVEL=DEBUG
        return _failed(progress, code, f"{type(exc).__name__}: {str(exc)[:200]}", document)


def _failed(progress: Progress, code: str, message: str, document: dict[str, Any]
            ) -> dict[str, Any]:
    from config.logging import scrub
    from conversation.records import iso_now

    message = scrub(message.splitlines()[0] if message else code)
    logger.warning(f"Document {progress.document_id}: {code}: {message}")
    if progress.store.get(progress.document_id) is None:  # deleted meanwhile
        return {**document, "status": "deleted"}
    extra = {}
    if document.get("crawl_config"):  # a failed crawl counts for the cooldown too
        extra["last_crawled_at"] = iso_now()
    return progress.status("error", error_code=code, error_message=message, progress=None,
                           **extra)


def recover_documents(store: KnowledgeStore, notify: Callable[[dict], None]) -> list[str]:
    """Documents a dead process left processing become errors, with their callback."""
    from knowledge.store import INTERRUPTED

    rows = store.conn().execute(
        f"SELECT * FROM documents WHERE status IN ({', '.join('?' * len(BUSY))})", BUSY).fetchall()
    recovered = []
    for row in rows:
        if store.abandoned(dict(row)) and store.claim_if(row["document_id"], "error", ()):
            store.update_document(row["document_id"], error_code="contact_support",
                                  error_message=INTERRUPTED, progress=None)
            notify(store.get(row["document_id"]))
            recovered.append(row["document_id"])
    return recovered


def delete_document(store: KnowledgeStore, document_id: str) -> None:
    if store.busy(document_id):
        raise DocumentError(f"document {document_id} is being processed; delete it when it is "
                            "ready or has failed", 409)
    if not store.delete(document_id):
        raise DocumentError(f"no document {document_id} (python -m knowledge list)", 404)


def callback_notifier(dispatcher: Any) -> Callable[[dict], None]:
    """Document status changes -> the document's callback (the Document object), durable."""

    def notify(document: dict[str, Any]) -> None:
        url = document.get("callback_url")
        if url:
            dispatcher.emit_payload(document["document_id"], url,
                                    f"document.{document['status']}", document)

    return notify
