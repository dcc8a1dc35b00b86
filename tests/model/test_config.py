"""ModelConfig from config.json: every key of the official SALA config, families, and errors that name the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sala_report.model import ConfigError, ModelConfig, SparseConfig
from sala_report.model.config import LIGHTNING, SOFTMAX
from sala_report.model.model import CausalLM

# the official MiniCPM-SALA config.json (sala-model.md §1.1)
SALA_CONFIG = Path(__file__).parents[1] / "data" / "model" / "minicpm-sala-config.json"


@pytest.fixture
def sala_dict():
    return json.loads(SALA_CONFIG.read_text())


def test_official_sala_config_reads_every_key(sala_dict):
    c = ModelConfig.from_dict(sala_dict)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (4096, 32, 32)
    assert (c.num_key_value_heads, c.head_dim) == (2, 128)
    assert (c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (16384, 73448, 524288)
    assert c.rope_theta == 10000.0 and c.rope_scaling is None and c.rms_norm_eps == 1e-6
    assert not c.tie_word_embeddings
    assert (c.scale_emb, c.scale_depth, c.dim_model_base, c.mup_denominator) == (12, 1.4, 256, 32)
    assert c.residual_scale == pytest.approx(1.4 / math.sqrt(32)) and c.logit_scale == 256 / 4096
    assert not c.attn_use_rope and c.attn_use_output_gate and c.lightning_use_rope
    assert c.qk_norm and c.use_output_gate and c.use_output_norm
    assert (c.lightning_nh, c.lightning_nkv, c.lightning_head_dim, c.lightning_scale) == (32, 32, 128, "1/sqrt(d)")
    assert c.lightning_query_scale == 128**-0.5
    assert c.sparse_config == SparseConfig(32, 16, 1, 64, 2048, 64, False, 8192)
    assert c.sparse_config.blocks_per_query == 96
    assert [i for i, m in enumerate(c.mixer_types) if m == SOFTMAX] == [0, 9, 16, 17, 22, 29, 30, 31]
    assert c.mixer_types.count(LIGHTNING) == 24
    assert (c.bos_token_id, c.eos_token_ids, c.pad_token_id) == (1, (2, 73440), 2)


def test_official_sala_config_has_9_477_203_968_parameters(sala_dict):
    with torch.device("meta"):
        lm = CausalLM(ModelConfig.from_dict(sala_dict))
    assert sum(p.numel() for p in lm.parameters()) == 9_477_203_968
    layer0, layer1 = lm.model.layers[0].self_attn, lm.model.layers[1].self_attn
    assert tuple(layer0.k_proj.weight.shape) == (256, 4096) and tuple(layer0.o_gate.weight.shape) == (4096, 4096)
    assert tuple(layer1.k_proj.weight.shape) == (4096, 4096) and tuple(layer1.q_norm.weight.shape) == (128,)
    assert tuple(layer1.o_norm.weight.shape) == (4096,) and tuple(layer1.z_proj.weight.shape) == (4096, 4096)


def test_mixer_type_aliases(tiny_config):
    d = tiny_config("sala")
    d["mixer_types"] = ["minicpm4", "lightning", "lightning_attn", "lightning-attn"]
    assert ModelConfig.from_dict(d).mixer_types == (SOFTMAX, LIGHTNING, LIGHTNING, LIGHTNING)


@pytest.mark.parametrize(
    "key",
    [
        "hidden_size",
        "mixer_types",
        "sparse_config",
        "scale_emb",
        "scale_depth",
        "dim_model_base",
        "attn_use_rope",
        "attn_use_output_gate",
        "lightning_use_rope",
        "qk_norm",
        "use_output_gate",
        "use_output_norm",
        "head_dim",
        "num_key_value_heads",
        "model_type",
        "vocab_size",
    ],
)
def test_missing_key_is_named(tiny_config, key):
    d = tiny_config("sala")
    del d[key]
    with pytest.raises(ConfigError, match=f"'{key}' is missing"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"hidden_size": "64"}, "'hidden_size' must be an integer"),
        ({"num_hidden_layers": 0}, "'num_hidden_layers' must be positive"),
        ({"mixer_types": ["minicpm4", "mamba", "lightning", "minicpm4"]}, r"'mixer_types\[1\]' is 'mamba'"),
        ({"mixer_types": ["minicpm4"]}, "'mixer_types' has 1 entries but num_hidden_layers is 4"),
        ({"qk_norm": "yes"}, "'qk_norm' must be true or false"),
        ({"num_key_value_heads": 3}, "'num_key_value_heads' .* must divide"),
        ({"model_type": "gpt2"}, "'model_type' is 'gpt2'"),
        ({"hidden_act": "gelu"}, "'hidden_act' is 'gelu'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "'rope_scaling.rope_type' is 'yarn'"),
        (
            {
                "sparse_config": {
                    "kernel_size": 32,
                    "kernel_stride": 16,
                    "init_blocks": 1,
                    "block_size": 64,
                    "window_size": 2048,
                    "topk": 64,
                    "use_nope": False,
                }
            },
            "'sparse_config.dense_len' is missing",
        ),
        (
            {
                "sparse_config": {
                    "kernel_size": 32,
                    "kernel_stride": 16,
                    "init_blocks": 1,
                    "block_size": 64,
                    "window_size": 100,
                    "topk": 64,
                    "dense_len": 8,
                }
            },
            "'sparse_config.window_size'",
        ),
    ],
)
def test_wrong_key_is_named(tiny_config, change, named):
    d = tiny_config("sala")
    d.update(change)
    with pytest.raises(ConfigError, match=named):
        ModelConfig.from_dict(d)


def test_minicpm_longrope_and_optional_sparse(tiny_config):
    d = tiny_config("minicpm")
    c = ModelConfig.from_dict(d)
    assert c.mixer_types == (SOFTMAX, SOFTMAX) and c.attn_use_rope and not c.attn_use_output_gate
    assert c.rope_scaling.rope_type == "longrope" and c.rope_scaling.original_max_position_embeddings == 2048
    assert c.rope_scaling.short_factor[1] == pytest.approx(1.1) and c.head_dim == 16
    del d["sparse_config"]
    assert ModelConfig.from_dict(d).sparse_config is None
    d["rope_scaling"]["long_factor"] = [1.0]
    with pytest.raises(ConfigError, match="'rope_scaling.long_factor' has 1 entries"):
        ModelConfig.from_dict(d)
    d["rope_scaling"]["short_factor"] = d["rope_scaling"]["long_factor"] = [1.0] * 4
    with pytest.raises(ConfigError, match="'rope_scaling.short_factor' has 4 entries, expected head_dim / 2 = 8"):
        ModelConfig.from_dict(d)


def test_llama_defaults_are_no_ops(tiny_config):
    c = ModelConfig.from_dict(tiny_config("llama"))
    assert c.residual_scale == 1.0 and c.logit_scale == 1.0 and c.scale_emb == 1.0
    assert c.tie_word_embeddings and c.rope_theta == 1e5 and c.sparse_config is None


def test_to_dict_round_trips(tiny_config):
    for kind in ("sala", "minicpm", "llama"):
        c = ModelConfig.from_dict(tiny_config(kind))
        assert ModelConfig.from_dict(c.to_dict()) == c


def test_from_json_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_json(tmp_path / "config.json")
