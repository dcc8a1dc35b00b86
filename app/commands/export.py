"""CLI commands: export."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sala_report.app.errors import UsageError
from sala_report.app.export import FORMATS, SUFFIXES, Exported, default_filename, export_report
from sala_report.app.export.bibliography import references_in


@click.command("export")
@click.argument("session_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="md, html (one self-contained file), pdf, json, docx (Word), or the references as bib (BibTeX) "
    "or ris. Default: from --out's suffix, else md.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The file to write. Default: report-<id>-<title>.<format> in the data dir's reports/ folder.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (path, format, warnings) on stdout.")
@click.option(
    "--with-questions", is_flag=True, help="Add the questions asked with `ask` and their answers as an appendix."
)
@click.pass_obj
def export(obj, session_id: str, fmt: str | None, out: Path | None, as_json: bool, with_questions: bool) -> None:
    """Write a stored session's report (finished or partial) as Markdown, HTML, PDF, JSON or Word, or its
    references as BibTeX or RIS."""
    fmt = fmt or _format_from_suffix(out) or "md"
    result = export_session(
        obj.settings.paths.store_path, obj.settings.paths.reports_dir, session_id, fmt, out, questions=with_questions
    )
    if as_json:
        click.echo(
            json.dumps(
                {"path": str(result.path), "format": result.format, "warnings": list(result.warnings)},
                ensure_ascii=False,
            )
        )
    else:
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(str(result.path))


def export_session(
    store_path: Path, reports_dir: Path, session_id: str, fmt: str, out: Path | None, *, questions: bool = False
) -> Exported:
    """Render the stored session and write it; `session_id` may be a unique prefix of the id; with
    `questions`, the questions asked of it and their answers as an appendix."""
    from sala_report.app.warp import WarpStore, render_markdown, session_summary
    from sala_report.retrieval import Store

    if not store_path.exists():
        raise UsageError(
            f"no sessions yet: {store_path} does not exist", hint="Start one with `sala-report run QUESTION`."
        )
    store = Store.open_for_reading(store_path)  # a read-only store still exports
    try:
        found = WarpStore(store).find_session(session_id)
        if found is None:
            raise UsageError(
                f"no session '{session_id}' (or the prefix matches several)",
                hint="`sala-report sessions` lists them with their ids.",
            )
        markdown = render_markdown(store, found)
        if questions:
            from sala_report.app.export.questions import with_appendix
            from sala_report.app.warp.ask import appendix

            markdown = with_appendix(markdown, appendix(WarpStore(store), found))
        summary = session_summary(store, found) if fmt == "json" else None
        references = references_in(markdown, store.source_by_location) if fmt in ("bib", "ris") else None
    finally:
        store.close()
    title = next((line[2:].strip() for line in markdown.splitlines() if line.startswith("# ")), None)
    target = out or reports_dir / default_filename(title, found, fmt)
    return export_report(markdown, fmt, target, summary=summary, references=references)


def _format_from_suffix(out: Path | None) -> str | None:
    if out is None:
        return None
    suffix = out.suffix.lower()
    return next((fmt for fmt, s in SUFFIXES.items() if s == suffix), None)


COMMANDS: list = [export]
