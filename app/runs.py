"""Research runs built from the settings: the store, the model behind the Generator protocol, the
retriever (the web, the person's documents, or both) and the engine, from the parts app/wiring.py builds.
The terminal app uses it through its `Services` protocol (app/tui/services.py), the CLI and the demo
directly; nothing here imports Textual."""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sala_report.app.export import Exported, export_report
from sala_report.app.settings import Settings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunRequest:
    """A new run as the start screen asks for it: web, a folder of documents, or both."""

    question: str
    web: bool = True
    docs: Path | None = None
    model: str = ""
    brief: Any = None  # warp.brief.Brief: length, language, instructions, plan review
    outline: Any = None  # warp.state.Outline: the person's own, written instead of a planned one
    # this run's domain lists (domain_list), added to search.include_domains / exclude_domains as the flags are
    include_domains: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()


def domain_list(text: str) -> tuple[str, ...]:
    """The domains in `text`, separated by commas or spaces, each normalised as the settings' lists and the
    --include-domain / --exclude-domain flags are (`https://www.nature.com/x` is `www.nature.com`, `*.` dropped).
    Raises ValueError naming the first entry that is no domain."""
    from sala_report.retrieval.domains import normalise_domain

    return tuple(dict.fromkeys(normalise_domain(entry) for entry in re.split(r"[,\s]+", text) if entry))


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    question: str
    status: str
    updated: str
    steps: int


@dataclass(frozen=True)
class RunFacts:
    """Shown in the status line."""

    model: str
    device: str
    search: str
    max_steps: int


def device_label(setting: str) -> str:
    """The device for the status line, without importing torch for it (about a second of start-up): torch is
    asked once something else has loaded it; before, a machine with no NVIDIA driver is 'cpu', else 'auto'."""
    if setting != "auto":
        return setting
    torch = sys.modules.get("torch")
    if torch is not None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "auto" if Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") else "cpu"


def session_domains(settings: Settings, options: dict[str, Any]) -> Settings:
    """The settings with the domain lists a session was started with; a session stored before they were kept
    has none, and gets today's."""
    if "include_domains" not in options:
        return settings
    search = replace(
        settings.search,
        include_domains=list(options["include_domains"] or []),
        exclude_domains=list(options.get("exclude_domains") or []),
    )
    return replace(settings, search=search)


