"""The report's Markdown, parsed once for every export format: tables, bare URLs made links, and each
`[n]` citation linked to its entry in the References list (ARCHITECTURE.md "Contracts")."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from sala_report.app import report_wording

# the engine's heading in every report language (report_wording.py), and what people write themselves
REFERENCE_HEADINGS = {"references", "sources", "bibliography", "works cited", *report_wording.REFERENCE_HEADINGS}
_URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'`]+")
_CITATION = re.compile(r"\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")
_REFERENCE_START = re.compile(r"^\s*\[(\d{1,4})\]")
# A reference's location after the dash: an absolute POSIX or Windows path.
_FILE_LOCATION = re.compile(r"(?:—|–|-)\s+((?:/|[A-Za-z]:\\)[^\n]+?)\s*$")
_TRAILING_PUNCTUATION = ".,;:!?'\""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str


def parser() -> MarkdownIt:
    """CommonMark with tables and strikethrough; raw HTML is shown as text, never passed through."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.core.ruler.push("sala_report_links", _link_rule)
    return md


def parse(markdown: str) -> list[Token]:
    return parser().parse(markdown)


def title_of(tokens: list[Token]) -> str | None:
    """The text of the first `# Title` heading, if the report has one."""
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1":
            return tokens[i + 1].content.strip() or None
    return None


def headings(tokens: list[Token]) -> list[Heading]:
    return [
        Heading(int(t.tag[1]), tokens[i + 1].content.strip(), t.attrGet("id") or "")
        for i, t in enumerate(tokens)
        if t.type == "heading_open"
    ]


