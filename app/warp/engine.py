"""The WARP loop: one step at a time, a checkpoint after each, the person's edits applied in between.

`run()` blocks, so front ends call it on a worker thread; `submit`, `pause`, `resume_run` and `cancel`
may be called from any thread. Pause and cancel both abandon the step in flight (its generation and
fetches stop at once; the last checkpoint stays, so a resumed run redoes that step). Subscribers are
called on the engine's thread, and (except for TokenDelta) only after what the event reports has been
committed.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Union

from sala_report.app.errors import SalaError, UsageError, storage_failure
from sala_report.app.settings import WarpSettings
from sala_report.app.warp import events as ev
from sala_report.app.warp import evidence_steps
from sala_report.app.warp.brief import Brief, sized
from sala_report.app.warp.citations import render_cites
from sala_report.app.warp.clarify import answered, ask_questions, one_answer, with_questions
from sala_report.app.warp.edits import Edit, EditError, apply_edit, describe, from_dict, to_dict
from sala_report.app.warp.exclusion import ExcludingRetriever, after_exclusion, note
from sala_report.app.warp.generator import Generator
from sala_report.app.warp.json_types import JSONObject
from sala_report.app.warp.phases import Budget, RunState, next_to_write, reconcile
from sala_report.app.warp.prompts import PromptTooLong
from sala_report.app.warp.report import excluded_sources, mark_weak, numbering, weak_pairs
from sala_report.app.warp.retriever import Retriever
from sala_report.app.warp.state import Outline, find, is_complete, walk
from sala_report.app.warp.steps import STEPS, Cancelled, StepContext, StepOutcome, writing
from sala_report.app.warp.store import Commit, WarpStore
from sala_report.app.warp.validate import Limits

if TYPE_CHECKING:
    from sala_report.app.warp.retriever import RetrievalEvent
    from sala_report.retrieval.store import Store

log = logging.getLogger("sala_report.warp")

Delivered = Union[ev.Event, "RetrievalEvent"]  # what a subscriber is called with
Subscriber = Callable[[Delivered], None]


@dataclass(frozen=True)
class RunResult:
    session_id: str
    status: str  # "done" | "partial" | "cancelled" | "failed"
    steps: int
    reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    error: str | None = None


def limits_from(settings: WarpSettings) -> Limits:
    """Validator and grammar bounds; string lengths shrink with a small `max_tokens`, so that a whole
    JSON action always fits in one answer."""
    budget = settings.max_tokens
    sections = max(1, settings.max_sections)
    return Limits(
        hard=settings.hard_mode,
        min_sections=min(3, sections),
        max_sections=sections,
        max_subsections=7 if budget >= 512 else 3,
        thought_chars=min(settings.thought_chars, budget),
        keyword_chars=min(80, max(20, budget // 8)),
        title_chars=min(120, max(24, budget // 6)),
        plan_chars=min(300, max(40, budget // 4)),
    )


class Engine:
    def __init__(
        self, store: Store, generator: Generator, retriever: Retriever, settings: WarpSettings, session_id: str
    ) -> None:
        self.wstore = WarpStore(store)
        self.store = store
        self.generator = generator
        self.retriever = retriever
        self.session_id = session_id
        record = self.wstore.session(session_id)
        if record is None:
            raise UsageError(f"no session '{session_id}'", hint="`sala-report sessions` lists them.")
        self.question = record.question
        self.options = record.options
        self.brief = Brief.from_options(self.options)
        # The length scales the budgets as they arrive (the person's, or those fitted to a small model).
        self.settings = settings = sized(settings, self.brief.length)
        # A session stopped for plan review goes on writing once it is resumed.
        self._review_done = record.status == "waiting"
        self.notes = self._brief_notes()  # what of the brief this run cannot honour, for the summary
        self.run_state = self.wstore.checkpoint(session_id)
        self.outline = self.wstore.outline(session_id)
        self.registry = self.wstore.registry(session_id)
        self.excluded = excluded_sources(self.wstore, session_id)  # the person's: never retrieved again
        self.budget = Budget(settings.max_steps, settings.max_expands, settings.max_depth, settings.max_retries)
        self.limits = limits_from(settings)
        self._subscribers: list[Subscriber] = []
        # (queue seq, edit): edits a previous process accepted but never applied come first
        self._edits: list[tuple[int, Edit]] = self._stored_edits()
        self._cond = threading.Condition()
        self._paused = False
        self._announced_pause = False
        self._cancel = threading.Event()
        self._stop_step: threading.Event | None = None  # set to abandon the step in flight (pause or cancel)
        self._abandoned: int | None = None  # the step a pause stopped, redone on resume
        self._references: tuple[tuple[str, int, int], ...] = ()  # the report's numbering last announced
        self._resumed = record.steps > 0 or record.status != "running"
        self._final_status: str | None = None

    @classmethod
    def start(
        cls,
        store: Store,
        generator: Generator,
        retriever: Retriever,
        settings: WarpSettings,
        question: str,
        *,
        docs_source_ids: set[int] | None = None,
        options: JSONObject | None = None,
        brief: Brief | None = None,
        outline: Outline | None = None,
    ) -> Engine:
        """A new session. `docs_source_ids`: the sources passages may come from besides the web pages
        this run finds; None lets them come from the whole store. `brief`: the person's report instructions;
        `outline`: their own outline, written instead of one the model plans."""
        question = " ".join(question.split())
        if not question:
            raise UsageError("the research question is empty")
        brief = brief or Brief()
        opts = dict(options or {})
        opts["source_ids"] = sorted(docs_source_ids) if docs_source_ids is not None else None
        opts["brief"] = brief.to_options()
        opts.setdefault("max_steps", sized(settings, brief.length).max_steps)  # shown when the session is reopened
        wstore = WarpStore(store)
        session_id = wstore.create_session(question, model=getattr(generator, "name", ""), options=opts, run=RunState())
        if outline is not None and outline.sections:
            given = outline.copy()
            given.title = given.title or question
            fitted = sized(settings, brief.length)
            budget = Budget(fitted.max_steps, fitted.max_expands, fitted.max_depth, fitted.max_retries)
            run = next_to_write(RunState(), given, budget)
            run.review = brief.review_plan
            event = ev.OutlineChanged(session_id, 0, "given", ev.outline_view(given))
            wstore.commit(session_id, Commit(run=run, outline=given, events=[ev.to_record(event)]))
        return cls(store, generator, retriever, settings, session_id)

    @classmethod
    def resume(
        cls, store: Store, session_id: str, generator: Generator, retriever: Retriever, settings: WarpSettings
    ) -> Engine:
        """Continue a session from its last checkpoint (a killed, cancelled, failed or partial run)."""
        found = WarpStore(store).find_session(session_id)
        if found is None:
            raise UsageError(f"no session '{session_id}'", hint="`sala-report sessions` lists them.")
        record = WarpStore(store).session(found)
        if record is not None and record.running_elsewhere:
            raise UsageError(
                f"session {found} is being written by another process ({record.owner})",
                hint="Wait for it to finish, or stop that process first; its progress is saved after every step.",
            )
        return cls(store, generator, retriever, settings, found)

    def _brief_notes(self) -> list[str]:
        """Evidence mode (small models) copies the sources' sentences: it cannot write in another language."""
        mode = writing(SimpleNamespace(settings=self.settings, generator=self.generator))
        if self.brief.language and mode == "evidence":
            return [
                f"the report language ({self.brief.language}) is not applied: this model runs in evidence mode, which "
                "copies sentences from the sources in their own language; a model that writes (warp.writing = "
                '"generate") is needed for a report in another language'
            ]
        return []

    def replace_outline(self, outline: Outline) -> None:
        """The person's own outline in place of the stored one, before anything is written (a plan under review,
        or a run that has not planned yet): the next step searches for its first section."""
        if any(loc.node.content is not None for loc in walk(self.outline)):
            raise UsageError(
                f"session {self.session_id} already has written sections; its outline can no longer be replaced",
                hint="Edit it in the app instead, or start a new run with --outline.",
            )
        given = outline.copy()
        given.title = given.title or self.outline.title or self.question
        run = next_to_write(RunState(step=self.run_state.step), given, self.budget)
        event = ev.OutlineChanged(self.session_id, self.run_state.step, "given", ev.outline_view(given))
        self.wstore.commit(self.session_id, Commit(run=run, outline=given, events=[ev.to_record(event)]))
        self.run_state, self.outline = run, given

    def answer(self, answers: tuple[str, ...]) -> None:
        """The person's answers to the clarifying questions, in order ("" leaves one unanswered); given before
        the questions are asked (`run --answers`), they are paired with them once they are. Stored at once."""
        brief = self.brief
        if not brief.clarify or (brief.questions is not None and not brief.waiting_for_answers):
            raise UsageError(
                f"session {self.session_id} has no clarifying questions waiting for answers",
                hint="--answers goes with a run started with --clarify, before its questions are answered.",
            )
        try:
            if brief.questions is None:  # kept until the questions are asked
                brief = dataclasses.replace(brief, answers=tuple(one_answer(a) for a in answers))
            else:
                brief = answered(brief, answers)
        except ValueError as e:
            raise UsageError(f"the answers cannot be used: {e}") from None
        self._store_brief(brief)

    def _store_brief(self, brief: Brief, *, tokens: tuple[int, int] = (0, 0)) -> None:
        self.options = {**self.options, "brief": brief.to_options()}
        self.wstore.set_options(self.session_id, self.options, tokens=tokens)
        self.brief = brief

    def _clarify(self) -> None:
        """Ask the clarifying questions (one model call, before any search) and store them; answers the person
        gave beforehand are paired with them. Raises Cancelled when paused or cancelled meanwhile."""
        with self._cond:
            if self._paused or self._cancel.is_set():
                raise Cancelled()
            stop = self._stop_step = threading.Event()
        try:
            asked = ask_questions(self.generator, self.settings, self.question, self.brief, cancel=stop)
        finally:
            with self._cond:
                self._stop_step = None
        for why in asked.dropped:
            log.info("session %s: clarifying question dropped: %s", self.session_id, why)
        if not asked.questions:
            self.notes.append("the model asked no usable clarifying question; the research goes on without")
        self._store_brief(
            with_questions(self.brief, asked.questions), tokens=(asked.prompt_tokens, asked.completion_tokens)
        )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event; returns a function that unsubscribes."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def submit(self, edit: Edit) -> None:
        """Queue an outline edit; it is applied between steps (at once while paused). It is stored first, so a
        process killed before the step ends loses nothing: the resumed run applies it. Raises SalaError when the
        store cannot take it (a full disk): the edit is then not queued."""
        try:
            seq = self.wstore.queue_edit(self.session_id, to_dict(edit))
        except (OSError, sqlite3.DatabaseError) as e:  # not stored, so not accepted: say why, change nothing
            raise storage_failure(e) or SalaError(f"the edit could not be saved: {e}") from e
        with self._cond:
            self._edits.append((seq, edit))
            self._cond.notify_all()

    def _stored_edits(self) -> list[tuple[int, Edit]]:
        edits = []
        for seq, data in self.wstore.pending_edits(self.session_id):
            try:
                edits.append((seq, from_dict(data)))
            except (TypeError, ValueError) as e:  # written by another version: report it, keep the row for it
                log.warning("session %s: queued edit %s cannot be read (%s)", self.session_id, seq, e)
        return edits

    def pause(self) -> None:
        """Stop generating now: the step in flight is abandoned (nothing of it is kept) and redone on resume.
        `Paused` is emitted once it has stopped."""
        with self._cond:
            self._paused = True
            if self._stop_step is not None:
                self._stop_step.set()
            self._cond.notify_all()

    def resume_run(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop as soon as possible: a step in flight is abandoned (the last checkpoint stays)."""
        self._cancel.set()
        with self._cond:
            if self._stop_step is not None:
                self._stop_step.set()
            self._cond.notify_all()

    def run(self) -> RunResult:
        started = time.perf_counter()
        self.wstore.set_status(self.session_id, "running", error=None)
        self._emit(self._run_started())
        try:
            if self.run_state.review and self._review_done:
                # reviewed: stored at once, so a run stopped before its next step does not wait again
                self.run_state = dataclasses.replace(self.run_state, review=False)
                self.wstore.commit(self.session_id, Commit(run=self.run_state, outline=self.outline))
            self._apply_edits()  # edits a killed or ended run accepted but never applied
            if self.run_state.phase == "done" and self.outline.sections:
                return self._finish(started, self.run_state.reason or "already finished")
            if self.run_state.phase == "done":  # it failed before it had an outline: start over, keeping the count
                self.run_state = RunState(step=self.run_state.step)
            while True:
                self._apply_edits()
                if self._cancel.is_set():
                    return self._finish(started, "cancelled by the person", status="cancelled")
                if self._wait_while_paused():
                    continue
                if self.brief.clarify and self.brief.questions is None and self.run_state.step == 0:
                    try:
                        self._clarify()
                    except Cancelled:
                        pass
                    continue  # the loop top reports a cancellation or pause, or goes on to wait or search
                if self.brief.waiting_for_answers and not self._review_done:
                    return self._finish(started, "the clarifying questions wait for answers", status="waiting")
                if self.brief.waiting_for_answers:  # resumed without answers: go on without them
                    self._store_brief(answered(self.brief, ()))
                    self.notes.append("the clarifying questions were left unanswered")
                if self.run_state.phase == "done":
                    return self._finish(started, self.run_state.reason)
                if self.run_state.review:
                    return self._finish(started, "the outline waits for review", status="waiting")
                if self.run_state.step >= self.budget.max_steps:
                    # The phase stays as it is, so a resume with a larger budget carries on from here.
                    return self._finish(started, f"the step budget ({self.budget.max_steps}) is used up")
                try:
                    self._step()
                except Cancelled:
                    self._abandoned = self.run_state.step + 1
                    continue  # the loop top reports the cancellation or the pause
        except (SalaError, PromptTooLong) as e:
            return self._fail(started, e)
        except (OSError, sqlite3.DatabaseError) as e:
            full = storage_failure(e)  # the step's transaction rolled back: the last checkpoint is intact
            if full is None:
                self._fail(started, e)
                raise
            return self._fail(started, full)  # raises it
        except Exception as e:
            self._fail(started, e)
            raise

    def _run_started(self) -> ev.RunStarted:
        """What a front end shows before the first step: a resumed session's stored outline and sources, the
        step budget (for a finished session, the one it ran under) and whether it searches the web."""
        finished = self.run_state.phase == "done" and bool(self.outline.sections)
        budget = int(self.options.get("max_steps") or 0) if finished else self.budget.max_steps
        web = self.options.get("web")
        sources: dict[int, ev.SourceAdded] = {}
        for entry in self.registry.entries.values():
            sources.setdefault(
                entry.source_id,
                ev.SourceAdded(
                    self.session_id, self.run_state.step, entry.source_id, entry.title, entry.location, entry.kind
                ),
            )
        self._references = self._numbering()
        return ev.RunStarted(
            self.session_id,
            self.question,
            self._resumed,
            self.run_state.step,
            max_steps=budget,
            web=None if web is None else bool(web),
            finished=finished,
            outline=ev.outline_view(self.outline) if self.outline.sections else None,
            sources=tuple(sources.values()),
            references=self._references,
        )

    def _numbering(self) -> tuple[tuple[str, int, int], ...]:
        """(key, source id, [n]) for every cited passage, numbered as the exported report numbers them."""
        numbers, _ = numbering(self.outline, self.registry)
        return tuple((key, self.registry.entries[key].source_id, n) for key, n in numbers.items())

    def _announce_references(self) -> ev.ReferencesChanged | None:
        references = self._numbering()
        if references == self._references:
            return None
        self._references = references
        return ev.ReferencesChanged(self.session_id, self.run_state.step, references)

    def _step(self) -> None:
        with self._cond:
            if self._paused or self._cancel.is_set():
                return  # asked for between the loop's check and now: the loop top handles it
            stop = self._stop_step = threading.Event()
        try:
            outcome = self._run_step(stop)
        finally:
            with self._cond:
                self._stop_step = None
        self._commit(outcome)

    def _run_step(self, stop: threading.Event) -> StepOutcome:
        run = self.run_state
        step = run.step + 1
        loc = find(self.outline, run.target) if run.target is not None else None
        self._emit(
            ev.StepStarted(self.session_id, step, run.phase, run.target, loc.position if loc else None, run.attempt)
        )
        ctx = StepContext(
            session_id=self.session_id,
            question=self.question,
            step=step,
            run=run,
            outline=self.outline.copy(),
            registry=self.registry.without_sources(self.excluded),
            limits=self.limits,
            budget=self.budget,
            settings=self.settings,
            generator=self.generator,
            retriever=ExcludingRetriever(self.retriever, self.excluded),
            source_pool=None if self.options.get("source_ids") is None else set(self.options["source_ids"]),
            context_tokens=self.settings.context_tokens or self.generator.context_tokens(),
            cancel=stop,
            on_delta=lambda text: self._emit(ev.TokenDelta(self.session_id, step, text)),
            on_restart=lambda: self._emit(ev.TokenDelta(self.session_id, step, "", restart=True)),
            on_retrieval_event=self._emit,
            evidence=evidence_steps,
            brief=self.brief,
        )
        return STEPS[run.phase](ctx)

    def _commit(self, outcome: StepOutcome) -> None:
        if self.brief.review_plan and not self.outline.sections and outcome.outline.sections:
            outcome.run.review = True  # the first outline: stop for the person's review (checked at the loop top)
        checkpoint = ev.Checkpointed(self.session_id, outcome.run.step, outcome.run.phase)
        events = [*self._numbered(outcome), checkpoint]
        self.wstore.commit(
            self.session_id,
            Commit(
                run=outcome.run,
                outline=outcome.outline,
                step=outcome.record,
                new_entries=outcome.new_entries,
                drafts=outcome.drafts,
                citations=outcome.citations,
                events=[ev.to_record(e) for e in events],
                removed_citations=outcome.removed_citations,
                status=outcome.status,
                error=outcome.error,
            ),
        )
        self.run_state, self.outline = outcome.run, outcome.outline
        for entry in outcome.new_entries:
            self.registry.insert(entry)
        if outcome.status is not None:
            self._final_status = outcome.status
        self._abandoned = None
        references = self._announce_references()
        for event in ([references] if references else []) + events:
            self._emit(event)

    def _numbered(self, outcome: StepOutcome) -> list[ev.Event]:
        """The step's events with each written section cited as the exported report shows it after this step (its
        numbers, weak citations marked): one numbering on every screen. The text with its keys goes along, so
        a front end can renumber it when later steps or edits do."""
        registry = type(self.registry)([*self.registry.entries.values(), *outcome.new_entries])
        numbers, _ = numbering(outcome.outline, registry)
        weak = weak_pairs((node_id, check) for node_id, checks in outcome.citations.items() for check in checks)
        drafts = {node_id: mark_weak(text, weak.get(node_id, frozenset())) for node_id, text in outcome.drafts}
        return [
            dataclasses.replace(e, markdown=render_cites(drafts[e.node_id], numbers), content=drafts[e.node_id])
            if isinstance(e, ev.SectionWritten) and e.node_id in drafts
            else e
            for e in outcome.events
        ]

    def _apply_edits(self) -> None:
        with self._cond:
            pending, self._edits = self._edits, []
        for seq, edit in pending:
            step = self.run_state.step
            try:
                outline = apply_edit(self.outline, edit, max_depth=self.budget.max_depth, registry=self.registry)
            except EditError as e:
                event = ev.EditRejected(self.session_id, step, edit, str(e))
                self.wstore.journal(self.session_id, step, [ev.to_record(event)], done_edit=seq)
                self._emit(event)
                continue
            run = after_exclusion(reconcile(self.run_state, outline, self.budget), edit, self.registry)
            names = {loc.node.id: f"{loc.number} {loc.node.title}" for loc in walk(self.outline)}
            events = [
                ev.EditApplied(self.session_id, step, edit, describe(edit, names)),
                ev.OutlineChanged(self.session_id, step, "edit", ev.outline_view(outline)),
            ]
            self.wstore.commit(
                self.session_id,
                Commit(run=run, outline=outline, events=[ev.to_record(e) for e in events], done_edit=seq),
            )
            self.run_state, self.outline = run, outline
            note(self.excluded, edit)
            references = self._announce_references()
            for event in events + ([references] if references else []):
                self._emit(event)

    def _wait_while_paused(self) -> bool:
        """True when the loop should look again (it paused, or edits arrived while paused)."""
        with self._cond:
            if not self._paused:
                return False
        if not self._announced_pause:
            self._announced_pause = True
            self._emit(ev.Paused(self.session_id, self.run_state.step, redo_step=self._abandoned))
        with self._cond:
            while self._paused and not self._edits and not self._cancel.is_set():
                self._cond.wait()
            still_paused = self._paused
        if not still_paused:
            self._announced_pause = False
            self._emit(ev.Unpaused(self.session_id, self.run_state.step))
        return True

    def _finish(self, started: float, reason: str, *, status: str | None = None) -> RunResult:
        if status is None:
            status = self._final_status or ("done" if is_complete(self.outline) else "partial")
        event = ev.Finished(self.session_id, status, self.run_state.step, reason)
        self.wstore.commit(
            self.session_id,
            Commit(
                run=self.run_state,
                outline=self.outline,
                status=status,
                seconds=time.perf_counter() - started,
                events=[ev.to_record(event)],
            ),
        )
        self._emit(event)
        return self._result(status, reason)

    def _fail(self, started: float, error: Exception) -> RunResult:
        hint = getattr(error, "hint", None)
        event = ev.Failed(self.session_id, self.run_state.step, str(error), hint)
        try:
            self.wstore.set_status(
                self.session_id,
                "failed",
                error=str(error),
                seconds=time.perf_counter() - started,
                event=ev.to_record(event),
            )
        except (OSError, sqlite3.DatabaseError) as e:  # e.g. the disk is full: the session then reads as interrupted
            log.warning("session %s: could not record the failure: %s", self.session_id, e)
        self._emit(event)
        if isinstance(error, SalaError):
            raise error
        return self._result("failed", str(error), error=str(error))

    def _result(self, status: str, reason: str, *, error: str | None = None) -> RunResult:
        record = self.wstore.session(self.session_id)
        return RunResult(
            self.session_id,
            status,
            record.steps,
            reason,
            record.prompt_tokens,
            record.completion_tokens,
            record.seconds,
            error or record.error,
        )

    def _emit(self, event: Delivered) -> None:
        with self._cond:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken front end must not stop the research
                log.exception("event subscriber failed on %s", type(event).__name__)
