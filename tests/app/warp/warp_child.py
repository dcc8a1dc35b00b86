"""A WARP run in its own process, for the kill-and-resume test.

    python warp_child.py DB start [KIND N]   start a session; block inside the N-th KIND step's model call
    python warp_child.py DB resume ID        continue the session to the end

Prints `SESSION id`, `BLOCKED kind` and `DONE status` lines on stdout for the parent to follow."""

from __future__ import annotations

import sys
import time

from warp_fakes import Policy, ScriptedGenerator, add_sources, answer, settings

from sala_report.app.warp import Engine
from sala_report.retrieval import Retriever, Store


class OnceExpanding(Policy):
    """Expands section 1 once; decides from the prompt, so a restarted process decides the same way."""

    def extend(self, request):
        if "section-1.1" in request.prompt:
            return answer("deep enough", {"name": "nop"})
        return super().extend(request)


class Blocking(ScriptedGenerator):
    def __init__(self, kind: str | None, nth: int):
        super().__init__(policy=OnceExpanding(expands=1))
        self.block_kind, self.nth, self.seen = kind, nth, 0

    def generate(self, request, **kw):
        kind = request.prompt.split("\n", 1)[0]
        if self.block_kind and kind == TASKS[self.block_kind]:
            self.seen += 1
            if self.seen == self.nth:
                print(f"BLOCKED {self.block_kind}", flush=True)
                time.sleep(120)
        return super().generate(request, **kw)


TASKS = {
    "search": "Task: choose web and library search queries.",
    "init-plan": "Task: draft the first outline of the report.",
    "write": "Task: write one section of the report.",
    "extend": "Task: decide whether the report needs more depth.",
}


def main(db: str, mode: str, *rest: str) -> None:
    store = Store.open(db)
    ids = add_sources(store)
    if mode == "start":
        kind, nth = (rest[0], int(rest[1])) if rest else (None, 0)
        engine = Engine.start(
            store,
            Blocking(kind, nth),
            Retriever(store),
            settings(),
            "How is renewable energy changing?",
            docs_source_ids=ids,
        )
        print(f"SESSION {engine.session_id}", flush=True)
    else:
        engine = Engine.resume(store, rest[0], Blocking(None, 0), Retriever(store), settings())
    result = engine.run()
    print(f"DONE {result.status}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
