"""The report as one self-contained HTML page: the stylesheet inline, nothing loaded from anywhere."""

from __future__ import annotations

import html
from importlib.resources import files

from sala_report.app.export import markdown as report_markdown


def to_html(markdown: str) -> str:
    """One HTML page with its stylesheet inline; it loads nothing from anywhere (images become links)."""
    md = report_markdown.parser()
    md.add_render_rule("image", _render_image)
    for kind in ("paragraph_open", "heading_open", "list_item_open", "th_open", "td_open", "blockquote_open"):
        md.add_render_rule(kind, _render_with_direction)
    md.add_render_rule("table_open", lambda self, tokens, idx, options, env: '<div class="table-wrap"><table>\n')
    md.add_render_rule("table_close", lambda self, tokens, idx, options, env: "</table></div>\n")
    tokens = md.parse(markdown)
    body = md.renderer.render(tokens, md.options, {})
    title = report_markdown.title_of(tokens) or "Report"
    css = (files("sala_report.assets") / "export" / "report.css").read_text(encoding="utf-8")
    return (
        '<!doctype html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="sala-report">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{css}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def _render_image(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    src = html.escape(str(token.attrGet("src") or ""), quote=True)
    alt = html.escape(token.content or "image")
    return f'<a href="{src}" class="image-link">[image: {alt}]</a>'


def _render_with_direction(self, tokens, idx, options, env) -> str:
    # dir="auto" lets each block take its direction from its own text (Arabic and Hebrew read right to left).
    token = tokens[idx]
    if not token.hidden:
        token.attrSet("dir", "auto")
    return self.renderToken(tokens, idx, options, env)
