"""Pause stops the model at once, not after the step: the generation in flight is abandoned, nothing of that
step is kept, and resuming does the step again from the same checkpoint (as cancel does, without ending)."""

from __future__ import annotations

import threading

from warp_fakes import Policy, ScriptedGenerator, kind_of

from sala_report.app.warp import WarpStore
from sala_report.app.warp import events as ev
from sala_report.app.warp.generator import GenResult


class StuckWriter(ScriptedGenerator):
    """The first write streams a little, then waits (up to a minute) until it is told to stop."""

    def __init__(self) -> None:
        super().__init__(policy=Policy(expands=0))
        self.streaming = threading.Event()
        self.stuck = True

    def generate(self, request, *, on_delta=None, cancel=None, on_restart=None):
        if self.stuck and kind_of(request) == "write":
            self.stuck = False
            on_delta("About solar power: prices fell")
            self.streaming.set()
            stopped = cancel.wait(timeout=60)
            return GenResult("About solar power: prices fell", "cancelled" if stopped else "stop", 10, 5, 0.0)
        return super().generate(request, on_delta=on_delta, cancel=cancel, on_restart=on_restart)


def test_pause_abandons_the_step_in_flight_and_resume_redoes_it(start, corpus):
    generator = StuckWriter()
    engine, seen = start(generator)
    paused = threading.Event()
    engine.subscribe(lambda e: paused.set() if isinstance(e, ev.Paused) else None)
    runner = threading.Thread(target=lambda: seen.append(engine.run()), daemon=True)
    runner.start()
    assert generator.streaming.wait(timeout=30)
    step = [e for e in seen if isinstance(e, ev.StepStarted)][-1].step
    engine.pause()
    assert paused.wait(timeout=10), "the model kept writing after the pause"  # unpatched: it waits out the minute
    (event,) = [e for e in seen if isinstance(e, ev.Paused)]
    assert event.redo_step == step
    store = corpus[0]
    assert WarpStore(store).checkpoint(engine.session_id).step == step - 1  # nothing of the stopped step
    assert not [e for e in seen if isinstance(e, (ev.SectionWritten, ev.Checkpointed)) and e.step == step]
    engine.resume_run()
    runner.join(timeout=60)
    result = seen[-1]
    assert result.status == "done"
    assert [e.step for e in seen if isinstance(e, ev.StepStarted)].count(step) == 2  # done again, from the top
    assert [e for e in seen if isinstance(e, ev.SectionWritten) and e.step == step]
