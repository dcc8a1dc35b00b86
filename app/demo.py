"""`sala-report demo`: the whole app, offline, on the embedded default model and the corpus shipped in
assets/demo/. In a terminal it opens the app; otherwise it runs headless and prints progress."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, TextIO

from sala_report.app.runs import RunRequest
from sala_report.app.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEMO_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class DemoPlan:
    request: RunRequest
    settings: Settings


def corpus_folder() -> Path:
    """The shipped corpus as a real folder (installed packages keep it on disk; zip imports are extracted)."""
    resource = files("sala_report.assets") / "demo" / "corpus"
    with as_file(resource) as path:
        return Path(path)


def questions() -> list[str]:
    data = tomllib.loads((files("sala_report.assets") / "demo" / "questions.toml").read_text(encoding="utf-8"))
    return list(data["questions"])


def plan(settings: Settings, question: str | None, model: str | None) -> DemoPlan:
    """The demo's settings: no web, the default model (unless one is named). Its budgets are the ones any
    run gets: fitted to this machine when the model is small (app/warp/budget.py)."""
    asked = questions()
    if question is None:
        text = asked[0]
    elif question.isdigit() and 1 <= int(question) <= len(asked):
        text = asked[int(question) - 1]
    else:
        text = question
    settings.search.web = False
    settings.model.backend = "local"
    settings.model.source = model or DEMO_MODEL
    return DemoPlan(RunRequest(text, web=False, docs=corpus_folder(), model=settings.model.source), settings)


def run_headless(
    services: Any, request: RunRequest, *, out: TextIO = sys.stderr, formats: tuple[str, ...] = ("md", "pdf")
) -> tuple[Any, list[Path]]:
    """Run to the end with one progress line per event on `out`; export the report; (result, files)."""
    from sala_report.app.export import default_filename
    from sala_report.app.warp import events

    engine = services.start(request)
    engine.subscribe(progress_printer(out, events))
    result = engine.run()
    markdown = services.report_markdown(result.session_id)
    title = next((line[2:] for line in markdown.splitlines() if line.startswith("# ")), None)
    written = []
    for fmt in formats:
        exported = services.export(
            result.session_id, fmt, services.reports_dir / default_filename(title, result.session_id, fmt)
        )
        for warning in exported.warnings:
            print(f"warning: {warning}", file=out)
        written.append(exported.path)
    return result, written


def progress_printer(out: TextIO, events) -> Callable[[Any], None]:
    """One readable line per engine event; within a long step, tokens so far and tokens/s every few seconds."""
    from sala_report.app.warp.throughput import StepThroughput

    throughput = StepThroughput()

    def show(event: Any) -> None:
        line = throughput(event)
        if line is not None:
            line = f"  {line}"
        elif isinstance(event, events.RunStarted):
            line = f"session {event.session_id}: {event.question}"
        elif isinstance(event, events.StepStarted):
            line = f"step {event.step}: {event.kind}" + (f" {event.position}" if event.position else "")
        elif isinstance(event, events.OutlineChanged):
            titles = "; ".join(f"{n.number} {n.title}" for n in _flat(event.outline.sections))
            line = f"outline ({event.reason}): {titles}"
        elif isinstance(event, events.SectionWritten):
            line = f"wrote {event.position}: {event.citations} citations"
        elif isinstance(event, events.ActionRejected):
            line = f"rejected {event.kind} answer: {event.error}"
        elif isinstance(event, (events.EditApplied, events.EditRejected)):
            line = f"edit: {getattr(event, 'description', None) or event.reason}"
        elif isinstance(event, events.Finished):
            line = f"finished ({event.status}) after {event.steps} steps: {event.reason}"
        elif isinstance(event, events.Failed):
            line = f"failed: {event.error}" + (f" — {event.hint}" if event.hint else "")
        if line:
            print(line, file=out, flush=True)

    return show


def _flat(nodes) -> list:
    out = []
    for node in nodes:
        out.append(node)
        out.extend(_flat(node.children))
    return out
