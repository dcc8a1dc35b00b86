"""GGUF weights kept in their own blocks (quantize="gguf"): the real SmolLM2 Q4_1 file loads packed with the same
values as gguf's dequantize and the same logits as the fp32 load; stacks of mixed types are made uniform or
dequantised; the memory plan counts the file's own bytes."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from test_gguf import write_gguf
from torch import nn

from sala_report.kernels.quant import naive
from sala_report.model import load_model, quant
from sala_report.model.config import ModelConfig
from sala_report.model.gguf import checkpoint_name, open_gguf, packed_layers
from sala_report.model.load import _meta_model
from sala_report.model.plan import GiB, choose_format, weight_bytes
from sala_report.model.runtime import fuse_projections

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def smollm2_packed(smollm2_path):
    return load_model(smollm2_path, device="cpu", dtype=torch.float32, quantize="gguf")


def test_smollm2_loads_in_its_own_blocks(smollm2_packed, smollm2):
    lm = smollm2_packed
    assert lm.quantize == "gguf"
    kinds = {(m.fmt, m.group, m.zeros is not None) for _, m in lm.named_modules() if isinstance(m, quant.QuantLinear)}
    assert kinds == {("int4", 32, True), ("int8", 32, False)}  # Q4_1 body, Q8_0 head (the tied embedding's blocks)
    assert lm.lm_head.fmt == "int8" and isinstance(lm.model.embed_tokens, nn.Embedding)
    # every packed linear holds the values the fp32 load got from gguf.quants, q/k rows un-permuted alike
    for name, _ in quant.target_linears(lm):
        w = naive.dequantize(lm.get_submodule(name).packed)
        assert torch.equal(w, smollm2.get_submodule(name).weight), name


def test_smollm2_packed_logits_equal_the_fp32_load(smollm2_packed, smollm2):
    ids = torch.randint(0, 49152, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = smollm2_packed(ids), smollm2(ids)
    assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_packed_bytes_are_the_files_own(smollm2_path):
    """The plan counts a packed linear at exactly its GGUF tensor's bytes (Q4_1: 20 bytes per 32 weights, Q8_0:
    34), the head once more as a copy of the embedding's blocks, and the embedding and norms in the dtype."""
    reader = open_gguf(smollm2_path)
    config = ModelConfig.from_dict(smollm2_config(reader))
    lm = _meta_model(config)
    packed = packed_layers(reader, lm)
    assert len(packed) == 30 * 7 + 1 and packed["lm_head"] == ("int8", 32, False)
    sizes = {checkpoint_name(t.name): t for t in reader.tensors}
    linear_bytes = sum(sizes[f"{n}.weight"].n_bytes for n in packed if n != "lm_head")
    embed = sizes["model.embed_tokens.weight"]
    norms = sum(np.prod(t.shape) for n, t in sizes.items() if n.endswith("norm.weight"))
    total, _ = weight_bytes(config, torch.bfloat16, "gguf", packed)
    assert total == linear_bytes + embed.n_bytes + (np.prod(embed.shape) + norms) * 2
    assert choose_format(config, 8 * GiB, 8192, packed=packed) == "gguf"
    assert choose_format(config, 8 * GiB, 8192) is None  # without packed blocks: bf16 fits


def smollm2_config(reader) -> dict:
    from sala_report.model.gguf import config_from_gguf

    return config_from_gguf(reader, reader.path).to_dict()


def test_mixed_stacks_become_uniform_or_dequantised(tmp_path, tiny_config, make_state):
    """q in Q4_0 beside k, v in Q4_1: one stack, so q gets zero points (the same values); gate in Q8_0 beside up
    in Q4_1 cannot share a launch, so both are dequantised; Q5_0 (no packed form) is dequantised."""
    config = tiny_config("llama")
    state = make_state(config, seed=4)
    types = {
        "blk.0.attn_q.weight": Q.Q4_0,
        "blk.0.attn_k.weight": Q.Q4_1,
        "blk.0.attn_v.weight": Q.Q4_1,
        "blk.0.ffn_gate.weight": Q.Q8_0,
        "blk.0.ffn_up.weight": Q.Q4_1,
        "blk.0.ffn_down.weight": Q.Q5_0,
        "blk.1.attn_output.weight": Q.Q8_0,
        "token_embd.weight": Q.Q8_0,
    }
    write_gguf(tmp_path / "mixed.gguf", config, state, types)
    ref = load_model(tmp_path / "mixed.gguf", device="cpu")
    lm = load_model(tmp_path / "mixed.gguf", device="cpu", quantize="gguf")
    attn, mlp = lm.model.layers[0].self_attn, lm.model.layers[0].mlp
    assert {(m.fmt, m.group, m.zeros is not None) for m in (attn.q_proj, attn.k_proj, attn.v_proj)} == {
        ("int4", 32, True)
    }
    assert all(isinstance(m, nn.Linear) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    assert lm.model.layers[1].self_attn.o_proj.fmt == "int8" and lm.lm_head.fmt == "int8"
    assert isinstance(lm.model.layers[1].self_attn.q_proj, nn.Linear)  # F32 in the file: stays as it is
    assert torch.equal(naive.dequantize(attn.q_proj.packed), ref.model.layers[0].self_attn.q_proj.weight)
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = ref(ids)
        assert torch.allclose(lm(ids), expected, atol=1e-5)
        fuse_projections(lm)  # the runtime's stacking works on the uniform stack and leaves the logits alone
        assert attn.fused is not None and torch.allclose(lm(ids), expected, atol=1e-5)


def test_gguf_choice_on_other_sources_and_auto_on_cpu(checkpoint, smollm2_path):
    with pytest.raises(ValueError, match="expected a .gguf source"):
        load_model(checkpoint("llama"), device="cpu", quantize="gguf")
    lm = load_model(smollm2_path, device="cpu", quantize="auto")  # no GPU to fit: the dequantised weights
    assert lm.quantize is None and isinstance(lm.model.layers[0].mlp.up_proj, nn.Linear)
