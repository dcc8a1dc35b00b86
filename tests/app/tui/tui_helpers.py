"""Helpers for the terminal app's tests (a module of its own: `conftest` is a name every test folder uses,
so importing from it depends on which folder pytest collected first)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warp"))

from warp_fakes import ScriptedGenerator  # noqa: E402
from warp_fakes import settings as warp_settings

from sala_report.app.runs import LocalServices  # noqa: E402
from sala_report.app.settings import load_settings  # noqa: E402


class RecordingServices(LocalServices):
    """The real services with one more subscriber: `seen` gets every engine event, on the engine's thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list = []

    def start(self, request):
        engine = super().start(request)
        engine.subscribe(self.seen.append)
        return engine

    def resume(self, session_id, **kwargs):
        engine = super().resume(session_id, **kwargs)
        engine.subscribe(self.seen.append)
        return engine

    def count(self, kind) -> int:
        return sum(isinstance(e, kind) for e in list(self.seen))


def make_services(
    tmp_path: Path,
    *,
    delay_s: float = 0.0,
    script: dict | None = None,
    clock=lambda: 1000.0,
    web: bool = True,
    **warp_changes,
) -> RecordingServices:
    """`clock` replaces the monotonic clock (fixed by default, so screenshots do not change); `web` is
    search.web in the settings (a run's request decides for itself)."""
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings(**warp_changes)
    settings.model.device = "cpu"
    settings.search.web = web
    generator = ScriptedGenerator(script, delay_s=delay_s)
    return RecordingServices(settings, generator=generator, clock=clock)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def until(pilot, predicate, *, timeout: float = 30.0, what: str = "the condition") -> None:
    """Let the app run until `predicate()` holds (the engine works on its own thread meanwhile)."""
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)
        waited += 0.05
