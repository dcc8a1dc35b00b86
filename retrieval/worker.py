"""Extraction in a child process, so a page or file that sends a parser into a long run is stopped at a
time limit: a thread cannot be stopped from outside, a process can be killed.

One child serves the whole process (started on first use, restarted after a kill). Requests and answers
are length-prefixed pickles over its stdin and stdout; the child trusts only its parent.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from sala_report.retrieval.errors import EmptyDocument, ExtractionError, ExtractionTimeout
from sala_report.retrieval.extract import (
    KINDS,
    MAX_HTML_CHARS,
    Extracted,
    bounded_html,
    decode_text,
    extract,
    first_line_title,
    html_title,
)
from sala_report.retrieval.packaged import html_block_text

_HEADER = struct.Struct(">Q")


class _Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            # -c rather than -m: the package imports this module, and runpy would run it a second time
            [sys.executable, "-c", "from sala_report.retrieval.worker import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )

    def ask(self, request: tuple, timeout_s: float) -> tuple:
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        # The child reads a whole request before working on it, so this write waits at most for its start-up.
        self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
        return pickle.loads(_read_exact(fd, size, deadline))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # the pipe to a killed child may refuse the final flush
                pass


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    parts, left = [], size
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        piece = os.read(fd, min(left, 1 << 20))
        if not piece:
            raise EOFError("the extraction process ended")
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


_lock = threading.Lock()
_child: _Child | None = None


def extract_bounded(
    body: bytes, kind: str, *, timeout_s: float, url: str | None = None, charset: str | None = None, **limits
) -> Extracted:
    """`extract` run in the child process, stopped after `timeout_s` seconds (ExtractionTimeout).

    `limits` pass through to `extract`. Raises the same errors as `extract`; a crash of the child (a
    parser bug, memory exhausted) is an ExtractionError about this body, and the next call starts a
    new child."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if kind not in KINDS:  # checked here: in the child every error is taken to be about the body
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if set(limits) - {"max_html_chars", "max_unpacked_bytes"}:
        raise ValueError(f"limits are max_html_chars and max_unpacked_bytes, got {sorted(limits)}")
    global _child
    with _lock:
        if _child is None or _child.proc.poll() is not None:
            _child = _Child()
        child = _child
        try:
            answer = child.ask((body, kind, url, charset, limits), timeout_s)
        except TimeoutError:
            child.kill()
            _child = None
            raise ExtractionTimeout(f"reading it took longer than {timeout_s:g} s; stopped") from None
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            child.kill()
            _child = None
            raise ExtractionError(f"the reader crashed on it ({type(e).__name__})") from None
    status, value = answer
    if status == "ok":
        return value
    if status == "empty":
        raise EmptyDocument(value)
    raise ExtractionError(value)


def extract_within(
    body: bytes, kind: str, *, timeout_s: float, url: str | None = None, charset: str | None = None, **limits
) -> Extracted:
    """`extract_bounded`, except that an HTML body whose article extraction runs out of time still gives
    its plain text, read in one linear pass (marked `"extraction": "plain"` in the metadata)."""
    try:
        return extract_bounded(body, kind, timeout_s=timeout_s, url=url, charset=charset, **limits)
    except ExtractionTimeout:
        if kind != "html":
            raise
    html, cut = bounded_html(decode_text(body, charset, html=True), limits.get("max_html_chars", MAX_HTML_CHARS))
    text = html_block_text(html)
    if not text.strip():
        raise ExtractionTimeout(f"reading it took longer than {timeout_s:g} s; stopped")
    return Extracted(text, html_title(html) or first_line_title(text), {"extraction": "plain", "truncated": cut})


def serve() -> None:
    """The child's loop: answer requests until the parent closes stdin (or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; it ends us by closing stdin
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library printing to stdout must not corrupt the answers
    source = sys.stdin.buffer
    while True:
        header = source.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        body, kind, url, charset, limits = pickle.loads(source.read(_HEADER.unpack(header)[0]))
        try:
            answer: tuple = ("ok", extract(body, kind, url=url, charset=charset, **limits))
        except EmptyDocument as e:
            answer = ("empty", str(e))
        except ExtractionError as e:
            answer = ("error", str(e))
        except Exception as e:  # a parser bug on this body; the next body still gets a reader
            answer = ("error", f"could not be read ({type(e).__name__}: {e})")
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(payload)) + payload)
        out.flush()
