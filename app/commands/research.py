"""CLI commands: `run` (a new research session), `resume` (continue one), `sessions` (list them).

Progress goes to stderr, the optional `--json` summary to stdout. Exit codes: 0 done, 3 partial (a budget
ended it, some searches came back short, or weak sections), 2 usage, 4 model backend unavailable, 5 waiting
(--review-plan: the outline waits for review; --clarify: the questions wait for answers), 130 interrupted (the last step's checkpoint is kept).
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from sala_report.app.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    BackendUnavailable,
    UsageError,
)
from sala_report.app.settings import Settings
from sala_report.app.wording import plural, readable_keys, search_problem

EXIT_WAITING = 5  # --review-plan or --clarify: the outline or the questions wait for the person; `resume` goes on
EXIT_CODES = {
    "done": EXIT_OK,
    "partial": EXIT_PARTIAL,
    "cancelled": EXIT_INTERRUPTED,
    "failed": EXIT_ERROR,
    "waiting": EXIT_WAITING,
}

_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object on stdout.")
_out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the Markdown report here (default: the data dir's reports/ folder).",
)
_model_option = click.option(
    "--model",
    "model_source",
    metavar="SOURCE",
    help="A checkpoint folder, a .gguf file or a known name (default: model.source).",
)
_steps_option = click.option("--max-steps", type=click.IntRange(min=1), help="Step budget (default: warp.max_steps).")
_answers_option = click.option(
    "--answers",
    "answers_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Answers to the --clarify questions, one a line in their order (or numbered '1. ...'); '-' or an empty "
    "line skips one.",
)
_headless_option = click.option(
    "--headless", is_flag=True, help="No terminal app: progress on stderr, report to a file."
)


def _domain(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    from sala_report.app.runs import domain_list  # the start screen's domain fields read the same way

    try:
        return tuple(dict.fromkeys(domain for value in values for domain in domain_list(value)))
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


_include_option = click.option(
    "--include-domain",
    "include_domains",
    multiple=True,
    metavar="DOMAIN",
    callback=_domain,
    help="Read web results only from this domain and its subdomains (repeatable or comma-separated; adds to "
    "search.include_domains).",
)
_exclude_option = click.option(
    "--exclude-domain",
    "exclude_domains",
    multiple=True,
    metavar="DOMAIN",
    callback=_domain,
    help="Never read web results from this domain or its subdomains (repeatable or comma-separated; adds to "
    "search.exclude_domains).",
)


@click.command("run")
@click.argument("question")
@_headless_option
@click.option(
    "--docs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Also research this folder of documents (md, txt, html, pdf).",
)
@click.option("--no-web", is_flag=True, help="Do not search the web: use --docs (or sources stored before).")
@_model_option
@_steps_option
@_out_option
@_json_option
@click.option(
    "--allow-private-addresses",
    is_flag=True,
    help="Let the fetcher read pages on loopback, private and link-local addresses.",
)
@_include_option
@_exclude_option
@click.option(
    "--length",
    type=click.Choice(["short", "standard", "long"]),
    help="How long a report: fewer or more sections and expansions (default: warp.length).",
)
@click.option(
    "--language", metavar="LANG", help="Write the report in LANG (zh, German...), whatever the sources' language."
)
@click.option(
    "--instructions",
    metavar="TEXT|@FILE",
    help="Audience, tone, what to cover: given to the model as your instructions (default: warp.instructions).",
)
@click.option(
    "--outline",
    "outline_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write this Markdown outline (# / ## / ### headings) instead of planning one.",
)
@click.option(
    "--review-plan",
    is_flag=True,
    help="Stop after the first outline so you can edit it (exit code 5); `resume` writes the report.",
)
@click.option(
    "--clarify",
    is_flag=True,
    help="Before searching, the model asks up to three questions about scope (headless: exit code 5 until answered).",
)
@_answers_option
@click.pass_obj
def run(
    obj,
    question: str,
    headless: bool,
    docs: Path | None,
    no_web: bool,
    model_source: str | None,
    max_steps: int | None,
    out: Path | None,
    as_json: bool,
    allow_private_addresses: bool,
    include_domains: tuple[str, ...],
    exclude_domains: tuple[str, ...],
    length: str | None,
    language: str | None,
    instructions: str | None,
    outline_file: Path | None,
    review_plan: bool,
    clarify: bool,
    answers_file: Path | None,
) -> int:
    """Research QUESTION and write a cited report."""
    from sala_report.app.runs import RunRequest

    settings = _with_flags(obj.settings, model_source, max_steps, allow_private_addresses)
    settings = _with_domains(settings, include_domains, exclude_domains)
    web = settings.search.web and not no_web
    if not question.strip():
        raise UsageError("the research question is empty")
    from sala_report.app.warp.brief import brief_from
    from sala_report.app.warp.clarify import read_answers

    answers = read_answers(answers_file) if answers_file is not None else None
    brief, outline = brief_from(
        settings.warp, length, language, instructions, outline_file, review_plan, clarify, answers
    )
    request = RunRequest(question, web=web, docs=docs, model=model_source or "", brief=brief, outline=outline)
    if not headless and _interactive():
        from sala_report.app.commands.tools import run_app

        for line in run_app(settings, run=request):
            _say(line)
        return EXIT_OK
    return _headless(settings, lambda services: services.start(request), out, as_json)


@click.command("resume")
@click.argument("session_id")
@_headless_option
@_model_option
@_steps_option
@_out_option
@_json_option
@click.option(
    "--outline",
    "outline_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Replace the outline of a session with nothing written yet (a plan under review) by this Markdown file.",
)
@_answers_option
@click.pass_obj
def resume(
    obj,
    session_id: str,
    headless: bool,
    model_source: str | None,
    max_steps: int | None,
    out: Path | None,
    as_json: bool,
    outline_file: Path | None,
    answers_file: Path | None,
) -> int:
    """Continue a session from its last checkpoint (after a crash, Ctrl-C, or a used-up step budget)."""
    settings = obj.settings
    if not settings.paths.store_path.exists():
        raise UsageError(
            f"no sessions yet: {settings.paths.store_path} does not exist",
            hint="Start one with `sala-report run QUESTION`.",
        )
    settings = _with_flags(settings, model_source, max_steps, False)
    outline = None
    if outline_file is not None:
        from sala_report.app.warp.brief import read_outline

        outline = read_outline(outline_file, max_depth=settings.warp.max_depth)
    answers = None
    if answers_file is not None:
        from sala_report.app.warp.clarify import read_answers

        answers = read_answers(answers_file)
    if not headless and _interactive() and outline is None and answers is None:
        from sala_report.app.commands.tools import run_app

        for line in run_app(settings, resume=session_id):
            _say(line)
        return EXIT_OK

    def make_engine(services):
        engine = services.resume(session_id, model=model_source or "")
        if answers is not None:
            engine.answer(answers)
        if outline is not None:
            engine.replace_outline(outline)
        return engine

    return _headless(settings, make_engine, out, as_json)


@click.command("sessions")
@_json_option
@click.pass_obj
def sessions(obj, as_json: bool) -> None:
    """List research sessions, newest first, with their ids and status."""
    from sala_report.app.warp import list_sessions

    path = obj.settings.paths.store_path
    found = []
    if path.exists():
        store = _open_store(obj.settings)
        try:
            found = list_sessions(store)
        finally:
            store.close()
    if as_json:
        rows = [
            {
                "session_id": s.id,
                "status": s.status,
                "question": s.question,
                "title": s.title,
                "steps": s.steps,
                "created_at": s.created_at,
                "updated_at": s.updated_at,
                "model": s.model,
            }
            for s in found
        ]
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not found:
        click.echo("No sessions yet. Start one with `sala-report run QUESTION`.", err=True)
        return
    from sala_report.app.commands.table import table

    def short(text: str) -> str:
        return text if len(text) <= 60 else text[:57] + "..."

    rows = [(s.id, s.status, str(s.steps), s.updated_at[:16].replace("T", " "), short(s.question)) for s in found]
    for line in table(("ID", "STATUS", "STEPS", "UPDATED", "QUESTION"), rows, right=(2,)):
        click.echo(line)


COMMANDS: list = [run, resume, sessions]


def _with_flags(settings: Settings, model_source: str | None, max_steps: int | None, allow_private: bool) -> Settings:
    model = dataclasses.replace(settings.model, **({"source": model_source} if model_source else {}))
    if model_source and settings.model.backend == "openai":
        model = dataclasses.replace(model, served_model=model_source)
    warp = dataclasses.replace(settings.warp, **({"max_steps": max_steps} if max_steps else {}))
    fetch = dataclasses.replace(
        settings.fetch, allow_private_addresses=settings.fetch.allow_private_addresses or allow_private
    )
    return dataclasses.replace(settings, model=model, warp=warp, fetch=fetch)


# Han, kana and hangul: written without spaces between words
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words as word processors count them: runs between spaces, and each Chinese, Japanese or Korean
    character on its own (a Chinese section is not "2 words")."""
    return len(_CJK.findall(text)) + sum(any(c.isalnum() for c in w) for w in _CJK.sub(" ", text).split())