class LocalServices:
    """One process's store, models (loaded once per source) and engines."""

    def __init__(
        self,
        settings: Settings,
        *,
        generator: Any = None,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.reports_dir = settings.paths.reports_dir
        self._fixed_generator = generator
        self._generators: dict[str, Any] = {}
        self._store = None
        self._lock = threading.Lock()
        self.progress: Progress = progress or (lambda message: None)
        self.clock = clock
        model = settings.model.source if settings.model.backend == "local" else settings.model.served_model or "server"
        search = ", ".join(settings.search.engines) if settings.search.web else "your documents only"
        device = "server" if settings.model.backend == "openai" else device_label(settings.model.device)
        self.facts = RunFacts(
            model=getattr(generator, "name", model), device=device, search=search, max_steps=settings.warp.max_steps
        )

    @property
    def store(self):
        with self._lock:
            if self._store is None:
                from sala_report.retrieval import Store

                self._store = Store.open(self.settings.paths.store_path)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def generator(self, source: str = "") -> Any:
        if self._fixed_generator is not None:
            return self._fixed_generator
        from sala_report.app.wiring import make_generator

        cfg = self.settings.model
        source = source or (cfg.served_model if cfg.backend == "openai" else cfg.source)
        with self._lock:
            if source not in self._generators:
                if cfg.backend == "local":
                    self.progress(f"loading the model {source} …")
                self._generators[source] = make_generator(
                    cfg,
                    source=source,
                    constrained=self.settings.warp.constrained,
                    progress=lambda done, total, what: self.progress(
                        f"{what}: {done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else "")
                    ),
                )
            return self._generators[source]

    def retriever(self, web: bool, options: dict[str, Any] | None = None):
        """`options`: a stored session's, whose domain lists replace the settings' (a resumed run keeps them)."""
        from sala_report.app.wiring import domain_filter, fetch_config, web_search_config
        from sala_report.retrieval import Fetcher, Retriever, WebSearch

        if not web:
            return Retriever(self.store)
        return Retriever(
            self.store,
            search=WebSearch(web_search_config(self.settings), store=self.store),
            fetcher=Fetcher(fetch_config(self.settings)),
            domains=domain_filter(session_domains(self.settings, options or {})),
        )

    def ingest(self, folder: Path) -> set[int]:
        """Read a folder of documents into the store (unchanged files cost nothing); their source ids."""
        from sala_report.app.errors import UsageError
        from sala_report.app.wiring import document_config
        from sala_report.retrieval import ingest_folder
        from sala_report.retrieval.extract import SUFFIX_KINDS

        self.progress(f"reading the documents in {folder} …")
        report = ingest_folder(self.store, folder, config=document_config(self.settings))
        self.progress(
            f"{len(report.source_ids)} documents ready ({report.added} new, {report.updated} changed, "
            f"{report.failed} unreadable, {len(report.skipped)} skipped)"
        )
        for path, error in report.errors[:5]:
            self.progress(f"could not read {path}: {error}")
        for path, why in report.skipped[:5]:
            self.progress(f"skipped {path}: {why}")
        if len(report.errors) + len(report.skipped) > 10:
            self.progress("`sala-report sources add FOLDER --json` lists every file not read")
        if not report.source_ids:
            kinds = " ".join(sorted(SUFFIX_KINDS))
            raise UsageError(f"no readable documents in {folder}", hint=f"It should hold files of these types: {kinds}")
        return set(report.source_ids)

    def start(self, request: RunRequest) -> Any:
        from sala_report.app.errors import UsageError
        from sala_report.app.warp import Engine

        docs_ids = self.ingest(request.docs) if request.docs is not None else None
        if docs_ids is None and not request.web and not self.store.sources(with_text=False):
            raise UsageError(
                "with the web off there is nothing to read", hint="Add a folder of documents (--docs DIR)."
            )
        # Web only: passages come from the pages this run finds, not from every document ever stored;
        # no web and no folder: everything stored so far.
        source_ids = docs_ids if docs_ids is not None else (set() if request.web else None)
        generator = self.generator(request.model)
        cfg = self.settings.model
        options = {
            "web": request.web,
            "docs": str(request.docs.resolve()) if request.docs else None,
            "model_source": request.model or (cfg.served_model if cfg.backend == "openai" else cfg.source),
            "backend": cfg.backend,
            # the settings' lists with this run's (--include-domain, the start screen's): kept for resume
            "include_domains": list(dict.fromkeys([*self.settings.search.include_domains, *request.include_domains])),
            "exclude_domains": list(dict.fromkeys([*self.settings.search.exclude_domains, *request.exclude_domains])),
        }
        return Engine.start(
            self.store,
            generator,
            self.retriever(request.web, options),
            self.fitted(generator),
            request.question,
            docs_source_ids=source_ids,
            options=options,
            brief=request.brief,
            outline=request.outline,
        )

    def resume(self, session_id: str, *, model: str = "", answers: tuple[str, ...] | None = None) -> Any:
        """Continue a session with the sources it was started with, and its model unless `model` names another;
        `answers` answer its waiting clarifying questions first (as `resume --answers FILE`)."""
        from sala_report.app.errors import UsageError
        from sala_report.app.warp import Engine, WarpStore

        warp = WarpStore(self.store)
        found = warp.find_session(session_id)
        if found is None:
            raise UsageError(
                f"no session '{session_id}' (or the prefix matches several)", hint="`sala-report sessions` lists them."
            )
        record = warp.session(found)
        web = bool(record.options.get("web", self.settings.search.web))
        same_backend = record.options.get("backend") == self.settings.model.backend
        model = model or (record.options.get("model_source", "") if same_backend else "")
        generator = self.generator(model)
        engine = Engine.resume(
            self.store, found, generator, self.retriever(web, record.options), self.fitted(generator)
        )
        if answers is not None:
            engine.answer(answers)
        return engine

    def waiting_questions(self, session_id: str) -> tuple[str, ...]:
        """The clarifying questions the session waits to have answered; () when none wait (or no such session)."""
        from sala_report.app.warp import WarpStore
        from sala_report.app.warp.brief import Brief

        warp = WarpStore(self.store)
        found = warp.find_session(session_id)
        record = warp.session(found) if found is not None else None
        brief = Brief.from_options(record.options) if record is not None else Brief()
        return tuple(brief.questions or ()) if brief.waiting_for_answers else ()

    def fitted(self, generator: Any):
        """The WARP settings with the budgets they leave at their defaults fitted to this machine, for a
        small in-process model (app/warp/budget.py); as they are for any other."""
        from sala_report.app.warp.budget import derive, describe

        warp = self.settings.warp
        speed = getattr(generator, "speed", None)
        if speed is None or not getattr(generator, "small_model", False):
            return warp
        fitted = derive(warp, speed)
        changed = describe(warp, fitted)
        if changed:
            self.progress(f"budgets for this machine ({speed.decode_tps:.0f} tokens/s): {changed}")
        return fitted

    def sessions(self) -> list[SessionInfo]:
        from sala_report.app.warp import list_sessions

        return [
            SessionInfo(s.id, s.question, s.status, s.updated_at[:16].replace("T", " "), s.steps)
            for s in list_sessions(self.store)
        ]

    def report_markdown(self, session_id: str) -> str:
        from sala_report.app.warp import render_markdown

        return render_markdown(self.store, session_id)

    def cited_by(self, session_id: str) -> dict[int, list[str]]:
        from sala_report.app.warp import WarpStore
        from sala_report.app.warp.state import walk

        warp = WarpStore(self.store)
        registry = warp.registry(session_id)
        numbers = {loc.node.id: loc.number for loc in walk(warp.outline(session_id))}
        out: dict[int, list[str]] = {}
        for node_id, check in warp.citations(session_id):
            entry = registry.get(check.key)
            if entry is not None and node_id in numbers and numbers[node_id] not in out.get(entry.source_id, []):
                out.setdefault(entry.source_id, []).append(numbers[node_id])
        return out

    def export(self, session_id: str, fmt: str, path: Path, *, questions: bool = False) -> Exported:
        from sala_report.app.export.bibliography import references_in
        from sala_report.app.warp import WarpStore, render_markdown, session_summary

        summary = session_summary(self.store, session_id) if fmt == "json" else None
        markdown = render_markdown(self.store, session_id)
        if questions:  # as `export --with-questions` adds them
            from sala_report.app.export.questions import with_appendix
            from sala_report.app.warp.ask import appendix

            markdown = with_appendix(markdown, appendix(WarpStore(self.store), session_id))
        references = references_in(markdown, self.store.source_by_location) if fmt in ("bib", "ris") else None
        return export_report(markdown, fmt, path, summary=summary, references=references)
