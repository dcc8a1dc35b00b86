"""The source store: one SQLite file (WAL) holding sources, their chunks with FTS5 indexes, and cached searches.

Every write of a source and its chunks is one transaction, so a crash leaves either the old version
or the new one, never a source without its chunks. Readable sources ("ok") always have their chunks;
other statuses have none, which keeps them out of passages without a filter.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from sala_report.retrieval import rank
from sala_report.retrieval.chunk import Chunk, chunk_id
from sala_report.retrieval.migrations import RETRIEVAL_MIGRATIONS, Migration, apply_migrations, pending_migrations
from sala_report.retrieval.types import Passage, SearchResult, Source

# Most rows one query's BM25 ranking may score: about 20 ms on one laptop core (see bench.py).
SCAN_BUDGET = 20_000

_SOURCE_COLUMNS = "id, location, kind, title, status, error, failure, fetched_at, content_hash, chunk_count, metadata"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SourceRecord:
    """A readable source ready to store: its text already split into `chunks` (chunk.split_text's Chunks
    keep their heading paths; plain strings are stored with none)."""

    location: str
    kind: str
    title: str
    text: str
    content_hash: str
    chunks: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class FileState:
    """What the store knows of a file, enough to tell whether it changed without reading it."""

    source_id: int
    status: str
    content_hash: str | None
    size: int | None
    mtime_ns: int | None


class StoreReadOnly(PermissionError):
    """The store could be opened only for reading, and what was asked needs writing."""


class Store:
    """Open with `Store.open(path)` (or `open_for_reading`); `db` is the sqlite_utils.Database other parts may add tables to."""

    def __init__(self, db: sqlite_utils.Database, path: str, *, read_only: bool = False):
        self.db = db
        self.path = path
        self.read_only = read_only
        # One connection shared by the engine's worker thread and front ends: every use holds this lock
        # (other parts that run their own transactions on `db` take it too).
        self.lock = threading.RLock()
        self._frequency_cache: dict[tuple[str, str], int] = {}
        self._frequency_version: int | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open the store for reading and writing, creating it (and its folder) readable by this user only.

        Raises OSError (or sqlite3.Error) when the file cannot be written: a read-only file or folder
        fails here, before any work is done, rather than at the first write.
        """
        path = str(path)
        if path != ":memory:":
            _create_private(Path(path))
        conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        try:
            db = sqlite_utils.Database(conn)
            if path != ":memory:":
                db.enable_wal()
                # WAL + NORMAL: a crash of the process loses nothing committed; a power cut may lose the
                # last transactions but never corrupts the file.
                db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA foreign_keys = ON")
            store = cls(db, path)
            store.apply_migrations("retrieval", RETRIEVAL_MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, path: str | Path) -> Store:
        """Open an existing store to read it: for writing when that is possible (so pending migrations
        apply), else read-only, as on a read-only file, folder or disk. `read_only` says which."""
        if not Path(path).is_file():
            raise FileNotFoundError(errno.ENOENT, "no store here", str(path))
        try:
            return cls.open(path)
        except (sqlite3.OperationalError, PermissionError) as e:
            if not _is_read_only(e):
                raise
        # In a read-only folder SQLite cannot make the WAL index (-shm) it reads through; `immutable` reads the
        # file alone. It would miss a live writer's WAL, but no run of this user can write in that folder.
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            conn = sqlite3.connect(
                f"{Path(path).resolve().as_uri()}?{flags}", uri=True, check_same_thread=False, timeout=30.0
            )
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.OperationalError as e:
                conn.close()
                if "immutable" in flags or not _is_read_only(e):
                    raise
        store = cls(sqlite_utils.Database(conn), str(path), read_only=True)
        try:
            store.apply_migrations("retrieval", RETRIEVAL_MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def apply_migrations(self, prefix: str, migrations: Sequence[Migration]) -> list[str]:
        """Bring `prefix`'s tables up to date; a read-only store can only check that they are."""
        with self.lock:
            if self.read_only:
                missing = pending_migrations(self.db, prefix, migrations)
                if missing:
                    raise StoreReadOnly(
                        errno.EACCES, f"needs upgrading ({', '.join(missing)}) but cannot be written", self.path
                    )
                return []
            return apply_migrations(self.db, prefix, migrations)

    # reading

    def source(self, source_id: int) -> Source | None:
        with self.lock:
            row = self.db.execute(f"SELECT {_SOURCE_COLUMNS}, text FROM sources WHERE id = ?", [source_id]).fetchone()
        return _source(row) if row else None

    def source_by_location(self, location: str) -> Source | None:
        with self.lock:
            row = self.db.execute(
                f"SELECT {_SOURCE_COLUMNS}, text FROM sources WHERE location = ?", [location]
            ).fetchone()
        return _source(row) if row else None

    def sources(self, source_ids: Iterable[int] | None = None, *, with_text: bool = True) -> list[Source]:
        """Sources by id (all when None), in id order. `with_text=False` leaves `text` empty, for listings."""
        text = "text" if with_text else "''"
        sql = f"SELECT {_SOURCE_COLUMNS}, {text} FROM sources"
        params: list[Any] = []
        if source_ids is not None:
            sql += " WHERE id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(sorted(set(source_ids))))
        with self.lock:
            rows = self.db.execute(sql + " ORDER BY id", params).fetchall()
        return [_source(row) for row in rows]

    def chunk_texts(self, source_id: int) -> list[tuple[str, str]]:
        """(chunk_id, text) of a source, in order."""
        with self.lock:
            return self.db.execute(
                "SELECT id, text FROM chunks WHERE source_id = ? ORDER BY position", [source_id]
            ).fetchall()

    def file_states(self, folder: str) -> dict[str, FileState]:
        """Known files whose path lies under `folder` (an absolute path ending in the separator)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT location, id, status, content_hash, size, mtime_ns FROM sources "
                "WHERE kind = 'file' AND substr(location, 1, ?) = ?",
                [len(folder), folder],
            ).fetchall()
        return {row[0]: FileState(*row[1:]) for row in rows}

    def passages(self, query: str, k: int = 10, *, source_ids: Iterable[int] | None = None) -> list[Passage]:
        """The `k` chunks that best match `query` (FTS5 BM25), at most about a third from one source.

        `query` is free text; nothing in it is read as FTS syntax. `source_ids` restricts the search.
        """
        if k <= 0:
            return []
        ids = None if source_ids is None else json.dumps(sorted(set(source_ids)))
        if ids == "[]":
            return []
        terms = rank.query_terms(query)
        want = max(4 * k, 20)
        with self.lock:
            found = self._ranked("chunks_cjk", terms, ids, want) if rank.has_cjk(query) else []
            if len(found) < want:
                seen = {p.chunk_id for p in found}
                latin = [t for t in terms if not rank.has_cjk(t)]
                found += [p for p in self._ranked("chunks_fts", latin, ids, want) if p.chunk_id not in seen]
        return rank.spread(found, k, lambda p: p.source_id)

    def _ranked(self, index: str, terms: list[str], ids: str | None, limit: int) -> list[Passage]:
        match = rank.fts_match(rank.affordable_terms(self._frequencies(index, terms), SCAN_BUDGET))
        if match is None:
            return []
        # Rank inside the FTS table and join only the winners: joining every match to its chunk text
        # before sorting made common-word queries several times slower. The unary + keeps the source
        # filter away from FTS5, which would otherwise re-run the whole MATCH once per rowid. When even
        # the rarest term matches more than SCAN_BUDGET rows, the newest SCAN_BUDGET of them are ranked.
        where = (
            " AND +rowid IN (SELECT n FROM chunks WHERE source_id IN (SELECT value FROM json_each(:ids)))"
            if ids is not None
            else ""
        )
        rows = self.db.execute(
            f"""WITH matched AS (
                    SELECT rowid AS n, bm25({index}) AS score FROM {index}
                    WHERE {index} MATCH :match{where} ORDER BY rowid DESC LIMIT :scan),
                top AS (SELECT n, score FROM matched ORDER BY score LIMIT :limit)
                SELECT c.id, c.source_id, c.text, s.title, s.location, s.kind, top.score, c.heading_path
                FROM top JOIN chunks c ON c.n = top.n JOIN sources s ON s.id = c.source_id
                ORDER BY top.score""",
            {"match": match, "ids": ids, "limit": limit, "scan": SCAN_BUDGET},
        ).fetchall()
        return [Passage(*r[:6], -r[6], tuple(json.loads(r[7]))) for r in rows]

    def _frequencies(self, index: str, terms: list[str]) -> dict[str, int]:
        """Rows each term matches, counted up to SCAN_BUDGET + 1 (enough to choose terms), cached until
        the file changes: our own writes clear the cache, and `data_version` reveals other connections'."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._frequency_version or len(self._frequency_cache) > 50_000:
            self._frequency_cache.clear()
            self._frequency_version = version
        counts = {}
        for term in terms:
            key = (index, term)
            if key not in self._frequency_cache:
                self._frequency_cache[key] = self.db.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM {index} WHERE {index} MATCH ? LIMIT ?)",
                    [rank.fts_match([term]), SCAN_BUDGET + 1],
                ).fetchone()[0]
            counts[term] = self._frequency_cache[key]
        return counts

    # writing

    def put_source(self, record: SourceRecord) -> tuple[int, str]:
        """Store a readable source with its chunks; returns (source id, "added" | "updated" | "unchanged").

        Unchanged content (same hash, already readable) writes no chunk; it only refreshes the file
        stamp and fetch time.
        """
        with self.lock, self.db.atomic():
            row = self.db.execute(
                "SELECT id, status, content_hash FROM sources WHERE location = ?", [record.location]
            ).fetchone()
            now = utc_now()
            if row and row[1] == "ok" and row[2] == record.content_hash:
                self.db.execute(
                    "UPDATE sources SET fetched_at = ?, size = ?, mtime_ns = ? WHERE id = ?",
                    [now, record.size, record.mtime_ns, row[0]],
                )
                return row[0], "unchanged"
            values = {
                "location": record.location,
                "kind": record.kind,
                "title": record.title,
                "status": "ok",
                "error": None,
                "failure": None,
                "fetched_at": now,
                "content_hash": record.content_hash,
                "chunk_count": len(record.chunks),
                "size": record.size,
                "mtime_ns": record.mtime_ns,
                "metadata": json.dumps(record.metadata, ensure_ascii=False, default=str),
                "text": record.text,
            }
            source_id = self._upsert_source(row[0] if row else None, values)
            self._replace_chunks(source_id, record.location, record.content_hash, record.chunks)
            return source_id, "updated" if row else "added"

    def put_failure(
        self,
        location: str,
        kind: str,
        *,
        status: str,
        failure: str,
        error: str,
        title: str = "",
        content_hash: str | None = None,
        metadata: dict[str, Any] | None = None,
        size: int | None = None,
        mtime_ns: int | None = None,
    ) -> int:
        """Record that a source yielded no text (`status` "empty") or could not be read ("failed")."""
        if status not in ("empty", "failed"):
            raise ValueError(f"status must be 'empty' or 'failed', got {status!r}")
        with self.lock, self.db.atomic():
            row = self.db.execute("SELECT id FROM sources WHERE location = ?", [location]).fetchone()
            values = {
                "location": location,
                "kind": kind,
                "title": title,
                "status": status,
                "error": error,
                "failure": failure,
                "fetched_at": utc_now(),
                "content_hash": content_hash,
                "chunk_count": 0,
                "size": size,
                "mtime_ns": mtime_ns,
                "metadata": json.dumps(metadata or {}, default=str),
                "text": "",
            }
            source_id = self._upsert_source(row[0] if row else None, values)
            self._delete_chunks(source_id)
            return source_id

    def mark_deleted(self, source_ids: Iterable[int]) -> None:
        """Files that are gone: keep the row (old citations still name it), drop its chunks."""
        with self.lock, self.db.atomic():
            for source_id in source_ids:
                self._delete_chunks(source_id)
                self.db.execute(
                    "UPDATE sources SET status = 'deleted', chunk_count = 0, text = '', fetched_at = ? WHERE id = ?",
                    [utc_now(), source_id],
                )

    def touch_file(self, source_id: int, size: int, mtime_ns: int) -> None:
        """Remember a new stamp for a file whose bytes did not change, so the next scan skips hashing it."""
        with self.lock, self.db.atomic():
            self.db.execute("UPDATE sources SET size = ?, mtime_ns = ? WHERE id = ?", [size, mtime_ns, source_id])

    def _upsert_source(self, source_id: int | None, values: dict[str, Any]) -> int:
        if source_id is None:
            return self.db["sources"].insert(values).last_pk
        self.db["sources"].update(source_id, values)
        return source_id

    def _replace_chunks(self, source_id: int, location: str, content_hash: str, chunks: list[str]) -> None:
        self._delete_chunks(source_id)  # also forgets the cached term counts
        for position, text in enumerate(chunks):
            path = text.heading_path if isinstance(text, Chunk) else ()
            cursor = self.db.execute(
                "INSERT INTO chunks (id, source_id, position, text, heading_path) VALUES (?, ?, ?, ?, ?)",
                [
                    chunk_id(location, content_hash, position),
                    source_id,
                    position,
                    str(text),
                    json.dumps(path, ensure_ascii=False),
                ],
            )
            if rank.has_cjk(text):
                self.db.execute(
                    "INSERT INTO chunks_cjk (rowid, text) VALUES (?, ?)", [cursor.lastrowid, rank.cjk_bigrams(text)]
                )

    def _delete_chunks(self, source_id: int) -> None:
        self._frequency_cache.clear()
        self.db.execute("DELETE FROM chunks_cjk WHERE rowid IN (SELECT n FROM chunks WHERE source_id = ?)", [source_id])
        self.db.execute("DELETE FROM chunks WHERE source_id = ?", [source_id])

    # search cache

    def cached_search(
        self, query: str, engine: str, region: str, timelimit: str, *, max_age_s: float
    ) -> list[SearchResult] | None:
        with self.lock:
            row = self.db.execute(
                "SELECT results, created_at FROM searches "
                "WHERE query = ? AND engine = ? AND region = ? AND timelimit = ?",
                [query, engine, region, timelimit],
            ).fetchone()
        if row is None:
            return None
        age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(row[1])
        if age.total_seconds() > max_age_s:
            return None
        return [SearchResult(**item) for item in json.loads(row[0])]

    def save_search(self, query: str, engine: str, region: str, timelimit: str, results: list[SearchResult]) -> None:
        payload = json.dumps([r.__dict__ for r in results], ensure_ascii=False)
        with self.lock, self.db.atomic():
            self.db.execute(
                """INSERT INTO searches (query, engine, region, timelimit, results, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (query, engine, region, timelimit)
                   DO UPDATE SET results = excluded.results, created_at = excluded.created_at""",
                [query, engine, region, timelimit, payload, utc_now()],
            )

    def check_integrity(self) -> list[str]:
        """Problems found by SQLite's integrity check, the FTS indexes' own checks, and our invariant that
        readable sources have exactly their recorded chunks. Empty when all is well."""
        with self.lock:
            problems = [r[0] for r in self.db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
            for index in ("chunks_fts", "chunks_cjk"):
                try:
                    self.db.execute(f"INSERT INTO {index} ({index}) VALUES ('integrity-check')")
                except sqlite3.DatabaseError as e:
                    problems.append(f"{index}: {e}")
            for source_id, recorded, actual in self.db.execute(
                """SELECT s.id, s.chunk_count, (SELECT count(*) FROM chunks c WHERE c.source_id = s.id)
                   FROM sources s"""
            ).fetchall():
                if recorded != actual:
                    problems.append(f"source {source_id}: {actual} chunks stored, {recorded} recorded")
        return problems


# SQLite's primary result codes that mean "this file or folder may not be written" (READONLY, PERM, CANTOPEN)
_READ_ONLY_CODES = {8, 3, 14}


def _is_read_only(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    return (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF in _READ_ONLY_CODES


def _create_private(path: Path) -> None:
    """Make the folder and the file when new, readable by this user only (sources, questions and reports
    are the person's own; SQLite gives its -wal and -shm files the database file's mode), and check that
    the file may be written: SQLite opens a read-only file without a word and refuses only the first write."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        os.close(os.open(path, os.O_RDWR))


def _source(row: Sequence[Any]) -> Source:
    (
        source_id,
        location,
        kind,
        title,
        status,
        error,
        failure,
        fetched_at,
        content_hash,
        chunk_count,
        metadata,
        text,
    ) = row
    return Source(
        id=source_id,
        location=location,
        kind=kind,
        title=title,
        status=status,
        error=error,
        failure=failure,
        fetched_at=fetched_at,
        content_hash=content_hash,
        chunk_count=chunk_count,
        metadata=json.loads(metadata or "{}"),
        text=text,
    )
