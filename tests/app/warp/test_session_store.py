"""Sessions in the store: id prefixes are plain text, one process at a time runs a session, a finished
session stays finished, and `sessions` lines its columns up whatever the status."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from warp_fakes import ScriptedGenerator, make_store, settings

from sala_report.app.cli import main
from sala_report.app.warp import Engine
from sala_report.app.warp.state import walk
from sala_report.app.warp.store import WarpStore, this_owner
from sala_report.retrieval import Retriever, Store

HERE = Path(__file__).parent
QUESTION = "How is renewable energy changing electricity?"


def _session(store, ids, **changes) -> str:
    engine = Engine.start(
        store, ScriptedGenerator(), Retriever(store), settings(**changes), QUESTION, docs_source_ids=ids
    )
    engine.run()
    return engine.session_id


def test_a_prefix_matches_ids_by_their_characters_only(corpus):
    store, _, ids = corpus
    session_id = _session(store, ids, max_steps=2)
    warp = WarpStore(store)
    for wildcard in ("_", "%", "_" * len(session_id), "%%", " ", ""):
        assert warp.find_session(wildcard) is None, wildcard
    assert warp.find_session(session_id[:3]) == session_id
    assert warp.find_session(session_id[:3].upper()) == session_id  # LIKE stays case-blind for ASCII


def test_export_of_a_wildcard_prefix_names_no_session(tmp_path, capsys):
    store, _, ids = make_store(tmp_path / "data" / "sala.db")
    _session(store, ids, max_steps=2)
    store.close()
    code = main(["--data-dir", str(tmp_path / "data"), "export", "_", "--out", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert code == 2 and "no session '_'" in err
    assert not (tmp_path / "r.md").exists()


def _events(store, session_id: str) -> list[str]:
    return [kind for _, _, kind, _ in WarpStore(store).events(session_id)]


def test_two_resumes_started_together_leave_one_running_and_the_other_changes_nothing(tmp_path):
    db = tmp_path / "sala.db"
    store, _, ids = make_store(db)
    session_id = _session(store, ids, max_steps=3)
    before = WarpStore(store).session(session_id)
    assert before.status == "partial"
    events_before = _events(store, session_id)
    store.close()
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(HERE / "resume_child.py"), str(db), session_id, str(go)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]  # both pass the resume check before either claims the session
    try:
        assert [child.stdout.readline().strip() for child in children] == ["READY", "READY"]
        go.touch()
        ended = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            child.kill()  # nothing when it has ended
            child.wait()
    outcomes = sorted(out.strip() for out, _ in ended)
    assert [c.returncode for c in children] == [0, 0], [err for _, err in ended]
    assert outcomes[0] in ("DONE done", "DONE partial"), outcomes  # partial: the run ended with sections unwritten
    assert outcomes[1].startswith("REFUSED Session already running: ") and "already running" in outcomes[1]
    store = Store.open(db)
    try:
        after = WarpStore(store).session(session_id)
        assert (after.status, after.error) == (outcomes[0].split()[1], None)
        events = _events(store, session_id)
        assert "Failed" not in events
        assert events[: len(events_before)] == events_before
        assert events.count("Finished") == events_before.count("Finished") + 1  # the loser wrote nothing
        steps = WarpStore(store).steps(session_id)
        assert [s.step for s in steps] == list(range(1, after.steps + 1))
    finally:
        store.close()


def test_a_claim_is_refused_once_another_process_moved_the_session_on(corpus):
    """The loser of the race may look only after the winner has finished: its checkpoint is then stale."""
    store, retriever, ids = corpus
    session_id = _session(store, ids, max_steps=3)
    late = Engine.resume(store, session_id, ScriptedGenerator(), retriever, settings())
    Engine.resume(store, session_id, ScriptedGenerator(), retriever, settings()).run()
    done = WarpStore(store).session(session_id)
    with pytest.raises(Exception, match="already running, or was just continued"):
        late.run()
    after = WarpStore(store).session(session_id)
    assert (after.status, after.steps, after.error) == (done.status, done.steps, None)


def test_a_finished_session_stays_finished_when_resumed(corpus):
    store, retriever, ids = corpus
    session_id = _session(store, ids)
    warp = WarpStore(store)
    record = warp.session(session_id)
    assert warp.checkpoint(session_id).phase == "done" and record.status in ("done", "partial")
    outline = [(loc.number, loc.node.title, loc.node.plan, loc.node.content) for loc in walk(warp.outline(session_id))]
    journal = len(warp.steps(session_id))
    generator = ScriptedGenerator()
    result = Engine.resume(store, session_id, generator, retriever, settings()).run()
    assert result.status == record.status and generator.requests == []
    after = warp.session(session_id)
    assert (after.status, after.steps, after.error) == (record.status, record.steps, None)
    assert len(warp.steps(session_id)) == journal
    assert [
        (loc.number, loc.node.title, loc.node.plan, loc.node.content) for loc in walk(warp.outline(session_id))
    ] == outline


def _set_status(store, session_id: str, status: str, owner: str) -> None:
    with store.lock:
        store.db.execute("UPDATE warp_sessions SET status = ?, owner = ? WHERE id = ?", [status, owner, session_id])
        store.db.conn.commit()


def test_sessions_lines_up_its_columns_for_every_status(tmp_path, capsys):
    store, _, ids = make_store(tmp_path / "data" / "sala.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = this_owner().rpartition(":")[0]
    made = {}
    for status in ("done", "running", "partial", "cancelled", "failed"):
        session_id = _session(store, ids, max_steps=2)
        owner = f"{host}:{dead.pid}" if status == "running" else this_owner()  # a dead owner reads interrupted
        _set_status(store, session_id, status, owner)
        made[session_id] = "interrupted" if status == "running" else status
        time.sleep(0.01)
    store.close()
    assert main(["--data-dir", str(tmp_path / "data"), "sessions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STEPS", "UPDATED", "QUESTION"]
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(made.values())
    for column in ("STATUS", "UPDATED", "QUESTION"):
        start = lines[0].index(column)
        for line in lines[1:]:  # every cell starts where its heading does, after a space
            assert line[start - 1] == " " and line[start] != " ", (column, line)
    steps_end = lines[0].index("STEPS") + len("STEPS")
    assert all(line[steps_end - 1].isdigit() and line[steps_end] == " " for line in lines[1:])
