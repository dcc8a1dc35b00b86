"""Shared test setup: GPU tests skip without CUDA; no test touches the real home directory's data."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Point data, config and logs at a temporary folder; the model download cache stays shared."""
    home = tmp_path_factory.mktemp("sala-home")
    monkeypatch.setenv("SALA_REPORT_HOME", str(home / "data"))
    monkeypatch.setenv("SALA_REPORT_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    yield


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    os.environ["SALA_REPORT_HOME"] = str(d)
    return d
