"""Report Markdown to PDF with fpdf2 (pure Python, no Pango or Cairo): headings become bookmarks,
citations and URLs become links, wide tables shrink and wrap to fit, and every script gets a font."""

from __future__ import annotations

import os
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import WrapMode
from fpdf.fonts import FontFace as CellStyle
from markdown_it.token import Token

from sala_report.app import pdf_fonts, report_markdown
from sala_report.app.pdf_fonts import FontSources, MissingFont

BODY_PT = 10.5
HEADING_PT = {1: 20.0, 2: 15.0, 3: 12.5, 4: 11.5, 5: 11.0, 6: 10.5}
CODE_PT = 8.5
LINE = 1.45  # line height as a multiple of the font size
PT_TO_MM = 25.4 / 72
LINK_RGB = (20, 80, 170)
TEXT_RGB = (25, 25, 25)
MUTED_RGB = (110, 110, 110)
# Characters the layout adds on top of the report's own text (markers, page numbers).
_LAYOUT_CHARS = "•◦–—0123456789.[]:?… image"


@dataclass(frozen=True)
class PdfResult:
    path: Path
    pages: int
    missing_fonts: tuple[MissingFont, ...]

    @property
    def warnings(self) -> list[str]:
        return [m.message() for m in self.missing_fonts]


def write_pdf(markdown: str, out: Path, *, sources: FontSources = FontSources()) -> PdfResult:
    """Render the report to `out` (written whole or not at all) and say which fonts were missing."""
    tokens = report_markdown.parse(markdown)
    text = markdown + _LAYOUT_CHARS
    plan = pdf_fonts.plan_fonts(text, sources)
    pdf = _ReportPDF()
    with tempfile.TemporaryDirectory(prefix="sala-pdf-fonts-") as tmp:
        unicode_fonts = _register_fonts(pdf, plan, text, Path(tmp), _uses(tokens))
        renderer = _Renderer(pdf, unicode_fonts, plan)
        title = report_markdown.title_of(tokens)
        if title:
            pdf.set_title(title)
        pdf.set_creator("sala-report")
        pdf.page_mode = "USE_OUTLINES"
        pdf.add_page()
        renderer.render(tokens)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part")
        pdf.output(str(partial))
    os.replace(partial, out)
    return PdfResult(out, pdf.page, tuple(plan.missing))


class _NoText(tuple):
    """An empty Unicode mapping that fpdf2 still writes, as `<>`: the glyph reads as no text at all."""

    def __len__(self) -> int:
        return 1


class _ReportPDF(FPDF):
    footer_family = "helvetica"

    def __init__(self) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.set_margins(18, 18, 18)
        self.set_auto_page_break(True, margin=16)

    def set_font(self, family=None, style="", size=0) -> None:
        super().set_font(family, style, size)
        # fpdf2 2.8 marks the page font as set when a line starts in a fallback font, yet sets it only
        # inside that line's saved graphics state, so the next line drew with the wrong glyph codes.
        # Setting it here, outside any text object, leaves nothing for that path to do.
        if self.page and self.current_font is not None and not self.current_font_is_set_on_page:
            self._out(self._set_font_for_page(self.current_font, self.font_size_pt))

    def output(self, name: str = "", *args, **kwargs):
        self._silence_mark_glyphs()
        return super().output(name, *args, **kwargs)

    def _silence_mark_glyphs(self) -> None:
        """Map glyphs that carry no character of their own to empty text in the PDF's ToUnicode table.

        Shaping splits some letters into several glyphs (Noto Sans Arabic draws a letter's dots as
        separate marks); fpdf2 gives the letter to the first glyph and leaves the others unmapped, and
        text extractors such as pypdf then print their raw glyph codes ('!', control characters).
        """
        try:
            for font in self.fonts.values():
                subset = getattr(font, "subset", None)  # core fonts have none
                for glyph, _code in subset.items() if subset is not None else ():
                    if glyph is not None and isinstance(glyph.unicode, tuple) and not glyph.unicode:
                        glyph.unicode = _NoText()
        except AttributeError:  # another fpdf2 layout: the PDF stays right, only extraction is noisier
            pass

    def footer(self) -> None:
        self.set_y(-11)
        self.set_font(self.footer_family, "", 8)
        self.set_text_color(*MUTED_RGB)
        self.cell(0, 5, str(self.page_no()), align="C")
        self.set_text_color(*TEXT_RGB)


