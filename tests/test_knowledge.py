"""The knowledge base: documents of every format (made here), a loopback website (crawl,
robots.txt, redirects to private addresses), statuses, error codes, callbacks, recrawl,
the three retrieval strategies and the command line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web

from conversation.lifecycle import close_records, records
from knowledge import documents as docs
from knowledge.cli import main as kb_main
from knowledge.fetch import AddressPolicy
from knowledge.retrieval import Retriever
from knowledge.store import KnowledgeStore
from tests.fake_rest import WebhookReceiver

FACT = "The Zephyr blender carries a warranty of thirty seven months"


def pdf_bytes(lines: list[str]) -> bytes:
    """A one-page PDF with ``lines`` of text (Helvetica), built by hand with a correct xref."""
    text = "BT /F1 14 Tf 72 720 Td " + " ".join(
        f"({line.replace('(', '').replace(')', '')}) Tj 0 -20 Td" for line in lines) + " ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
         b"/Resources << /Font << /F1 5 0 R >> >> >>"),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text.encode()),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def image_bytes(text: str, fmt: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1100, 160), "white")
    ImageDraw.Draw(image).text((20, 50), text, fill="black", font=ImageFont.load_default(size=40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if fmt == "png" else "JPEG", quality=95)
    return buffer.getvalue()


def make_file(tmp: Path, fmt: str) -> Path:
    path = tmp / f"doc.{fmt}"
    if fmt in ("txt", "md"):
        path.write_text(f"# Products\n\n{FACT}.\n\nReturns within 14 days.\n")
    elif fmt == "html":
        path.write_text(f"<html><head><title>P</title><script>var x=1;</script></head><body>"
                        f"<nav>Menu</nav><article><h1>Products</h1><p>{FACT}.</p>"
                        f"<p>Returns are accepted within fourteen days of purchase.</p></article>"
                        f"</body></html>")
    elif fmt == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["product", "warranty"])
            writer.writerow(["Zephyr blender", "thirty seven months"])
    elif fmt == "pdf":
        path.write_bytes(pdf_bytes(["Products", FACT + "."]))
    elif fmt == "docx":
        import docx

        document = docx.Document()
        document.add_heading("Products", 1)
        document.add_paragraph(FACT + ".")
        document.save(path)
    elif fmt == "pptx":
        from pptx import Presentation

        deck = Presentation()
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = "Products"
        slide.placeholders[1].text = FACT
        deck.save(path)
    elif fmt == "xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.title = "Warranty"
        sheet.append(["product", "warranty"])
        sheet.append(["Zephyr blender", "thirty seven months"])
        book.save(path)
    elif fmt in ("png", "jpg"):
        path.write_bytes(image_bytes("Zephyr warranty: 37 months", fmt))
    return path


async def ingest(store: KnowledgeStore, body: dict, policy: AddressPolicy | None = None,
                 notify=None) -> dict:
    document = docs.create_document(store, body)
    return await docs.process(store, document["document_id"], policy=policy or AddressPolicy(),
                              notify=notify or (lambda d: None))


@pytest.fixture
def store(tmp_path) -> KnowledgeStore:
    return KnowledgeStore(tmp_path / "data")


@pytest.mark.parametrize("fmt", ["txt", "md", "html", "csv", "pdf", "docx", "pptx", "xlsx"])
async def test_each_text_format_is_ingested_and_retrievable(store, tmp_path, fmt):
    document = await ingest(store, {"document_url": str(make_file(tmp_path, fmt)),
                                    "tags": ["products"]})
    assert document["status"] == "ready", document
    assert document["progress"] == 100 and document["file_format"] == fmt
    assert document["chunk_count"] >= 1
    scope, problems = store.scope([], ["products"])
    assert problems == [] and list(scope) == [document["document_id"]]
    for strategy in ("speed", "balanced", "quality"):
        passages = Retriever(store, scope, strategy).search_now("How long is the Zephyr warranty?")
        assert passages and "thirty seven months" in passages[0].text.lower(), (strategy, passages)
        assert passages[0].document_name == "doc." + fmt


@pytest.mark.parametrize("fmt", ["png", "jpg"])
async def test_images_are_read_with_ocr(store, tmp_path, fmt):
    document = await ingest(store, {"document_url": str(make_file(tmp_path, fmt))})
    assert document["status"] == "ready", document
    text = store.conn().execute("SELECT text FROM chunks").fetchone()[0]
    assert "warranty" in text.lower() and "37" in text


@pytest.mark.parametrize(("name", "content", "code"), [
    ("report.pdf", b"PK\x03\x04 this is a zip, not a pdf", "file_format_unsupported"),
    ("report.pdf", b"%PDF-1.4\n garbage that is no PDF at all", "file_format_unsupported"),
    ("notes.docx", None, "file_format_unsupported"),  # a ZIP without word/document.xml
    ("slides.pptx", b"plain text pretending", "file_format_unsupported"),
    ("sheet.xlsx", b"PK\x03\x04\x00\x00 truncated zip", "file_format_unsupported"),
    ("picture.png", b"just some words, not an image", "file_format_unsupported"),
    ("picture.jpg", b"\x89PNG\r\n\x1a\n but named jpg", "file_format_unsupported"),
    ("old.doc", b"plain text named doc", "file_format_unsupported"),
    ("program.exe", b"MZ\x90\x00", "file_format_unsupported"),
    ("empty.txt", b"", "file_empty"),
    ("blank.md", b"   \n\n  \n", "file_empty"),
])
async def test_corrupt_mislabelled_and_empty_files_fail_with_tavus_codes(
        store, tmp_path, name, content, code):
    path = tmp_path / name
    if content is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("hello.txt", "not a word document")
        content = buffer.getvalue()
    path.write_bytes(content)
    document = await ingest(store, {"document_url": str(path)})
    assert document["status"] == "error"
    assert document["error_code"] == code, document
    assert document["error_message"] and "\n" not in document["error_message"]
    assert "Traceback" not in document["error_message"]


async def test_a_file_over_the_size_limit_fails_before_it_is_read(store, tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "MAX_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text("word " * 1000)
    document = await ingest(store, {"document_url": str(path)})
    assert (document["status"], document["error_code"]) == ("error", "file_size_too_large")


def test_create_refuses_bad_requests(store, tmp_path):
    from config.errors import ConfigError

    with pytest.raises(docs.DocumentError, match="is not a file"):
        docs.create_document(store, {"document_url": str(tmp_path / "missing.pdf")})
    path = make_file(tmp_path, "txt")
    with pytest.raises(docs.DocumentError, match="only a website URL can be crawled"):
        docs.create_document(store, {"document_url": str(path), "crawl": {"depth": 1, "max_pages": 2}})
    for bad in ({"document_url": str(path), "crawl": {"depth": 11, "max_pages": 2}},
                {"document_url": str(path), "crawl": {"depth": 1, "max_pages": 101}},
                {"document_url": str(path), "tags": ["a,b"]},
                {"document_url": str(path), "colour": "red"},
                {"document_url": str(path), "callback_url": "ftp://x"}):
        with pytest.raises(ConfigError):
            docs.create_document(store, bad)


# --------------------------------------------------------------------------- a loopback site


class Site:
    """A small website on loopback: / links to /a and /b, /a to /c, /private is disallowed by
    robots.txt, /leak redirects to a private address, /big is larger than the limit."""

    def __init__(self, robots: str = "User-agent: *\nDisallow: /private\n"):
        self.robots = robots
        self.hits: list[str] = []
        self.runner = None
        self.port = 0
        self.version = 1

    def page(self, title: str, body: str, links: list[str]) -> web.Response:
        anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        return web.Response(content_type="text/html", text=(
            f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
            f"<p>{body}</p><ul>{anchors}</ul></article></body></html>"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits.append(path)
        if path == "/robots.txt":
            return web.Response(text=self.robots) if self.robots else web.Response(status=404)
        if path == "/":
            return self.page("Home", f"Welcome to the Zephyr help site, version {self.version}.",
                             ["/a", "/b", "/private", "https://elsewhere.example/x", "/leak",
                              "/away", "/sneak"])
        if path == "/a":
            return self.page("Warranty", FACT + ".", ["/c"])
        if path == "/b":
            return self.page("Returns", "Returns are accepted within fourteen days.", [])
        if path == "/c":
            return self.page("Motor", "The motor is rated at twelve hundred watts.", [])
        if path == "/private":
            return self.page("Private", "Internal staff salaries are secret.", [])
        if path == "/leak":
            raise web.HTTPFound(f"http://127.0.0.2:{self.port}/")
        if path == "/big":
            return web.Response(text="x " * 5000, content_type="text/plain")
        if path == "/big-chunked":
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(50):
                await response.write(b"y " * 100)
            return response
        if path == "/away":
            raise web.HTTPFound("https://elsewhere.example/page")
        if path == "/sneak":
            raise web.HTTPFound("/private")
        if path == "/hop":
            raise web.HTTPFound("/a")
        return web.Response(status=404)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def policy(self) -> AddressPolicy:
        return AddressPolicy.from_setting(f"127.0.0.1:{self.port}")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


async def test_a_crawl_follows_same_site_links_to_its_depth_honouring_robots(store):
    async with Site() as site:
        document = await ingest(store, {"document_url": site.url, "document_name": "Help",
                                        "crawl": {"depth": 1, "max_pages": 10}}, site.policy)
        assert document["status"] == "ready", document
        crawled = {u.replace(site.url, "/") for u in document["crawled_urls"]}
        assert crawled == {"/", "/a", "/b"}  # depth 1: not /c; robots: not /private
        assert "/private" not in site.hits and "/c" not in site.hits
        assert document["crawl_count"] == 1 and document["last_crawled_at"]
        deeper = await ingest(store, {"document_url": site.url,
                                      "crawl": {"depth": 2, "max_pages": 10}}, site.policy)
        assert {u.replace(site.url, "/") for u in deeper["crawled_urls"]} == {"/", "/a", "/b", "/c"}
        capped = await ingest(store, {"document_url": site.url,
                                      "crawl": {"depth": 3, "max_pages": 2}}, site.policy)
        assert len(capped["crawled_urls"]) == 2
        scope, _ = store.scope([document["document_id"]], [])
        passages = Retriever(store, scope, "quality").search_now("what is the warranty period")
        assert "thirty seven months" in passages[0].text
        assert passages[0].source.endswith("/a")
        everything = " ".join(r[0] for r in store.conn().execute("SELECT text FROM chunks"))
        assert "salaries" not in everything and "Menu" not in everything


async def test_private_addresses_are_refused_directly_and_through_redirects(store):
    async with Site() as site:
        refused = await ingest(store, {"document_url": site.url})  # no allowance for loopback
        assert (refused["status"], refused["error_code"]) == ("error", "invalid_file_url")
        assert "not a public address" in refused["error_message"]
        named = await ingest(store, {"document_url": f"http://localhost:{site.port}/a"})
        assert named["error_code"] == "invalid_file_url" and "private" in named["error_message"]
        leak = await ingest(store, {"document_url": site.url + "leak"}, site.policy)
        assert leak["error_code"] == "invalid_file_url" and "127.0.0.2" in leak["error_message"]
        for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:80/", "http://10.0.0.8/",
                    "http://0.0.0.0/", "http://100.100.100.200/latest/meta-data/",
                    "http://[2002:7f00:1::1]/", "http://[::ffff:127.0.0.1]/",
                    "http://[64:ff9b::7f00:1]/", "http://2130706433/"):
            failed = await ingest(store, {"document_url": url}, site.policy)
            assert failed["error_code"] == "invalid_file_url", (url, failed)
        with pytest.raises(docs.DocumentError, match="ftp:// URLs are not fetched"):
            docs.create_document(store, {"document_url": "ftp://example.com/file.pdf"})
        hop = await ingest(store, {"document_url": site.url + "hop"}, site.policy)
        assert hop["status"] == "ready"  # a redirect within the allowed site is followed


async def test_robots_txt_disallowing_the_start_page_fails_the_document(store):
    async with Site(robots="User-agent: *\nDisallow: /\n") as site:
        document = await ingest(store, {"document_url": site.url}, site.policy)
        assert document["error_code"] == "website_processing_failed"
        assert "robots.txt" in document["error_message"]
        assert site.hits == ["/robots.txt"]


async def test_a_download_over_the_limit_is_cut_off(store):
    from knowledge.fetch import Fetcher, FetchError

    async with Site() as site, Fetcher(site.policy, max_bytes=2000) as fetcher:
        for path in ("big", "big-chunked"):  # a declared length, and one that is not
            with pytest.raises(FetchError) as raised:
                await fetcher.get(site.url + path)
            assert raised.value.code == "file_size_too_large", path


async def test_statuses_go_to_the_callback_url_once_each(tmp_path):
    from config import Settings

    settings = Settings.from_env({"PERSONA_DATA_DIR": str(tmp_path / "data")})
    receiver = await WebhookReceiver().start()
    try:
        _store, dispatcher = records(settings)
        store = KnowledgeStore(settings.data_dir)
        ok = await ingest(store, {"document_url": str(make_file(tmp_path, "txt")),
                                  "callback_url": receiver.url}, notify=docs.callback_notifier(dispatcher))
        bad_path = tmp_path / "x.pdf"
        bad_path.write_bytes(b"not a pdf")
        bad = await ingest(store, {"document_url": str(bad_path), "callback_url": receiver.url},
                           notify=docs.callback_notifier(dispatcher))
        for _ in range(100):
            if len(receiver.payloads) >= 4:
                break
            await asyncio.sleep(0.05)
        statuses = [(p["document_id"], p["status"]) for p in receiver.payloads]
        assert statuses == [(ok["document_id"], "processing"), (ok["document_id"], "ready"),
                            (bad["document_id"], "processing"), (bad["document_id"], "error")]
        assert receiver.payloads[-1]["error_code"] == "file_format_unsupported"
        assert all(count == 1 for count in receiver.acked.values())
    finally:
        close_records(settings)
        await receiver.stop()


async def test_recrawl_preconditions_and_fresh_content(store, tmp_path):
    async with Site() as site:
        document = await ingest(store, {"document_url": site.url,
                                        "crawl": {"depth": 1, "max_pages": 5}}, site.policy)
        document_id = document["document_id"]
        with pytest.raises(docs.DocumentError, match="cooldown"):
            docs.start_recrawl(store, document_id)
        later = __import__("time").time() + 3601
        file_doc = await ingest(store, {"document_url": str(make_file(tmp_path, "txt"))})
        with pytest.raises(docs.DocumentError, match="is a file, not a website"):
            docs.start_recrawl(store, file_doc["document_id"], now=later)
        page = await ingest(store, {"document_url": site.url + "b"}, site.policy)  # no crawl
        with pytest.raises(docs.DocumentError, match="not created with a crawl"):
            docs.start_recrawl(store, page["document_id"], now=later)
        site.version = 2
        started = docs.start_recrawl(store, document_id, {"crawl": {"depth": 2, "max_pages": 5}},
                                     now=later)
        assert started["status"] == "recrawling"
        with pytest.raises(docs.DocumentError, match="recrawling"):
            docs.start_recrawl(store, document_id, now=later)
        scope, _ = store.scope([document_id], [])
        old = Retriever(store, scope, "speed").search_now("Zephyr help site version")
        assert "version 1" in old[0].text  # the old chunks serve while it recrawls
        done = await docs.process(store, document_id, policy=site.policy, notify=lambda d: None)
        assert done["status"] == "ready" and done["crawl_count"] == 2
        assert done["crawl_config"] == {"depth": 2, "max_pages": 5}
        assert len(done["crawled_urls"]) == 4
        scope, _ = store.scope([document_id], [])
        new = Retriever(store, scope, "speed").search_now("Zephyr help site version")
        assert "version 2" in new[0].text
        texts = [r[0] for r in store.conn().execute(
            "SELECT text FROM chunks WHERE document_id = ?", (document_id,))]
        assert not any("version 1" in t for t in texts)  # old vectors replaced
        fts = store.conn().execute("SELECT count(*) FROM chunks_fts WHERE document_id = ?",
                                   (document_id,)).fetchone()[0]
        assert fts == len(texts)


async def test_patch_list_delete_and_scope(store, tmp_path):
    one = await ingest(store, {"document_url": str(make_file(tmp_path, "md")), "tags": ["a"]})
    patched = docs.patch_document(store, one["document_id"], {"document_name": "Manual",
                                                              "tags": ["b", "c"]})
    assert patched["document_name"] == "Manual" and patched["tags"] == ["b", "c"]
    listing = store.list(tags=["c"])
    assert listing["total_count"] == 1 and listing["data"][0]["document_id"] == one["document_id"]
    assert store.list(tags=["a"])["total_count"] == 0
    scope, problems = store.scope(["d000000000000", one["document_id"]], ["zzz"])
    assert list(scope) == [one["document_id"]]
    assert problems and "d000000000000 is not in the local knowledge base" in problems[0]
    assert store.delete(one["document_id"]) and store.get(one["document_id"]) is None
    assert store.conn().execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    assert store.conn().execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 0


def test_a_document_left_processing_by_a_dead_process_is_an_error(store, tmp_path):
    document = docs.create_document(store, {"document_url": str(make_file(tmp_path, "txt"))})
    store.update_document(document["document_id"], status="processing", pid=999_999_999)
    shown = store.get(document["document_id"])
    assert shown["status"] == "error" and "interrupted" in shown["error_message"]


def test_the_command_line_adds_lists_searches_and_deletes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERSONA_DOTENV", "0")
    path = make_file(tmp_path, "docx")
    assert kb_main(["add", str(path), "--tag", "manuals", "--name", "Manual"]) == 0
    out = capsys.readouterr().out
    document_id = out.split()[0]
    assert document_id.startswith("d") and "ready" in out
    assert kb_main(["list"]) == 0
    assert document_id in capsys.readouterr().out
    assert kb_main(["search", "how long is the warranty", "--tag", "manuals"]) == 0
    assert "thirty seven months" in capsys.readouterr().out
    assert kb_main(["show", document_id]) == 0
    assert json.loads(capsys.readouterr().out)["tags"] == ["manuals"]
    bad = tmp_path / "bad.pdf"
    bad.write_text("hello")
    assert kb_main(["add", str(bad)]) == 1
    assert "file_format_unsupported" in capsys.readouterr().err
    assert kb_main(["add", str(tmp_path / "nothing.pdf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert kb_main(["delete", document_id]) == 0
    assert kb_main(["show", document_id]) == 2


OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504


async def test_doc_files_go_through_antiword(store, tmp_path, monkeypatch):
    """No .doc can be written here (no Word writer ships in a package), so antiword is a
    stand-in script keeping its command-line contract: ``antiword -w 0 FILE`` -> text."""
    path = tmp_path / "letter.doc"
    path.write_bytes(OLE)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    missing = await ingest(store, {"document_url": str(path)})
    assert missing["error_code"] == "file_format_unsupported"
    assert "apt-get install antiword" in missing["error_message"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "antiword"
    fake.write_text('#!/bin/sh\n[ "$1" = "-w" ] && [ "$2" = "0" ] && [ -f "$3" ] || exit 3\n'
                    f'echo "{FACT}."\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    document = await ingest(store, {"document_url": str(path)})
    assert document["status"] == "ready" and document["file_format"] == "doc"
    fake.write_text("#!/bin/sh\necho 'I am not a Word document' >&2\nexit 1\n")
    broken = await ingest(store, {"document_url": str(path)})
    assert broken["error_code"] == "file_format_unsupported"
    assert "I am not a Word document" in broken["error_message"]



async def test_a_crawl_never_follows_redirects_off_the_site_or_into_disallowed_pages(store):
    async with Site() as site:
        document = await ingest(store, {"document_url": site.url,
                                        "crawl": {"depth": 1, "max_pages": 20}}, site.policy)
        assert document["status"] == "ready"
        assert "/private" not in site.hits  # /sneak redirects there: robots.txt checked again
        crawled = {u.replace(site.url, "/") for u in document["crawled_urls"]}
        assert crawled == {"/", "/a", "/b"}


@pytest.mark.parametrize("bomb", ["zip", "image"])
async def test_bombs_are_refused_before_they_are_unpacked(store, tmp_path, monkeypatch, bomb):
    if bomb == "zip":
        path = tmp_path / "bomb.docx"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("word/document.xml", "<w/>")
            archive.writestr("word/padding.xml", b"\0" * (3 * 1024 * 1024))  # 3 MB -> ~3 KB
    else:
        monkeypatch.setattr("knowledge.parsers.MAX_IMAGE_PIXELS", 10_000)
        path = make_file(tmp_path, "png")  # 1100 x 160
    document = await ingest(store, {"document_url": str(path)})
    assert (document["status"], document["error_code"]) == ("error", "file_size_too_large"), document


async def test_a_conversation_searching_during_a_recrawl_moves_to_the_new_content(store):
    async with Site() as site:
        document = await ingest(store, {"document_url": site.url,
                                        "crawl": {"depth": 1, "max_pages": 5}}, site.policy)
        document_id = document["document_id"]
        scope, _ = store.scope([document_id], [])
        retrievers = {s: Retriever(store, scope, s) for s in ("speed", "balanced", "quality")}
        for retriever in retrievers.values():  # vectors cached for generation 1
            assert "version 1" in " ".join(p.text for p in retriever.search_now(
                "Zephyr help site version"))
        site.version = 2
        docs.start_recrawl(store, document_id, now=__import__("time").time() + 3601)
        await docs.process(store, document_id, policy=site.policy, notify=lambda d: None)
        for name, retriever in retrievers.items():  # the same conversation's retrievers
            found = retriever.search_now("Zephyr help site version")
            assert found and "version 2" in " ".join(p.text for p in found), name


async def test_a_failed_recrawl_keeps_serving_the_old_content_and_counts_for_the_cooldown(store):
    import time as clock

    async with Site() as site:
        document = await ingest(store, {"document_url": site.url,
                                        "crawl": {"depth": 1, "max_pages": 5}}, site.policy)
        document_id = document["document_id"]
        later = clock.time() + 3601
        docs.start_recrawl(store, document_id, now=later)
    # the site is gone now
    failed = await docs.process(store, document_id, policy=site.policy, notify=lambda d: None)
    assert failed["status"] == "error" and failed["error_code"] == "invalid_file_url"
    scope, problems = store.scope([document_id], [])
    assert list(scope) == [document_id] and "last recrawl failed" in problems[0]
    assert Retriever(store, scope, "speed").search_now("warranty")
    with pytest.raises(docs.DocumentError, match="cooldown"):
        docs.start_recrawl(store, document_id, now=clock.time() + 60)  # it just failed


async def test_busy_documents_cannot_be_deleted_or_processed_twice(store, tmp_path):
    document = docs.create_document(store, {"document_url": str(make_file(tmp_path, "txt"))})
    assert store.claim_if(document["document_id"], "processing", ("started",))
    with pytest.raises(docs.DocumentError, match="being processed"):
        docs.delete_document(store, document["document_id"])
    with pytest.raises(docs.DocumentError, match="only a new document is processed"):
        await docs.process(store, document["document_id"], policy=AddressPolicy(),
                           notify=lambda d: None)


async def test_a_document_deleted_while_it_is_processed_leaves_nothing(store, tmp_path,
                                                                      monkeypatch):
    document = docs.create_document(store, {"document_url": str(make_file(tmp_path, "md"))})
    real = store.replace_chunks

    def delete_first(document_id, *args, **kwargs):
        store.conn().execute("DELETE FROM documents WHERE document_id = ?", (document_id,))
        return real(document_id, *args, **kwargs)

    monkeypatch.setattr(store, "replace_chunks", delete_first)
    sent = []
    result = await docs.process(store, document["document_id"], policy=AddressPolicy(),
                                notify=sent.append)
    assert result["status"] == "deleted"
    assert store.conn().execute("SELECT count(*) FROM chunks").fetchone()[0] == 0
    assert store.conn().execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == 0
    assert [d["status"] for d in sent] == ["processing"]


def test_a_killed_commands_document_becomes_an_error_with_its_callback(store, tmp_path):
    document = docs.create_document(store, {"document_url": str(make_file(tmp_path, "txt"))})
    store.update_document(document["document_id"], status="processing", pid=999_999_999)
    sent = []
    assert docs.recover_documents(store, sent.append) == [document["document_id"]]
    assert [(d["status"], d["error_code"]) for d in sent] == [("error", "contact_support")]
    assert docs.recover_documents(store, sent.append) == []  # once


def test_an_index_from_before_generations_is_rebuilt_on_open(tmp_path):
    import sqlite3

    (tmp_path / "old").mkdir()
    conn = sqlite3.connect(tmp_path / "old" / "conversations.db")
    conn.executescript(
        "CREATE TABLE chunks (chunk_id INTEGER PRIMARY KEY AUTOINCREMENT, document_id TEXT NOT "
        "NULL, generation INTEGER NOT NULL, seq INTEGER NOT NULL, source TEXT, text TEXT NOT "
        "NULL, vector BLOB);"
        "CREATE VIRTUAL TABLE chunks_fts USING fts5(text, document_id UNINDEXED);"
        "CREATE TABLE memory_jobs (conversation_id TEXT PRIMARY KEY, tags TEXT NOT NULL, status "
        "TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, "
        "updated_at TEXT NOT NULL, host TEXT, pid INTEGER, last_error TEXT);"
        "INSERT INTO chunks (document_id, generation, seq, text) VALUES ('d1', 1, 0, 'warranty');"
        "INSERT INTO chunks_fts (rowid, text, document_id) VALUES (1, 'warranty', 'd1');")
    conn.commit()
    conn.close()
    store = KnowledgeStore(tmp_path / "old")
    rows = store.conn().execute("SELECT rowid, generation FROM chunks_fts WHERE chunks_fts "
                                "MATCH 'warranty'").fetchall()
    assert [tuple(r) for r in rows] == [(1, 1)]
    from knowledge import memories as mem

    mem.open_job(store, "c1", ["t"], persona="p")  # the added persona column
    KnowledgeStore(tmp_path / "old")  # opening again changes nothing


def test_the_command_line_hides_url_credentials_and_refuses_bad_values(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.setenv("PERSONA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERSONA_DOTENV", "0")
    store = KnowledgeStore(tmp_path / "data")
    document = docs.create_document(store, {
        "document_url": "https://user:hunter2@docs.example.com/page?token=sk-abcdef123456",
        "callback_url": "https://hooks.example.com/h?sig=sk-zzzzzzzzzz"})
    assert kb_main(["show", document["document_id"]]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "sk-abcdef123456" not in out and "sk-zzzzzzzzzz" not in out
    assert store.get(document["document_id"])["document_url"].endswith("sk-abcdef123456")
    with pytest.raises(SystemExit) as raised:
        kb_main(["search", "x", "-k", "-5"])
    assert raised.value.code == 2
    assert kb_main(["patch", document["document_id"], "--name", ""]) == 2
    from knowledge import memories as mem

    mem.add_facts(store, ["Anna-p1", "anna-p2"], ["x"], "c1")
    assert mem.user_tags(store, "anna") == ["anna-p2"]  # tags are case-sensitive
