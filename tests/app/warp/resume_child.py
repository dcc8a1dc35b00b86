"""One `resume` of a session in its own process, for the test of two resumes started together.

    python resume_child.py DB SESSION GO_FILE

Prints `READY` once it has passed the resume check, waits for GO_FILE to exist, then runs and prints
`DONE status`, or `REFUSED title: message` when the store refuses the claim (a SalaError)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from warp_fakes import ScriptedGenerator, settings

from sala_report.app.errors import SalaError
from sala_report.app.warp import Engine
from sala_report.retrieval import Retriever, Store


def main(db: str, session_id: str, go: str) -> None:
    store = Store.open(db)
    engine = Engine.resume(store, session_id, ScriptedGenerator(delay_s=0.002), Retriever(store), settings())
    print("READY", flush=True)
    while not Path(go).exists():
        time.sleep(0.005)
    try:
        result = engine.run()
    except SalaError as e:
        print(f"REFUSED {e.title}: {e}", flush=True)
    else:
        print(f"DONE {result.status}", flush=True)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
