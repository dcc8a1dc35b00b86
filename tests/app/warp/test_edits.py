"""The person's outline edits: pure application, and each kind arriving mid-run (the cursor and the
expand decision must follow the edited outline)."""

from __future__ import annotations

import pytest
from warp_fakes import Policy, ScriptedGenerator, check_report

from sala_report.app.warp import WarpStore, edits, render_markdown
from sala_report.app.warp import events as ev
from sala_report.app.warp.citations import Registry
from sala_report.app.warp.edits import EditError, apply_edit
from sala_report.app.warp.phases import Budget, RunState, reconcile
from sala_report.app.warp.report import render_report
from sala_report.app.warp.state import Node, Outline, cursor, walk


def outline() -> Outline:
    o = Outline("T", next_id=1)
    a, b, c = o.new_node("A", "a"), o.new_node("B", "b"), o.new_node("C", "c")
    a.children = [o.new_node("A1", "a1")]
    o.sections = [a, b, c]
    return o


def titles(o: Outline) -> list[str]:
    return [f"{loc.number} {loc.node.title}" for loc in walk(o)]


def test_each_edit_applies_to_a_copy():
    o = outline()
    added = apply_edit(o, edits.AddSection("D", "d", parent_id=2, index=0), max_depth=3)
    assert titles(added) == ["1 A", "1.1 A1", "2 B", "2.1 D", "3 C"] and titles(o) == ["1 A", "1.1 A1", "2 B", "3 C"]
    assert titles(apply_edit(o, edits.RenameSection(2, title="  Bee  "), max_depth=3))[2] == "2 Bee"
    assert titles(apply_edit(o, edits.DeleteSection(1), max_depth=3)) == ["1 B", "2 C"]
    assert titles(apply_edit(o, edits.MoveSection(3, None, 0), max_depth=3)) == ["1 C", "2 A", "2.1 A1", "3 B"]
    assert titles(apply_edit(o, edits.MoveSection(3, 1, 1), max_depth=3)) == ["1 A", "1.1 A1", "1.2 C", "2 B"]
    locked = apply_edit(o, edits.LockSection(2), max_depth=3)
    assert [loc.node.locked for loc in walk(locked)] == [False, False, True, False]
    assert cursor(locked).node.title == "A"
    assert [loc.node.deepen for loc in walk(apply_edit(o, edits.DeepenSection(3), max_depth=3))][3]


def test_moving_down_and_outdenting_put_the_section_where_the_person_expects():
    o = outline()  # 1 A (1.1 A1), 2 B, 3 C; ids A=1, B=2, C=3, A1=4
    assert titles(apply_edit(o, edits.MoveSection(1, None, 1), max_depth=3)) == ["1 B", "2 A", "2.1 A1", "3 C"]
    assert titles(apply_edit(o, edits.MoveSection(2, None, 2), max_depth=3)) == ["1 A", "1.1 A1", "2 C", "3 B"]
    assert titles(apply_edit(o, edits.MoveSection(1, None, 2), max_depth=3)) == ["1 B", "2 C", "3 A", "3.1 A1"]
    # outdent A1 (what the outline pane sends: its parent's parent, just after its parent)
    assert titles(apply_edit(o, edits.MoveSection(4, None, 1), max_depth=3)) == ["1 A", "2 A1", "3 B", "4 C"]
    two = apply_edit(o, edits.AddSection("A2", parent_id=1), max_depth=3)  # A2 has id 5
    assert titles(apply_edit(two, edits.MoveSection(4, 1, 1), max_depth=3)) == ["1 A", "1.1 A2", "1.2 A1", "2 B", "3 C"]
    assert titles(apply_edit(two, edits.MoveSection(4, 2, 0), max_depth=3)) == ["1 A", "1.1 A2", "2 B", "2.1 A1", "3 C"]


def test_a_renamed_section_drops_the_plan_of_its_old_title():
    o = outline()
    renamed = apply_edit(o, edits.RenameSection(2, title="Grids"), max_depth=3)
    assert [(n.title, n.plan) for n in renamed.sections] == [("A", "a"), ("Grids", ""), ("C", "c")]
    partial = render_report(renamed, Registry())
    assert "## 2 Grids\n\n*not written yet*" in partial and "*b*" not in partial
    kept = apply_edit(o, edits.RenameSection(2, title="B", plan="new plan"), max_depth=3)
    assert kept.sections[1].plan == "new plan"
    assert apply_edit(o, edits.RenameSection(2, title="B"), max_depth=3).sections[1].plan == "b"  # same title


