"""The extraction reader process: a stopped reader is really gone (killed and reaped, not left running),
and a reader that dies mid-request costs that one body only."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sala_report.retrieval.errors import ExtractionError, ExtractionTimeout
from sala_report.retrieval.worker import extract_bounded

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the reader through /proc")

# About a megabyte of nested markup: trafilatura needs seconds for it, far more than the limits below.
SLOW_HTML = (
    "<html><body>" + ("<div>" * 20 + "<p>" + "tidal delta owl " * 40 + "</p>" + "</div>" * 20) * 1500 + "</body></html>"
).encode()


def readers() -> list[int]:
    """Process ids of this process's extraction readers that are alive (zombies not counted)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except OSError:
            continue
        if f"PPid:\t{os.getpid()}\n" in status and b"retrieval.worker" in command and "State:\tZ" not in status:
            found.append(int(entry))
    return found


def test_a_stopped_reader_is_killed_and_replaced():
    assert extract_bounded(b"warm up", "text", timeout_s=60).text == "warm up"
    (before,) = readers()
    with pytest.raises(ExtractionTimeout, match="took longer than 0.2 s; stopped"):
        extract_bounded(SLOW_HTML, "html", timeout_s=0.2)
    assert readers() == []  # not still working on the page somewhere
    assert extract_bounded(b"next body", "text", timeout_s=60).text == "next body"
    (after,) = readers()
    assert after != before


def test_a_reader_that_dies_mid_request_fails_that_body_only():
    extract_bounded(b"warm up", "text", timeout_s=60)
    (pid,) = readers()
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(ExtractionError, match="the reader crashed on it"):
            extract_bounded(SLOW_HTML, "html", timeout_s=120)
    finally:
        killer.cancel()
    assert extract_bounded(b"still reading", "text", timeout_s=60).text == "still reading"


@pytest.mark.parametrize(
    "kwargs", [{"timeout_s": 0}, {"timeout_s": 1, "kind": "exe"}, {"timeout_s": 1, "max_pages": 3}]
)
def test_bad_arguments_are_value_errors(kwargs):
    kind = kwargs.pop("kind", "text")
    with pytest.raises(ValueError):
        extract_bounded(b"x", kind, **kwargs)