def _with_domains(settings: Settings, include: tuple[str, ...], exclude: tuple[str, ...]) -> Settings:
    search = dataclasses.replace(
        settings.search,
        include_domains=[*settings.search.include_domains, *include],
        exclude_domains=[*settings.search.exclude_domains, *exclude],
    )
    return dataclasses.replace(settings, search=search)


def _open_store(settings: Settings):
    from sala_report.retrieval import Store

    return Store.open_for_reading(settings.paths.store_path)  # only `sessions` uses it: a read-only store lists


def _interactive() -> bool:
    """A person at a terminal gets the terminal app; pipes, files and CI run headless."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _headless(settings: Settings, make_engine, out: Path | None, as_json: bool) -> int:
    from sala_report.app.runs import LocalServices

    services = LocalServices(settings, progress=_say)
    try:
        engine = make_engine(services)
        return _drive(engine, services.store, settings, out, as_json)
    finally:
        services.close()


def _drive(engine, store, settings: Settings, out: Path | None, as_json: bool) -> int:
    """Run the engine with progress on stderr; Ctrl-C cancels at once, keeping the last checkpoint."""
    printer = Progress(getattr(engine.settings, "max_steps", settings.warp.max_steps))  # budgets fitted at start
    engine.subscribe(printer)
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(signum, frame) -> None:
        _say("\ninterrupted: stopping after saving what is done (Ctrl-C again to quit at once)")
        engine.cancel()
        signal.signal(signal.SIGINT, previous if callable(previous) else signal.default_int_handler)

    installed = _install(signal.SIGINT, interrupt)
    try:
        result = engine.run()
    except BackendUnavailable:
        _report(engine.session_id, store, settings, out, as_json)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
    notes = list(getattr(engine, "notes", []))
    for line in notes:
        _say(f"warning: {line}")
    brief = getattr(engine, "brief", None)
    questions = list(brief.questions) if brief is not None and brief.waiting_for_answers else None
    summary = _report(
        engine.session_id,
        store,
        settings,
        out,
        as_json,
        notes=notes,
        outline=engine.outline,
        questions=questions,
        clarifications=_clarifications(brief),
    )
    if result.status == "waiting" and questions:
        _say(
            f"the questions wait for your answers: write them one a line in a file, then `sala-report resume "
            f"{engine.session_id} --answers FILE`; `sala-report resume {engine.session_id}` goes on without"
        )
    elif result.status == "waiting":
        _say(f"the outline waits for review; edit it, then `sala-report resume {engine.session_id}` writes the report")
    if result.status == "cancelled":
        _say(f"saved; continue with `sala-report resume {engine.session_id}`")
    elif result.status == "failed":
        _say(f"failed: {result.error}")
    if result.status == "done" and summary["searches"]["degraded"]:
        return EXIT_PARTIAL  # complete, but some sections were written from fewer sources than asked for
    if result.status == "done" and summary["quality"]["weak_sections"]:
        return EXIT_PARTIAL  # complete, but some sections fail the quality checks (named in the summary)
    return EXIT_CODES.get(result.status, EXIT_ERROR)


def _install(sig, handler) -> bool:
    try:
        signal.signal(sig, handler)
        return True
    except ValueError:  # not the main thread (an embedding front end handles signals itself)
        return False


def _report(
    session_id: str,
    store,
    settings: Settings,
    out: Path | None,
    as_json: bool,
    *,
    notes: list[str] | None = None,
    outline=None,
    questions: list[str] | None = None,
    clarifications: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    from sala_report.app.export import default_filename, export_report
    from sala_report.app.warp import render_markdown, session_summary

    summary = session_summary(store, session_id)
    # the question names the file: it never changes, so a run that waits, is cancelled or resumed rewrites one file
    # (a title may not exist yet, or change once the outline is written)
    name = summary["question"] or summary["title"]
    path = out or settings.paths.reports_dir / default_filename(name, session_id, "md")
    export_report(render_markdown(store, session_id), "md", path)
    citations = summary["citations"]
    # citations in another script than their passage, with no number or name to compare, were not verified
    unchecked = f", {citations['unchecked']} not checked (another script)" if citations["unchecked"] else ""
    _say(
        f"report: {path} ({summary['status']}; {plural(len(summary['sources']), 'source')}; "
        f"{citations['verified']}/{plural(citations['total'], 'citation')} verified{unchecked})"
    )
    searches = summary["searches"]
    if searches["degraded"]:
        problems = "; ".join(dict.fromkeys(search_problem(p) for p in searches["problems"][:3]))
        _say(
            f"warning: {searches['degraded']} of {plural(searches['total'], 'search')} found less than asked "
            f"({problems}); those sections rest on fewer sources. "
            "`sala-report doctor` checks the search engine; rewriting a section in the app searches again."
        )
    for weak in summary["quality"]["weak_sections"]:
        _say(f'warning: section {weak["number"]} "{weak["title"]}" is weak: {"; ".join(weak["reasons"])}')
    if questions:  # --clarify: the questions wait for the person's answers
        for i, question in enumerate(questions, 1):
            _say(f"question {i}: {question}")
    elif summary["status"] == "waiting" and outline is not None:
        for line in _plan_lines(outline):
            _say(line)
    if as_json:
        data = _json_summary(summary, [path])
        data["warnings"] = list(notes or [])
        if questions:
            data["questions"] = questions
        elif summary["status"] == "waiting" and outline is not None:
            data["outline"] = _plan(outline)
        if clarifications:
            data["clarifications"] = clarifications
        click.echo(json.dumps(data, ensure_ascii=False))
    return summary


def _clarifications(brief) -> list[dict[str, str]] | None:
    """The clarifying questions asked and the person's answers ("" for one left unanswered or skipped), once
    answered; None when none were asked or they still wait (then `questions` lists them)."""
    if brief is None or not brief.questions or brief.answers is None:
        return None
    return [{"question": q, "answer": a} for q, a in zip(brief.questions, brief.answers)]


def _plan(outline) -> list[dict[str, Any]]:
    """The outline waiting for review: number, depth, title and plan of every section."""
    from sala_report.app.warp.state import walk

    return [
        {"number": loc.number, "depth": loc.depth, "title": loc.node.title, "plan": loc.node.plan}
        for loc in walk(outline)
    ]


def _plan_lines(outline) -> list[str]:
    lines = [f"outline: {outline.title}"]
    for row in _plan(outline):
        lines.append(f"{'  ' * row['depth']}{row['number']} {row['title']}: {row['plan']}")
    return lines


def _json_summary(summary: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
    tokens = summary["tokens"]
    return {
        "session_id": summary["session_id"],
        "status": summary["status"],
        "question": summary["question"],
        "title": summary["title"],
        "report_paths": [str(p) for p in paths],
        "sources": [
            {"n": s["n"], "title": s["title"], "location": s["location"], "kind": s["kind"]} for s in summary["sources"]
        ],
        "citations": {k: summary["citations"][k] for k in ("verified", "total", "flagged", "unchecked", "removed")},
        "searches": summary["searches"],
        "quality": summary["quality"],
        "steps": summary["steps"],
        "tokens": {**tokens, "total": tokens["prompt"] + tokens["completion"]},
        "time": {"seconds": summary["seconds"]},
        "error": summary["error"],
    }


def _say(text: str) -> None:
    click.echo(text, err=True)


class Progress:
    """One line per step on stderr: `[step 3/140 00:42] search section-1 "Solar"` and what came of it."""

    def __init__(self, max_steps: int):
        from sala_report.app.warp.throughput import StepThroughput

        self.max_steps = max_steps
        self.numbers: dict[str, int] = {}  # citation key -> the report's [n] (events.ReferencesChanged)
        self.started = time.monotonic()
        self.tokens = 0
        self.throughput = StepThroughput()  # within a step: "… 120 tokens, 31.5 tokens/s"
        self.tty = sys.stderr.isatty()
        self.dangling = False  # a progress line waits to be rewritten

    def __call__(self, event) -> None:
        from sala_report.app.warp import events as ev

        elapsed = int(time.monotonic() - self.started)
        clock = f"{elapsed // 60:02d}:{elapsed % 60:02d}"
        within = self.throughput(event)
        if within is not None:  # a terminal gets one line rewritten in place, a log one line each time
            click.echo(f"\r    {within}\033[K" if self.tty else f"    {within}", err=True, nl=not self.tty)
            self.dangling = self.tty
            return
        if self.dangling and not isinstance(event, ev.TokenDelta):
            click.echo("\r\033[K", err=True, nl=False)
            self.dangling = False
        if isinstance(event, ev.RunStarted) and event.max_steps:
            self.max_steps = event.max_steps
        elif isinstance(event, ev.ReferencesChanged):
            self.numbers = {key: n for key, _, n in event.references}
        elif isinstance(event, ev.StepStarted):
            where = event.position or "the outline"
            retry = f" (try {event.attempt})" if event.attempt > 1 else ""
            _say(f"[step {event.step}/{self.max_steps} {clock}] {event.kind} {where}{retry}")
        elif isinstance(event, ev.SearchFinished):
            degraded = f"; {search_problem(event.degraded)}" if event.degraded else ""
            _say(f"    {plural(event.passages, 'passage')} for: {', '.join(event.keywords)}{degraded}")
        elif isinstance(event, ev.SourceAdded):
            _say(f"    + {event.title or event.location}")
        elif isinstance(event, ev.OutlineChanged) and event.reason != "edit":
            _say(f"    outline: {', '.join(n.title for n in event.outline.sections)}")
        elif isinstance(event, ev.SectionWritten):
            removed = f", {event.removed_citations} invalid removed" if event.removed_citations else ""
            words, cites = plural(word_count(event.markdown), "word"), plural(event.citations, "citation")
            _say(f"    wrote {event.position} ({words}, {cites}{removed})")
        elif isinstance(event, ev.CitationFlagged):
            _say(f"    weak support for {readable_keys(event.key, self.numbers)}: {event.sentence[:80]}")
        elif isinstance(event, ev.ActionRejected):
            error = readable_keys(event.error, self.numbers)
            _say(f"    rejected: {error}" + (" (retrying)" if event.will_retry else " (giving up)"))
        elif isinstance(event, (ev.EditApplied, ev.EditRejected)):
            _say(f"    edit: {getattr(event, 'description', None) or event.reason}")
        elif isinstance(event, ev.Finished):
            _say(f"{event.status} after {plural(event.steps, 'step')} ({clock}): {event.reason}")
        elif isinstance(event, ev.Failed):
            _say(f"failed at step {event.step}: {event.error}")
