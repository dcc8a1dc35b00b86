"""Turn a report (the engine's Markdown) into the files a person keeps: Markdown, one self-contained
HTML page, a PDF made without system libraries, JSON, a Word document, or its references as BibTeX or
RIS. Every file is written whole or not at all."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sala_report.app.export.html import to_html

__all__ = ["FORMATS", "SUFFIXES", "Exported", "default_filename", "export_report", "to_html"]

FORMATS = ("md", "html", "pdf", "json", "docx", "bib", "ris")
SUFFIXES = {"md": ".md", "html": ".html", "pdf": ".pdf", "json": ".json", "docx": ".docx", "bib": ".bib", "ris": ".ris"}


@dataclass(frozen=True)
class Exported:
    """One written file; `warnings` tell the person about anything that could not be shown (a missing font)."""

    path: Path
    format: str
    warnings: tuple[str, ...] = ()


def export_report(
    markdown: str, fmt: str, out: Path, *, summary: dict[str, Any] | None = None, references: list[Any] | None = None
) -> Exported:
    """Write `markdown` as `fmt` to `out`. JSON holds `summary` (the session's facts) plus the Markdown.
    BibTeX and RIS list `references` (app/export/bibliography.py; read from the Markdown alone when None)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if fmt == "pdf":
        from sala_report.app.export.pdf import (
            write_pdf,
        )  # typst (a large native module) loads only when a PDF is asked for

        result = write_pdf(markdown, out)
        return Exported(out, fmt, tuple(result.warnings))
    if fmt == "docx":
        from sala_report.app.export.docx import write_docx

        write_docx(markdown, out)
        return Exported(out, fmt)
    if fmt in ("bib", "ris"):
        from sala_report.app.export import bibliography

        refs = references if references is not None else bibliography.references_in(markdown)
        text = bibliography.to_bibtex(refs) if fmt == "bib" else bibliography.to_ris(refs)
        _write_atomically(out, text)
        return Exported(out, fmt, () if refs else ("the report has no references yet; the file is empty",))
    if fmt == "md":
        text = markdown if markdown.endswith("\n") else markdown + "\n"
    elif fmt == "html":
        text = to_html(markdown)
    else:
        text = json.dumps({**(summary or {}), "markdown": markdown}, ensure_ascii=False, indent=2, default=str) + "\n"
    _write_atomically(out, text)
    return Exported(out, fmt)


def default_filename(title: str | None, session_id: str | int, fmt: str) -> str:
    """`report-<id>-<title words>.<ext>`: readable, safe on every filesystem."""
    words = re.sub(r"[^\w]+", "-", (title or "").lower(), flags=re.UNICODE).strip("-")[:60].strip("-")
    stem = f"report-{session_id}" + (f"-{words}" if words else "")
    return stem + SUFFIXES[fmt]


def _write_atomically(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, out)
