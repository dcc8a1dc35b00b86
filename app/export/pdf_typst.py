"""The report's Markdown tokens as Typst source: every piece of the report's text goes in as a Typst string
literal, so nothing the model or a web page wrote can act as Typst markup or code."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from markdown_it.token import Token

from sala_report.app.export import markdown as report_markdown
from sala_report.app.export.pdf_fonts import CJK_LANG, FontPlan, cjk_region

BODY_PT = 10.5
CODE_PT = 8.5
HEADING_PT = (20.0, 15.0, 12.5, 11.5, 11.0, 10.5)
TEXT_RGB = "rgb(25, 25, 25)"
MUTED_RGB = "rgb(110, 110, 110)"
LINK_RGB = "rgb(20, 80, 170)"
RULE_RGB = "rgb(215, 215, 215)"

_PREAMBLE = """\
#set document(title: {title})
#set page(paper: "a4", margin: (x: 18mm, top: 18mm, bottom: 20mm),
  footer: context align(center, text(size: 8pt, fill: {muted}, counter(page).display())))
#set text(font: {fonts}, size: {body}pt, fill: {text}, lang: "en")
#set par(leading: 0.62em, spacing: 0.95em)
#show raw: set text(font: {mono}, size: {code}pt)
#show link: set text(fill: {link})
#set list(marker: ([•], [◦]), indent: 0.3em, body-indent: 0.6em)
#set enum(indent: 0.3em, body-indent: 0.6em)
#set table(stroke: 0.5pt + rgb(200, 200, 200), inset: 1.2mm)
#show heading: it => block(width: 100%, above: 1.25em, below: 0.75em, sticky: true,
  stroke: if it.level <= 2 {{ (bottom: 0.6pt + {rule}) }} else {{ none }},
  inset: if it.level <= 2 {{ (bottom: 3pt) }} else {{ 0pt }},
  text(size: {headings}.at(calc.min(it.level, 6) - 1), weight: "bold", it.body))
"""


def to_typst(tokens: list[Token], plan: FontPlan) -> str:
    """The whole document: page set-up, styles, then the report's blocks."""
    title = report_markdown.title_of(tokens) or "Report"
    labels = {a for t in tokens if isinstance(a := t.attrGet("id"), str) and a.startswith("ref-")}
    preamble = _PREAMBLE.format(
        title=_string(title),
        muted=MUTED_RGB,
        fonts=_array(plan.families()),
        body=BODY_PT,
        text=TEXT_RGB,
        mono=_array(plan.mono_families()),
        code=CODE_PT,
        link=LINK_RGB,
        rule=RULE_RGB,
        headings="(" + ", ".join(f"{pt}pt" for pt in HEADING_PT) + ")",
    )
    return preamble + "\n" + _Writer(plan, labels).blocks(tokens, 0, len(tokens))


