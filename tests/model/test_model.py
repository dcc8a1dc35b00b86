"""The network against an independent float64 reference written from sala-model.md, and the inference state:
prefill followed by one-token steps equals one full forward, below, above and across `dense_len`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sala_report import kernels
from sala_report.model import ModelConfig, load_model


def _norm(x, w, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, pos, c: dict):
    """Rotate-half RoPE [T, H, D]; LongRoPE divides the frequencies by the short factors and scales cos/sin."""
    D = x.shape[-1]
    inv = 1.0 / c["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    mscale = 1.0
    rs = c.get("rope_scaling")
    if rs:
        inv = inv / torch.tensor(rs["short_factor"], dtype=torch.float64)
        orig = rs["original_max_position_embeddings"]
        mscale = math.sqrt(1 + math.log(c["max_position_embeddings"] / orig) / math.log(orig))
    ang = pos[:, None].double() * inv[None]
    cos, sin = torch.cat((ang.cos(), ang.cos()), -1) * mscale, torch.cat((ang.sin(), ang.sin()), -1) * mscale
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos[:, None] + torch.cat((-x2, x1), -1) * sin[:, None]


def reference_logits(sd: dict, c: dict, ids: torch.Tensor) -> torch.Tensor:
    """Float64, one sequence, dense attention, the lightning recurrence token by token (sala-model.md §1.2, §2, §3.1)."""
    sd = {k: v.double() for k, v in sd.items()}
    T, H, Hkv = len(ids), c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim") or c["hidden_size"] // H
    L, eps = c["num_hidden_layers"], c["rms_norm_eps"]
    minicpm = c["model_type"] != "llama"
    mixers = c.get("mixer_types", ["minicpm4"] * L)
    rs = c["scale_depth"] / math.sqrt(L) if minicpm else 1.0
    pos = torch.arange(T)
    x = sd["model.embed_tokens.weight"][ids] * (c["scale_emb"] if minicpm else 1)
    for i, kind in enumerate(mixers):
        p = f"model.layers.{i}."
        W = lambda n, p=p: sd[p + n + ".weight"]  # noqa: E731
        h = _norm(x, W("input_layernorm"), eps)
        q = (h @ W("self_attn.q_proj").T).view(T, H, D)
        if kind.startswith("lightning"):
            k = (h @ W("self_attn.k_proj").T).view(T, H, D)
            v = (h @ W("self_attn.v_proj").T).view(T, H, D)
            q, k = _norm(q, W("self_attn.q_norm"), eps), _norm(k, W("self_attn.k_norm"), eps)
            q, k = _rope(q, pos, c), _rope(k, pos, c)
            decay = torch.tensor([math.exp(-(2 ** (-8 * (j + 1) / H))) for j in range(H)], dtype=torch.float64)
            S, outs = torch.zeros(H, D, D, dtype=torch.float64), []
            for t in range(T):
                S = decay[:, None, None] * S + k[t][:, :, None] * v[t][:, None, :]
                outs.append(D**-0.5 * torch.einsum("hd,hde->he", q[t], S))
            o = _norm(torch.stack(outs).reshape(T, H * D), W("self_attn.o_norm"), eps)
            o = o * torch.sigmoid(h @ W("self_attn.z_proj").T)
        else:
            k = (h @ W("self_attn.k_proj").T).view(T, Hkv, D)
            v = (h @ W("self_attn.v_proj").T).view(T, Hkv, D)
            if c.get("attn_use_rope", True):
                q, k = _rope(q, pos, c), _rope(k, pos, c)
            k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
            scores = torch.einsum("thd,shd->hts", q, k) * D**-0.5
            scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
            o = torch.einsum("hts,shd->thd", scores.softmax(-1), v).reshape(T, H * D)
            if c.get("attn_use_output_gate"):
                o = o * torch.sigmoid(h @ W("self_attn.o_gate").T)
        x = x + rs * (o @ W("self_attn.o_proj").T)
        h = _norm(x, W("post_attention_layernorm"), eps)
        x = x + rs * ((F.silu(h @ W("mlp.gate_proj").T) * (h @ W("mlp.up_proj").T)) @ W("mlp.down_proj").T)
    x = _norm(x, sd["model.norm.weight"], eps)
    if minicpm:
        x = x / (c["hidden_size"] / c["dim_model_base"])
    head = sd["model.embed_tokens.weight"] if c.get("tie_word_embeddings") else sd["lm_head.weight"]
    return x @ head.T


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("kind", ["sala", "minicpm", "llama"])
def test_forward_matches_reference(kind, checkpoint, tiny_config):
    config = tiny_config(kind)
    folder = checkpoint(config)
    lm = load_model(folder, device="cpu", dtype=torch.float32)
    from safetensors.torch import load_file

    sd = load_file(str(folder / "model.safetensors"))
    ids = torch.randint(0, config["vocab_size"], (1, 150), generator=torch.Generator().manual_seed(1))
    logits = lm(ids)
    assert logits.dtype == torch.float32 and logits.shape == (1, 150, config["vocab_size"])
    assert _rel(logits[0], reference_logits(sd, config, ids[0])) < 1e-4


def test_tiny_llama_matches_transformers(checkpoint):
    transformers = pytest.importorskip("transformers")
    folder = checkpoint("llama")
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    lm = load_model(folder, device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _rel(lm(ids), hf(ids).logits) < 1e-5


def _steps(lm, ids, prefill: int, chunk: int = 1):
    cache = lm.new_cache(ids.shape[0], capacity=64)
    out = [lm(ids[:, :prefill], cache=cache)]
    for s in range(prefill, ids.shape[1], chunk):
        out.append(lm(ids[:, s : s + chunk], cache=cache))
    return torch.cat(out, dim=1), cache


@pytest.mark.parametrize(
    "kind, prefill, total",
    [
        ("sala", 300, 360),  # dense throughout
        ("sala", 1000, 1090),  # prefill dense, steps cross dense_len = 1024 into the sparse path
        ("sala", 1100, 1150),  # sparse throughout (the full forward is sparse for every query)
        ("minicpm", 1010, 1040),  # RoPE + LongRoPE + InfLLM-V2 across the switch
        ("llama", 20, 60),
    ],
)
def test_prefill_then_steps_equals_full_forward(kind, prefill, total, checkpoint):
    lm = load_model(checkpoint(kind), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (1, total), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full = lm(ids)
        stepped, cache = _steps(lm, ids, prefill)
    assert cache.length == total
    assert _rel(stepped, full) < 1e-4
    sc = lm.config.sparse_config
    if sc is not None and total >= sc.dense_len:
        # the K1/K2 kept up to date step by step equal one compression of the resident keys
        layer = cache.layers[0]
        keys = layer.k[:, :total]
        k1, k2 = layer.compress(total, total, kernels.compress_keys)  # nothing left to add: what the steps kept
        assert torch.allclose(k1, kernels.compress_keys(keys, kernel_size=32, stride=16), atol=1e-6)
        assert torch.allclose(k2, kernels.compress_keys(keys, kernel_size=128, stride=64), atol=1e-6)
        assert k1.shape[1] == (total - 32) // 16 + 1 and k2.shape[1] == (total - 128) // 64 + 1


def test_chunked_prefill_equals_full_forward(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (2, 1200), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        full = lm(ids)
        chunked, _ = _steps(lm, ids, prefill=1030, chunk=57)
    assert _rel(chunked, full) < 1e-4


def test_sparse_path_drops_blocks_above_dense_len(checkpoint, tiny_config):
    """Above dense_len each query attends to 16 of its blocks: far queries differ from dense attention,
    queries whose blocks all fit in the budget do not."""
    folder = checkpoint("sala")
    sparse = load_model(folder, device="cpu", dtype=torch.float32)
    cfg = ModelConfig.from_dict(tiny_config("sala")).with_sparse(dense_len=10**9)
    dense = load_model(folder, device="cpu", dtype=torch.float32, config=cfg)
    ids = torch.randint(0, 128, (1, 1400), generator=torch.Generator().manual_seed(5))
    outputs = []
    for lm in (sparse, dense):
        lm.model.layers[0].self_attn.register_forward_hook(lambda m, args, out: outputs.append(out))
        with torch.inference_mode():
            lm(ids)
    a, b = outputs
    assert _rel(a[:, :1024], b[:, :1024]) < 1e-5  # 16 blocks x 64 = 1024 keys: nothing dropped yet
    assert _rel(a[:, -100:], b[:, -100:]) > 1e-2


def test_batch_rows_are_independent(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (3, 80), generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        together = lm(ids)
        alone = torch.cat([lm(ids[i : i + 1]) for i in range(3)])
    assert _rel(together, alone) < 1e-5


def test_state_is_preallocated_and_grows_by_doubling(checkpoint):
    folder = checkpoint("sala")
    bf16 = load_model(folder, device="cpu", dtype=torch.bfloat16)
    cache = bf16.new_cache(1, capacity=64)
    softmax, lightning = cache.layers[0], cache.layers[1]
    assert lightning.state.dtype == torch.float32 and tuple(lightning.state.shape) == (1, 4, 16, 16)
    assert softmax.k.dtype == torch.bfloat16 and tuple(softmax.k.shape) == (1, 64, 2, 16)
    with torch.inference_mode():
        assert bf16(torch.tensor([[1, 2, 3]]), cache=cache).dtype == torch.float32
    assert lightning.state.dtype == torch.float32 and lightning.state.abs().sum() > 0

    lm = load_model(folder, device="cpu")
    cache = lm.new_cache(1, capacity=64)
    softmax, lightning = cache.layers[0], cache.layers[1]
    buffers, capacities = set(), []
    with torch.inference_mode():
        lm(torch.tensor([[1, 2, 3]]), cache=cache)
        for t in range(300):
            lm(torch.tensor([[t % 128]]), cache=cache)
            buffers.add(softmax.k.data_ptr())
            capacities.append(softmax.k.shape[1])
    assert sorted(set(capacities)) == [64, 128, 256, 512]  # three reallocations for 300 steps
    assert len(buffers) == 4 and cache.length == 303
    cache.reset()
    assert cache.length == 0 and lightning.state.abs().sum() == 0


def test_cache_batch_mismatch_is_an_error(checkpoint):
    lm = load_model(checkpoint("llama"), device="cpu")
    with pytest.raises(ValueError, match="batch size 2"):
        lm(torch.zeros(1, 4, dtype=torch.long), cache=lm.new_cache(2))
