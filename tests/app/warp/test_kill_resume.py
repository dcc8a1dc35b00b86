"""Kill a run with SIGKILL inside each kind of step, resume it in a new process, and check that the
finished session matches an uninterrupted run: nothing lost, nothing written twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from warp_fakes import check_report

from sala_report.app.warp import WarpStore, render_markdown
from sala_report.retrieval import Store

CHILD = Path(__file__).with_name("warp_child.py")


def child(db: Path, *args: str, kill_on: str | None = None) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), *args], stdout=subprocess.PIPE, text=True, cwd=CHILD.parent
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if kill_on and line.startswith(kill_on):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if kill_on:
        assert proc.returncode == -signal.SIGKILL, lines
    else:
        assert proc.returncode == 0, lines
    return lines


def facts(db: Path, session_id: str) -> dict:
    store = Store.open(db)
    try:
        warp = WarpStore(store)
        steps = warp.steps(session_id)
        journal = warp.events(session_id)
        drafts = store.db.execute(
            "SELECT node_id, step FROM warp_drafts WHERE session_id = ? ORDER BY step", [session_id]
        ).fetchall()
        keys = store.db.execute("SELECT key, chunk_id FROM warp_passages WHERE session_id = ?", [session_id]).fetchall()
        check_report(store, session_id)
        return {
            "status": warp.session(session_id).status,
            "steps": [(s.step, s.kind, s.node_id, s.ok) for s in steps],
            "drafts": [node for node, _ in drafts],
            "keys": sorted(k for k, _ in keys),
            "chunks": len({c for _, c in keys}) == len(keys),
            "seq": [seq for seq, *_ in journal] == list(range(1, len(journal) + 1)),
            "written_events": sum(1 for *_, t, _ in journal if t == "SectionWritten"),
            "report": render_markdown(store, session_id),
        }
    finally:
        store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    db = tmp_path_factory.mktemp("ref") / "sala.db"
    lines = child(db, "start")
    return facts(db, lines[0].split()[1])


@pytest.mark.parametrize(
    "kind, nth", [("search", 1), ("init-plan", 1), ("search", 2), ("write", 2), ("extend", 1), ("write", 4)]
)
def test_kill_at_each_step_kind_then_resume(tmp_path, reference, kind, nth):
    db = tmp_path / "sala.db"
    lines = child(db, "start", kind, str(nth), kill_on="BLOCKED")
    session_id = lines[0].split()[1]
    store = Store.open(db)
    before = WarpStore(store).checkpoint(session_id)
    store.close()
    assert before.phase == kind  # the killed step was not committed: the checkpoint still points at it
    assert child(db, "resume", session_id)[-1] == "DONE done"
    after = facts(db, session_id)
    assert after["status"] == "done" and after["chunks"] and after["seq"]
    assert after["steps"] == reference["steps"]  # same steps, none repeated, none lost
    assert after["drafts"] == reference["drafts"]
    assert after["keys"] == reference["keys"]
    assert after["written_events"] == len(after["drafts"])
    assert after["report"] == reference["report"]
