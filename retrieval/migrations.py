"""Schema migrations, recorded by name in one shared table so every part can keep tables in the same file.

A migration is `(name, fn(db))`; it runs once, inside a transaction together with the row that
records it, so a crash mid-migration leaves it not applied rather than half applied.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import sqlite_utils

Migration = tuple[str, Callable[[sqlite_utils.Database], None]]

MIGRATIONS_TABLE = "migrations"


def apply_migrations(db: sqlite_utils.Database, prefix: str, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not yet recorded under `prefix`, in order; return the names applied.

    Names are stored as `prefix:name`. Each migration runs under BEGIN IMMEDIATE, and the record is
    re-checked inside it, so two processes opening the same file at once apply each migration once.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"prefix must be a non-empty name without ':', got {prefix!r}")
    names = [name for name, _ in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names must be unique, got {names}")
    db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.commit()
    applied = []
    for name, migrate in migrations:
        key = f"{prefix}:{name}"
        if _is_applied(db, key):
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            if not _is_applied(db, key):
                migrate(db)
                db.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                    [key, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")],
                )
                applied.append(name)
            db.execute("COMMIT")
        except BaseException:
            db.rollback()
            raise
    return applied


def pending_migrations(db: sqlite_utils.Database, prefix: str, migrations: Sequence[Migration]) -> list[str]:
    """Names of the migrations not yet recorded under `prefix`, without writing anything."""
    if not db.execute(f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{MIGRATIONS_TABLE}'").fetchone():
        return [name for name, _ in migrations]
    return [name for name, _ in migrations if not _is_applied(db, f"{prefix}:{name}")]


def _is_applied(db: sqlite_utils.Database, key: str) -> bool:
    return db.execute(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", [key]).fetchone() is not None


def _create_sources_and_chunks(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            location TEXT NOT NULL UNIQUE,       -- URL as requested, or absolute file path
            kind TEXT NOT NULL CHECK (kind IN ('web', 'file')),
            title TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN ('ok', 'empty', 'failed', 'deleted')),
            error TEXT,
            failure TEXT,
            fetched_at TEXT NOT NULL,
            content_hash TEXT,                   -- sha256 of the raw bytes
            chunk_count INTEGER NOT NULL DEFAULT 0,
            size INTEGER,                        -- files: size and mtime let re-ingest skip unchanged files unread
            mtime_ns INTEGER,
            metadata TEXT NOT NULL DEFAULT '{}',
            text TEXT NOT NULL DEFAULT ''
        )"""
    )
    db.execute(
        """CREATE TABLE chunks (
            n INTEGER PRIMARY KEY,               -- rowid alias: the FTS indexes point here, and VACUUM keeps it
            id TEXT NOT NULL UNIQUE,
            source_id INTEGER NOT NULL REFERENCES sources(id),
            position INTEGER NOT NULL,
            text TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX chunks_by_source ON chunks (source_id, position)")
    # External-content FTS5 over chunks.text, kept in step by triggers. Written out rather than through
    # sqlite-utils' enable_fts, whose executescript would commit the migration's open transaction.
    db.execute(
        """CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, content='chunks', content_rowid='n', tokenize='porter unicode61 remove_diacritics 2')"""
    )
    db.execute(
        """CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts (rowid, text) VALUES (new.n, new.text);
        END"""
    )
    db.execute(
        """CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.n, old.text);
        END"""
    )
    db.execute(
        """CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
            INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.n, old.text);
            INSERT INTO chunks_fts (rowid, text) VALUES (new.n, new.text);
        END"""
    )
    # CJK chunks only, as bigram text (rank.cjk_bigrams); rowid = chunks.n. Written by the store.
    db.execute("CREATE VIRTUAL TABLE chunks_cjk USING fts5(text, tokenize='unicode61 remove_diacritics 2')")


def _create_searches(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE searches (
            id INTEGER PRIMARY KEY,
            query TEXT NOT NULL,
            engine TEXT NOT NULL,
            region TEXT NOT NULL,
            timelimit TEXT NOT NULL,
            results TEXT NOT NULL,               -- JSON list of {title, url, snippet}
            created_at TEXT NOT NULL,
            UNIQUE (query, engine, region, timelimit)
        )"""
    )


def _add_chunk_heading_paths(db: sqlite_utils.Database) -> None:
    # The Markdown headings a chunk sits under, as a JSON list, outermost first (chunk.Chunk). Chunks
    # stored before this know none: '[]' until their source changes and is split again.
    db.execute("ALTER TABLE chunks ADD COLUMN heading_path TEXT NOT NULL DEFAULT '[]'")


RETRIEVAL_MIGRATIONS: list[Migration] = [
    ("001_sources_chunks", _create_sources_and_chunks),
    ("002_searches", _create_searches),
    ("003_chunk_heading_paths", _add_chunk_heading_paths),
]
