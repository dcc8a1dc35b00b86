"""DOCX, ODT and EPUB: zip packages of XML, read with zipfile and lxml (no format library needed).

Every member is unpacked through one budget, so a zip bomb stops at `max_unpacked_bytes`; XML is
parsed without entity expansion, DTDs or network access.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from urllib.parse import unquote

from lxml import etree
from lxml import html as lxml_html

from sala_report.retrieval.errors import ExtractionError

PACKAGED_KINDS = ("docx", "odt", "epub")
MAX_UNPACKED_BYTES = 200_000_000
MAX_MEMBERS = 20_000

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC = "{http://purl.org/dc/elements/1.1/}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
_OPF = "{http://www.idpf.org/2007/opf}"
_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def read_package(body: bytes, kind: str, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> tuple[str, str]:
    """(text, title) of a DOCX, ODT or EPUB body. Raises ExtractionError for a damaged package or one
    that unpacks to more than `max_unpacked_bytes`."""
    readers = {"docx": _docx, "odt": _odt, "epub": _epub}
    if kind not in readers:
        raise ValueError(f"kind must be one of {PACKAGED_KINDS}, got {kind!r}")
    try:
        package = _Package(body, max_unpacked_bytes)
        return readers[kind](package)
    except ExtractionError:
        raise
    except (zipfile.BadZipFile, etree.LxmlError, ValueError, EOFError, NotImplementedError) as e:
        raise ExtractionError(f"not a readable {kind.upper()} file ({type(e).__name__}: {e})") from e


class _Package:
    def __init__(self, body: bytes, max_unpacked_bytes: int):
        self.zip = zipfile.ZipFile(io.BytesIO(body))
        if len(self.zip.infolist()) > MAX_MEMBERS:
            raise ExtractionError(f"the package holds more than {MAX_MEMBERS:,} files")
        self.left = max_unpacked_bytes
        self.cap = max_unpacked_bytes

    def has(self, name: str) -> bool:
        return name in self.zip.NameToInfo

    def read(self, name: str) -> bytes:
        if not self.has(name):
            raise ExtractionError(f"the package has no {name}")
        # Read one byte past the budget instead of trusting the sizes the zip directory declares.
        with self.zip.open(name) as member:
            data = member.read(self.left + 1)
        if len(data) > self.left:
            raise ExtractionError(f"it unpacks to more than {self.cap:,} bytes; not read")
        self.left -= len(data)
        return data

    def xml(self, name: str) -> etree._Element:
        return etree.fromstring(self.read(name), _XML)

    def title(self, name: str) -> str:
        if not self.has(name):
            return ""
        found = self.xml(name).find(f".//{_DC}title")
        return " ".join((found.text or "").split()) if found is not None else ""


def _docx(package: _Package) -> tuple[str, str]:
    body = package.xml("word/document.xml").find(f"{_W}body")
    blocks: list[str] = []
    for node in body if body is not None else ():
        if node.tag == f"{_W}p":
            blocks.append(_docx_paragraph(node))
        elif node.tag == f"{_W}tbl":
            for row in node.iter(f"{_W}tr"):
                cells = [" ".join(_docx_paragraph(p) for p in cell.iter(f"{_W}p")) for cell in row.iter(f"{_W}tc")]
                blocks.append(" | ".join(c.strip() for c in cells))
    return _join(blocks), package.title("docProps/core.xml")


_HEADING_STYLE = re.compile(r"^(?:heading|berschrift|titre)\s*(\d)$", re.IGNORECASE)


def _docx_paragraph(paragraph: etree._Element) -> str:
    parts = []
    for node in paragraph.iter(f"{_W}t", f"{_W}tab", f"{_W}br", f"{_W}cr"):
        # itertext: an unexpanded entity reference stays visible as its name instead of cutting the run
        parts.append("".join(node.itertext()) if node.tag == f"{_W}t" else "\t" if node.tag == f"{_W}tab" else "\n")
    text = "".join(parts).strip()
    style = paragraph.find(f"{_W}pPr/{_W}pStyle")
    name = (style.get(f"{_W}val") or "") if style is not None else ""
    level = 1 if name.lower() == "title" else int(m.group(1)) if (m := _HEADING_STYLE.match(name)) else 0
    return f"{'#' * level} {text}" if level and text else text


def _odt(package: _Package) -> tuple[str, str]:
    body = package.xml("content.xml").find(f"{_OFFICE}body/{_OFFICE}text")
    blocks: list[str] = []
    if body is not None:
        _odt_blocks(body, blocks)
    return _join(blocks), package.title("meta.xml")


def _odt_blocks(node: etree._Element, blocks: list[str]) -> None:
    for child in node:
        if child.tag == f"{_TEXT}h":
            level = int(child.get(f"{_TEXT}outline-level") or 1)
            blocks.append(f"{'#' * min(level, 6)} {_odt_inline(child).strip()}")
        elif child.tag == f"{_TEXT}p":
            blocks.append(_odt_inline(child).strip())
        elif child.tag == f"{_TABLE}table":
            for row in child.iter(f"{_TABLE}table-row"):
                cells = [
                    " ".join(_odt_inline(p).strip() for p in cell.iter(f"{_TEXT}p"))
                    for cell in row.iter(f"{_TABLE}table-cell")
                ]
                blocks.append(" | ".join(cells))
        else:  # lists, sections, frames: their paragraphs are below
            _odt_blocks(child, blocks)


def _odt_inline(node: etree._Element) -> str:
    parts = [node.text or ""]
    for child in node:
        if child.tag == f"{_TEXT}s":
            parts.append(" " * int(child.get(f"{_TEXT}c") or 1))
        elif child.tag == f"{_TEXT}tab":
            parts.append("\t")
        elif child.tag == f"{_TEXT}line-break":
            parts.append("\n")
        elif child.tag != f"{_TEXT}note":  # footnote bodies would break the sentence they sit in
            parts.append(_odt_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _epub(package: _Package) -> tuple[str, str]:
    rootfile = package.xml("META-INF/container.xml").find(f".//{_CONTAINER}rootfile")
    if rootfile is None or not rootfile.get("full-path"):
        raise ExtractionError("the EPUB names no package document")
    opf_path = rootfile.get("full-path")
    opf = package.xml(opf_path)
    base = posixpath.dirname(opf_path)
    manifest = {item.get("id"): item for item in opf.iter(f"{_OPF}item")}
    chapters = []
    for ref in opf.iter(f"{_OPF}itemref"):
        item = manifest.get(ref.get("idref"))
        if item is None or "html" not in (item.get("media-type") or ""):
            continue
        name = posixpath.normpath(posixpath.join(base, unquote(item.get("href") or "")))
        if package.has(name):
            chapters.append(html_block_text(package.read(name)))
    title = opf.find(f".//{_DC}title")
    return _join(chapters), " ".join((title.text or "").split()) if title is not None else ""


_BLOCKS = ("p", "div", "li", "tr", "br", "blockquote", "pre", "section", "article", "dd", "dt", "table", "ul", "ol")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def html_block_text(markup: bytes | str) -> str:
    """Text of an HTML document with headings as Markdown `#` lines and a blank line between blocks;
    one linear pass, for EPUB chapters and for pages the article extractor could not finish."""
    try:
        root = lxml_html.document_fromstring(markup)
    except (etree.ParserError, ValueError):  # empty or unparsable: no text
        return ""
    for inert in list(root.iter("script", "style", "noscript", "template", "head")):
        inert.drop_tree()
    for block in root.iter(*_BLOCKS):
        block.tail = "\n\n" + (block.tail or "")
    for heading in root.iter(*_HEADINGS):
        heading.text = "#" * int(heading.tag[1]) + " " + (heading.text or "")
        heading.tail = "\n\n" + (heading.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _join(blocks: list[str]) -> str:
    return "\n\n".join(b for b in blocks if b.strip())
