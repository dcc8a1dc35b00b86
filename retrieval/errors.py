"""Errors raised by retrieval; the CLI and TUI turn them into messages, the research pipeline into events."""

from __future__ import annotations


class RetrievalError(Exception):
    """Something about a source could not be done; the message says what, for a person to read."""


class AddressRefused(RetrievalError):
    """A URL points at a scheme or an address that fetching is not allowed to reach."""


class ExtractionError(RetrievalError):
    """A fetched body or a file yielded no readable text (empty, corrupt, encrypted)."""


class EmptyDocument(ExtractionError):
    """The body or file was read fine but holds no text (an empty page, a scanned PDF without a text layer)."""


class ExtractionTimeout(ExtractionError):
    """Reading a body or file ran past its time limit and was stopped."""
