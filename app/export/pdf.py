"""Report Markdown to PDF with Typst (a pip wheel; no Pango, Cairo or TeX): headings become bookmarks,
citations and URLs become links, wide tables shrink to fit, and every script gets a font."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typst

from sala_report.app.errors import SalaError
from sala_report.app.export import markdown as report_markdown
from sala_report.app.export import pdf_fonts
from sala_report.app.export.pdf_fonts import FontSources, MissingFont
from sala_report.app.export.pdf_typst import to_typst

_PAGES_LABEL = "sala-report-pages"
# Asked for after layout (a query reuses the compiled document): how many pages the report took.
_PAGE_COUNT = f"\n#context [#metadata(counter(page).final().first()) <{_PAGES_LABEL}>]\n"


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
    data, pages, plan = render_pdf(markdown, sources=sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, out)
    return PdfResult(out, pages, tuple(plan.missing))


def render_pdf(markdown: str, *, sources: FontSources = FontSources()) -> tuple[bytes, int, pdf_fonts.FontPlan]:
    """The PDF's bytes, its number of pages, and the font plan it was set with."""
    tokens = report_markdown.parse(markdown)
    plan = pdf_fonts.plan_fonts(markdown, sources)
    source = to_typst(tokens, plan) + _PAGE_COUNT
    with tempfile.TemporaryDirectory(prefix="sala-pdf-") as tmp:
        # The source's folder is Typst's root: the document can read no file outside it (and reads none).
        main = Path(tmp) / "report.typ"
        main.write_text(source, encoding="utf-8")
        # Only the planned folders are searched, not the system's whole set: output does not vary by machine.
        compiler = typst.Compiler(
            str(main), root=tmp, font_paths=pdf_fonts.font_book(plan.folders), ignore_system_fonts=True
        )
        try:
            data = compiler.compile(format="pdf")
            pages = int(compiler.query(f"<{_PAGES_LABEL}>", field="value", one=True))
        except typst.TypstError as e:  # the report's text is only ever a string literal: this is our bug
            raise SalaError(
                f"the PDF could not be laid out: {e.message}",
                title="PDF export failed",
                hint="Export as HTML or Markdown instead, and report this with the report attached.",
            ) from e
    if not isinstance(data, bytes):
        raise TypeError(f"typst returned {type(data).__name__}, expected the PDF's bytes")
    return data, pages, plan
