"""User-facing failures: a small flat hierarchy, turned into messages and exit codes only by the CLI and TUI."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_BACKEND = 4
EXIT_INTERRUPTED = 130


class SalaError(Exception):
    """An error the person can act on: `title` is one line, `hint` says what to do next."""

    title = "sala-report failed"
    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None, title: str | None = None):
        super().__init__(message)
        self.hint = hint
        if title is not None:
            self.title = title


class UsageError(SalaError):
    title = "Invalid usage"
    exit_code = EXIT_USAGE


class ConfigError(SalaError):
    title = "Invalid settings"
    exit_code = EXIT_USAGE


class SessionBusy(SalaError):
    title = "Session already running"


class BackendUnavailable(SalaError):
    title = "Model backend unavailable"
    exit_code = EXIT_BACKEND


# errno values for "no room left": the disk, the user's quota, or a file-size limit (ulimit -f)
_NO_ROOM = {28, 122, 27}  # ENOSPC, EDQUOT, EFBIG on Linux
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_AFTER = "everything saved before is kept, and `sala-report resume ID` continues a run from its last saved step."


def storage_failure(error: BaseException) -> SalaError | None:
    """A clear error for a write the disk refused: no room (an OSError, or SQLite's "database or disk is full"),
    or SQLite's "disk I/O error" (a failing disk, a file-size limit); None for any other failure. Every store
    write is one transaction, so what was saved before stays."""
    code = getattr(error, "sqlite_errorcode", None)
    if (isinstance(error, OSError) and error.errno in _NO_ROOM) or code == _SQLITE_FULL or "disk is full" in str(error):
        return SalaError(
            str(error) or type(error).__name__,
            title="Disk full",
            hint=f"Free some space, then run the command again: {_AFTER}",
        )
    if code is not None and code & 0xFF == _SQLITE_IOERR:
        return SalaError(
            f"the data file could not be written ({error})",
            title="Cannot write to the disk",
            hint=f"Check the disk holding the data folder (free space, file-size limits, errors), then "
            f"run the command again: {_AFTER}",
        )
    return None


# SQLite's primary result codes (the low byte of `sqlite_errorcode`)
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_CORRUPT, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 14, 26
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def file_failure(error: OSError | sqlite3.Error, store_path: Path | None) -> SalaError:
    """One clear error for a file or the store failing: no room or a failing disk (`storage_failure`), a
    damaged store, a read-only one, one busy in another process, or another file the command could not
    use. `store_path` is None when the failure came before the settings said where the store is."""
    known = storage_failure(error)
    if known is not None:
        return known
    store = str(store_path) if store_path is not None else "the data file"
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if isinstance(error, sqlite3.Error):
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            hint = (
                f"Move it aside with its -wal and -shm files (mv {store}* to another folder): the next command "
                "starts a new, empty store; reports exported before are kept in their files."
            )
            return SalaError(
                f"{store} is damaged or is not a sala-report store ({error})", title="Damaged data file", hint=hint
            )
        if code in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN):
            return _read_only(f"{store} cannot be written ({error})", store_path)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return SalaError(
                f"{store} is busy ({error})",
                title="Data file busy",
                hint="Another sala-report process is writing to it: try again in a moment.",
            )
        return SalaError(f"{store}: {error}", title="Data file error", hint="`sala-report doctor` checks it.")
    where = error.filename if isinstance(error, OSError) and error.filename else None
    text = f"{where}: {error.strerror}" if where and error.strerror else str(error) or type(error).__name__
    if isinstance(error, OSError) and error.errno in _DENIED:
        inside = store_path is not None and where is not None and Path(where).is_relative_to(store_path.parent)
        if inside or store_path is None:
            return _read_only(text, store_path)
        return SalaError(text, title="Permission denied", hint="Check the path and its permissions.")
    return SalaError(text, title="File error")


def _read_only(message: str, store_path: Path | None) -> SalaError:
    folder = store_path.parent if store_path is not None else "the data folder"
    hint = (
        f"`sala-report sessions` and `sala-report export ID --out FILE` still work; to run or resume, make "
        f"{folder} writable or choose another with --data-dir."
    )
    return SalaError(message, title="Read-only data folder", hint=hint)
