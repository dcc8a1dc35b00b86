"""What the terminal app needs from the rest of sala-report, as one protocol: start or resume an engine,
list sessions, read a report, export it. The CLI passes the real one (app/runs.py, LocalServices); tests
pass the same with a scripted generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sala_report.app.export import Exported
from sala_report.app.runs import RunFacts, RunRequest, SessionInfo
from sala_report.app.warp.edits import Edit

if TYPE_CHECKING:
    from sala_report.app.warp.engine import RunResult, Subscriber

__all__ = ["RunFacts", "RunRequest", "RunningEngine", "Services", "SessionInfo"]


class RunningEngine(Protocol):
    """What the app asks of an engine (app/warp/engine.py): `run` blocks on a worker thread; the rest may be
    called from the app's thread while it runs."""

    def subscribe(self, callback: Subscriber) -> Callable[[], None]: ...

    def run(self) -> RunResult: ...

    def submit(self, edit: Edit) -> None: ...

    def pause(self) -> None: ...

    def resume_run(self) -> None: ...

    def cancel(self) -> None: ...


class Services(Protocol):
    facts: RunFacts
    reports_dir: Path
    progress: Callable[[str], None]  # slow set-up (loading a model, reading documents) reports here

    def clock(self) -> float:
        """Seconds on a monotonic clock (tests fix it so screenshots do not change)."""

    def start(self, request: RunRequest) -> RunningEngine:
        """A new engine, ready to run. Called on a worker thread: loading a model may take a while."""

    def resume(self, session_id: str, *, answers: tuple[str, ...] | None = None) -> RunningEngine:
        """An engine that continues a stored session, with `answers` to its waiting clarifying questions when
        given. Called on a worker thread."""

    def waiting_questions(self, session_id: str) -> tuple[str, ...]:
        """The clarifying questions a stored session waits to have answered (none: ())."""

    def sessions(self) -> list[SessionInfo]:
        """Past sessions, newest first."""

    def report_markdown(self, session_id: str) -> str:
        """The report so far, as the engine renders it (a partial report is fine)."""

    def cited_by(self, session_id: str) -> dict[int, list[str]]:
        """Source id → the numbers of the sections that cite it."""

    def export(self, session_id: str, fmt: str, path: Path, *, questions: bool = False) -> Exported:
        """Write the report (with `questions`, the questions asked of it and their answers as an appendix); may
        take seconds for a PDF. Called on a worker thread."""
