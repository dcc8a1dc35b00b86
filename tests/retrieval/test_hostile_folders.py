"""Folders that fight back: FIFOs, huge sparse files, broken and escaping links, unreadable files, binary
bytes posing as text, names that are not UTF-8. Each is reported and the rest of the folder is read."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from pypdf import PdfWriter

from sala_report.retrieval import Store, ingest_folder
from sala_report.retrieval.documents import DocumentConfig
from sala_report.retrieval.worker import extract_bounded

DATA = Path(__file__).resolve().parents[1] / "data" / "retrieval"

# linux/capability.h: the thread's capability sets, version 3 (two 32-bit words each)
_CAP_VERSION_3 = 0x20080522
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextlib.contextmanager
def file_permissions_enforced(probe: Path):
    """Make `chmod 000` mean something for this thread even as root: drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the effective set (the permitted set keeps them, so they come back after).
    Skips the test when the probe file still opens."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, saved = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), saved) != 0:
        pytest.skip("capget failed: cannot drop root's permission override to test an unreadable file")
    reduced = (_CapData * 2)(*saved)
    reduced[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), reduced) != 0:
        pytest.skip("capset failed: cannot drop root's permission override to test an unreadable file")
    try:
        try:
            probe.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("file permissions are not enforced for this process even without CAP_DAC_OVERRIDE")
        yield
    finally:
        libc.capset(ctypes.byref(header), saved)


def good_documents(docs: Path) -> set[str]:
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "notes.md").write_text("# Garden notes\n\nTomatoes need staking by June.\n", encoding="utf-8")
    (docs / "plain.txt").write_text("Plain text about beekeeping and swarms.\n", encoding="utf-8")
    (docs / "guide.rst").write_text(
        "=====\nGuide\n=====\n\nLighthouse keepers log the fog horn hours.\n", encoding="utf-8"
    )
    shutil.copy(DATA / "article.html", docs / "article.htm")
    shutil.copy(DATA / "report.pdf", docs / "report.pdf")
    return {"notes.md", "plain.txt", "guide.rst", "article.htm", "report.pdf"}