@dataclass
class _Writer:
    plan: FontPlan
    labels: set[str]

    def blocks(self, tokens: list[Token], start: int, end: int) -> str:
        """Blocks between `start` and `end`, separated by blank lines (Typst's paragraph break)."""
        out: list[str] = []
        i = start
        while i < end:
            token = tokens[i]
            close = _close(tokens, i)
            kind = token.type
            if kind == "heading_open":
                out.append(self._heading(int(token.tag[1]), tokens[i + 1]))
            elif kind == "paragraph_open":
                out.append(self._paragraph(token, tokens[i + 1]))
            elif kind in ("bullet_list_open", "ordered_list_open"):
                out.append(self._list(tokens, i, close))
            elif kind in ("fence", "code_block"):
                out.append(self._code(token))
            elif kind == "table_open":
                out.append(self._table(tokens[i : close + 1]))
            elif kind == "blockquote_open":
                inner = self.blocks(tokens, i + 1, close)
                out.append(
                    f"#block(inset: (left: 4mm), stroke: (left: 1.5pt + {RULE_RGB}))"
                    f"[#set text(fill: {MUTED_RGB})\n{inner}]"
                )
            elif kind == "hr":
                out.append("#line(length: 100%, stroke: 0.5pt + rgb(200, 200, 200))")
            i = close + 1
        return "\n\n".join(o for o in out if o)

    def _heading(self, level: int, inline: Token) -> str:
        text = report_markdown.plain_text(inline).strip()
        if not text:
            return ""
        return self._scoped(text, f"#heading(level: {min(level, 6)})[{_text(text)}]")

    def _paragraph(self, token: Token, inline: Token) -> str:
        anchor = token.attrGet("id")
        label = f"#metadata(none) <{anchor}>" if anchor in self.labels else ""
        body = label + self.inline(inline.children or [])
        text = inline.content
        return self._scoped(text, body if token.hidden else f"#par[{body}]")

    def _list(self, tokens: list[Token], start: int, end: int) -> str:
        items: list[str] = []
        i = start + 1
        while i < end:
            close = _close(tokens, i)
            if tokens[i].type == "list_item_open":
                anchor = tokens[i].attrGet("id")
                label = f"#metadata(none) <{anchor}>" if anchor in self.labels else ""
                items.append(f"[{label}{self.blocks(tokens, i + 1, close)}]")
            i = close + 1
        if tokens[start].type == "ordered_list_open":
            first = tokens[start].attrGet("start")
            return f"#enum(start: {int(first) if first else 1}, {', '.join(items)})"
        return f"#list({', '.join(items)})"

    def _code(self, token: Token) -> str:
        code = token.content.rstrip("\n").replace("\t", "    ") or " "
        lang = (token.info or "").split()[0] if token.info and token.info.split() else ""
        region = cjk_region(code)
        raw = f"raw(block: true, {_string(code)}" + (f", lang: {_string(lang)}" if lang.isidentifier() else "") + ")"
        return (
            f"#block(fill: rgb(244, 244, 246), inset: (x: 2mm, y: 1.5mm), width: 100%)"
            f"[#set text(font: {_array(self.plan.mono_families(region))}); #{raw}]"
        )

    def _table(self, tokens: list[Token]) -> str:
        """Columns take their natural width; Typst shrinks them fairly when the table is too wide."""
        rows: list[list[str]] = []
        aligns: list[str] = []
        for i, token in enumerate(tokens):
            if token.type == "tr_open":
                rows.append([])
            elif token.type in ("th_open", "td_open"):
                inline = tokens[i + 1]
                body = self._scoped(inline.content, self.inline(inline.children or []), block=False)
                rows[-1].append(f"#strong[{body}]" if token.type == "th_open" else body)
                if len(rows) == 1:
                    style = str(token.attrGet("style"))
                    aligns.append({"text-align:right": "right", "text-align:center": "center"}.get(style, "left"))
        if not rows:
            return ""
        columns = max(len(r) for r in rows)
        aligns += ["left"] * (columns - len(aligns))
        size = 9.0 if columns <= 4 else 8.0 if columns <= 6 else 7.0 if columns <= 9 else 6.0
        cells = [[*r, *[""] * (columns - len(r))] for r in rows]
        header = "table.header(" + ", ".join(f"[{c}]" for c in cells[0]) + ")"
        body = ", ".join(f"[{c}]" for row in cells[1:] for c in row)
        return (
            f"#block(width: 100%)[#set text(size: {size}pt)\n"
            f"#table(columns: {columns}, align: ({', '.join(aligns)},), "
            f"fill: (_, y) => if y == 0 {{ rgb(236, 238, 242) }}, {header}" + (f", {body}" if body else "") + ")]"
        )

    def inline(self, children: list[Token]) -> str:
        """Inline tokens as Typst markup: styles and links nest as function calls around string literals."""
        stack: list[tuple[str, list[str]]] = [("", [])]
        for child in children:
            kind = child.type
            parts = stack[-1][1]
            if kind == "text":
                parts.append(_text(child.content))
            elif kind == "code_inline":
                parts.append(f"#raw({_string(child.content)})")
            elif kind == "softbreak":
                parts.append(_text(" "))
            elif kind == "hardbreak":
                parts.append("#linebreak()")
            elif kind in ("strong_open", "em_open", "s_open"):
                stack.append(({"strong_open": "#strong", "em_open": "#emph", "s_open": "#strike"}[kind], []))
            elif kind == "link_open":
                stack.append((self._link_call(str(child.attrGet("href") or "")), []))
            elif kind in ("strong_close", "em_close", "s_close", "link_close") and len(stack) > 1:
                call, inner = stack.pop()
                stack[-1][1].append(f"{call}[{''.join(inner)}]" if call else "".join(inner))
            elif kind == "image":
                src = str(child.attrGet("src") or "")
                label = _text(f"[image: {child.content}]")
                parts.append(f"#emph[{self._link_call(src)}[{label}]]" if src else f"#emph[{label}]")
        while len(stack) > 1:  # an unclosed style (should not happen) still keeps its text
            call, inner = stack.pop()
            stack[-1][1].append(f"{call}[{''.join(inner)}]" if call else "".join(inner))
        return "".join(stack[0][1])

    def _link_call(self, href: str) -> str:
        """`#link(...)` for a URL or a reference in this document; '' (no link) for an unknown anchor."""
        if href.startswith("#"):
            return f"#link(<{href[1:]}>)" if href[1:] in self.labels else ""
        return f"#link({_string(href)})" if href else ""

    def _scoped(self, text: str, content: str, *, block: bool = True) -> str:
        """Right-to-left text gets an RTL paragraph; Japanese and Korean text get their own CJK face first."""
        settings = []
        if _is_rtl(text):
            settings.append("dir: rtl")
        region = cjk_region(text)
        if region != "SC" and region in self.plan.cjk:
            settings.append(f"font: {_array(self.plan.families(region))}, lang: {_string(CJK_LANG[region])}")
        if not settings:
            return content
        return (
            f"#[#set text({', '.join(settings)})\n{content}]" if block else f"#text({', '.join(settings)})[{content}]"
        )


def _close(tokens: list[Token], i: int) -> int:
    """Index of the token that closes the one at `i` (itself when it opens nothing)."""
    if tokens[i].nesting != 1:
        return i
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _string(text: str) -> str:
    """A Typst string literal: only backslash, quote and line ends need escaping."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{escaped}"'


def _text(text: str) -> str:
    # The semicolon ends the embedded expression, so a following '.' or '(' is text, not a method call.
    return f"#{_string(text)};" if text else ""


def _array(names: tuple[str, ...]) -> str:
    return "(" + "".join(f"{_string(n)}, " for n in names) + ")"


def _is_rtl(text: str) -> bool:
    """True when the first strongly directional character is right-to-left (Arabic, Hebrew, ...)."""
    for c in text:
        direction = unicodedata.bidirectional(c)
        if direction in ("R", "AL"):
            return True
        if direction == "L":
            return False
    return False
