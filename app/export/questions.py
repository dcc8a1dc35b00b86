"""The questions asked of a report and their answers (app/warp/ask.py), as an appendix of its Markdown."""

from __future__ import annotations

import re

_REFERENCES = re.compile(r"(?m)^## References\s*$")


def with_appendix(markdown: str, appendix: str) -> str:
    """`markdown` with `appendix` (a `## ...` section, or "") placed before its References, so that the
    answers' [n] link to the list like the report's own; at the end when there is no References list."""
    if not appendix.strip():
        return markdown
    m = _REFERENCES.search(markdown)
    if m is None:
        return f"{markdown.rstrip()}\n\n{appendix.strip()}\n"
    head = markdown[: m.start()].rstrip()
    return f"{head}\n\n{appendix.strip()}\n\n{markdown[m.start() :]}"