def _register_fonts(pdf: _ReportPDF, plan: pdf_fonts.FontPlan, text: str, tmp: Path, uses: set[str]) -> bool:
    """Add the planned faces to `pdf`; False when no Unicode font exists and core fonts must do.

    Only the styles the report uses are prepared: italic and code faces cost a second or so each.
    """
    if not plan.body:
        return False
    styles = {"": plan.body[""], "B": plan.body["B"]}
    if "I" in uses:
        styles.update(I=plan.body["I"], BI=plan.body["BI"])
    mono = (plan.mono or plan.body[""]) if "code" in uses else None
    wanted = [*styles.values(), *([mono] if mono else []), *plan.fallbacks]
    paths = pdf_fonts.prepare(wanted, text, tmp)
    for style, face in styles.items():
        pdf.add_font("body", style, paths[face])
    if "I" not in uses:  # a stray style falls back to the upright faces
        pdf.add_font("body", "I", paths[styles[""]])
        pdf.add_font("body", "BI", paths[styles["B"]])
    pdf.add_font("mono", "", paths[mono] if mono else paths[styles[""]])
    names = []
    for i, face in enumerate(plan.fallbacks):
        pdf.add_font(f"fallback{i}", "", paths[face])
        names.append(f"fallback{i}")
    if names:
        pdf.set_fallback_fonts(names, exact_match=False)
    pdf.set_text_shaping(True)
    pdf.footer_family = "body"
    return True


def _uses(tokens: list[Token]) -> set[str]:
    """Which optional faces the report needs: 'I' (italic) and 'code' (monospace)."""
    uses: set[str] = set()
    for token in tokens:
        if token.type in ("fence", "code_block"):
            uses.add("code")
        for child in token.children or []:
            if child.type in ("em_open", "image"):
                uses.add("I")
            elif child.type == "code_inline":
                uses.add("code")
    return uses


@dataclass
class _Run:
    text: str
    style: str = ""  # fpdf style letters: B, I
    code: bool = False
    link: str | None = None


@dataclass
class _ListState:
    ordered: bool
    next_number: int = 1
    margins: list[float] = field(default_factory=list)


