"""`sala-report doctor` and `sala-report config`: findings with fixes, JSON on stdout, no network by default."""

from __future__ import annotations

import json

from sala_report.app import doctor
from sala_report.app.cli import main
from sala_report.app.settings import load_settings


def _by_area(checks):
    return {c.area: c for c in checks}


def test_doctor_offline_reports_each_area_without_network(tmp_path, monkeypatch):
    import httpx

    def no_network(*args, **kwargs):
        raise AssertionError("doctor made a network call without --online")

    monkeypatch.setattr(httpx.Client, "send", no_network)
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"})
    found = _by_area(doctor.run_checks(settings))
    assert {
        "python",
        "torch",
        "gpu",
        "triton",
        "kernels",
        "model",
        "search",
        "pdf",
        "fonts",
        "data dir",
        "store",
    } <= set(found)
    assert found["data dir"].status == "ok" and str(tmp_path / "data") in found["data dir"].detail
    assert found["store"].status == "ok"
    assert found["pdf"].status == "ok" and "no system libraries" in found["pdf"].detail
    assert found["fonts"].status == "ok"
    assert "not contacted" in found["search"].detail


def test_doctor_names_a_fix_for_a_missing_model_and_an_unwritable_data_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = load_settings(
        overrides={"model.source": str(tmp_path / "nope.gguf"), "paths.data_dir": blocker / "data"}
    )
    found = _by_area(doctor.run_checks(settings))
    assert found["model"].status == "fail" and "nope.gguf" in found["model"].detail and found["model"].fix
    assert found["data dir"].status == "fail" and "--data-dir" in found["data dir"].fix
    assert doctor.summary(list(found.values()))["ok"] is False


def test_doctor_json_is_one_object_on_stdout_and_exit_code_follows_failures(tmp_path, capsys):
    code = main(["--data-dir", str(tmp_path / "d"), "doctor", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == (0 if result["ok"] else 1)
    assert all({"area", "status", "detail", "fix"} <= set(c) for c in result["checks"])

    code = main(["--data-dir", str(tmp_path / "d"), "doctor"])
    out = capsys.readouterr().out
    assert "pdf" in out and ("Everything needed is in place." in out or "warning(s)" in out)


def test_config_show_prints_toml_that_loads_back_with_secrets_masked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SALA_REPORT_MODEL__API_KEY", "sk-secret")
    config = tmp_path / "config.toml"
    config.write_text('[ui.keymap]\npause = "p"\n\n[search]\nengines = ["duckduckgo", "brave"]\n')
    assert main(["--config", str(config), "config", "show"]) == 0
    shown = capsys.readouterr().out
    assert "sk-secret" not in shown and 'api_key = "********"' in shown
    copy = tmp_path / "copy.toml"
    copy.write_text(shown.replace('api_key = "********"', 'api_key = ""'))
    monkeypatch.delenv("SALA_REPORT_MODEL__API_KEY")
    reloaded = load_settings(copy, env={})
    assert reloaded.search.engines == ["duckduckgo", "brave"] and reloaded.ui.keymap == {"pause": "p"}

    assert main(["config", "path"]) == 0
    assert capsys.readouterr().out.strip().endswith("config.toml")
