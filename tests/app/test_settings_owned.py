"""Settings that retrieval's config types also have take their defaults from those types, so each default is
written once; building settings still checks every value, and `--help` still does not load retrieval."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from sala_report.app.settings import OWNED, DocumentSettings, FetchSettings, SearchSettings, Settings, _problem
from sala_report.app.wiring import document_config, fetch_config, search_config
from sala_report.retrieval.documents import DocumentConfig
from sala_report.retrieval.fetch import FetchConfig
from sala_report.retrieval.search import SearchConfig

PAIRS = [
    ("search", SearchSettings, SearchConfig),
    ("fetch", FetchSettings, FetchConfig),
    ("documents", DocumentSettings, DocumentConfig),
]


@pytest.mark.parametrize(("section", "settings_type", "config_type"), PAIRS)
def test_a_setting_the_config_type_has_declares_no_default_of_its_own(section, settings_type, config_type):
    owned = {f.name for f in dataclasses.fields(config_type)}
    for f in dataclasses.fields(settings_type):
        if f.name in owned:
            assert f.default is OWNED, f"{section}.{f.name} repeats the default of {config_type.__name__}"


@pytest.mark.parametrize(("section", "settings_type", "config_type"), PAIRS)
def test_the_defaults_are_the_config_types_and_pass_the_settings_checks(section, settings_type, config_type):
    built, config = settings_type(), config_type()
    for f in dataclasses.fields(built):
        value = getattr(built, f.name)
        assert value is not OWNED
        if hasattr(config, f.name):
            expected = getattr(config, f.name)
            assert value == (list(expected) if isinstance(expected, tuple) else expected)
        assert _problem(f"{section}.{f.name}", value, None) is None, f.name


def test_default_settings_give_the_default_configs():
    settings = Settings()
    assert fetch_config(settings) == FetchConfig()
    assert document_config(settings) == DocumentConfig()
    assert search_config(settings) == SearchConfig()


def test_sections_do_not_share_their_lists():
    first, second = SearchSettings(), SearchSettings()
    first.engines.append("brave")
    assert second.engines == ["duckduckgo"]


def test_importing_settings_does_not_load_retrieval():
    probe = (
        "import sys, sala_report.app.settings; print(any(m.startswith('sala_report.retrieval') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