class _Renderer:
    """Walks markdown-it block tokens and draws each block; inline content becomes styled runs."""

    def __init__(self, pdf: _ReportPDF, unicode_fonts: bool, plan: pdf_fonts.FontPlan) -> None:
        self.pdf = pdf
        self.unicode_fonts = unicode_fonts
        self.body_chars = pdf_fonts.coverage(plan.body[""]) if plan.body else frozenset()
        self.ref_links: dict[str, int] = {}
        self.lists: list[_ListState] = []
        self.outline_level = -1
        self.quote_depth = 0
        pdf.set_text_color(*TEXT_RGB)

    def render(self, tokens: list[Token]) -> None:
        for token in tokens:
            anchor = token.attrGet("id")
            if isinstance(anchor, str) and anchor.startswith("ref-"):
                self.ref_links[anchor] = self.pdf.add_link()
        i = 0
        while i < len(tokens):
            i = self._block(tokens, i)

    def _block(self, tokens: list[Token], i: int) -> int:
        token = tokens[i]
        kind = token.type
        if kind == "heading_open":
            self._heading(int(token.tag[1]), tokens[i + 1])
            return i + 3
        if kind == "paragraph_open":
            self._anchor(token)
            self._paragraph(tokens[i + 1], tight=token.hidden)
            return i + 3
        if kind in ("bullet_list_open", "ordered_list_open"):
            start = token.attrGet("start")
            self.lists.append(_ListState(kind == "ordered_list_open", int(start) if start else 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            self.lists.pop()
            if not self.lists:
                self.pdf.ln(1.5)
        elif kind == "list_item_open":
            self._anchor(token)
            self._list_marker()
        elif kind == "list_item_close":
            self.pdf.set_left_margin(self.lists[-1].margins.pop())
            self.pdf.set_x(self.pdf.l_margin)
        elif kind in ("fence", "code_block"):
            self._code(token.content)
        elif kind == "table_open":
            end = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
            self._table(tokens[i:end])
            return end + 1
        elif kind == "blockquote_open":
            self.quote_depth += 1
            self.pdf.set_left_margin(self.pdf.l_margin + 6)
            self.pdf.set_x(self.pdf.l_margin)
        elif kind == "blockquote_close":
            self.quote_depth -= 1
            self.pdf.set_left_margin(self.pdf.l_margin - 6)
            self.pdf.set_x(self.pdf.l_margin)
        elif kind == "hr":
            y = self.pdf.get_y() + 2
            self.pdf.set_draw_color(200, 200, 200)
            self.pdf.line(self.pdf.l_margin, y, self.pdf.w - self.pdf.r_margin, y)
            self.pdf.ln(5)
        return i + 1

    def _heading(self, level: int, inline: Token) -> None:
        pdf = self.pdf
        text = self._clean(report_markdown.plain_text(inline).strip())
        size = HEADING_PT.get(level, BODY_PT)
        if pdf.get_y() > pdf.page_break_trigger - 30 * PT_TO_MM * size / BODY_PT:
            pdf.add_page()
        pdf.ln(size * 0.45 if pdf.get_y() > pdf.t_margin + 1 else 0)
        self.outline_level = min(level - 1, self.outline_level + 1)
        if text:
            pdf.start_section(text, level=max(self.outline_level, 0))
        self._font("B", size)
        align = "R" if _is_rtl(text) else "L"
        pdf.multi_cell(0, size * PT_TO_MM * 1.3, text, align=align, new_x="LMARGIN", new_y="NEXT")
        if level <= 2:
            y = pdf.get_y() + 0.6
            pdf.set_draw_color(215, 215, 215)
            pdf.line(pdf.l_margin, y, pdf.w - pdf.r_margin, y)
            pdf.ln(2.5)
        else:
            pdf.ln(1)

    def _paragraph(self, inline: Token, *, tight: bool) -> None:
        pdf = self.pdf
        runs = self._runs(inline.children or [])
        height = BODY_PT * PT_TO_MM * LINE
        if self.quote_depth:
            pdf.set_text_color(*MUTED_RGB)
        plain = "".join(r.text for r in runs)
        if _is_rtl(plain):
            # A right-to-left paragraph is set as one shaped block, right-aligned; inline styles are dropped.
            self._font("", BODY_PT)
            if self.unicode_fonts:
                pdf.set_text_shaping(True, direction="rtl")
            pdf.multi_cell(0, height, plain.replace("\n", " "), align="R", new_x="LMARGIN", new_y="NEXT")
            if self.unicode_fonts:
                pdf.set_text_shaping(True)
        else:
            for run in runs:
                self._font(run.style, CODE_PT + 0.5 if run.code else BODY_PT, mono=run.code)
                link = self._resolve(run.link)
                if link:
                    pdf.set_text_color(*LINK_RGB)
                # A long unbroken run (a URL) may wrap anywhere; words wrap at spaces.
                unbroken = " " not in run.text and len(run.text) > 24
                pdf.write(height, run.text, link=link or "", wrapmode=WrapMode.CHAR if unbroken else WrapMode.WORD)
                pdf.set_text_color(*(MUTED_RGB if self.quote_depth else TEXT_RGB))
            pdf.ln(height)
        pdf.set_text_color(*TEXT_RGB)
        if not tight:
            pdf.ln(BODY_PT * PT_TO_MM * 0.6)

    def _list_marker(self) -> None:
        pdf = self.pdf
        state = self.lists[-1]
        state.margins.append(pdf.l_margin)
        if state.ordered:
            marker = f"{state.next_number}."
            state.next_number += 1
        else:
            marker = "•" if len(self.lists) % 2 else "◦"
        self._font("", BODY_PT)
        indent = 7.0 if state.ordered else 5.0
        pdf.set_x(pdf.l_margin)
        pdf.cell(indent, BODY_PT * PT_TO_MM * LINE, self._clean(marker))
        pdf.set_left_margin(pdf.l_margin + indent)

    def _code(self, content: str) -> None:
        pdf = self.pdf
        self._font("", CODE_PT, mono=True)
        pdf.set_fill_color(244, 244, 246)
        pdf.ln(0.5)
        text = self._clean(content.rstrip("\n")).replace("\t", "    ") or " "
        pdf.multi_cell(0, CODE_PT * PT_TO_MM * 1.35, text, fill=True, align="L", wrapmode=WrapMode.CHAR,
                       new_x="LMARGIN", new_y="NEXT", padding=(1.5, 2))
        pdf.ln(BODY_PT * PT_TO_MM * 0.6)

    def _table(self, tokens: list[Token]) -> None:
        """Columns get widths from their content; too wide a table shrinks its type, then wraps inside words."""
        pdf = self.pdf
        rows: list[list[tuple[str, str | None, str]]] = []
        for i, token in enumerate(tokens):
            if token.type == "tr_open":
                rows.append([])
            elif token.type in ("th_open", "td_open"):
                runs = self._runs(tokens[i + 1].children or [])
                links = {r.link for r in runs if r.link}
                align = {"text-align:right": "RIGHT", "text-align:center": "CENTER"}.get(str(token.attrGet("style")), "LEFT")
                rows[-1].append(("".join(r.text for r in runs), self._resolve(links.pop()) if len(links) == 1 else None, align))
        if not rows:
            return
        columns = max(len(r) for r in rows)
        rows = [r + [("", None, "LEFT")] * (columns - len(r)) for r in rows]
        size = 9.0 if columns <= 4 else 8.0 if columns <= 6 else 7.0 if columns <= 9 else 6.0
        padding = 1.2
        while True:
            # The heading row is bold: about 8% wider than the same text upright.
            scale = [1.08] + [1.0] * (len(rows) - 1)
            natural = [max(self._width(r[c][0], size) * k for r, k in zip(rows, scale)) + 2 * padding + 0.5
                       for c in range(columns)]
            longest_word = [max(self._width(w, size) * k for r, k in zip(rows, scale) for w in (r[c][0].split() or [""]))
                            + 2 * padding + 0.5 for c in range(columns)]
            if sum(longest_word) <= pdf.epw or size <= 5.5:
                break
            size -= 0.5
        if sum(natural) <= pdf.epw:
            widths = natural
        elif sum(longest_word) < pdf.epw:
            spare = pdf.epw - sum(longest_word)
            extra = [n - m for n, m in zip(natural, longest_word)]
            widths = [m + spare * e / (sum(extra) or 1) for m, e in zip(longest_word, extra)]
        else:
            widths = [pdf.epw * m / sum(longest_word) for m in longest_word]
        wrapmode = WrapMode.WORD if sum(longest_word) <= pdf.epw else WrapMode.CHAR
        self._font("", size)
        heading_style = CellStyle(emphasis="BOLD", fill_color=(236, 238, 242))
        with pdf.table(col_widths=widths, width=sum(widths), align="LEFT", text_align="LEFT", wrapmode=wrapmode,
                       line_height=size * PT_TO_MM * 1.3, padding=padding, headings_style=heading_style,
                       first_row_as_headings=True) as table:
            for row in rows:
                cells = table.row()
                for text, link, align in row:
                    cells.cell(self._clean(text), align=align, link=link)
        pdf.ln(BODY_PT * PT_TO_MM * 0.8)

    def _runs(self, children: list[Token]) -> list[_Run]:
        runs: list[_Run] = []
        bold = italic = 0
        link: str | None = None
        for child in children:
            kind = child.type
            style = ("B" if bold else "") + ("I" if italic else "")
            if kind == "text":
                runs.append(_Run(self._clean(child.content), style, link=link))
            elif kind == "code_inline":
                runs.append(_Run(self._clean(child.content), "", code=True, link=link))
            elif kind in ("softbreak",):
                runs.append(_Run(" ", style, link=link))
            elif kind == "hardbreak":
                runs.append(_Run("\n", style))
            elif kind == "strong_open":
                bold += 1
            elif kind == "strong_close":
                bold -= 1
            elif kind == "em_open":
                italic += 1
            elif kind == "em_close":
                italic -= 1
            elif kind == "link_open":
                link = str(child.attrGet("href") or "") or None
            elif kind == "link_close":
                link = None
            elif kind == "image":
                runs.append(_Run(self._clean(f"[image: {child.content}]"), "I", link=str(child.attrGet("src") or "")))
        return [r for r in runs if r.text]

    def _anchor(self, token: Token) -> None:
        anchor = token.attrGet("id")
        if isinstance(anchor, str) and anchor in self.ref_links:
            self.pdf.set_link(self.ref_links[anchor], y=self.pdf.get_y(), page=self.pdf.page)

    def _resolve(self, href: str | None) -> str | int | None:
        if not href:
            return None
        if href.startswith("#"):
            return self.ref_links.get(href[1:])
        return href

    def _font(self, style: str, size: float, *, mono: bool = False) -> None:
        if not self.unicode_fonts:
            self.pdf.set_font("courier" if mono else "helvetica", style, size)
        elif mono:
            self.pdf.set_font("mono", "", size)
        else:
            self.pdf.set_font("body", style, size)

    def _width(self, text: str, size: float) -> float:
        """Approximate width in mm; characters outside the body font count as a full (CJK) or half em."""
        self._font("", size)
        inside = "".join(c for c in text if c in self.body_chars)
        width = self.pdf.get_string_width(self._clean(inside)) if inside else 0.0
        for c in text:
            if c not in self.body_chars and not c.isspace():
                width += size * PT_TO_MM * (1.0 if unicodedata.east_asian_width(c) in ("W", "F") else 0.6)
        return width

    def _clean(self, text: str) -> str:
        """Without a Unicode font, fpdf2's core fonts take Latin-1 only: anything else becomes '?'."""
        if self.unicode_fonts:
            return text
        return text.encode("latin-1", "replace").decode("latin-1")


def _is_rtl(text: str) -> bool:
    """True when the first strongly directional character is right-to-left (Arabic, Hebrew, ...)."""
    for c in text:
        direction = unicodedata.bidirectional(c)
        if direction in ("R", "AL"):
            return True
        if direction == "L":
            return False
    return False
