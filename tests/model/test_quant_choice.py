"""doctor's GPU line describes the user's own model: a GGUF's config and packed blocks (which "auto" tries first, as
load_model does), a checkpoint's config, and MiniCPM-SALA's only when the model is not on this machine yet."""

from __future__ import annotations

import gguf

from sala_report.model.load import plan_inputs
from sala_report.model.plan import format_contexts
from sala_report.model.quant import choice_line

GIB = 2**30


def test_a_gguf_source_is_planned_with_its_own_config_and_blocks(smollm2_path):
    line = choice_line("auto", 2 * GIB, source=str(smollm2_path))
    # SmolLM2's own context (from the file's metadata, read here with the gguf library itself), not SALA's 512K
    reader = gguf.GGUFReader(smollm2_path)
    ctx = int(reader.fields["llama.context_length"].parts[-1][0])
    assert line.startswith(f"quantize=auto: auto picks gguf for {smollm2_path.name} at {ctx // 1024}K tokens"), line
    assert "MiniCPM-SALA" not in line
    # the reach list leads with the file's blocks, which reach further than bf16 at the same free memory
    reach = dict(part.rsplit(" ", 1) for part in line.split("longest context: ")[1].rstrip(")").split(", "))
    assert list(reach)[0] == "gguf"
    assert int(reach["gguf"].rstrip("K").replace(",", "")) > int(reach["bf16"].rstrip("K").replace(",", ""))


def test_a_checkpoint_folder_is_planned_with_its_config(checkpoint, tiny_config):
    folder = checkpoint("llama")
    config, packed = plan_inputs(folder)
    assert packed == {} and config.hidden_size == tiny_config("llama")["hidden_size"]
    line = choice_line("int8", 1 * GIB, source=str(folder))
    assert f"set to int8 for {folder.name}" in line and "gguf" not in line


def test_the_embedded_default_is_not_fetched_to_describe_it(tmp_path):
    assert plan_inputs("smollm2-135m", cache_dir=tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # nothing downloaded
    assert " for MiniCPM-SALA at " in choice_line("auto", 24 * GIB)


def test_the_gguf_reach_is_the_plan_s(smollm2_path):
    config, packed = plan_inputs(smollm2_path)
    expected = format_contexts(config, 2 * GIB, packed=packed)["gguf"]
    assert f"gguf {expected // 1024:,}K" in choice_line("auto", 2 * GIB, source=str(smollm2_path))
