"""The SQLite store: migrations, transactional writes, FTS5 passages (safe for any query), CJK, spreading."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest
import sqlite_utils
from read_only import read_only, run_without_write_access  # noqa: F401 (a fixture)

from sala_report.retrieval import Store
from sala_report.retrieval.chunk import chunk_id, split_text
from sala_report.retrieval.migrations import RETRIEVAL_MIGRATIONS, apply_migrations
from sala_report.retrieval.store import SourceRecord


def put(store: Store, location: str, chunks: list[str], *, title: str = "T", kind: str = "file", digest: str = "h"):
    return store.put_source(SourceRecord(location, kind, title, "\n\n".join(chunks), digest, chunks))


def test_open_creates_a_wal_file_with_migrations_recorded(tmp_path):
    path = tmp_path / "nested" / "sala.db"
    with Store.open(path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [r[0] for r in store.db.execute("SELECT name FROM migrations ORDER BY name")]
        assert names == ["retrieval:001_sources_chunks", "retrieval:002_searches", "retrieval:003_chunk_heading_paths"]
        assert {"sources", "chunks", "chunks_fts", "chunks_cjk", "searches"} <= set(store.db.table_names())
    with Store.open(path) as store:  # reopening applies nothing twice
        assert store.db["migrations"].count == 3


def test_other_parts_apply_their_own_migrations_in_the_same_file(tmp_path):
    calls = []

    def create_sessions(db):
        calls.append("sessions")
        db.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, question TEXT)")

    with Store.open(tmp_path / "sala.db") as store:
        assert store.apply_migrations("warp", [("001_sessions", create_sessions)]) == ["001_sessions"]
        assert store.apply_migrations("warp", [("001_sessions", create_sessions)]) == []
    assert calls == ["sessions"]
    with Store.open(tmp_path / "sala.db") as store:
        assert "warp:001_sessions" in [r[0] for r in store.db.execute("SELECT name FROM migrations")]


def test_a_failing_migration_leaves_nothing_behind(tmp_path):
    def half(db):
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("boom")

    with Store.open(tmp_path / "sala.db") as store:
        with pytest.raises(RuntimeError):
            store.apply_migrations("warp", [("001_half", half)])
        assert "half" not in store.db.table_names()
        assert store.db.execute("SELECT count(*) FROM migrations WHERE name LIKE 'warp:%'").fetchone()[0] == 0


def test_migration_arguments_are_checked():
    store = Store.open(":memory:")
    with pytest.raises(ValueError):
        store.apply_migrations("a:b", [])
    with pytest.raises(ValueError):
        store.apply_migrations("x", [("same", lambda db: None), ("same", lambda db: None)])


def test_put_source_adds_replaces_and_skips_unchanged():
    store = Store.open(":memory:")
    sid, how = put(store, "/d/a.md", ["alpha one", "alpha two"], digest="h1")
    assert how == "added"
    first_ids = [cid for cid, _ in store.chunk_texts(sid)]
    assert first_ids == [chunk_id("/d/a.md", "h1", 0), chunk_id("/d/a.md", "h1", 1)]
    changes = store.db.conn.total_changes
    assert put(store, "/d/a.md", ["alpha one", "alpha two"], digest="h1") == (sid, "unchanged")
    assert store.db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2
    assert store.db.conn.total_changes - changes == 1  # only the fetched time, no chunk rewritten
    assert put(store, "/d/a.md", ["beta"], digest="h2") == (sid, "updated")
    assert [t for _, t in store.chunk_texts(sid)] == ["beta"]
    assert store.source(sid).chunk_count == 1
    assert store.passages("alpha") == []
    assert store.check_integrity() == []


def test_a_failed_write_rolls_back_the_whole_source():
    store = Store.open(":memory:")
    sid, _ = put(store, "/d/a.md", ["original text about owls"], digest="h1")
    store.db.execute(
        "CREATE TRIGGER no_second AFTER INSERT ON chunks WHEN new.position = 1 "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        put(store, "/d/a.md", ["new first", "new second"], digest="h2")
    source = store.source(sid)
    assert source.content_hash == "h1" and source.chunk_count == 1
    assert [t for _, t in store.chunk_texts(sid)] == ["original text about owls"]
    assert store.passages("owls")[0].source_id == sid
    assert store.check_integrity() == []


def test_chunk_ids_are_stable_across_stores_and_change_with_content():
    a, b = Store.open(":memory:"), Store.open(":memory:")
    put(b, "/other.md", ["padding so ids differ"])
    sid_a, _ = put(a, "/d/x.md", ["one", "two"], digest="same")
    sid_b, _ = put(b, "/d/x.md", ["one", "two"], digest="same")
    assert sid_a != sid_b
    assert a.chunk_texts(sid_a) == b.chunk_texts(sid_b)
    put(a, "/d/x.md", ["one", "two!"], digest="changed")
    assert a.chunk_texts(sid_a)[0][0] != b.chunk_texts(sid_b)[0][0]


def test_failures_are_recorded_and_have_no_chunks():
    store = Store.open(":memory:")
    sid, _ = put(store, "https://x.example/", ["some text"], kind="web")
    store.put_failure("https://x.example/", "web", status="failed", failure="timeout", error="slow")
    source = store.source(sid)
    assert (source.status, source.failure, source.error, source.chunk_count) == ("failed", "timeout", "slow", 0)
    assert store.passages("text") == []
    with pytest.raises(ValueError):
        store.put_failure("u", "web", status="ok", failure="x", error="y")


@pytest.mark.parametrize(
    "query",
    [
        '"unbalanced quote',
        "foo AND",
        "NEAR(a b",
        "title:owls",
        "a* OR (b",
        "-owls",
        "^start",
        "owls'; DROP TABLE chunks;--",
        "",
        "   ",
        "?!.,",
        "AND OR NOT",
        "col:val {x y}",
        "\x00nul",
        "😀 emoji",
        "a" * 5000,
    ],
)
def test_free_text_queries_never_raise(query):
    store = Store.open(":memory:")
    put(store, "/d/owls.md", ["Owls nest in barns; AND they hunt at night."])
    assert isinstance(store.passages(query, 5), list)


def test_operators_in_queries_are_words_not_syntax():
    store = Store.open(":memory:")
    put(store, "/d/a.md", ["The NEAR field of an antenna and its far field."])
    assert len(store.passages("NEAR field", 3)) == 1


def test_passages_carry_what_a_citation_needs():
    store = Store.open(":memory:")
    sid, _ = put(store, "https://owls.example/barn", ["Barn owls swallow prey whole."], title="Barn owls", kind="web")
    (p,) = store.passages("what do barn owls eat", 3)
    assert (p.source_id, p.title, p.location, p.kind) == (sid, "Barn owls", "https://owls.example/barn", "web")
    assert p.chunk_id == store.chunk_texts(sid)[0][0] and p.text == "Barn owls swallow prey whole." and p.score > 0


def test_passages_carry_the_heading_path_of_their_chunk():
    store = Store.open(":memory:")
    text = "# Owls\n\n## Barn owls\n\nBarn owls swallow voles whole.\n\n## Tawny owls\n\nTawny owls hoot at night."
    store.put_source(SourceRecord("/d/owls.md", "file", "Owls", text, "h", split_text(text)))
    (p,) = store.passages("voles", 3)
    assert (p.heading_path, p.heading) == (("Owls", "Barn owls"), "Barn owls")
    (q,) = store.passages("hoot", 3)
    assert q.heading_path == ("Owls", "Tawny owls") and q.text == "## Tawny owls\n\nTawny owls hoot at night."
    put(store, "/d/plain.txt", ["Plain voles text."])  # plain strings have no headings
    assert {p.location: p.heading_path for p in store.passages("voles", 3)}["/d/plain.txt"] == ()


def test_a_store_written_before_heading_paths_is_upgraded_and_keeps_its_chunks(tmp_path):
    """A real file made by the first two migrations, with a source and chunk written as that version did."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    assert apply_migrations(db, "retrieval", RETRIEVAL_MIGRATIONS[:2]) == ["001_sources_chunks", "002_searches"]
    with conn:
        conn.execute(
            "INSERT INTO sources (id, location, kind, title, status, fetched_at, content_hash, chunk_count, text) "
            "VALUES (1, '/d/old.md', 'file', 'Old', 'ok', '2026-01-01T00:00:00+00:00', 'h0', 1, 'Moles dig.')"
        )
        conn.execute("INSERT INTO chunks (id, source_id, position, text) VALUES ('c0', 1, 0, 'Moles dig tunnels.')")
    conn.close()
    with Store.open(path) as store:
        names = [r[0] for r in store.db.execute("SELECT name FROM migrations ORDER BY name")]
        assert names[-1] == "retrieval:003_chunk_heading_paths"
        (old,) = store.passages("moles", 3)
        assert (old.chunk_id, old.text, old.heading_path) == ("c0", "Moles dig tunnels.", ())
        text = "# Moles\n\nMoles dig with their forepaws."
        store.put_source(SourceRecord("/d/old.md", "file", "Old", text, "h1", split_text(text)))
        (new,) = store.passages("moles", 3)
        assert new.heading_path == ("Moles",) and store.check_integrity() == []
    with Store.open(path) as store:  # applied once
        assert store.db.execute("SELECT count(*) FROM migrations").fetchone()[0] == 3


