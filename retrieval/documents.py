"""The person's own documents: ingest a folder of Markdown, text, HTML and PDF files incrementally.

A file whose size and modification time match the store is skipped unread; one whose stamp changed
but whose bytes hash the same only gets its stamp refreshed. Only changed files are extracted and
re-chunked, and files that vanished are marked deleted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from sala_report.retrieval.chunk import ChunkConfig, split_text
from sala_report.retrieval.errors import EmptyDocument, ExtractionError, RetrievalError
from sala_report.retrieval.extract import SUFFIX_KINDS, extract
from sala_report.retrieval.store import FileState, SourceRecord, Store
from sala_report.retrieval.types import IngestReport

Splitter = Callable[[str], list[str]]
Progress = Callable[[int, int, str], None]  # (files done, files in all, path)


def ingest_folder(
    store: Store,
    path: str | Path,
    *,
    chunk_config: ChunkConfig = ChunkConfig(),
    splitter: Splitter | None = None,
    on_progress: Progress | None = None,
) -> IngestReport:
    """Bring the store in step with the documents under `path` (hidden files and folders are ignored)."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise RetrievalError(f"{root} is not a folder")
    split = splitter or (lambda text: split_text(text, chunk_config))
    known = store.file_states(str(root) + os.sep)
    files = list(document_files(root))
    report = IngestReport()
    for done, file in enumerate(files, 1):
        kind = SUFFIX_KINDS[file.suffix.lower()]
        outcome, _, error = _ingest(store, file, kind, known.get(str(file)), split)
        if outcome == "failed":
            report.failed += 1
            report.errors.append((str(file), error or "unreadable"))
        else:
            setattr(report, outcome, getattr(report, outcome) + 1)
        if on_progress is not None:
            on_progress(done, len(files), str(file))
    present = {str(f) for f in files}
    gone = [state.source_id for location, state in known.items()
            if location not in present and state.status != "deleted"]
    if gone:
        store.mark_deleted(gone)
    report.deleted = len(gone)
    after = store.file_states(str(root) + os.sep)
    report.source_ids = {state.source_id for state in after.values() if state.status == "ok"}
    return report


def document_files(root: Path):
    """Readable documents under `root` in a stable order, skipping hidden names and unknown suffixes."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in SUFFIX_KINDS:
                yield Path(folder) / name


def ingest_file(store: Store, file: str | Path, *, splitter: Splitter | None = None) -> tuple[str, int, str | None]:
    """Store one document. Returns (outcome, source id, error): outcome is added, updated, unchanged or
    failed; error is set when the file holds no readable text (then it is recorded, and not read again
    until its bytes change)."""
    file = Path(file).expanduser().resolve()
    kind = SUFFIX_KINDS.get(file.suffix.lower())
    if kind is None:
        raise RetrievalError(f"{file}: only {', '.join(sorted(SUFFIX_KINDS))} files are read")
    state = store.file_states(str(file)).get(str(file))
    return _ingest(store, file, kind, state, splitter or split_text)


def _ingest(
    store: Store, file: Path, kind: str, state: FileState | None, split: Splitter
) -> tuple[str, int, str | None]:
    location = str(file)
    stat = file.stat()  # before reading, so a write during the read shows up as a change next time
    if (state is not None and state.status != "deleted"
            and (state.size, state.mtime_ns) == (stat.st_size, stat.st_mtime_ns)):
        return "unchanged", state.source_id, None
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if state is not None and state.status != "deleted" and state.content_hash == digest:
        store.touch_file(state.source_id, stat.st_size, stat.st_mtime_ns)
        return "unchanged", state.source_id, None
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "content_hash": digest}
    try:
        extracted = extract(data, kind)
    except ExtractionError as e:
        status = "empty" if isinstance(e, EmptyDocument) else "failed"
        source_id = store.put_failure(location, "file", status=status, failure="extract", error=str(e),
                                      title=file.name, **stamp)
        return "failed", source_id, str(e)
    record = SourceRecord(
        location=location, kind="file", title=extracted.title or file.name, text=extracted.text,
        content_hash=digest, chunks=split(extracted.text),
        metadata={**extracted.metadata, "format": kind}, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
    )
    source_id, outcome = store.put_source(record)
    return outcome, source_id, None
