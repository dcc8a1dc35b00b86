"""Shared set-up for the terminal app's tests: the real engine and store, driven by the warp tests'
scripted generator, on a small corpus of documents written to a temporary folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "warp"))

from warp_fakes import CORPUS  # noqa: E402

from sala_report.app.tui.services import RunRequest  # noqa: E402

QUESTION = "How did renewable energy grow?"


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, (title, chunks) in CORPUS.items():
        (folder / name).write_text(f"{title}\n\n" + "\n\n".join(chunks) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def request_for(corpus):
    return RunRequest(QUESTION, web=False, docs=corpus)


@pytest.fixture
def anyio_backend():
    return "asyncio"