def test_passages_spread_over_sources():
    store = Store.open(":memory:")
    put(store, "/d/long.md", [f"Volcano eruption report part {i}: volcano ash and volcano lava." for i in range(20)])
    put(store, "/d/short1.md", ["A volcano near the coast."])
    put(store, "/d/short2.md", ["One volcano mention."])
    passages = store.passages("volcano", 6)
    assert len(passages) == 6
    assert len({p.source_id for p in passages}) == 3
    assert sum(p.location == "/d/long.md" for p in passages) == 4  # capped first, then filled by rank


def test_source_ids_restrict_passages():
    store = Store.open(":memory:")
    a, _ = put(store, "/d/a.md", ["river delta sediment"])
    b, _ = put(store, "/d/b.md", ["river delta flooding"])
    assert {p.source_id for p in store.passages("river delta", 5, source_ids={b})} == {b}
    assert store.passages("river delta", 5, source_ids=set()) == []
    assert {p.source_id for p in store.passages("river delta", 5)} == {a, b}


def test_stemming_matches_word_forms():
    store = Store.open(":memory:")
    put(store, "/d/a.md", ["Researchers ranked the candidates by citations."])
    assert store.passages("ranking candidate", 3)


@pytest.mark.parametrize(
    "query,expected",
    [
        ("机器学习", "/d/zh.md"),
        ("学习", "/d/zh.md"),
        ("深度学习的应用", "/d/zh.md"),
        ("東京の天気", "/d/ja.md"),
        ("天気", "/d/ja.md"),
    ],
)
def test_cjk_queries_match(query, expected):
    store = Store.open(":memory:")
    put(store, "/d/zh.md", ["机器学习是人工智能的一个分支。深度学习在图像识别中应用广泛。"])
    put(store, "/d/ja.md", ["東京の天気は明日晴れる予報です。"])
    put(store, "/d/en.md", ["Machine learning is a branch of artificial intelligence."])
    passages = store.passages(query, 3)
    assert passages and passages[0].location == expected


