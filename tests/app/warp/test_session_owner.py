"""A session whose process died reads as interrupted; one still running elsewhere cannot be resumed twice."""

from __future__ import annotations

import subprocess
import sys

import pytest
from warp_fakes import ScriptedGenerator, settings

from sala_report.app.errors import UsageError
from sala_report.app.warp import Engine, list_sessions
from sala_report.app.warp.store import WarpStore, this_owner


def _set_owner(store, session_id: str, owner: str) -> None:
    with store.lock:
        store.db.execute("UPDATE warp_sessions SET status = 'running', owner = ? WHERE id = ?", [owner, session_id])
        store.db.conn.commit()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_running_session_of_a_dead_process_reads_interrupted_and_resumes(start, corpus):
    store, retriever, _ = corpus
    engine, _ = start(max_steps=3)
    engine.run()
    host = this_owner().rpartition(":")[0]
    _set_owner(store, engine.session_id, f"{host}:{_dead_pid()}")
    (record,) = list_sessions(store)
    assert record.status == "interrupted"
    resumed = Engine.resume(store, engine.session_id, ScriptedGenerator(), retriever, settings(max_steps=6))
    assert resumed.run().status in {"done", "partial"}
    assert WarpStore(store).session(engine.session_id).owner == this_owner()


def test_session_running_in_another_live_process_is_not_resumed(start, corpus):
    store, retriever, _ = corpus
    engine, _ = start(max_steps=3)
    engine.run()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host = this_owner().rpartition(":")[0]
        _set_owner(store, engine.session_id, f"{host}:{other.pid}")
        assert list_sessions(store)[0].status == "running"
        with pytest.raises(UsageError, match="another process"):
            Engine.resume(store, engine.session_id, ScriptedGenerator(), retriever, settings())
    finally:
        other.kill()
        other.wait()
