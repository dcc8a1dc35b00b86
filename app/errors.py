"""User-facing failures: a small flat hierarchy, turned into messages and exit codes only by the CLI and TUI."""

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


class BackendUnavailable(SalaError):
    title = "Model backend unavailable"
    exit_code = EXIT_BACKEND


# errno values for "no room left": the disk, the user's quota, or a file-size limit (ulimit -f)
_NO_ROOM = {28, 122, 27}  # ENOSPC, EDQUOT, EFBIG on Linux
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_AFTER = ("everything saved before is kept, and `sala-report resume ID` continues a run from its last saved "
          "step.")  # fmt: skip


def storage_failure(error: BaseException) -> SalaError | None:
    """A clear error for a write the disk refused: no room (an OSError, or SQLite's "database or disk is full"),
    or SQLite's "disk I/O error" (a failing disk, a file-size limit); None for any other failure. Every store
    write is one transaction, so what was saved before stays."""
    code = getattr(error, "sqlite_errorcode", None)
    if (isinstance(error, OSError) and error.errno in _NO_ROOM) or code == _SQLITE_FULL or "disk is full" in str(error):
        return SalaError(str(error) or type(error).__name__, title="Disk full",
                         hint=f"Free some space, then run the command again: {_AFTER}")  # fmt: skip
    if code is not None and code & 0xFF == _SQLITE_IOERR:
        return SalaError(f"the data file could not be written ({error})", title="Cannot write to the disk",
                         hint=f"Check the disk holding the data folder (free space, file-size limits, errors), then "
                              f"run the command again: {_AFTER}")  # fmt: skip
    return None
