"""Persistence of WARP sessions in the store's SQLite file: sessions, outline nodes, drafts, the passage
registry, citations, the step journal and the event journal.

Each step's results, its journal rows and the checkpoint (RunState + outline) are written in one
transaction, so a process killed at any moment resumes from the last whole step: nothing is lost and
nothing is written twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sala_report.app.errors import SessionBusy
from sala_report.app.warp.citations import CitationCheck, Entry, Registry
from sala_report.app.warp.json_types import JSONObject
from sala_report.app.warp.phases import RunState
from sala_report.app.warp.state import Node, Outline, walk

RESUMABLE = ("running", "interrupted", "cancelled", "failed", "partial")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _create_tables(db) -> None:
    db.execute("""CREATE TABLE warp_sessions (
        id TEXT PRIMARY KEY, question TEXT NOT NULL, status TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, model TEXT NOT NULL DEFAULT '',
        options TEXT NOT NULL DEFAULT '{}', checkpoint TEXT NOT NULL, next_node_id INTEGER NOT NULL DEFAULT 1,
        steps INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0,
        removed_citations INTEGER NOT NULL DEFAULT 0, error TEXT)""")
    db.execute("""CREATE TABLE warp_nodes (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, node_id INTEGER NOT NULL,
        parent_id INTEGER, ord INTEGER NOT NULL, title TEXT NOT NULL, plan TEXT NOT NULL, content TEXT,
        locked INTEGER NOT NULL DEFAULT 0, deepen INTEGER NOT NULL DEFAULT 0, skipped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, node_id))""")
    db.execute("""CREATE TABLE warp_drafts (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, step INTEGER NOT NULL,
        node_id INTEGER NOT NULL, content TEXT NOT NULL, created_at TEXT NOT NULL,
        PRIMARY KEY (session_id, step))""")
    db.execute("""CREATE TABLE warp_passages (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, key TEXT NOT NULL,
        chunk_id TEXT NOT NULL, source_id INTEGER NOT NULL, title TEXT NOT NULL, location TEXT NOT NULL,
        kind TEXT NOT NULL, text TEXT NOT NULL, step INTEGER NOT NULL, PRIMARY KEY (session_id, key),
        UNIQUE (session_id, chunk_id))""")
    db.execute("""CREATE TABLE warp_citations (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, node_id INTEGER NOT NULL,
        seq INTEGER NOT NULL, key TEXT NOT NULL, sentence TEXT NOT NULL, score REAL NOT NULL,
        weak INTEGER NOT NULL, step INTEGER NOT NULL, PRIMARY KEY (session_id, node_id, seq))""")
    db.execute("""CREATE TABLE warp_steps (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, step INTEGER NOT NULL,
        kind TEXT NOT NULL, node_id INTEGER, attempt INTEGER NOT NULL, ok INTEGER NOT NULL, error TEXT,
        output TEXT NOT NULL, action TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        seconds REAL NOT NULL, at TEXT NOT NULL, PRIMARY KEY (session_id, step))""")
    db.execute("""CREATE TABLE warp_events (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
        step INTEGER NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (session_id, seq))""")


def _add_owner(db) -> None:
    # host:pid of the process running the session, so a 'running' row whose process died reads as interrupted
    db.execute("ALTER TABLE warp_sessions ADD COLUMN owner TEXT NOT NULL DEFAULT ''")


def _add_pending_edits(db) -> None:
    # the person's edits, written when submitted and removed in the transaction that applies or rejects them,
    # so an edit made while a step runs survives a killed process and is applied on resume
    db.execute("""CREATE TABLE warp_pending_edits (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE,
        edit TEXT NOT NULL, at TEXT NOT NULL)""")


def _add_questions(db) -> None:
    # follow-up questions asked of a report (app/warp/ask.py) and their answers, kept with the session so
    # an export can append them; `answer` cites \\cite{sourceID} and `cited` lists those source ids, so an
    # export numbers them as the report is then (its numbering moves while a run goes on)
    db.execute("""CREATE TABLE warp_questions (
        session_id TEXT NOT NULL REFERENCES warp_sessions(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
        question TEXT NOT NULL, answer TEXT NOT NULL, cited TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (session_id, seq))""")


MIGRATIONS = [
    ("001_sessions", _create_tables),
    ("002_session_owner", _add_owner),
    ("003_pending_edits", _add_pending_edits),
    ("004_questions", _add_questions),
]


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the process named by `owner` (host:pid) still runs; on another host we cannot tell, so yes."""
    host, _, pid = owner.rpartition(":")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class SessionRecord:
    id: str
    question: str
    status: str  # running | interrupted (its process died) | done | partial | cancelled | failed
    title: str
    created_at: str
    updated_at: str
    model: str
    options: JSONObject
    steps: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    removed_citations: int
    error: str | None
    owner: str = ""

    @property
    def running_elsewhere(self) -> bool:
        return self.status == "running" and self.owner != this_owner()


@dataclass
class StepRecord:
    """One step's journal row."""

    step: int
    kind: str
    node_id: int | None
    attempt: int
    ok: bool
    error: str | None
    output: str
    action: JSONObject | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass
class Commit:
    """Everything one step (or one applied edit) changes, written in a single transaction."""

    run: RunState
    outline: Outline
    step: StepRecord | None = None
    new_entries: list[Entry] = field(default_factory=list)
    drafts: list[tuple[int, str]] = field(default_factory=list)  # (node_id, content)
    citations: dict[int, list[CitationCheck]] = field(default_factory=dict)  # node_id -> checks (replacing)
    events: list[tuple[str, JSONObject]] = field(default_factory=list)  # (type, payload)
    removed_citations: int = 0
    status: str | None = None
    error: str | None = None
    seconds: float = 0.0  # wall time to add to the session's total (given when a run ends)
    done_edit: int | None = None  # seq of the queued edit this commit applies or rejects (removed from the queue)


class WarpStore:
    """WARP's tables inside a retrieval Store (one SQLite file)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db
        store.apply_migrations("warp", MIGRATIONS)
        # The Store serialises use of its one connection with this lock; our transactions must hold it
        # too, or a front end's read on another thread could land inside them.
        self._lock = store.lock
        # session id -> the step count this object last read (with the checkpoint) or wrote: a claim to run
        # the session is refused when another process has moved it on since
        self._steps_seen: dict[str, int] = {}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:
                conn.commit()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def _query(self, sql: str, params=()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def create_session(self, question: str, *, model: str, options: JSONObject, run: RunState) -> str:
        with self.transaction():
            while True:
                session_id = secrets.token_hex(4)
                if not self.db.execute("SELECT 1 FROM warp_sessions WHERE id = ?", [session_id]).fetchone():
                    break
            now = utc_now()
            self.db.execute(
                "INSERT INTO warp_sessions (id, question, status, created_at, updated_at, model, options, checkpoint, "
                "owner) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                [session_id, question, now, now, model, json.dumps(options), json.dumps(run.to_dict()), this_owner()],
            )
        return session_id

    def find_session(self, prefix: str) -> str | None:
        """The session whose id is `prefix` or starts with it, if exactly one does. `_` and `%` in `prefix`
        are plain characters, and an empty prefix names no session."""
        if not prefix.strip():
            return None
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._query(
            "SELECT id FROM warp_sessions WHERE id = ? OR id LIKE ? ESCAPE '\\' ORDER BY id", [prefix, pattern]
        )
        exact = [r[0] for r in rows if r[0] == prefix]
        if exact:
            return exact[0]
        return rows[0][0] if len(rows) == 1 else None

    def session(self, session_id: str) -> SessionRecord | None:
        rows = self._query(
            "SELECT id, question, status, title, created_at, updated_at, model, options, steps, prompt_tokens, "
            "completion_tokens, seconds, removed_citations, error, owner FROM warp_sessions WHERE id = ?",
            [session_id],
        )
        if not rows:
            return None
        r = rows[0]
        status = r[2]
        if status == "running" and not owner_alive(r[14]):
            status = "interrupted"
        return SessionRecord(
            r[0], r[1], status, r[3], r[4], r[5], r[6], json.loads(r[7]), r[8], r[9], r[10], r[11], r[12], r[13], r[14]
        )

    def sessions(self) -> list[SessionRecord]:
        ids = [r[0] for r in self._query("SELECT id FROM warp_sessions ORDER BY created_at DESC, id")]
        return [s for s in (self.session(i) for i in ids) if s is not None]

    def checkpoint(self, session_id: str) -> RunState:
        rows = self._query("SELECT checkpoint, steps FROM warp_sessions WHERE id = ?", [session_id])
        if not rows:
            raise KeyError(session_id)
        self._steps_seen[session_id] = rows[0][1]
        return RunState.from_dict(json.loads(rows[0][0]))

    def set_status(
        self,
        session_id: str,
        status: str,
        *,
        error: str | None = None,
        seconds: float = 0.0,
        event: tuple[str, JSONObject] | None = None,
    ) -> None:
        with self.transaction():
            if status == "running":
                self._claim(session_id)
            self.db.execute(
                "UPDATE warp_sessions SET status = ?, error = ?, updated_at = ?, seconds = seconds + ?, "
                "owner = CASE WHEN ? = 'running' THEN ? ELSE owner END WHERE id = ?",
                [status, error, utc_now(), seconds, status, this_owner(), session_id],
            )
            if event is not None:
                self._insert_events(session_id, self._step_of(session_id), [event])

    def set_options(self, session_id: str, options: JSONObject, *, tokens: tuple[int, int] = (0, 0)) -> None:
        """Replace the session's options (the brief once clarifying questions are asked or answered), adding
        the `(prompt, completion)` tokens of the model call that changed them."""
        with self.transaction():
            self.db.execute(
                "UPDATE warp_sessions SET options = ?, updated_at = ?, prompt_tokens = prompt_tokens + ?, "
                "completion_tokens = completion_tokens + ? WHERE id = ?",
                [json.dumps(options), utc_now(), *tokens, session_id],
            )

    def _claim(self, session_id: str) -> None:
        """Inside the write transaction that marks the session running (BEGIN IMMEDIATE: one process at a
        time gets here), refuse when another live process runs it, or moved it on since this object read its
        checkpoint: two resumes started together then leave exactly one running, and the other changes nothing."""
        row = self.db.execute("SELECT status, owner, steps FROM warp_sessions WHERE id = ?", [session_id]).fetchone()
        if row is None:
            return
        status, owner, steps = row
        hint = "Wait for it to finish (`sala-report sessions` shows it), then resume it if there is work left."
        if status == "running" and owner != this_owner() and owner_alive(owner):
            raise SessionBusy(f"session {session_id} is already running in another process ({owner})", hint=hint)
        seen = self._steps_seen.get(session_id)
        if seen is not None and seen != steps:
            message = (
                f"session {session_id} is already running, or was just continued, in another process (it is "
                f"at step {steps}, not {seen} as read)"
            )
            raise SessionBusy(message, hint=hint)

    def _step_of(self, session_id: str) -> int:
        row = self.db.execute("SELECT steps FROM warp_sessions WHERE id = ?", [session_id]).fetchone()
        return row[0] if row else 0

    def journal(
        self, session_id: str, step: int, events: list[tuple[str, JSONObject]], *, done_edit: int | None = None
    ) -> None:
        with self.transaction():
            self._insert_events(session_id, step, events)
            self._drop_edit(done_edit)

    def queue_edit(self, session_id: str, edit: JSONObject) -> int:
        """Store an edit before the engine applies it; -> its sequence number."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO warp_pending_edits (session_id, edit, at) VALUES (?, ?, ?)",
                [session_id, json.dumps(edit), utc_now()],
            )
            return int(cur.lastrowid)

    def pending_edits(self, session_id: str) -> list[tuple[int, JSONObject]]:
        """Edits submitted but not yet applied or rejected, oldest first."""
        rows = self._query("SELECT seq, edit FROM warp_pending_edits WHERE session_id = ? ORDER BY seq", [session_id])
        return [(seq, json.loads(edit)) for seq, edit in rows]

    def _drop_edit(self, seq: int | None) -> None:
        if seq is not None:
            self.db.execute("DELETE FROM warp_pending_edits WHERE seq = ?", [seq])

    def add_question(self, session_id: str, question: str, answer: str, cited: list[int]) -> int:
        """Store a question asked of the session's report and its answer (citing `\\cite{sourceID}`, the
        source ids in `cited`); -> its sequence number."""
        with self.transaction():
            row = self.db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM warp_questions WHERE session_id = ?", [session_id]
            ).fetchone()
            self.db.execute(
                "INSERT INTO warp_questions (session_id, seq, question, answer, cited, at) VALUES (?, ?, ?, ?, ?, ?)",
                [session_id, row[0] + 1, question, answer, json.dumps(cited), utc_now()],
            )
            return row[0] + 1

    def questions(self, session_id: str) -> list[tuple[str, str, list[int]]]:
        """(question, answer, source ids cited) asked of the session, oldest first."""
        rows = self._query(
            "SELECT question, answer, cited FROM warp_questions WHERE session_id = ? ORDER BY seq", [session_id]
        )
        return [(q, a, json.loads(c)) for q, a, c in rows]

    def outline(self, session_id: str) -> Outline:
        rows = self._query(
            "SELECT node_id, parent_id, title, plan, content, locked, deepen, skipped FROM warp_nodes "
            "WHERE session_id = ? ORDER BY ord",
            [session_id],
        )
        meta = self._query("SELECT title, next_node_id FROM warp_sessions WHERE id = ?", [session_id])
        nodes = {r[0]: Node(r[0], r[2], r[3], r[4], [], bool(r[5]), bool(r[6]), bool(r[7])) for r in rows}
        outline = Outline(meta[0][0] if meta else "", [], meta[0][1] if meta else 1)
        for r in rows:
            parent = nodes.get(r[1]) if r[1] is not None else None
            (parent.children if parent is not None else outline.sections).append(nodes[r[0]])
        return outline

    def registry(self, session_id: str) -> Registry:
        rows = self._query(
            "SELECT key, chunk_id, source_id, title, location, kind, text FROM warp_passages WHERE session_id = ? "
            "ORDER BY CAST(substr(key, 7) AS INTEGER)",
            [session_id],
        )
        return Registry([Entry(*r) for r in rows])

    def citations(self, session_id: str) -> list[tuple[int, CitationCheck]]:
        rows = self._query(
            "SELECT node_id, key, sentence, score, weak FROM warp_citations WHERE session_id = ? ORDER BY node_id, seq",
            [session_id],
        )
        return [(r[0], CitationCheck(r[1], r[2], r[3], bool(r[4]))) for r in rows]

    def steps(self, session_id: str) -> list[StepRecord]:
        rows = self._query(
            "SELECT step, kind, node_id, attempt, ok, error, output, action, prompt_tokens, completion_tokens, seconds "
            "FROM warp_steps WHERE session_id = ? ORDER BY step",
            [session_id],
        )
        return [
            StepRecord(
                r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], json.loads(r[7]) if r[7] else None, r[8], r[9], r[10]
            )
            for r in rows
        ]

    def events(self, session_id: str, after_seq: int = 0) -> list[tuple[int, int, str, JSONObject]]:
        """(seq, step, type, payload) of journaled events after `after_seq`."""
        rows = self._query(
            "SELECT seq, step, type, payload FROM warp_events WHERE session_id = ? AND seq > ? ORDER BY seq",
            [session_id, after_seq],
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def search_problems(self, session_id: str) -> tuple[int, list[str | None]]:
        """(searches run, what each reported degraded: None where it went fine), from the journal."""
        rows = self._query(
            "SELECT json_extract(payload, '$.degraded') FROM warp_events WHERE session_id = ? AND "
            "type = 'SearchFinished' ORDER BY seq",
            [session_id],
        )
        return len(rows), [r[0] for r in rows]

    def commit(self, session_id: str, c: Commit) -> None:
        with self.transaction():
            db = self.db
            totals = (c.step.prompt_tokens, c.step.completion_tokens) if c.step else (0, 0)
            db.execute(
                "UPDATE warp_sessions SET checkpoint = ?, title = ?, next_node_id = ?, updated_at = ?, steps = ?, "
                "prompt_tokens = prompt_tokens + ?, completion_tokens = completion_tokens + ?, seconds = seconds + ?, "
                "removed_citations = removed_citations + ?, status = COALESCE(?, status), error = COALESCE(?, error) "
                "WHERE id = ?",
                [
                    json.dumps(c.run.to_dict()),
                    c.outline.title,
                    c.outline.next_id,
                    utc_now(),
                    c.run.step,
                    *totals,
                    c.seconds,
                    c.removed_citations,
                    c.status,
                    c.error,
                    session_id,
                ],
            )
            self._write_nodes(session_id, c.outline)
            if c.step is not None:
                s = c.step
                db.execute(
                    "INSERT INTO warp_steps (session_id, step, kind, node_id, attempt, ok, error, output, action, "
                    "prompt_tokens, completion_tokens, seconds, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        session_id,
                        s.step,
                        s.kind,
                        s.node_id,
                        s.attempt,
                        int(s.ok),
                        s.error,
                        s.output,
                        json.dumps(s.action) if s.action is not None else None,
                        s.prompt_tokens,
                        s.completion_tokens,
                        s.seconds,
                        utc_now(),
                    ],
                )
            step = c.run.step
            for e in c.new_entries:
                db.execute(
                    "INSERT INTO warp_passages (session_id, key, chunk_id, source_id, title, location, kind, text, step) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [session_id, e.key, e.chunk_id, e.source_id, e.title, e.location, e.kind, e.text, step],
                )
            for node_id, content in c.drafts:
                db.execute(
                    "INSERT INTO warp_drafts (session_id, step, node_id, content, created_at) VALUES (?, ?, ?, ?, ?)",
                    [session_id, step, node_id, content, utc_now()],
                )
            for node_id, checks in c.citations.items():
                db.execute("DELETE FROM warp_citations WHERE session_id = ? AND node_id = ?", [session_id, node_id])
                for seq, check in enumerate(checks):
                    db.execute(
                        "INSERT INTO warp_citations (session_id, node_id, seq, key, sentence, score, weak, step) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [session_id, node_id, seq, check.key, check.sentence, check.score, int(check.weak), step],
                    )
            written = [loc.node.id for loc in walk(c.outline) if loc.node.content is not None]
            db.execute(
                "DELETE FROM warp_citations WHERE session_id = ? AND node_id NOT IN (SELECT value FROM json_each(?))",
                [session_id, json.dumps(written)],
            )
            self._insert_events(session_id, step, c.events)
            self._drop_edit(c.done_edit)
        self._steps_seen[session_id] = c.run.step

    def _write_nodes(self, session_id: str, outline: Outline) -> None:
        self.db.execute("DELETE FROM warp_nodes WHERE session_id = ?", [session_id])
        for ord_, loc in enumerate(walk(outline)):
            n = loc.node
            self.db.execute(
                "INSERT INTO warp_nodes (session_id, node_id, parent_id, ord, title, plan, content, locked, deepen, "
                "skipped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    session_id,
                    n.id,
                    loc.parent.id if loc.parent else None,
                    ord_,
                    n.title,
                    n.plan,
                    n.content,
                    int(n.locked),
                    int(n.deepen),
                    int(n.skipped),
                ],
            )

    def _insert_events(self, session_id: str, step: int, events: list[tuple[str, JSONObject]]) -> None:
        row = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM warp_events WHERE session_id = ?", [session_id]
        ).fetchone()
        seq = row[0]
        for kind, payload in events:
            seq += 1
            self.db.execute(
                "INSERT INTO warp_events (session_id, seq, step, type, payload, at) VALUES (?, ?, ?, ?, ?, ?)",
                [session_id, seq, step, kind, json.dumps(payload, ensure_ascii=False, default=str), utc_now()],
            )
