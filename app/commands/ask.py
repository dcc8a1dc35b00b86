"""CLI commands: ask (a follow-up question to a stored report)."""

from __future__ import annotations

import json

import click

from sala_report.app.errors import UsageError


@click.command("ask")
@click.argument("session_id")
@click.argument("question")
@click.option("--search", is_flag=True, help="Also search the web; new sources are numbered after the report's.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (answer, cited numbers, references).")
@click.pass_obj
def ask(obj, session_id: str, question: str, search: bool, as_json: bool) -> None:
    """Ask a stored report a question: answered from its sources, cited with its reference numbers."""
    from sala_report.app.runs import LocalServices
    from sala_report.app.warp.ask import ask_session

    settings = obj.settings
    if not settings.paths.store_path.exists():
        raise UsageError(
            f"no sessions yet: {settings.paths.store_path} does not exist",
            hint="Start one with `sala-report run QUESTION`.",
        )
    services = LocalServices(settings, progress=lambda text: click.echo(text, err=True))
    try:
        answer = ask_session(services, session_id, question, search=search)
    finally:
        services.close()
    if answer.search_problem:
        click.echo(f"warning: the search came back short: {answer.search_problem}", err=True)
    if as_json:
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
        return
    click.echo(answer.text)
    if answer.references:
        click.echo("")
        for ref in answer.references:
            click.echo(f"[{ref.number}] {ref.title} — {ref.location}")


COMMANDS: list = [ask]
