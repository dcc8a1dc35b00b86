"""Helpers for the terminal app's tests (a module of its own: `conftest` is a name every test folder uses,
so importing from it depends on which folder pytest collected first)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warp"))

from warp_fakes import ScriptedGenerator, settings as warp_settings  # noqa: E402

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

    def count(self, kind) -> int:
        return sum(isinstance(e, kind) for e in list(self.seen))


def make_services(tmp_path: Path, *, delay_s: float = 0.0, script: dict | None = None,
                  **warp_changes) -> RecordingServices:  # fmt: skip
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings(**warp_changes)
    settings.model.device = "cpu"
    generator = ScriptedGenerator(script, delay_s=delay_s)
    return RecordingServices(settings, generator=generator, clock=lambda: 1000.0)



async def until(pilot, predicate, *, timeout: float = 30.0, what: str = "the condition") -> None:
    """Let the app run until `predicate()` holds (the engine works on its own thread meanwhile)."""
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)
        waited += 0.05
