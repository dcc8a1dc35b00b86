"""The questions asked of a report and their answers (app/warp/ask.py), as an appendix of its Markdown."""

from __future__ import annotations

import re

from sala_report.app.report_wording import ENGLISH, REFERENCE_HEADINGS, words_of

_HEADING = re.compile(r"(?m)^## (.+?)\s*$")


def with_appendix(markdown: str, appendix: str) -> str:
    """`markdown` with `appendix` (a `## ...` section, or "") placed before its References, so that the
    answers' [n] link to the list like the report's own; at the end when there is no References list. The
    appendix's own words (app/warp/ask.py writes them in English) follow the report's language."""
    if not appendix.strip():
        return markdown
    m = next((h for h in _HEADING.finditer(markdown) if h.group(1).lower() in REFERENCE_HEADINGS), None)
    if m is None:
        return f"{markdown.rstrip()}\n\n{appendix.strip()}\n"
    words = words_of(markdown, m.group(1))
    appendix = appendix.replace(f"## {ENGLISH.questions}", f"## {words.questions}", 1)
    appendix = appendix.replace(f"\n{ENGLISH.answer_sources}\n", f"\n{words.answer_sources}\n", 1)
    head = markdown[: m.start()].rstrip()
    return f"{head}\n\n{appendix.strip()}\n\n{markdown[m.start() :]}"
