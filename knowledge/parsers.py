"""Text out of a document's bytes, by format, with libraries (never a hand-written parser).

| format | library |
| --- | --- |
| pdf | ``pypdf`` (one section per page) |
| docx | ``python-docx`` (paragraphs and tables) |
| doc | Debian ``antiword`` (a subprocess; a clear error when it is not installed) |
| pptx | ``python-pptx`` (one section per slide, notes included) |
| xlsx | ``openpyxl`` (one section per sheet, a row per line) |
| csv | ``csv`` (a row per line, the header row repeated as ``column: value``) |
| html | ``trafilatura`` (the page's main text), lxml's text when it finds none |
| txt, md | UTF-8 (or Latin-1) text |
| png, jpg | ``rapidocr-onnxruntime`` (ONNX OCR, its weights bundled) |

The format comes from the file's extension (or the server's content type) and must agree
with what the bytes are: a ``report.pdf`` that is a ZIP, a ``.docx`` that is not a Word
package, a ``.png`` that is text are :class:`ParseError` ``file_format_unsupported``, as
is a file the library cannot read (corrupt). No readable text is ``file_empty``.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

#: Formats we take, by extension (Tavus's list plus md and html).
FORMATS = ("pdf", "txt", "md", "docx", "doc", "pptx", "csv", "xlsx", "html", "png", "jpg")
_ALIASES = {"jpeg": "jpg", "htm": "html", "markdown": "md", "text": "txt"}
_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/csv": "csv",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "image/png": "png",
    "image/jpeg": "jpg",
}
#: An Office file (a ZIP) may unpack to at most this much, and this many times its size
#: (a ZIP bomb is refused before any library opens it).
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
ZIP_RATIO = 100
#: Images are decoded only up to this many pixels (a decompression bomb is refused first).
MAX_IMAGE_PIXELS = 50_000_000
_ZIP_MEMBER = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}


class ParseError(Exception):
    """A document that cannot be turned into text: ``code`` is Tavus's error code."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Section:
    """A run of a document's text and where it came from (``page 3``, ``slide 2``, a URL)."""

    text: str
    source: str


def format_of(name: str, content_type: str | None = None) -> str | None:
    """The format of a file name or URL path (its extension), else of the content type."""
    suffix = PurePosixPath(name.split("?", 1)[0].split("#", 1)[0]).suffix.lower().lstrip(".")
    suffix = _ALIASES.get(suffix, suffix)
    if suffix in FORMATS:
        return suffix
    if content_type:
        return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    return None


def sniff(data: bytes) -> str:
    """What the bytes look like: ``pdf``, ``zip``, ``ole`` (legacy Office), ``png``,
    ``jpg``, ``html``, ``text`` or ``binary``."""
    head = data[:2048]
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if b"\x00" in head:
        return "binary"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered[:512]:
        return "html"
    return "text"


_EXPECTED = {"pdf": {"pdf"}, "docx": {"zip"}, "pptx": {"zip"}, "xlsx": {"zip"}, "doc": {"ole"},
             "png": {"png", "jpg"}, "jpg": {"jpg", "png"}, "html": {"html", "text"},
             "txt": {"text", "html"}, "md": {"text", "html"}, "csv": {"text"}}
_LOOKS = {"pdf": "a PDF", "zip": "a ZIP archive", "ole": "a legacy Office file", "png": "a PNG image",
          "jpg": "a JPEG image", "html": "HTML", "text": "text", "binary": "binary data"}


def check_format(fmt: str, data: bytes, name: str) -> None:
    """Refuse bytes that are not what the extension says (``file_format_unsupported``)."""
    looks = sniff(data)
    if looks not in _EXPECTED[fmt]:
        raise ParseError("file_format_unsupported",
                         f"{name} is named as {fmt} but its content is {_LOOKS[looks]}")
    member = _ZIP_MEMBER.get(fmt)
    if member:
        try:
            infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except zipfile.BadZipFile:
            raise ParseError("file_format_unsupported", f"{name} is not a readable {fmt} file "
                             "(a damaged ZIP archive)") from None
        unpacked = sum(info.file_size for info in infos)
        if unpacked > MAX_UNPACKED_BYTES or unpacked > ZIP_RATIO * max(1, len(data)):
            raise ParseError("file_size_too_large", f"{name} unpacks to {unpacked // 2**20} MB "
                             f"(at most {MAX_UNPACKED_BYTES // 2**20} MB, {ZIP_RATIO}x its size)")
        names = {info.filename for info in infos}
        if member not in names:
            raise ParseError("file_format_unsupported",
                             f"{name} is a ZIP archive but not a {fmt} document (no {member})")


