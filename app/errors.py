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
