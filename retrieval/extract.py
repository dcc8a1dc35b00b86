"""Turning fetched bodies and files into text: trafilatura for HTML, pypdf for PDF, text as it is, and
the zip-packaged formats (DOCX, ODT, EPUB) through `packaged`.

Work here is bounded by size: HTML loses its scripts and styles and is cut to `max_html_chars` before
trafilatura sees it. A time bound needs a process (`worker.extract_bounded`)."""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sala_report.retrieval.errors import EmptyDocument, ExtractionError
from sala_report.retrieval.packaged import MAX_UNPACKED_BYTES, PACKAGED_KINDS, read_package

log = logging.getLogger(__name__)

KINDS = ("html", "pdf", "text", "markdown", "rst", "docx", "odt", "epub")
TEXT_KINDS = ("text", "markdown", "rst")  # stored as they are, after decoding
SUFFIX_KINDS = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".rest": "rst",
    ".docx": "docx",
    ".odt": "odt",
    ".epub": "epub",
}
# Past this, trafilatura's time grows to minutes (a 14 MB page ran > 300 s); the cut keeps a page's start.
MAX_HTML_CHARS = 2_000_000


@dataclass(frozen=True)
class Extracted:
    text: str  # Markdown for HTML and Markdown sources, plain text otherwise
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def extract(
    body: bytes,
    kind: str,
    *,
    url: str | None = None,
    charset: str | None = None,
    max_html_chars: int = MAX_HTML_CHARS,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> Extracted:
    """Read `body` of `kind` (one of KINDS).

    Raises EmptyDocument when it holds no text, ExtractionError when it cannot be read at all (binary
    data posing as text, a damaged or oversized package)."""
    if kind == "pdf":
        result = _extract_pdf(body)
    elif kind == "html":
        result = _extract_html(_checked_text(body, charset, html=True), url, max_html_chars)
    elif kind in TEXT_KINDS:
        text = _checked_text(body, charset).replace("\r\n", "\n").strip()
        result = Extracted(text, first_line_title(text))
    elif kind in PACKAGED_KINDS:
        result = Extracted(*read_package(body, kind, max_unpacked_bytes))
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not result.text.strip():
        raise EmptyDocument("no readable text in it")
    return result


def _checked_text(body: bytes, charset: str | None, *, html: bool = False) -> str:
    text = decode_text(body, charset, html=html)
    if looks_binary(text):
        raise ExtractionError("binary data, not text")
    return text


def looks_binary(text: str) -> bool:
    """True when decoded bytes are not text: a NUL character, or more than 2% control or undecodable
    characters. (UTF-16 text decodes without NULs, so its NUL bytes do not count against it.)"""
    sample = text[:65536]
    if "\0" in sample:
        return True
    return len(_NOT_TEXT.findall(sample)) > 0.02 * max(1, len(sample))


_NOT_TEXT = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd]")