def test_hostile_folder_ingests_the_good_documents_and_reports_each_other_file(tmp_path):
    docs = tmp_path / "docs"
    good = good_documents(docs)
    os.mkfifo(docs / "fifo.txt")
    with open(docs / "huge.txt", "wb") as f:
        f.truncate(1 << 30)  # 1 GB, sparse: costs no disk
    (docs / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    locked = docs / "locked.md"
    locked.write_text("# Locked\n\nNobody may read this.\n", encoding="utf-8")
    locked.chmod(0)
    secret = tmp_path / "shadow.txt"
    secret.write_text("root:hunter2:secretword\n", encoding="utf-8")
    (docs / "escape.txt").symlink_to(secret)
    (docs / "noise.txt").write_bytes(random.Random(0).randbytes(8192))
    (docs / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    store = Store.open(tmp_path / "sala.db")
    with file_permissions_enforced(locked):
        start = time.monotonic()
        report = ingest_folder(store, docs)
        elapsed = time.monotonic() - start
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert report.added == 5 and len(report.source_ids) == 5
    stored_ok = {Path(s.location).name for s in store.sources() if s.status == "ok"}
    assert stored_ok == good
    problems = {Path(p).name: why for p, why in report.skipped + report.errors}
    assert set(problems) == {
        "fifo.txt",
        "huge.txt",
        "dangling.md",
        "locked.md",
        "escape.txt",
        "noise.txt",
        "picture.png",
    }
    assert "FIFO" in problems["fifo.txt"]
    assert "1,073,741,824 bytes, over the" in problems["huge.txt"]
    assert "broken link" in problems["dangling.md"]
    assert "permission denied" in problems["locked.md"]
    assert "outside the folder" in problems["escape.txt"] and "--follow-links-outside" in problems["escape.txt"]
    assert "binary" in problems["noise.txt"]
    assert "not a type that is read" in problems["picture.png"]
    assert store.passages("secretword hunter2", 3) == []
    assert store.passages("lighthouse fog horn", 1)[0].title == "Guide"


def test_links_out_of_the_folder_are_read_only_when_allowed(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    outside = tmp_path / "elsewhere.md"
    outside.write_text("# Elsewhere\n\nOtters hold hands while sleeping.\n", encoding="utf-8")
    (docs / "link.md").symlink_to(outside)
    (docs / "inner.md").write_text("# Inner\n\nHerons stand still.\n", encoding="utf-8")
    (docs / "alias.md").symlink_to(docs / "inner.md")  # a link that stays inside is read
    store = Store.open(":memory:")
    report = ingest_folder(store, docs)
    assert report.added == 2 and [Path(p).name for p, _ in report.skipped] == ["link.md"]
    assert store.passages("otters sleeping", 1) == []
    report = ingest_folder(store, docs, config=DocumentConfig(follow_links_outside=True))
    assert report.added == 1 and report.skipped == []
    assert store.passages("otters sleeping", 1)[0].location == str(docs / "link.md")


def test_a_name_that_is_not_utf8_is_read_and_found_again(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Fine\n\nA normal name.\n", encoding="utf-8")
    with open(os.fsencode(docs) + b"/caf\xe9.md", "wb") as f:
        f.write(b"# Cafe\n\nEspresso is pulled at nine bar.\n")
    store = Store.open(tmp_path / "sala.db")
    report = ingest_folder(store, docs)
    assert (report.added, report.failed, report.skipped) == (2, 0, [])
    (passage,) = store.passages("espresso nine bar", 1)
    assert passage.location.endswith("caf\\xe9.md")
    again = ingest_folder(store, docs)
    assert (again.unchanged, again.added, again.deleted) == (2, 0, 0)


def test_binary_bytes_in_text_files_are_not_stored_as_text(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = random.Random(1)
    (docs / "blob.md").write_bytes(rng.randbytes(4096))
    (docs / "zeros.txt").write_bytes(b"\0" * 1000)
    (docs / "latin.txt").write_bytes("Café crème, déjà vu — naïve façade.\n".encode("cp1252"))  # not UTF-8
    store = Store.open(":memory:")
    report = ingest_folder(store, docs)
    assert report.added == 1 and report.failed == 2
    assert {Path(p).name: e for p, e in report.errors} == {
        "blob.md": "binary data, not text",
        "zeros.txt": "binary data, not text",
    }
    assert store.source_by_location(str(docs / "latin.txt")).status == "ok"


def test_size_cap_skips_without_reading_and_time_limit_stops_the_reader(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text("# Long\n\n" + "word " * 2000, encoding="utf-8")
    writer = PdfWriter()
    for _ in range(300):  # long enough that even a warm reader needs far more than 1 ms
        writer.append(DATA / "report.pdf")
    writer.write(docs / "report.pdf")
    store = Store.open(":memory:")
    report = ingest_folder(store, docs, config=DocumentConfig(max_text_bytes=1000, timeout_s=0.001))
    assert report.added == 0
    assert "over the 1,000-byte limit" in dict(report.skipped)[str(docs / "long.md")]
    assert "took longer than 0.001 s; stopped" in dict(report.errors)[str(docs / "report.pdf")]
    # the reader that was stopped is gone; the next file gets a new one
    assert extract_bounded(b"still works", "text", timeout_s=30).text == "still works"
    report = ingest_folder(store, docs)  # the stopped file is remembered as failed until it changes
    assert (report.added, report.unchanged, report.failed) == (1, 1, 0)


def test_unreadable_file_is_reported_and_the_rest_read(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Fine\n\nReadable words.\n", encoding="utf-8")
    locked = docs / "locked.md"
    locked.write_text("# Locked\n", encoding="utf-8")
    locked.chmod(0)
    closed = docs / "closed"
    closed.mkdir()
    (closed / "inside.md").write_text("# Inside\n", encoding="utf-8")
    closed.chmod(0)
    store = Store.open(":memory:")
    try:
        with file_permissions_enforced(locked):
            report = ingest_folder(store, docs)
    finally:
        closed.chmod(0o700)  # so that pytest can clean up
    assert report.added == 1 and report.errors == [(str(locked), "permission denied")]
    assert report.skipped == [(str(closed), "folder not readable (permission denied)")]
