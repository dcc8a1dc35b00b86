"""The memory plan of a model loaded with quantize="gguf" (the runtime's plan) counts its packed linears at the
bytes they hold: the file's own tensor sizes, read here with the gguf package's reader, not at the dtype's size;
the reach per format before loading includes the GGUF's own blocks."""

from __future__ import annotations

import gguf
import pytest
import torch
from test_gguf import write_gguf

from sala_report.model import load_model
from sala_report.model.gguf import open_gguf, packed_layers
from sala_report.model.load import _meta_model
from sala_report.model.plan import GiB, format_contexts, loaded_plan, plan_memory

Q = gguf.GGMLQuantizationType
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def smollm2_gguf_lm(smollm2_path):
    return load_model(smollm2_path, device="cpu", dtype=torch.float32, quantize="gguf")


@pytest.fixture(scope="module")
def smollm2_tensors(smollm2_path):
    """The SmolLM2 GGUF's tensors as the gguf package reads them (its own parser, not model/gguf.py's)."""
    return {t.name: t for t in gguf.GGUFReader(smollm2_path).tensors}


def _held_bytes(lm) -> int:
    return sum(p.numel() * p.element_size() for p in lm.parameters())


def _file_bytes(tensors, esize: int) -> int:
    """SmolLM2 as loaded with its own blocks, from the gguf package's reader: every linear (all Q4_1) at its
    GGUF bytes, the embedding and norms in a dtype of `esize` bytes, and the tied head as a copy of the
    embedding's Q8_0 blocks."""
    linears = [t for name, t in tensors.items() if name.split(".")[-2] in LINEARS]
    assert len(linears) == 30 * 7 and {t.tensor_type for t in linears} == {Q.Q4_1}
    embed = tensors["token_embd.weight"]
    assert embed.tensor_type == Q.Q8_0 and "output.weight" not in tensors  # tied
    rest = sum(int(t.n_elements) * esize for t in tensors.values() if t.name.split(".")[-2] not in LINEARS)
    return sum(int(t.n_bytes) for t in linears) + int(embed.n_bytes) + rest


def test_the_runtime_plan_counts_the_files_packed_bytes(smollm2_tensors, smollm2_gguf_lm):
    expected = _file_bytes(smollm2_tensors, 4)  # loaded in fp32
    plan = loaded_plan(smollm2_gguf_lm, 1, 2048, 64, None)
    assert plan.weights == expected == _held_bytes(smollm2_gguf_lm)
    assert plan.weights_loaded and plan.quantize == "gguf"
    assert f"with gguf weights needs {plan.total / GiB:.1f} GiB (weights {expected / GiB:.1f} GiB (loaded)" in (
        plan.describe()
    )


def test_mixed_blocks_count_what_is_held(tmp_path, tiny_config, make_state):
    """Q4_0 beside Q4_1 in one stack gains zero points (20 bytes a block instead of the file's 18); a stack that
    mixes Q8_0 with Q4_1 is dequantised and counts in the dtype: the plan follows what the model holds."""
    config = tiny_config("llama")
    types = {
        "blk.0.attn_q.weight": Q.Q4_0,
        "blk.0.attn_k.weight": Q.Q4_1,
        "blk.0.attn_v.weight": Q.Q4_1,
        "blk.0.ffn_gate.weight": Q.Q8_0,
        "blk.0.ffn_up.weight": Q.Q4_1,
        "blk.1.attn_output.weight": Q.Q8_0,
        "token_embd.weight": Q.Q8_0,
    }
    path = tmp_path / "mixed.gguf"
    write_gguf(path, config, make_state(config, seed=3), types)
    lm = load_model(path, device="cpu", dtype=torch.float32, quantize="gguf")
    q = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.attn_q.weight")
    assert _held_bytes(lm.model.layers[0].self_attn.q_proj) == int(q.n_bytes) // 18 * 20
    assert loaded_plan(lm, 1, 256, 16, None).weights == _held_bytes(lm)


def test_the_reach_before_loading_includes_the_gguf_blocks(smollm2_path, smollm2_tensors, smollm2_gguf_lm):
    """With 2 GiB free the GGUF's own blocks reach further than bf16 by exactly the bytes they save, spent on
    state at the plan's per-token rate."""
    config = smollm2_gguf_lm.config
    packed = packed_layers(open_gguf(smollm2_path), _meta_model(config))
    reach = format_contexts(config, 2 * GiB, packed=packed)
    assert list(reach) == ["gguf", None, "int8", "int4"]
    saved = sum(p.numel() for p in _meta_model(config).parameters()) * 2 - _file_bytes(smollm2_tensors, 2)
    scratch = 2 * config.intermediate_size * config.hidden_size * 2  # gate and up dequantised together, bf16
    per_token = plan_memory(config, 1, 1, 0).per_token
    assert 0 <= reach["gguf"] - reach[None] - (saved - scratch) // per_token <= 1