def extract(data: bytes, name: str, fmt: str, *, source: str | None = None) -> list[Section]:
    """The text sections of a document (``fmt`` from :func:`format_of`)."""
    if not data:
        raise ParseError("file_empty", f"{name} is empty")
    check_format(fmt, data, name)
    where = source or name
    try:
        sections = _EXTRACTORS[fmt](data, where)
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library's complaint about a damaged file
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ParseError("file_format_unsupported", f"{name} could not be read as {fmt}: {detail}"
                         ) from None
    sections = [Section(_tidy(s.text), s.source) for s in sections]
    sections = [s for s in sections if s.text]
    if not sections:
        raise ParseError("file_empty", f"{name} contains no readable text")
    return sections


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _text(data: bytes, where: str) -> list[Section]:
    return [Section(_decode(data), where)]


def _pdf(data: bytes, where: str) -> list[Section]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception:  # noqa: BLE001
            raise ParseError("file_format_unsupported", f"{where} is an encrypted PDF") from None
    return [Section(page.extract_text() or "", f"{where}, page {n}")
            for n, page in enumerate(reader.pages, 1)]


def _docx(data: bytes, where: str) -> list[Section]:
    import docx

    document = docx.Document(io.BytesIO(data))
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text for cell in row.cells))
    return [Section("\n".join(lines), where)]


def _doc(data: bytes, where: str) -> list[Section]:
    antiword = shutil.which("antiword")
    if antiword is None:
        raise ParseError("file_format_unsupported",
                         f"{where}: .doc files need Debian's antiword (apt-get install antiword), "
                         "which is not installed; save it as .docx instead")
    with tempfile.NamedTemporaryFile(suffix=".doc") as handle:
        handle.write(data)
        handle.flush()
        done = subprocess.run([antiword, "-w", "0", handle.name], capture_output=True,
                              timeout=60, check=False)
    if done.returncode != 0:
        message = _decode(done.stderr).strip().splitlines()[:1] or ["antiword failed"]
        raise ParseError("file_format_unsupported", f"{where} could not be read as doc: {message[0]}")
    return [Section(_decode(done.stdout), where)]


def _pptx(data: bytes, where: str) -> list[Section]:
    from pptx import Presentation

    sections = []
    for n, slide in enumerate(Presentation(io.BytesIO(data)).slides, 1):
        lines = []
        for shape in slide.shapes:
            if shape.has_text_frame:
                lines.append(shape.text_frame.text)
            if getattr(shape, "has_table", False) and shape.has_table:
                for row in shape.table.rows:
                    lines.append(" | ".join(cell.text for cell in row.cells))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            lines.append(slide.notes_slide.notes_text_frame.text)
        sections.append(Section("\n".join(lines), f"{where}, slide {n}"))
    return sections


def _rows_text(rows: list[list[str]]) -> str:
    """Rows as lines; with a header row each value is ``column: value`` (retrievable alone)."""
    rows = [[c.strip() for c in row] for row in rows if any(c.strip() for c in row)]
    if len(rows) < 2:
        return "\n".join(", ".join(row) for row in rows)
    header, body = rows[0], rows[1:]
    lines = []
    for row in body:
        cells = [f"{header[i]}: {value}" if i < len(header) and header[i] else value
                 for i, value in enumerate(row) if value]
        lines.append("; ".join(cells))
    return "\n".join(lines)


def _xlsx(data: bytes, where: str) -> list[Section]:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sections = []
    for sheet in book.worksheets:
        rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        sections.append(Section(_rows_text(rows), f"{where}, sheet {sheet.title}"))
    book.close()
    return sections


def _csv(data: bytes, where: str) -> list[Section]:
    text = _decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    return [Section(_rows_text(list(csv.reader(io.StringIO(text), dialect))), where)]


def html_text(html: str, url: str | None = None) -> str:
    """A page's main text (trafilatura), else all of its visible text (lxml)."""
    import trafilatura

    text = trafilatura.extract(html, url=url, include_tables=True, include_comments=False,
                               favor_recall=True)
    if text:
        return text
    import lxml.html

    try:
        tree = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - not HTML at all
        return ""
    for bad in tree.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    return tree.text_content()


def _html(data: bytes, where: str) -> list[Section]:
    return [Section(html_text(_decode(data)), where)]


_OCR = None


def _image(data: bytes, where: str) -> list[Section]:
    global _OCR
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own check below, with our error
    image = Image.open(io.BytesIO(data))  # reads the header only
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ParseError("file_size_too_large", f"{where}: the image is too large to read "
                         f"({image.width}x{image.height}, at most {MAX_IMAGE_PIXELS} pixels)")
    image.load()
    if _OCR is None:
        from rapidocr_onnxruntime import RapidOCR

        _OCR = RapidOCR()
    result, _elapsed = _OCR(np.asarray(image.convert("RGB"))[:, :, ::-1])
    lines = [text for _box, text, score in (result or []) if float(score) >= 0.5]
    return [Section("\n".join(lines), where)]


_EXTRACTORS = {"pdf": _pdf, "txt": _text, "md": _text, "docx": _docx, "doc": _doc, "pptx": _pptx,
               "csv": _csv, "xlsx": _xlsx, "html": _html, "png": _image, "jpg": _image}
