"""Loading safetensors checkpoints: single vs sharded, dtype/device, and one clear error per kind of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sala_report.model import ModelError, load_model


@pytest.mark.parametrize("kind", ["sala", "minicpm", "llama"])
def test_sharded_and_single_file_give_identical_logits(kind, checkpoint):
    single = load_model(checkpoint(kind, seed=7), device="cpu")
    sharded_folder = checkpoint(kind, shards=3, seed=7)
    assert len(list(sharded_folder.glob("model-0000?-of-00003.safetensors"))) == 3
    sharded = load_model(sharded_folder, device="cpu")
    ids = torch.randint(0, 128, (1, 50), generator=torch.Generator().manual_seed(0))
    assert torch.equal(single(ids), sharded(ids))


def test_loads_into_target_dtype_and_ties_embeddings(checkpoint):
    lm = load_model(checkpoint("llama"), device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert not any(p.requires_grad for p in lm.parameters()) and not lm.training
    assert lm(torch.tensor([[1, 2, 3]])).dtype == torch.float32


def test_config_path_resolves_to_its_folder(checkpoint):
    folder = checkpoint("llama")
    assert load_model(folder / "config.json", device="cpu").config.vocab_size == 128


def test_every_mismatch_is_listed_in_one_error(checkpoint, tiny_config):
    folder = checkpoint("sala")
    path = folder / "model.safetensors"
    state = load_file(str(path))
    del state["model.layers.1.self_attn.z_proj.weight"]
    del state["model.layers.3.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(16)  # softmax layers have no q_norm
    state["model.layers.2.self_attn.k_proj.weight"] = torch.zeros(32, 64)
    save_file(state, str(path))
    with pytest.raises(ModelError) as err:
        load_model(folder, device="cpu")
    text = str(err.value)
    assert "missing: model.layers.1.self_attn.z_proj.weight [64, 64]" in text
    assert "missing: model.layers.3.mlp.up_proj.weight [96, 64]" in text
    assert "unexpected: model.layers.0.self_attn.q_norm.weight [16]" in text
    assert "wrong shape: model.layers.2.self_attn.k_proj.weight is [32, 64], config says [64, 64]" in text


def test_config_disagreeing_with_weights(checkpoint, tiny_config):
    folder = checkpoint("sala")
    config = tiny_config("sala")
    config["intermediate_size"] = 128
    config["mixer_types"] = ["minicpm4", "minicpm4", "lightning-attn", "minicpm4"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not match its config") as err:
        load_model(folder, device="cpu")
    text = str(err.value)
    assert "wrong shape: model.layers.0.mlp.gate_proj.weight is [96, 64], config says [128, 64]" in text
    assert "missing: model.layers.1.self_attn.o_gate.weight" in text
    assert "unexpected: model.layers.1.self_attn.z_proj.weight" in text


def test_truncated_safetensors(checkpoint):
    folder = checkpoint("llama")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a readable safetensors file.*") as err:
        load_model(folder, device="cpu")
    assert "truncated" in err.value.hint


def test_truncated_header(checkpoint):
    folder = checkpoint("llama")
    (folder / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_model(folder, device="cpu")


def test_missing_shard_is_named(checkpoint):
    folder = checkpoint("llama", shards=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="model-00002-of-00002.safetensors"):
        load_model(folder, device="cpu")


def test_folder_without_weights(checkpoint):
    folder = checkpoint("llama")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no safetensors weights"):
        load_model(folder, device="cpu")


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="no model at") as err:
        load_model(tmp_path / "does-not-exist", device="cpu")
    assert err.value.title == "Model not found"
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(tmp_path, device="cpu")
