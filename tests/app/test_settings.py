"""Settings precedence and errors: flags > environment > config file > defaults."""

import dataclasses
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from sala_report.app.commands.tools import _plain, settings_toml
from sala_report.app.errors import ConfigError
from sala_report.app.settings import Settings, load_settings


def test_precedence(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[search]\nengines = ["brave"]\nmax_results = 5\n[warp]\nmax_steps = 50\n')
    env = {"SALA_REPORT_WARP__MAX_STEPS": "60", "SALA_REPORT_HOME": str(tmp_path / "home")}
    s = load_settings(cfg, env=env, overrides={"warp.max_steps": 70, "search.web": None})
    assert s.search.engines == ["brave"]
    assert s.search.max_results == 5
    assert s.warp.max_steps == 70
    assert s.search.web is True
    assert s.paths.data_dir == tmp_path / "home"
    assert s.paths.store_path == tmp_path / "home" / "sala.db"
    s = load_settings(cfg, env=env)
    assert s.warp.max_steps == 60


def test_env_lists_and_bools(tmp_path):
    env = {"SALA_REPORT_SEARCH__ENGINES": "duckduckgo, brave", "SALA_REPORT_FETCH__ALLOW_PRIVATE_ADDRESSES": "yes"}
    s = load_settings(tmp_path / "missing.toml", env=env)
    assert s.search.engines == ["duckduckgo", "brave"]
    assert s.fetch.allow_private_addresses is True


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[search]\nenginez = []\n", "search.enginez"),
        ("[nosuch]\na = 1\n", "nosuch"),
        ("[warp]\nmax_steps = 'many'\n", "warp.max_steps"),
        ("[warp\n", "config.toml"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, needle):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(cfg, env={})


def test_bad_bool_in_env(tmp_path):
    with pytest.raises(ConfigError, match="SEARCH__WEB"):
        load_settings(tmp_path / "x.toml", env={"SALA_REPORT_SEARCH__WEB": "maybe"})


def _load_toml(tmp_path, text: str):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text, encoding="utf-8")
    return load_settings(cfg, env={})


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[fetch]\nmax_bytes = 1e999\n", "fetch.max_bytes: expected a finite number"),
        ("[fetch]\nmax_bytes = inf\n", "fetch.max_bytes: expected a finite number"),
        ("[fetch]\nmax_bytes = 2.5\n", "fetch.max_bytes: expected a whole number"),
        ("[fetch]\nmax_bytes = 0\n", "fetch.max_bytes: must be at least 1"),
        ("[warp]\ntemperature = nan\n", "warp.temperature: expected a finite number"),
        ("[search]\nengines = []\n", "search.engines: must list at least one name"),
        ("[search]\nengines = ['duckduckgo', 'duckduckgo']\n", "search.engines: names must differ"),
        ("[search]\nweb = 5\n", "search.web: expected true or false"),
        ("[model]\nbackend = 'vllm'\n", "model.backend: must be one of 'local', 'openai'"),
        ("[model]\nsource = ['a']\n", "model.source: expected a string"),
        ("[warp]\ntop_p = 0\n", "warp.top_p: must be more than 0"),
        ("[warp]\nno_repeat_ngram = 2\n", "warp.no_repeat_ngram: must be 0 (off) or at least 3"),
    ],
)
def test_out_of_range_values_are_refused_with_their_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, text)
    assert needle in str(caught.value)
    assert str(tmp_path / "config.toml") in str(caught.value)


def test_every_bad_value_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _load_toml(tmp_path, "[fetch]\nmax_bytes = 1e999\n[search]\nengines = []\n[warp]\nmax_steps = -3\n")
    message = str(caught.value)
    assert all(key in message for key in ("fetch.max_bytes", "search.engines", "warp.max_steps"))


def _fields():
    settings = Settings()
    for section in dataclasses.fields(settings):
        for f in dataclasses.fields(getattr(settings, section.name)):
            yield section.name, f.name, getattr(getattr(settings, section.name), f.name)


def _bad_values(section_type, key: str, default):
    """Values no setting of this kind should take, derived from the field's type alone."""
    if isinstance(default, bool):
        return [5, "maybe", [True]]
    if isinstance(default, (int, float)):
        return [float("inf"), float("nan"), -1, "many", True]
    if isinstance(default, list):  # an empty list is bad unless it is the default (domain lists: no limit)
        return [v for v in ([], [""], [1], {"a": "b"}) if v != default]
    if isinstance(default, dict):
        return [{"a": ""}, {"a": 5}, ["a"]]
    if isinstance(default, Path):
        return [[], "", 5]
    bad = [["a"], 5, {"a": "b"}]
    if get_origin(get_type_hints(section_type)[key]) is Literal:
        bad.append("no-such-choice")
    return bad


@pytest.mark.parametrize("section, key, default", list(_fields()), ids=lambda v: str(v)[:20])
def test_every_setting_refuses_values_of_the_wrong_kind_or_range(tmp_path, section, key, default):
    section_type = type(getattr(Settings(), section))
    for value in _bad_values(section_type, key, default):
        with pytest.raises(ConfigError, match=rf"{section}\.{key}: "):
            load_settings(tmp_path / "none.toml", env={}, overrides={f"{section}.{key}": value})


def test_each_choice_of_a_closed_setting_is_accepted(tmp_path):
    settings = Settings()
    closed = 0
    for section, key, _ in _fields():
        hint = get_type_hints(type(getattr(settings, section)))[key]
        if get_origin(hint) is Literal:
            closed += 1
            for choice in get_args(hint):
                loaded = load_settings(tmp_path / "none.toml", env={}, overrides={f"{section}.{key}": choice})
                assert getattr(getattr(loaded, section), key) == choice
    assert closed >= 6


def test_the_defaults_written_out_load_back_unchanged(tmp_path):
    """`config show` prints the defaults as TOML; every one of them must pass the checks."""
    defaults = Settings()
    tree = _plain(dataclasses.asdict(defaults))
    loaded = _load_toml(tmp_path, settings_toml(tree))
    assert loaded == defaults


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="SALA_REPORT_HOME: paths.data_dir: .* is a file, not a folder"):
        load_settings(tmp_path / "none.toml", env={"SALA_REPORT_HOME": str(afile)})


def test_numbers_from_the_environment_are_parsed(tmp_path):
    env = {"SALA_REPORT_FETCH__MAX_BYTES": "2e6", "SALA_REPORT_WARP__TEMPERATURE": "0.3"}
    s = load_settings(tmp_path / "none.toml", env=env)
    assert (s.fetch.max_bytes, s.warp.temperature) == (2_000_000, 0.3)
    with pytest.raises(ConfigError, match="SALA_REPORT_FETCH__MAX_BYTES: fetch.max_bytes"):
        load_settings(tmp_path / "none.toml", env={"SALA_REPORT_FETCH__MAX_BYTES": "1e999"})
