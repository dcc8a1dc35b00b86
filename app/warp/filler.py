"""Chatter about the task that must never reach a report: small models answer "Rewrite the text above
as…", "I hope this helps. P.S. …" or quote their instructions instead of writing. validate.py rejects
an answer holding any of these, in every mode; evidence mode never offers a sentence holding one."""

from __future__ import annotations

import re

# family -> pattern; each family has its own test (tests/app/warp/test_filler.py)
FAMILIES: dict[str, re.Pattern[str]] = {
    "rewrite": re.compile(r"(?i)\b(?:re-?writ(?:e|es|ing|ten)|re-?phras(?:e|ed|ing)|paraphras(?:e|ed|ing))\b"),
    "pleasantry": re.compile(
        r"(?i)\b(?:i\s+hope\s+(?:this|that|it)\s+helps?|hope\s+this\s+helps|let\s+me\s+know\s+if|"
        r"feel\s+free\s+to|happy\s+to\s+help|thank\s+you\s+for\s+(?:asking|reading))\b"
    ),
    "ai": re.compile(
        r"(?i)\bas\s+an?\s+(?:ai|artificial\s+intelligence|(?:large\s+)?language\s+model|assistant)\b|"
        r"\bi\s+am\s+an?\s+(?:ai|language\s+model)\b"
    ),
    "postscript": re.compile(r"(?:^|\s)P\.?\s?S\.?(?:\s|:|$)|\bpost\s?script\b", re.I),
    "presenting": re.compile(
        r"(?i)\b(?:here\s+is\s+the|here's\s+the|here\s+are\s+the|below\s+is\s+the|"
        r"the\s+following\s+(?:is|are)\s+(?:a|the)\b)"
    ),
    "instructions": re.compile(
        r"(?i)\b(?:to\s+quote\s+the|i\s+will\s+use\s+the\s+following|as\s+(?:requested|instructed)|"
        r"the\s+(?:text|paragraph|passage|evidence)\s+above|your\s+(?:task|question|request)\b|"
        r"(?:the|my)\s+task\s+is|according\s+to\s+the\s+instructions|in\s+this\s+section,?\s+i\s+will)"
    ),
}


def filler_phrase(text: str) -> str | None:
    """The first chatter phrase in `text`, or None."""
    for pattern in FAMILIES.values():
        m = pattern.search(text)
        if m:
            return m.group(0).strip()
    return None
