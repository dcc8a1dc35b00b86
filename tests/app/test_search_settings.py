"""The search settings and flags reach retrieval: engine addresses and keys, include/exclude domains from
the settings file and from `run --include-domain/--exclude-domain`; bad entries are one clear error."""

from __future__ import annotations

import pytest

from sala_report.app.cli import main
from sala_report.app.commands.research import _with_domains
from sala_report.app.errors import ConfigError
from sala_report.app.runs import LocalServices
from sala_report.app.settings import load_settings


def test_settings_and_flags_reach_the_retriever(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[search]\nengines = ["searxng", "arxiv"]\nsearxng_url = "http://localhost:8888"\n'
        'openalex_api_key = "k"\ninclude_domains = ["nature.com"]\nexclude_domains = ["*.Pinterest.com"]\n'
    )
    settings = load_settings(config, env={}, overrides={"paths.data_dir": tmp_path / "data"})
    settings = _with_domains(settings, ("arxiv.org",), ("blogs.nature.com",))
    services = LocalServices(settings, generator=object())
    try:
        retriever = services.retriever(web=True)
        assert retriever.domains.include == ("nature.com", "arxiv.org")
        assert retriever.domains.exclude == ("pinterest.com", "blogs.nature.com")
        config_used = retriever.search.config
        assert config_used.engines == ("searxng", "arxiv") and config_used.searxng_url == "http://localhost:8888"
        assert config_used.openalex_api_key == "k"
        assert services.retriever(web=False).search is None
    finally:
        services.close()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("search.searxng_url", "localhost:8888", "must be an http:// or https:// URL"),
        (
            "search.engines",
            "duckduckgo,arxv",
            "unknown engine arxv; known: arxiv, openalex, searxng, brave, duckduckgo",
        ),
        ("search.include_domains", "nature.com,user@evil", "expected a domain such as example.org, got 'user@evil'"),
    ],
)
def test_bad_search_settings_are_named(key, value, message):
    with pytest.raises(ConfigError, match=f"{key}: {message}"):
        load_settings(env={}, overrides={key: value})


def test_a_bad_domain_flag_is_a_usage_error_before_anything_runs(capsys):
    assert main(["run", "heat pumps", "--headless", "--exclude-domain", "https://"]) == 2
    err = capsys.readouterr().err
    assert "--exclude-domain" in err and "expected a domain such as example.org" in err and "Traceback" not in err


def test_help_lists_the_new_flags_and_formats(capsys):
    for args, expected in (
        (["run", "--help"], ["--include-domain", "--exclude-domain"]),
        (["export", "--help"], ["docx", "bib", "ris"]),
    ):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert all(word in out for word in expected), out
