"""Settings precedence and errors: flags > environment > config file > defaults."""

from pathlib import Path

import pytest

from sala_report.app.errors import ConfigError
from sala_report.app.settings import load_settings


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
