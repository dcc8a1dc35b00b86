"""The one exception the model package raises for problems a person can fix (bad files, no network)."""

from __future__ import annotations


class ModelError(Exception):
    """A model could not be found, fetched or loaded.

    `title` is one line for a UI; `hint` says what to do next. The app layer turns this into its own
    error type and exit code (this package does not import the app).
    """

    title = "Model could not be loaded"

    def __init__(self, message: str, *, hint: str | None = None, title: str | None = None):
        super().__init__(message if hint is None else f"{message}\n{hint}")
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title


class ConfigError(ModelError, ValueError):
    """config.json (or GGUF metadata) has a missing or wrong key; the message names it."""

    title = "Model config is invalid"