def decode_text(body: bytes, declared: str | None = None, *, html: bool = False) -> str:
    """Bytes to text: a BOM, then the declared charset, then an HTML meta charset, then UTF-8 if it
    decodes cleanly, then charset-normalizer's guess. A declared charset the bytes cannot be in is
    passed over (servers and pages misdeclare: UTF-8 bytes labelled utf-16 would decode to CJK noise)."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            return body.decode(encoding, errors="replace").lstrip("\ufeff")
    candidates = [declared]
    if html:
        match = _META_CHARSET.search(body[:4096])
        candidates.append(match.group(1).decode("ascii", "ignore") if match else None)
    for name in candidates:
        encoding = _known_encoding(name)
        if encoding and _plausible(body, encoding, html):
            return body.decode(encoding, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body).best()
    if best is not None:
        return str(best)
    return body.decode("utf-8", errors="replace")


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _plausible(body: bytes, encoding: str, html: bool) -> bool:
    """Could `body` be in `encoding`? Wide encodings must decode strictly and, as real text always holds
    some ASCII (spaces, newlines, markup), must contain NUL bytes; HTML must decode to markup."""
    head = body[:4096]
    if encoding.startswith(("utf-16", "utf-32")):
        if b"\0" not in head:
            return False
        try:
            head.decode(encoding)
        except UnicodeDecodeError:
            if len(head) == len(body):  # a cut in the middle of a character is fine; real errors are not
                return False
    if html:
        text = head.decode(encoding, errors="replace")
        return "<" in text and ">" in text
    return True


def _known_encoding(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        return None


def _extract_html(html: str, url: str | None, max_chars: int = MAX_HTML_CHARS) -> Extracted:
    import trafilatura

    html, cut = bounded_html(html, max_chars)
    document = None
    for recall in (False, True):  # the precise pass first; on short pages it returns nothing
        try:
            document = trafilatura.bare_extraction(
                html,
                url=url,
                with_metadata=True,
                include_comments=False,
                include_tables=True,
                include_formatting=True,
                favor_recall=recall,
            )
        except Exception as e:  # trafilatura raises assorted lxml errors on hostile markup
            log.debug("trafilatura failed on %s: %r", url, e)
            document = None
        if document is not None and (document.text or "").strip():
            break
    if document is None or not (document.text or "").strip():
        text = _html_baseline(html)
        return Extracted(text, html_title(html) or first_line_title(text), {"truncated": True} if cut else {})
    metadata: dict[str, Any] = {"truncated": True} if cut else {}
    metadata |= {
        key: value
        for key in ("author", "date", "sitename", "description", "language")
        if (value := getattr(document, key, None))
    }
    if document.url:
        metadata["canonical_url"] = document.url
    return Extracted(document.text.strip(), document.title or html_title(html) or "", metadata)


def bounded_html(html: str, max_chars: int = MAX_HTML_CHARS) -> tuple[str, bool]:
    """`html` without scripts, styles, SVG, comments and inline data URIs, cut at a tag boundary to at
    most `max_chars`; and whether it was cut. One pass, so its time grows with the length only."""
    if max_chars <= 0:
        raise ValueError(f"max_chars must be > 0, got {max_chars!r}")
    lower = html.lower()
    kept, position = [], 0
    for match in _INERT_START.finditer(lower):
        start = match.start()
        if start < position:  # inside a block already dropped
            continue
        name = match.group(1)
        if name == "script" and "ld+json" in lower[start : match.end() + 200].split(">", 1)[0]:
            continue  # JSON-LD carries the author and date trafilatura reads
        closing = "-->" if name == "!--" else f"</{name}"
        end = lower.find(closing, match.end())
        end = len(html) if end < 0 else lower.find(">", end) + 1 or len(html)
        kept.append(html[position:start])
        position = end
    kept.append(html[position:])
    html = _DATA_URI.sub("data:", "".join(kept))
    if len(html) <= max_chars:
        return html, False
    cut = html.rfind("<", 0, max_chars)
    return html[: cut if cut > 0 else max_chars], True


_INERT_START = re.compile(r"<(script|style|svg|noscript|template|!--)")
_DATA_URI = re.compile(r"data:[^\s\"'>)]{256,}")


def _html_baseline(html: str) -> str:
    """Text of a page trafilatura finds no article in (very short or oddly built pages)."""
    import trafilatura

    try:
        return (trafilatura.html2txt(html) or "").strip()
    except Exception:
        return ""


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def html_title(html: str) -> str:
    match = _TITLE.search(html[:20000])
    return " ".join(match.group(1).split()) if match else ""


def _extract_pdf(body: bytes) -> Extracted:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(body))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionError("the PDF is encrypted")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = ((reader.metadata or {}).get("/Title") or "").strip() if reader.metadata else ""
    except ExtractionError:
        raise
    except Exception as e:  # pypdf raises many types on damaged files; any of them means "unreadable"
        raise ExtractionError(f"not a readable PDF ({type(e).__name__}: {e})") from e
    text, offsets = "", []
    for page_text in pages:
        offsets.append(len(text))
        text += page_text + "\n\n"
    text = text.rstrip()
    return Extracted(text, str(title) or first_line_title(text), {"pages": len(pages), "page_offsets": offsets})


def first_line_title(text: str) -> str:
    """The first line with words in it (Markdown `#` marks dropped, reStructuredText underlines passed over)."""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line and not _ADORNMENT.fullmatch(line):
            return line[:120]
    return ""


_ADORNMENT = re.compile(r"([=\-~^\"'`#*+:._<>])\1*")