def test_mixed_query_falls_back_to_latin_terms():
    store = Store.open(":memory:")
    put(store, "/d/en.md", ["Transformer models dominate translation."])
    assert store.passages("Transformer 模型", 3)[0].location == "/d/en.md"


def test_deleting_a_cjk_source_cleans_its_bigram_index():
    store = Store.open(":memory:")
    sid, _ = put(store, "/d/zh.md", ["机器学习"])
    store.mark_deleted([sid])
    assert store.passages("机器学习", 3) == []
    assert store.db.execute("SELECT count(*) FROM chunks_cjk").fetchone()[0] == 0
    assert store.source(sid).status == "deleted"
    assert store.check_integrity() == []


def test_store_is_usable_from_another_thread(tmp_path):
    import threading

    store = Store.open(tmp_path / "sala.db")
    errors = []

    def work():
        try:
            put(store, "/d/t.md", ["written from a worker thread"])
        except Exception as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == [] and store.passages("worker thread")


def test_affordable_terms_keeps_the_rarest_within_budget():
    from sala_report.retrieval.rank import affordable_terms

    assert affordable_terms({"common": 900, "rare": 3, "mid": 50, "absent": 0}, 100) == ["rare", "mid"]
    assert affordable_terms({"common": 900, "everywhere": 1000}, 100) == ["common"]  # at least one
    assert affordable_terms({"absent": 0}, 100) == []