def plain_text(inline: Token) -> str:
    """The visible text of an inline token (images give their alt text)."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def slug(text: str, taken: set[str]) -> str:
    """A readable anchor for a heading, unique within the document (non-Latin letters are kept)."""
    base = "".join(c if c.isalnum() else "-" for c in unicodedata.normalize("NFKC", text.lower()))
    base = re.sub(r"-+", "-", base).strip("-") or "section"
    anchor, n = base, 2
    while anchor in taken:
        anchor, n = f"{base}-{n}", n + 1
    taken.add(anchor)
    return anchor


def _link_rule(state: StateCore) -> None:
    tokens = state.tokens
    _split_reference_paragraphs(tokens, state)
    references = _mark_references(tokens)
    taken: set[str] = {f"ref-{n}" for n in references}
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            token.attrSet("id", slug(tokens[i + 1].content, taken))
        if token.type == "inline" and token.children is not None:
            token.children = _link_children(token.children, references, is_reference=bool(token.meta.get("reference")))


def _in_reference_sections(tokens: list[Token]):
    """Yield (index, token) for tokens under a References heading, up to the next heading at its level or above."""
    section_level = None
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            level = int(token.tag[1])
            if section_level is not None and level <= section_level:
                section_level = None
            if tokens[i + 1].content.strip().lower().rstrip(":") in REFERENCE_HEADINGS:
                section_level = level
                continue
        if section_level is not None:
            yield i, token


def _split_reference_paragraphs(tokens: list[Token], state: StateCore) -> None:
    """`[1] A — url` lines written one under another form one paragraph; give each reference its own."""
    positions = [
        i
        for i, token in _in_reference_sections(tokens)
        if token.type == "inline" and tokens[i - 1].type == "paragraph_open" and not tokens[i - 1].hidden
    ]
    for i in reversed(positions):
        inline = tokens[i]
        lines: list[list[Token]] = [[]]
        for child in inline.children or []:
            if child.type in ("softbreak", "hardbreak"):
                lines.append([])
            else:
                lines[-1].append(child)
        groups: list[list[Token]] = []
        for line in lines:
            starts = bool(line) and line[0].type == "text" and _REFERENCE_START.match(line[0].content)
            if starts or not groups:
                groups.append(list(line))
            else:
                groups[-1].extend([Token("softbreak", "br", 0), *line])
        if len(groups) < 2:
            continue
        replacement: list[Token] = []
        for group in groups:
            opening = Token("paragraph_open", "p", 1, map=tokens[i - 1].map, level=tokens[i - 1].level, block=True)
            content = "".join(c.content if c.type != "softbreak" else "\n" for c in group)
            middle = Token("inline", "", 0, content=content, children=group, level=inline.level, block=True)
            closing = Token("paragraph_close", "p", -1, level=tokens[i - 1].level, block=True)
            replacement += [opening, middle, closing]
        tokens[i - 1 : i + 2] = replacement


def _mark_references(tokens: list[Token]) -> set[int]:
    """Give each `[n] ...` entry under References the anchor `ref-n`; return the numbers found."""
    found: set[int] = set()
    for i, token in list(_in_reference_sections(tokens)):
        if token.type != "inline":
            continue
        match = _REFERENCE_START.match(token.content)
        if not match:
            continue
        n = int(match.group(1))
        block = next((tokens[j] for j in range(i - 1, -1, -1) if tokens[j].nesting == 1), None)
        for j in range(i - 1, max(i - 3, -1), -1):  # a list item's paragraph: anchor the item itself
            if tokens[j].type == "list_item_open":
                block = tokens[j]
                break
        if block is not None and not block.attrGet("id"):
            block.attrSet("id", f"ref-{n}")
        token.meta["reference"] = n
        found.add(n)
    return found


def _link_children(children: list[Token], references: set[int], *, is_reference: bool) -> list[Token]:
    out: list[Token] = []
    depth = 0
    for index, child in enumerate(children):
        if child.type == "link_open":
            depth += 1
        elif child.type == "link_close":
            depth -= 1
        if child.type != "text" or depth > 0:
            out.append(child)
            continue
        text = child.content
        if is_reference and index == 0:
            match = _REFERENCE_START.match(text)
            if match:
                out.append(_text(text[: match.end()]))
                text = text[match.end() :]
        file_match = _FILE_LOCATION.search(text) if is_reference and not _URL.search(text) else None
        if file_match:
            out += _split_citations(text[: file_match.start(1)], references)
            out += _link(_file_uri(file_match.group(1)), file_match.group(1))
            continue
        out += _split_urls(text, references)
    return [t for t in out if not (t.type == "text" and not t.content)]


def _split_urls(text: str, references: set[int]) -> list[Token]:
    out: list[Token] = []
    pos = 0
    for match in _URL.finditer(text):
        url = match.group(0)
        while url and url[-1] in _TRAILING_PUNCTUATION:
            url = url[:-1]
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]
        out += _split_citations(text[pos : match.start()], references)
        out += _link(url, url)
        pos = match.start() + len(url)
    out += _split_citations(text[pos:], references)
    return out


def _split_citations(text: str, references: set[int]) -> list[Token]:
    out: list[Token] = []
    pos = 0
    for match in _CITATION.finditer(text):
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        if not all(n in references for n in numbers):
            continue
        out.append(_text(text[pos : match.start()] + "["))
        for k, n in enumerate(numbers):
            if k:
                out.append(_text(", "))
            out += _link(f"#ref-{n}", str(n), css_class="cite")
        out.append(_text("]"))
        pos = match.end()
    out.append(_text(text[pos:]))
    return out


def _link(href: str, label: str, *, css_class: str | None = None) -> list[Token]:
    attrs = {"href": href}
    if css_class:
        attrs["class"] = css_class
    return [Token("link_open", "a", 1, attrs=attrs), _text(label), Token("link_close", "a", -1)]


def _text(content: str) -> Token:
    return Token("text", "", 0, content=content)


def _file_uri(path: str) -> str:
    if re.match(r"^[A-Za-z]:\\", path):
        return PureWindowsPath(path).as_uri()
    return PurePosixPath(path).as_uri()
