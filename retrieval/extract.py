"""Turning fetched bodies and files into text: trafilatura for HTML, pypdf for PDF, text as it is."""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from sala_report.retrieval.errors import EmptyDocument, ExtractionError

log = logging.getLogger(__name__)

KINDS = ("html", "pdf", "text", "markdown")
SUFFIX_KINDS = {
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".txt": "text", ".text": "text",
    ".md": "markdown", ".markdown": "markdown",
}


@dataclass(frozen=True)
class Extracted:
    text: str  # Markdown for HTML and Markdown sources, plain text otherwise
    title: str
    metadata: dict[str, Any] = field(default_factory=dict)


def extract(body: bytes, kind: str, *, url: str | None = None, charset: str | None = None) -> Extracted:
    """Read `body` of `kind` (html, pdf, text, markdown).

    Raises EmptyDocument when it holds no text, ExtractionError when it cannot be read at all."""
    if kind == "pdf":
        result = _extract_pdf(body)
    elif kind == "html":
        result = _extract_html(decode_text(body, charset, html=True), url)
    elif kind in ("text", "markdown"):
        text = decode_text(body, charset).replace("\r\n", "\n").strip()
        result = Extracted(text, _first_line_title(text))
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not result.text.strip():
        raise EmptyDocument("no readable text in it")
    return result


def decode_text(body: bytes, declared: str | None = None, *, html: bool = False) -> str:
    """Bytes to text: a BOM, then the declared charset, then an HTML meta charset, then UTF-8 if it
    decodes cleanly, then charset-normalizer's guess."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            return body.decode(encoding, errors="replace").lstrip("\ufeff")
    candidates = [declared]
    if html:
        match = _META_CHARSET.search(body[:4096])
        candidates.append(match.group(1).decode("ascii", "ignore") if match else None)
    for name in candidates:
        encoding = _known_encoding(name)
        if encoding:
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


def _known_encoding(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        return None


def _extract_html(html: str, url: str | None) -> Extracted:
    import trafilatura

    document = None
    for recall in (False, True):  # the precise pass first; on short pages it returns nothing
        try:
            document = trafilatura.bare_extraction(
                html, url=url, with_metadata=True, include_comments=False, include_tables=True,
                include_formatting=True, favor_recall=recall,
            )
        except Exception as e:  # trafilatura raises assorted lxml errors on hostile markup
            log.debug("trafilatura failed on %s: %r", url, e)
            document = None
        if document is not None and (document.text or "").strip():
            break
    if document is None or not (document.text or "").strip():
        text = _html_baseline(html)
        return Extracted(text, _html_title(html) or _first_line_title(text))
    metadata = {
        key: value
        for key in ("author", "date", "sitename", "description", "language")
        if (value := getattr(document, key, None))
    }
    if document.url:
        metadata["canonical_url"] = document.url
    return Extracted(document.text.strip(), document.title or _html_title(html) or "", metadata)


def _html_baseline(html: str) -> str:
    """Text of a page trafilatura finds no article in (very short or oddly built pages)."""
    import trafilatura

    try:
        return (trafilatura.html2txt(html) or "").strip()
    except Exception:
        return ""


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _html_title(html: str) -> str:
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
    return Extracted(text, str(title) or _first_line_title(text), {"pages": len(pages), "page_offsets": offsets})


def _first_line_title(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:120]
    return ""
