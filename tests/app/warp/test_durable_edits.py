"""The person's edits are stored when submitted: a process that dies before applying them loses none, and
a resumed run applies them first (a finished report given new work goes back to writing)."""

from __future__ import annotations

import pytest
from warp_fakes import Policy, ScriptedGenerator, check_report, settings

from sala_report.app.errors import BackendUnavailable
from sala_report.app.warp import Engine, WarpStore, edits
from sala_report.app.warp import events as ev


def _resume(store, retriever, session_id):
    engine = Engine.resume(store, session_id, ScriptedGenerator(policy=Policy(expands=0)), retriever, settings())
    seen: list = []
    engine.subscribe(seen.append)
    return engine, seen


def test_an_edit_queued_when_the_run_dies_is_applied_on_resume(start, corpus):
    store, retriever, _ = corpus
    holder = {}

    def dies_after_an_edit(request):
        holder["engine"].submit(edits.RenameSection(1, title="Sunlight"))
        raise BackendUnavailable("the process died here")

    engine, seen = start(ScriptedGenerator({"write": [dies_after_an_edit]}, policy=Policy(expands=0)))
    holder["engine"] = engine
    with pytest.raises(BackendUnavailable):
        engine.run()
    assert not any(isinstance(e, ev.EditApplied) for e in seen)
    queued = WarpStore(store).pending_edits(engine.session_id)
    assert [(edit["type"], edit["title"]) for _, edit in queued] == [("RenameSection", "Sunlight")]

    resumed, seen = _resume(store, retriever, engine.session_id)
    assert resumed.run().status == "done"
    assert [e.edit for e in seen if isinstance(e, ev.EditApplied)] == [edits.RenameSection(1, title="Sunlight")]
    assert [e.title for e in seen if isinstance(e, ev.SectionWritten)][0] == "Sunlight"
    assert WarpStore(store).pending_edits(engine.session_id) == []
    check_report(store, engine.session_id)


def test_a_queued_edit_that_cannot_apply_is_rejected_once(start, corpus):
    store, retriever, _ = corpus
    engine, seen = start(ScriptedGenerator(policy=Policy(expands=0)))
    engine.submit(edits.DeleteSection(999))
    assert engine.run().status == "done"
    rejected = [e for e in seen if isinstance(e, ev.EditRejected)]
    assert len(rejected) == 1 and rejected[0].edit == edits.DeleteSection(999)
    assert WarpStore(store).pending_edits(engine.session_id) == []
    resumed, seen = _resume(store, retriever, engine.session_id)
    resumed.run()
    assert not any(isinstance(e, (ev.EditRejected, ev.EditApplied)) for e in seen)


def test_a_section_added_as_a_run_finished_is_written_on_resume(start, corpus):
    store, retriever, _ = corpus
    engine, _ = start(ScriptedGenerator(policy=Policy(expands=0)))
    assert engine.run().status == "done"
    # the edit reached the store just after the run's last look at its queue
    WarpStore(store).queue_edit(engine.session_id, edits.to_dict(edits.AddSection("Storage and the grid")))

    resumed, seen = _resume(store, retriever, engine.session_id)
    result = resumed.run()
    assert result.status == "done"
    assert [e.title for e in seen if isinstance(e, ev.SectionWritten)] == ["Storage and the grid"]
    titles = [n.title for n in WarpStore(store).outline(engine.session_id).sections]
    assert titles[-1] == "Storage and the grid"
    check_report(store, engine.session_id)