def test_descriptions_name_sections_as_the_outline_shows_them():
    names = {3: "4 Policy", 1: "1 Solar"}
    assert edits.describe(edits.DeleteSection(3), names) == "delete 4 Policy"
    assert edits.describe(edits.MoveSection(3, 1, 0), names) == "move 4 Policy to position 1 under 1 Solar"
    assert edits.describe(edits.LockSection(3, locked=False), names) == "unlock 4 Policy"
    assert edits.describe(edits.AddSection("Grids", parent_id=1), names) == "add 'Grids' under 1 Solar"
    assert "3" not in edits.describe(edits.RewriteSection(3), names)


def test_rewrite_forgets_the_text():
    o = outline()
    for loc in walk(o):
        loc.node.content = "text"
    assert cursor(o) is None
    assert cursor(apply_edit(o, edits.RewriteSection(2), max_depth=3)).node.title == "B"


@pytest.mark.parametrize(
    "edit, message",
    [
        (edits.RenameSection(99, title="x"), "no section with id 99"),
        (edits.RenameSection(1, title="   "), "must not be empty"),
        (edits.AddSection("X", parent_id=4), "depth 3; the limit is 2"),
        (edits.MoveSection(1, 4, 0), "under itself"),
        (edits.MoveSection(1, 3, 0), "deeper than 2"),
        (edits.DeepenSection(4), "depth 2"),
        (edits.DeepenSection(1), "already has subsections"),
    ],
)
def test_impossible_edits_are_refused(edit, message):
    with pytest.raises(EditError, match=message):
        apply_edit(outline(), edit, max_depth=2)


def test_locked_sections_refuse_rewrite_and_deepening():
    o = apply_edit(outline(), edits.LockSection(4), max_depth=3)
    for edit in (edits.RewriteSection(4), edits.DeepenSection(4)):
        with pytest.raises(EditError, match="locked"):
            apply_edit(o, edit, max_depth=3)
    with pytest.raises(EditError, match="last top-level"):
        apply_edit(Outline("T", [Node(1, "A", "a")], 2), edits.DeleteSection(1), max_depth=3)
    with pytest.raises(EditError, match="no outline yet"):
        apply_edit(Outline(), edits.AddSection("A"), max_depth=3)


def test_edits_round_trip_through_dicts():
    for edit in (edits.AddSection("A", "a", 2, 1), edits.MoveSection(3, None, 0), edits.LockSection(2, False)):
        assert edits.from_dict(edits.to_dict(edit)) == edit


def test_reconcile_moves_a_pending_write_to_the_new_cursor():
    budget = Budget(100, 3, 3, 2)
    o = outline()
    run = RunState("write", 5, 0, 1, 1, ["textid1"])
    deleted = apply_edit(o, edits.DeleteSection(1), max_depth=3)
    assert (reconcile(run, deleted, budget).phase, reconcile(run, deleted, budget).target) == ("search", 2)
    assert reconcile(run, apply_edit(o, edits.RenameSection(1, title="Z"), max_depth=3), budget) == run
    for loc in walk(o):
        loc.node.content = "x"
    extend = RunState("extend", 9, 1)
    rewritten = apply_edit(o, edits.RewriteSection(4), max_depth=3)
    assert (reconcile(extend, rewritten, budget).phase, reconcile(extend, rewritten, budget).target) == ("search", 4)


def run_with_edit(start, trigger, make_edit, generator=None, **changes):
    """Run to the end, submitting `make_edit(event)` once when `trigger(event)` is first true."""
    engine, seen = start(generator or ScriptedGenerator(policy=Policy(expands=0)), **changes)
    fired = []

    def on_event(event):
        if not fired and trigger(event):
            fired.append(True)
            engine.submit(make_edit(event))

    engine.subscribe(on_event)
    result = engine.run()
    assert fired
    return engine, seen, result


def after_outline(event):
    return isinstance(event, ev.OutlineChanged) and event.reason == "init-plan"


def written(seen):
    return [e.title for e in seen if isinstance(e, ev.SectionWritten)]


def test_added_section_is_written(start, corpus):
    engine, seen, result = run_with_edit(start, after_outline, lambda e: edits.AddSection("Grids", "Grid upgrades"))
    assert written(seen) == ["Solar power", "Storage", "Policy", "Grids"]
    assert "## 4 Grids" in check_report(corpus[0], result.session_id)
    applied = [e for e in seen if isinstance(e, ev.EditApplied)]
    assert applied[0].description == "add 'Grids'"
    changed = [e for e in seen if isinstance(e, ev.OutlineChanged) and e.reason == "edit"]
    assert [n.title for n in changed[0].outline.sections] == ["Solar power", "Storage", "Policy", "Grids"]


