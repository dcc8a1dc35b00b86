"""The person's own documents: ingest a folder of Markdown, text, reStructuredText, HTML, PDF, DOCX, ODT
and EPUB files incrementally, reading only regular files inside the folder, each within a size cap and
a time limit.

A file whose size and modification time match the store is skipped unread; one whose stamp changed
but whose bytes hash the same only gets its stamp refreshed. Only changed files are extracted and
re-chunked, and files that vanished are marked deleted. A file that cannot or may not be read is
reported (`IngestReport.skipped`, `.errors`) and the rest of the folder is still read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sala_report.retrieval.chunk import ChunkConfig, split_text
from sala_report.retrieval.errors import EmptyDocument, ExtractionError, RetrievalError
from sala_report.retrieval.extract import SUFFIX_KINDS, TEXT_KINDS
from sala_report.retrieval.store import FileState, SourceRecord, Store
from sala_report.retrieval.types import IngestReport
from sala_report.retrieval.worker import extract_within

Splitter = Callable[[str], list[str]]
Progress = Callable[[int, int, str], None]  # (files done, files in all, path)


@dataclass(frozen=True)
class DocumentConfig:
    """Field names match the app's `documents` settings section."""

    max_text_bytes: int = 20_000_000  # text, Markdown, reStructuredText and HTML files
    max_file_bytes: int = 200_000_000  # PDF, DOCX, ODT and EPUB files
    max_unpacked_bytes: int = 200_000_000  # what a DOCX, ODT or EPUB may unpack to
    timeout_s: float = 120.0  # reading one file; a longer one is stopped and recorded as failed
    follow_links_outside: bool = False  # read files that links inside the folder point to outside it

    def __post_init__(self) -> None:
        for name in ("max_text_bytes", "max_file_bytes", "max_unpacked_bytes", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    def size_cap(self, kind: str) -> int:
        return self.max_text_bytes if kind in TEXT_KINDS or kind == "html" else self.max_file_bytes


@dataclass(frozen=True)
class Candidate:
    """A name found in the folder: what to read (`path`, a link's target), or why it is not read."""

    location: str  # how the store and messages name it
    path: str = ""
    kind: str = ""
    problem: str = ""


class _Skip(Exception):
    """This file is not read, by rule (not a regular file, too large); the message says why."""


def ingest_folder(
    store: Store,
    path: str | Path,
    *,
    chunk_config: ChunkConfig = ChunkConfig(),
    splitter: Splitter | None = None,
    on_progress: Progress | None = None,
    config: DocumentConfig = DocumentConfig(),
) -> IngestReport:
    """Bring the store in step with the documents under `path` (hidden files and folders are ignored)."""
    root = os.path.realpath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(root):
        raise RetrievalError(f"{location_of(root)} is not a folder")
    split = splitter or (lambda text: split_text(text, chunk_config))
    known = store.file_states(location_of(root) + os.sep)
    report = IngestReport()
    candidates = list(folder_candidates(root, config.follow_links_outside, report.skipped))
    present: set[str] = set()
    readable = [c for c in candidates if not c.problem]
    for candidate in candidates:
        if candidate.problem:
            report.skipped.append((candidate.location, candidate.problem))
    for done, candidate in enumerate(readable, 1):
        try:
            outcome, _, error = _ingest(store, candidate, known.get(candidate.location), split, config)
        except _Skip as e:
            report.skipped.append((candidate.location, str(e)))
        except OSError as e:  # unreadable now (permissions, vanished, I/O error): keep what is stored
            present.add(candidate.location)
            report.failed += 1
            report.errors.append((candidate.location, os_problem(e)))
        else:
            present.add(candidate.location)
            if outcome == "failed":
                report.failed += 1
                report.errors.append((candidate.location, error or "unreadable"))
            else:
                setattr(report, outcome, getattr(report, outcome) + 1)
        if on_progress is not None:
            on_progress(done, len(readable), candidate.location)
    gone = [
        state.source_id for location, state in known.items() if location not in present and state.status != "deleted"
    ]
    if gone:
        store.mark_deleted(gone)
    report.deleted = len(gone)
    after = store.file_states(location_of(root) + os.sep)
    report.source_ids = {state.source_id for state in after.values() if state.status == "ok"}
    return report


def folder_candidates(root: str, follow_links_outside: bool, problems: list[tuple[str, str]]) -> Iterator[Candidate]:
    """Every non-hidden file name under `root`, in a stable order; folders that cannot be listed go to
    `problems`. Links to folders are not followed (they could loop or lead anywhere)."""

    def unlistable(error: OSError) -> None:
        problems.append((location_of(error.filename or root), f"folder not readable ({os_problem(error)})"))

    for folder, subfolders, names in os.walk(root, onerror=unlistable):
        visible = sorted(d for d in subfolders if not d.startswith("."))
        subfolders[:] = [d for d in visible if not os.path.islink(os.path.join(folder, d))]
        for linked in sorted(set(visible) - set(subfolders)):
            yield Candidate(location_of(os.path.join(folder, linked)), problem="a link to a folder; not followed")
        for name in sorted(names):
            if not name.startswith("."):
                yield _candidate(root, os.path.join(folder, name), follow_links_outside)


def _candidate(root: str, path: str, follow_links_outside: bool) -> Candidate:
    location = location_of(path)
    suffix = os.path.splitext(path)[1].lower()
    kind = SUFFIX_KINDS.get(suffix)
    if kind is None:
        return Candidate(
            location, problem=f"{suffix or 'no suffix'}: not a type that is read ({', '.join(sorted(SUFFIX_KINDS))})"
        )
    if not os.path.islink(path):
        return Candidate(location, path, kind)
    target = os.path.realpath(path)
    if not os.path.lexists(target) or not os.path.exists(path):
        return Candidate(location, problem="a broken link (what it points to does not exist)")
    if not follow_links_outside and os.path.commonpath([root, target]) != root:
        return Candidate(
            location,
            problem=f"a link to {location_of(target)}, outside the folder; not followed "
            "(--follow-links-outside reads it)",
        )
    return Candidate(location, target, kind)


def location_of(path: str) -> str:
    """The path as stored and shown. A name that is not valid UTF-8 keeps its bytes as \\xNN escapes, so
    it can be stored, printed and matched again on the next scan."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_problem(error: OSError) -> str:
    return error.strerror.lower() if error.strerror else type(error).__name__


def ingest_file(
    store: Store, file: str | Path, *, splitter: Splitter | None = None, config: DocumentConfig = DocumentConfig()
) -> tuple[str, int, str | None]:
    """Store one document. Returns (outcome, source id, error): outcome is added, updated, unchanged or
    failed; error is set when the file holds no readable text (then it is recorded, and not read again
    until its bytes change). Raises RetrievalError for a file that is not read at all."""
    path = os.path.realpath(os.path.expanduser(os.fspath(file)))
    kind = SUFFIX_KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise RetrievalError(f"{location_of(path)}: only {', '.join(sorted(SUFFIX_KINDS))} files are read")
    candidate = Candidate(location_of(path), path, kind)
    state = store.file_states(candidate.location).get(candidate.location)
    try:
        return _ingest(store, candidate, state, splitter or split_text, config)
    except _Skip as e:
        raise RetrievalError(f"{candidate.location}: {e}") from e
    except OSError as e:
        raise RetrievalError(f"{candidate.location}: {os_problem(e)}") from e


def _ingest(
    store: Store, candidate: Candidate, state: FileState | None, split: Splitter, config: DocumentConfig
) -> tuple[str, int, str | None]:
    stat_now = os.stat(candidate.path)  # before reading, so a write during the read shows up as a change
    _check_regular(stat_now)
    if (
        state is not None
        and state.status != "deleted"
        and (state.size, state.mtime_ns) == (stat_now.st_size, stat_now.st_mtime_ns)
    ):
        return "unchanged", state.source_id, None
    data = read_regular_file(candidate.path, config.size_cap(candidate.kind))
    digest = hashlib.sha256(data).hexdigest()
    if state is not None and state.status != "deleted" and state.content_hash == digest:
        store.touch_file(state.source_id, stat_now.st_size, stat_now.st_mtime_ns)
        return "unchanged", state.source_id, None
    stamp = {"size": stat_now.st_size, "mtime_ns": stat_now.st_mtime_ns, "content_hash": digest}
    name = os.path.basename(candidate.location)
    try:
        extracted = extract_within(
            data, candidate.kind, timeout_s=config.timeout_s, max_unpacked_bytes=config.max_unpacked_bytes
        )
    except ExtractionError as e:
        status = "empty" if isinstance(e, EmptyDocument) else "failed"
        source_id = store.put_failure(
            candidate.location, "file", status=status, failure="extract", error=str(e), title=name, **stamp
        )
        return "failed", source_id, str(e)
    record = SourceRecord(
        location=candidate.location,
        kind="file",
        title=extracted.title or name,
        text=extracted.text,
        content_hash=digest,
        chunks=split(extracted.text),
        metadata={**extracted.metadata, "format": candidate.kind},
        size=stat_now.st_size,
        mtime_ns=stat_now.st_mtime_ns,
    )
    source_id, outcome = store.put_source(record)
    return outcome, source_id, None


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`. Raises _Skip for anything else (a FIFO would
    block forever, a device never ends) and OSError when it cannot be read."""
    # O_NONBLOCK: should a FIFO replace the file after the stat, opening it does not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", closefd=True) as handle:
        info = os.fstat(fd)
        _check_regular(info)
        if info.st_size > max_bytes:
            raise _Skip(f"{info.st_size:,} bytes, over the {max_bytes:,}-byte limit for this type")
        data = handle.read(max_bytes + 1)  # a file still growing stops at the cap too
    if len(data) > max_bytes:
        raise _Skip(f"over the {max_bytes:,}-byte limit for this type")
    return data


def _check_regular(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        what = (
            "a FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "not a file"
        )
        raise _Skip(f"{what}, not a regular file; not read")
