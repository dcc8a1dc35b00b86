"""The person's documents: incremental folder ingest, no work for unchanged files, crash safety."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sala_report.retrieval import Store, ingest_folder
from sala_report.retrieval.chunk import split_text

DATA = Path(__file__).resolve().parents[1] / "data" / "retrieval"

WORDS = [
    "river",
    "delta",
    "owl",
    "fox",
    "glacier",
    "tidal",
    "energy",
    "market",
    "policy",
    "model",
    "data",
    "city",
    "forest",
    "ocean",
    "climate",
    "harvest",
    "lantern",
    "copper",
    "signal",
    "orchard",
    "harbour",
    "meadow",
    "thunder",
    "granite",
]


def generate_documents(folder: Path, count: int, *, seed: int = 0, paragraphs: int = 4) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        body = "\n\n".join(
            " ".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(5))
            for _ in range(paragraphs)
        )
        (folder / f"doc{i:04d}.md").write_text(f"# Document {i}\n\n{body}\n", encoding="utf-8")


class CountingSplitter:
    def __init__(self):
        self.calls = 0

    def __call__(self, text: str) -> list[str]:
        self.calls += 1
        return split_text(text)


@pytest.fixture
def folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".hidden").mkdir()
    shutil.copy(DATA / "article.html", docs / "article.html")
    shutil.copy(DATA / "report.pdf", docs / "sub" / "report.pdf")
    (docs / "notes.md").write_text("# Garden notes\n\nTomatoes need staking by June.\n", encoding="utf-8")
    (docs / "plain.txt").write_text("Plain text about beekeeping and swarms.\n", encoding="utf-8")
    (docs / "empty.md").write_text("   \n", encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "image.png").write_bytes(b"\x89PNG")
    (docs / ".hidden" / "secret.md").write_text("# hidden\n\nnot for ingest", encoding="utf-8")
    return docs


def test_folder_ingest_reads_each_format_and_records_failures(folder):
    store = Store.open(":memory:")
    report = ingest_folder(store, folder)
    assert (report.added, report.updated, report.unchanged, report.deleted, report.failed) == (4, 0, 0, 0, 2)
    assert len(report.source_ids) == 4
    by_name = {Path(s.location).name: s for s in store.sources()}
    assert set(by_name) == {"article.html", "report.pdf", "notes.md", "plain.txt", "empty.md", "broken.pdf"}
    assert by_name["report.pdf"].title == "Fixture Report on Tidal Energy"
    assert by_name["article.html"].title == "Urban Foxes Rewrite Their Night Routes"
    assert by_name["notes.md"].title == "Garden notes"
    assert (by_name["empty.md"].status, by_name["broken.pdf"].status) == ("empty", "failed")
    assert "not a readable PDF" in by_name["broken.pdf"].error
    (p,) = store.passages("beekeeping swarms", 1)
    assert p.kind == "file" and p.location == str(folder.resolve() / "plain.txt")


def test_changed_deleted_and_touched_files(folder):
    store = Store.open(":memory:")
    ingest_folder(store, folder)
    notes = folder / "notes.md"
    notes.write_text("# Garden notes\n\nCucumbers climb trellises.\n", encoding="utf-8")
    (folder / "plain.txt").unlink()
    article = folder / "article.html"
    os.utime(article, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))  # new stamp, same bytes
    article_id = store.source_by_location(str(article.resolve())).id
    article_chunks = store.chunk_texts(article_id)
    splitter = CountingSplitter()
    report = ingest_folder(store, folder, splitter=splitter)
    assert (report.added, report.updated, report.unchanged, report.deleted, report.failed) == (0, 1, 4, 1, 0)
    assert splitter.calls == 1  # only the changed file was chunked
    assert store.chunk_texts(article_id) == article_chunks
    assert store.passages("cucumbers trellises", 1)
    assert store.passages("tomatoes staking", 1) == []
    gone = store.source_by_location(str((folder / "plain.txt").resolve()))
    assert gone.status == "deleted" and gone.chunk_count == 0
    assert store.passages("beekeeping", 3) == []
    assert store.check_integrity() == []
    (folder / "plain.txt").write_text("Beekeeping returns.\n", encoding="utf-8")
    report = ingest_folder(store, folder)
    assert report.updated == 1 and store.source_by_location(str((folder / "plain.txt").resolve())).status == "ok"


def test_unreadable_files_are_not_retried_until_they_change(folder):
    store = Store.open(":memory:")
    ingest_folder(store, folder)
    splitter = CountingSplitter()
    report = ingest_folder(store, folder, splitter=splitter)
    assert report.failed == 0 and report.unchanged == 6 and splitter.calls == 0


def test_reingesting_an_unchanged_folder_of_1000_documents_does_no_work(tmp_path):
    docs = tmp_path / "many"
    generate_documents(docs, 1000)
    store = Store.open(tmp_path / "sala.db")
    first = ingest_folder(store, docs)
    assert first.added == 1000 and first.failed == 0
    chunks_before = store.db.execute("SELECT count(*), max(n) FROM chunks").fetchone()
    changes_before = store.db.conn.total_changes
    splitter = CountingSplitter()
    start = time.perf_counter()
    second = ingest_folder(store, docs, splitter=splitter)
    elapsed = time.perf_counter() - start
    assert (second.added, second.updated, second.unchanged, second.deleted) == (0, 0, 1000, 0)
    assert splitter.calls == 0
    assert store.db.conn.total_changes == changes_before  # not one row written
    assert store.db.execute("SELECT count(*), max(n) FROM chunks").fetchone() == chunks_before
    assert elapsed < 2.0, f"unchanged re-ingest took {elapsed:.2f} s"
    assert len(second.source_ids) == 1000


INGEST_SCRIPT = """
import sys
from sala_report.retrieval import Store, ingest_folder
store = Store.open(sys.argv[1])
ingest_folder(store, sys.argv[2])
print("finished")
"""


def test_killing_the_process_mid_ingest_leaves_a_consistent_store(tmp_path):
    docs = tmp_path / "docs"
    generate_documents(docs, 600, seed=1)
    db_path = tmp_path / "sala.db"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", INGEST_SCRIPT, str(db_path), str(docs)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while time.monotonic() < deadline and stored < 50:
            time.sleep(0.05)
            assert child.poll() is None, child.stderr.read().decode()
            stored = _count_sources(db_path)
        assert stored >= 50, "the child never got going"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    with Store.open(db_path) as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.check_integrity() == []  # FTS indexes agree; every source has exactly its chunks
        done = store.db["sources"].count
        assert 50 <= done < 600
        half = store.db.execute(
            "SELECT count(*) FROM sources s WHERE s.status = 'ok' AND NOT EXISTS "
            "(SELECT 1 FROM chunks c WHERE c.source_id = s.id)"
        ).fetchone()[0]
        assert half == 0
        report = ingest_folder(store, docs)  # the next run picks up where the killed one stopped
        assert report.added == 600 - done and report.unchanged == done
        assert store.check_integrity() == []


def _count_sources(db_path: Path) -> int:
    if not db_path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM sources").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:  # tables not created yet
        return 0