def test_common_terms_are_dropped_when_they_would_exceed_the_scan_budget(monkeypatch):
    from sala_report.retrieval import store as store_module

    monkeypatch.setattr(store_module, "SCAN_BUDGET", 5)
    store = Store.open(":memory:")
    for i in range(10):
        put(store, f"/d/{i}.md", [f"common words fill page {i}"])
    target, _ = put(store, "/d/target.md", ["common words and one zeppelin"])
    passages = store.passages("common zeppelin", 3)
    assert [p.source_id for p in passages] == [target]
    # Only ubiquitous terms: the newest SCAN_BUDGET matches are ranked, and the query still answers.
    assert len(store.passages("common words", 3)) == 3
    put(store, "/d/late.md", ["zeppelin zeppelin zeppelin"])  # a write forgets the cached counts
    assert {p.location for p in store.passages("zeppelin", 3)} == {"/d/target.md", "/d/late.md"}


def test_another_connections_writes_are_seen_by_passages(tmp_path):
    reader = Store.open(tmp_path / "sala.db")
    writer = Store.open(tmp_path / "sala.db")
    put(writer, "/d/a.md", ["nothing special"])
    assert reader.passages("quokka", 3) == []  # counted (zero) and cached by the reader
    put(writer, "/d/b.md", ["a quokka smiles"])
    assert [p.location for p in reader.passages("quokka", 3)] == ["/d/b.md"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask, under which the old code made 0755 folders and 0644 files
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_store_and_its_folder_are_private(tmp_path, umask_022):
    path = tmp_path / "fresh" / "sala.db"
    with Store.open(path) as store:
        put(store, "/docs/a.md", ["private notes"])
        assert {p.name for p in path.parent.iterdir()} == {"sala.db", "sala.db-wal", "sala.db-shm"}
        modes = {p.name: _mode(p) for p in path.parent.iterdir()}
    assert _mode(path.parent) == 0o700
    assert modes == {"sala.db": 0o600, "sala.db-wal": 0o600, "sala.db-shm": 0o600}


def test_an_existing_folder_keeps_its_mode(tmp_path, umask_022):
    folder = tmp_path / "research"
    folder.mkdir(mode=0o755)  # a folder the person chose with --data-dir: theirs to set
    Store.open(folder / "sala.db").close()
    assert (_mode(folder), _mode(folder / "sala.db")) == (0o755, 0o600)


def _in_read_only_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return run_without_write_access([sys.executable, "-c", code, *args])


READ_BACK = """
import sys
from sala_report.retrieval.store import Store
for how in ("open_for_reading", "open"):
    try:
        with getattr(Store, how)(sys.argv[1]) as store:
            print(how, store.read_only, [s.location for s in store.sources()])
    except Exception as e:
        print(how, "refused:", type(e).__name__, e)
"""


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_store_opens_for_reading_and_refuses_writing(tmp_path, read_only, what):
    path = tmp_path / "store" / "sala.db"
    with Store.open(path) as store:
        put(store, "/docs/a.md", ["kept"])
    read_only(path.parent if what == "folder" else path)
    child = _in_read_only_child(READ_BACK, str(path))
    lines = child.stdout.splitlines()
    assert child.returncode == 0 and lines[0] == "open_for_reading True ['/docs/a.md']", child.stdout + child.stderr
    assert lines[1].startswith("open refused: ") and ("readonly" in lines[1] or "Permission denied" in lines[1])
    if what == "folder":  # nothing could be made in it, and nothing was
        assert sorted(p.name for p in path.parent.iterdir()) == ["sala.db"]


def test_a_read_only_store_with_migrations_pending_says_so(tmp_path, read_only):
    path = tmp_path / "store" / "sala.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:  # as if written by an older version, before the searches table
        conn.execute("DELETE FROM migrations WHERE name = 'retrieval:002_searches'")
    read_only(path)
    child = _in_read_only_child(READ_BACK, str(path))
    assert "open_for_reading refused: StoreReadOnly" in child.stdout and "002_searches" in child.stdout, child.stderr