def test_rename_keeps_the_written_text(start, corpus):
    first_written = lambda e: isinstance(e, ev.SectionWritten)  # noqa: E731
    engine, seen, result = run_with_edit(
        start, first_written, lambda e: edits.RenameSection(e.node_id, title="Sunshine")
    )
    markdown = render_markdown(corpus[0], result.session_id)
    assert "## 1 Sunshine\n\nAbout Solar power" in markdown


def test_deleting_the_section_being_searched_moves_on(start):
    searching_2 = lambda e: isinstance(e, ev.SearchFinished) and e.node_id == 2  # noqa: E731
    engine, seen, result = run_with_edit(start, searching_2, lambda e: edits.DeleteSection(2))
    assert written(seen) == ["Solar power", "Policy"]
    searched = [e.node_id for e in seen if isinstance(e, ev.SearchFinished)]
    assert searched == [None, 1, 2, 3]  # the evidence found for section 2 is dropped with it
    assert result.status == "done"


def test_moved_section_is_written_in_its_new_place(start, corpus):
    engine, seen, result = run_with_edit(start, after_outline, lambda e: edits.MoveSection(3, None, 0))
    assert written(seen) == ["Policy", "Solar power", "Storage"]
    assert render_markdown(corpus[0], result.session_id).index("## 1 Policy") > 0


def test_locked_section_is_neither_written_nor_expanded(start, corpus):
    generator = ScriptedGenerator(policy=Policy(expands=3))
    engine, seen, result = run_with_edit(start, after_outline, lambda e: edits.LockSection(2), generator, max_expands=3)
    assert "Storage" not in written(seen)
    offered = [r.constraint.json_schema for k, r in generator.requests if k == "extend"]
    assert offered and all("section-2" not in str(schema) for schema in offered)
    markdown = render_markdown(corpus[0], result.session_id)
    assert "## 2 Storage\n\n*How batteries balance supply*" in markdown
    assert result.status == "done"  # a locked section is the person's choice, not a gap


def test_deepen_request_overrides_the_expand_decision(start, corpus):
    generator = ScriptedGenerator(policy=Policy(expands=1))
    engine, seen, result = run_with_edit(
        start, after_outline, lambda e: edits.DeepenSection(3), generator, max_expands=0
    )
    extend_requests = [r for k, r in generator.requests if k == "extend"]
    assert len(extend_requests) == 1  # made although the model's own expand budget is zero
    schema = str(extend_requests[0].constraint.json_schema)
    assert "section-3" in schema and "section-1" not in schema and "nop" not in schema
    assert "asked for section-3" in extend_requests[0].prompt
    outline = WarpStore(corpus[0]).outline(result.session_id)
    assert [c.title for c in outline.sections[2].children] == ["Costs", "Adoption"]
    assert not outline.sections[2].deepen


def test_rewrite_request_writes_the_section_again(start, corpus):
    at_extend = lambda e: isinstance(e, ev.Checkpointed) and e.phase == "extend"  # noqa: E731
    generator = ScriptedGenerator(policy=Policy(expands=0))
    engine, seen, result = run_with_edit(start, at_extend, lambda e: edits.RewriteSection(1), generator)
    assert written(seen) == ["Solar power", "Storage", "Policy", "Solar power"]
    drafts = (
        corpus[0]
        .db.execute("SELECT node_id FROM warp_drafts WHERE session_id = ? ORDER BY step", [result.session_id])
        .fetchall()
    )
    assert [d[0] for d in drafts] == [1, 2, 3, 1]
    assert [k for k, _ in generator.requests][-3:] == ["search", "write", "extend"]
    check_report(corpus[0], result.session_id)


def test_rejected_edit_changes_nothing_and_is_reported(start, corpus):
    engine, seen, result = run_with_edit(start, after_outline, lambda e: edits.DeleteSection(42))
    rejected = [e for e in seen if isinstance(e, ev.EditRejected)]
    assert rejected and "no section with id 42" in rejected[0].reason
    assert written(seen) == ["Solar power", "Storage", "Policy"]
    journal = [t for _, _, t, _ in WarpStore(corpus[0]).events(result.session_id)]
    assert "EditRejected" in journal


def test_edit_before_the_outline_exists_is_rejected(start):
    first_step = lambda e: isinstance(e, ev.StepStarted)  # noqa: E731
    engine, seen, result = run_with_edit(start, first_step, lambda e: edits.AddSection("Early"))
    assert "no outline yet" in [e for e in seen if isinstance(e, ev.EditRejected)][0].reason
    assert result.status == "done"
