"""The report as a Word document (python-docx): headings in Word's heading styles, lists, tables, code,
each `[n]` citation a link to its reference, and URLs as clickable links."""

from __future__ import annotations

import os
from pathlib import Path

from markdown_it.token import Token

from sala_report.app.export import markdown as report_markdown

MONOSPACE = "Consolas"


def write_docx(markdown: str, out: Path) -> None:
    """Write `markdown` (the engine's report) to `out` as .docx, whole or not at all."""
    from docx import Document

    document = Document()
    tokens = report_markdown.parse(markdown)
    title = report_markdown.title_of(tokens)
    if title:
        document.core_properties.title = title
    document.core_properties.author = "sala-report"
    _Writer(document).blocks(tokens)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    document.save(str(partial))
    os.replace(partial, out)


class _Writer:
    """Walks markdown-it's block tokens and writes paragraphs; inline tokens become runs and links."""

    def __init__(self, document):
        self.document = document
        self.lists: list[str] = []  # "bullet" or "number", innermost last
        self.quote = 0
        self.bookmarks = 0

    def blocks(self, tokens: list[Token]) -> None:
        i = 0
        while i < len(tokens):
            token = tokens[i]
            kind = token.type
            if kind == "heading_open":
                level = int(token.tag[1])
                paragraph = self.document.add_heading("", level=0 if level == 1 else min(level - 1, 9))
                self.inline(paragraph, tokens[i + 1])
                i += 3
                continue
            if kind == "paragraph_open":
                paragraph = self.document.add_paragraph(style=self._paragraph_style())
                anchor = token.attrGet("id") or ""
                if anchor.startswith("ref-"):
                    self._bookmark(paragraph, str(anchor))
                self.inline(paragraph, tokens[i + 1])
                i += 3
                continue
            if kind in ("bullet_list_open", "ordered_list_open"):
                self.lists.append("bullet" if kind == "bullet_list_open" else "number")
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.lists.pop()
            elif kind == "blockquote_open":
                self.quote += 1
            elif kind == "blockquote_close":
                self.quote -= 1
            elif kind in ("fence", "code_block"):
                paragraph = self.document.add_paragraph()
                for k, line in enumerate(token.content.rstrip("\n").split("\n")):
                    if k:
                        paragraph.add_run().add_break()
                    paragraph.add_run(line).font.name = MONOSPACE
            elif kind == "table_open":
                i = self.table(tokens, i)
                continue
            elif kind == "hr":
                self.document.add_paragraph("")
            i += 1

    def _paragraph_style(self) -> str | None:
        if self.lists:
            depth = min(len(self.lists), 3)
            base = "List Bullet" if self.lists[-1] == "bullet" else "List Number"
            return base if depth == 1 else f"{base} {depth}"
        return "Quote" if self.quote else None

    def table(self, tokens: list[Token], start: int) -> int:
        rows: list[list[Token]] = []
        i = start
        while tokens[i].type != "table_close":
            if tokens[i].type == "tr_open":
                rows.append([])
            elif tokens[i].type == "inline":
                rows[-1].append(tokens[i])
            i += 1
        columns = max((len(r) for r in rows), default=0)
        if rows and columns:
            table = self.document.add_table(rows=len(rows), cols=columns)
            table.style = "Table Grid"
            for r, row in enumerate(rows):
                for c, inline in enumerate(row):
                    cell = table.cell(r, c).paragraphs[0]
                    self.inline(cell, inline, bold=(r == 0))
        return i + 1

    def inline(self, paragraph, token: Token, *, bold: bool = False) -> None:
        state = {"bold": bold, "italic": False, "strike": False}
        link: tuple[str, list[tuple[str, dict]]] | None = None
        for child in token.children or []:
            kind = child.type
            if kind in ("strong_open", "strong_close"):
                state["bold"] = kind == "strong_open" or bold
            elif kind in ("em_open", "em_close"):
                state["italic"] = kind == "em_open"
            elif kind in ("s_open", "s_close"):
                state["strike"] = kind == "s_open"
            elif kind == "link_open":
                link = (str(child.attrGet("href") or ""), [])
            elif kind == "link_close" and link is not None:
                _hyperlink(paragraph, link[0], link[1])
                link = None
            elif kind in ("text", "code_inline", "image"):
                text = child.content if kind != "image" else f"[image: {child.content or 'image'}]"
                style = {**state, "code": kind == "code_inline"}
                if link is not None:
                    link[1].append((text, style))
                elif kind == "image":
                    _hyperlink(paragraph, str(child.attrGet("src") or ""), [(text, style)])
                else:
                    _run(paragraph, text, style)
            elif kind in ("softbreak", "hardbreak"):
                paragraph.add_run().add_break()

    def _bookmark(self, paragraph, name: str) -> None:
        from docx.oxml import OxmlElement
        from docx.oxml.ns import qn

        self.bookmarks += 1
        start = OxmlElement("w:bookmarkStart")
        start.set(qn("w:id"), str(self.bookmarks))
        start.set(qn("w:name"), name.replace("-", "_"))  # Word bookmark names allow letters, digits and _
        end = OxmlElement("w:bookmarkEnd")
        end.set(qn("w:id"), str(self.bookmarks))
        paragraph._p.insert(1 if paragraph._p.pPr is not None else 0, start)
        paragraph._p.append(end)


def _run(paragraph, text: str, style: dict) -> None:
    run = paragraph.add_run(text)
    run.bold = style["bold"] or None
    run.italic = style["italic"] or None
    run.font.strike = style["strike"] or None
    if style["code"]:
        run.font.name = MONOSPACE


def _hyperlink(paragraph, href: str, pieces: list[tuple[str, dict]]) -> None:
    """A w:hyperlink: `#ref-n` jumps to that reference's bookmark, anything else opens as an external link."""
    from docx.opc.constants import RELATIONSHIP_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    link = OxmlElement("w:hyperlink")
    if href.startswith("#"):
        link.set(qn("w:anchor"), href[1:].replace("-", "_"))
    elif href:
        link.set(qn("r:id"), paragraph.part.relate_to(href, RELATIONSHIP_TYPE.HYPERLINK, is_external=True))
    for text, style in pieces:
        run = OxmlElement("w:r")
        properties = OxmlElement("w:rPr")
        character_style = OxmlElement("w:rStyle")
        character_style.set(qn("w:val"), "Hyperlink")
        properties.append(character_style)
        for flag, tag in (("bold", "w:b"), ("italic", "w:i")):  # the schema orders rPr children: b, i, color, u
            if style.get(flag):
                properties.append(OxmlElement(tag))
        color = OxmlElement("w:color")
        color.set(qn("w:val"), "0563C1")
        underline = OxmlElement("w:u")
        underline.set(qn("w:val"), "single")
        properties.append(color)
        properties.append(underline)
        run.append(properties)
        text_element = OxmlElement("w:t")
        text_element.text = text
        text_element.set(qn("xml:space"), "preserve")
        run.append(text_element)
        link.append(run)
    paragraph._p.append(link)
