"""A full disk mid-run: the step's transaction rolls back, the run stops with one clear error, and once
there is room again the resumed run finishes with nothing lost. The disk is "full" for real: SQLite's
max_page_count stops the store's own connection from growing, which SQLite reports as SQLITE_FULL."""

from __future__ import annotations

import errno

import pytest
from warp_fakes import Policy, ScriptedGenerator, check_report, settings

from sala_report.app.errors import SalaError, storage_failure
from sala_report.app.warp import Engine, WarpStore, edits
from sala_report.app.warp import events as ev


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes(start, corpus):
    store, retriever, _ = corpus
    engine, seen = start(ScriptedGenerator(policy=Policy(expands=0)))

    def fill_the_disk(event):
        if isinstance(event, ev.Checkpointed) and event.step == 3:
            pages = store.db.execute("PRAGMA page_count").fetchone()[0]
            store.db.execute(f"PRAGMA max_page_count = {pages}")

    engine.subscribe(fill_the_disk)
    with pytest.raises(SalaError) as caught:
        engine.run()
    assert caught.value.title == "Disk full" and "resume" in caught.value.hint
    failed = [e for e in seen if isinstance(e, ev.Failed)]
    assert len(failed) == 1 and "full" in failed[0].error
    saved = WarpStore(store).steps(engine.session_id)
    assert [s.step for s in saved] == list(range(1, len(saved) + 1)) and len(saved) >= 3

    store.db.execute("PRAGMA max_page_count = 1073741823")  # room again
    resumed = Engine.resume(
        store, engine.session_id, ScriptedGenerator(policy=Policy(expands=0)), retriever, settings()
    )
    assert resumed.run().status == "done"
    steps = WarpStore(store).steps(engine.session_id)
    assert [s.step for s in steps] == list(range(1, len(steps) + 1)) and steps[: len(saved)] == saved
    check_report(store, engine.session_id)
    assert store.check_integrity() == []


def test_only_running_out_of_room_is_reported_as_a_full_disk():
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device")).title == "Disk full"
    assert storage_failure(OSError(errno.EFBIG, "File too large")) is not None
    assert storage_failure(OSError(errno.ENOENT, "No such file or directory")) is None
    assert storage_failure(ValueError("database or disk")) is None


def test_an_edit_the_full_disk_cannot_store_is_refused_with_a_clear_error(start, corpus):
    store, _, _ = corpus
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(SalaError) as caught:
        engine.submit(edits.RenameSection(1, plan="a long plan " * 2000))  # needs new pages the disk can't give
    assert caught.value.title == "Disk full"
    store.db.execute("PRAGMA max_page_count = 1073741823")
    assert WarpStore(store).pending_edits(engine.session_id) == []
    assert engine.run().status == "done"  # the run itself is unharmed
