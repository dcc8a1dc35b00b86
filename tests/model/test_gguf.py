"""GGUF: dequantisation (gguf.quants vs the old torch decoders, quantize round trips, a hand-packed
Q5_K block), llama.cpp's Q/K permutation, MiniCPM's muP scalars, and damaged files."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest
import torch

from sala_report.model import ConfigError, ModelError, load_model
from sala_report.model.gguf import _unpermute, config_from_gguf, dequantize, open_gguf, supported_types
from sala_report.model.gguf_bench import TORCH_DECODERS

Q = gguf.GGMLQuantizationType
OLD_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]


def _random_blocks(qtype: Q, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Valid bytes of `n_blocks` blocks: quantized floats where gguf can quantize, else random bytes
    with small float16 scales at the positions ggml keeps them."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if qtype in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1):
        x = rng.standard_normal((n_blocks, block)).astype(np.float32)
        return x if qtype == Q.F32 else gguf.quants.quantize(x, qtype)
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scale_at = {Q.Q4_K: [0, 2], Q.Q6_K: [208]}[qtype]
    for at in scale_at:
        raw[:, at : at + 2] = rng.uniform(0.001, 0.1, n_blocks).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    return raw


def _flat(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data).view(np.uint8).reshape(-1)


@pytest.mark.parametrize("name", OLD_TYPES)
def test_dequantize_equals_the_old_torch_decoders(name):
    """The 8 types the hand-written decoders covered give bit-identical values through gguf.quants."""
    qtype = Q[name]
    rng = np.random.default_rng(0)
    data = _flat(_random_blocks(qtype, 96, rng))
    n = 96 * gguf.GGML_QUANT_SIZES[qtype][0]
    old = TORCH_DECODERS[name](torch.from_numpy(data.copy()), n).reshape(-1)
    assert torch.equal(dequantize(data, name, n), old)


@pytest.mark.parametrize("name", ["Q5_0", "Q5_1", "Q8_0", "Q4_0", "BF16", "MXFP4", "TQ1_0", "TQ2_0"])
def test_dequantize_round_trips_gguf_quantize(name):
    """Values quantized by gguf's own quantizer come back within that format's rounding step; inputs on
    the format's grid (ternary for TQ, FP4 values for MXFP4) come back exactly."""
    qtype = Q[name]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    rng = np.random.default_rng(1)
    if name.startswith("TQ"):
        x = rng.integers(-1, 2, (64, block)).astype(np.float32) * 0.5
    elif name == "MXFP4":
        x = rng.choice([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.5, -1, -3, -6], (64, block)).astype(np.float32)
    else:
        x = rng.standard_normal((64, block)).astype(np.float32)
    y = dequantize(_flat(gguf.quants.quantize(x, qtype)), name, x.size).reshape(x.shape).numpy()
    levels = {"Q5_0": 15, "Q5_1": 15, "Q8_0": 127, "Q4_0": 7, "BF16": 128}.get(name)
    if levels is None:
        assert np.array_equal(y, x)
    else:  # within one step (block max / levels; the far end of a signed range is clamped) and float16 scales
        step = np.abs(x).max(axis=1, keepdims=True) / levels
        assert (np.abs(y - x) <= step + 1e-3 * np.abs(x)).all()
        assert np.abs(y - x).mean() < np.abs(x).mean() / levels


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # random bytes hold NaN and inf scales
def test_every_gguf_type_decodes_like_the_library_in_runs():
    """Types with no numpy quantizer (K and I quants): our run-by-run, threaded decode equals the library's
    whole-tensor one, on a tensor longer than one run."""
    rng = np.random.default_rng(2)
    for name in supported_types():
        qtype = Q[name]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = (1 << 20) // block + 3 if name in ("Q5_K", "Q8_0") else 8
        raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
        raw[:, :2] = np.array([0.01], np.float16).view(np.uint8)  # finite scales where most formats keep d
        with np.errstate(all="ignore"):
            expected = gguf.quants.dequantize(raw, qtype).reshape(-1)
            got = dequantize(raw.reshape(-1), name, n_blocks * block).numpy()
        assert np.array_equal(got, expected, equal_nan=True), name
    assert {"Q5_K", "Q3_K", "Q2_K", "IQ4_XS", "Q5_0"} <= set(supported_types())


def pack_q5_k(
    d: float, dmin: float, scales: np.ndarray, mins: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One Q5_K block (ggml block_q5_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 32 bytes of high
    bits, 128 bytes of low nibbles) from 8 scales, 8 mins (0..63) and 256 values q (0..31), with the
    values it stands for: d * scale[j] * q - dmin * min[j] for the 32 values of group j."""
    sc = np.zeros(12, np.uint8)
    sc[0:4] = scales[0:4] | ((scales[4:8] >> 4) << 6)
    sc[4:8] = mins[0:4] | ((mins[4:8] >> 4) << 6)
    sc[8:12] = (scales[4:8] & 0xF) | ((mins[4:8] & 0xF) << 4)
    groups = q.reshape(8, 32)
    low = np.zeros((4, 32), np.uint8)
    high = np.zeros(32, np.uint8)
    for j in range(4):  # each 32-byte run of nibbles holds group 2j (low nibble) and 2j+1 (high nibble)
        low[j] = (groups[2 * j] & 0xF) | ((groups[2 * j + 1] & 0xF) << 4)
        high |= ((groups[2 * j] >> 4) << (2 * j)) | ((groups[2 * j + 1] >> 4) << (2 * j + 1))
    head = np.array([d, dmin], np.float16).view(np.uint8)
    block = np.concatenate([head, sc, high, low.reshape(-1)]).astype(np.uint8)
    d16, dmin16 = np.array([d, dmin], np.float16).astype(np.float32)
    values = d16 * scales[:, None] * groups - dmin16 * mins[:, None]
    return block, values.reshape(-1).astype(np.float32)


def _q5_k_tensor(rows: int, cols: int, rng) -> tuple[np.ndarray, np.ndarray]:
    blocks, values = [], []
    for _ in range(rows * cols // 256):
        d, dmin = rng.uniform(0.001, 0.01, 2)
        scales, mins = rng.integers(0, 64, (2, 8)).astype(np.uint8)
        block, v = pack_q5_k(float(d), float(dmin), scales, mins, rng.integers(0, 32, 256).astype(np.uint8))
        blocks.append(block)
        values.append(v)
    return np.stack(blocks).reshape(rows, -1), np.concatenate(values).reshape(rows, cols)


def test_hand_packed_q5_k_block():
    rng = np.random.default_rng(3)
    raw, values = _q5_k_tensor(1, 256, rng)
    assert raw.shape == (1, 176)
    assert torch.equal(dequantize(raw.reshape(-1), "Q5_K", 256), torch.from_numpy(values.reshape(-1)))


def test_unpermute_inverts_llama_cpp_permutation():
    w = torch.randn(6 * 16, 40)

    def permute(x, heads):  # convert_hf_to_gguf.py LlamaModel.permute
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    assert torch.equal(_unpermute(permute(w, 6), 6), w)
    assert not torch.equal(permute(w, 6), w)


def write_gguf(path, config: dict, state: dict, types: dict[str, Q] | None = None, raw: dict[str, tuple] | None = None):
    """A llama- or minicpm-arch GGUF the way convert_hf_to_gguf.py writes it (permuted q/k rows, ggml
    names, MiniCPM's muP scalars combined); `raw` maps ggml names to (bytes, type) written as given."""
    types, raw = types or {}, raw or {}
    H, Hkv, L = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    arch = "minicpm" if config["model_type"] == "minicpm" else "llama"
    w = gguf.GGUFWriter(str(path), arch)
    if arch == "minicpm":  # convert_hf_to_gguf.py MiniCPMModel: set_gguf_parameters, generate_extra_tensors
        w.add_embedding_scale(config["scale_emb"])
        w.add_residual_scale(config["scale_depth"] / math.sqrt(L))
        w.add_logit_scale(config["hidden_size"] / config["dim_model_base"])
        if config.get("rope_scaling"):
            for which in ("long", "short"):
                w.add_tensor(
                    f"rope_factors_{which}.weight", np.array(config["rope_scaling"][f"{which}_factor"], np.float32)
                )
    w.add_block_count(L)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(H)
    w.add_head_count_kv(Hkv)
    w.add_rope_freq_base(config["rope_theta"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_dimension_count(config["hidden_size"] // H)
    w.add_vocab_size(config["vocab_size"])
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, t in state.items():
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers.") :].split(".", 1)
            gname = f"blk.{i}.{layer[rest.rsplit('.', 1)[0]]}.weight"
        else:
            gname = names[name]
        x = t.float().numpy()
        if gname.endswith("attn_q.weight") or gname.endswith("attn_k.weight"):
            heads = H if "attn_q" in gname else Hkv
            x = x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
        qtype = types.get(gname, Q.F32)
        if gname in raw:
            w.add_tensor(gname, raw[gname][0], raw_dtype=raw[gname][1])
        elif qtype == Q.F32:
            w.add_tensor(gname, np.ascontiguousarray(x))
        else:
            w.add_tensor(gname, gguf.quants.quantize(np.ascontiguousarray(x), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_llama_equals_safetensors_checkpoint(tmp_path, checkpoint, tiny_config, make_state):
    config = tiny_config("llama")
    folder = checkpoint(config, seed=3)
    write_gguf(tmp_path / "tiny.gguf", config, make_state(config, seed=3))
    a = load_model(folder, device="cpu")
    b = load_model(tmp_path / "tiny.gguf", device="cpu")
    assert b.config.tie_word_embeddings and b.config.num_key_value_heads == 2 and b.config.rope_theta == 1e5
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a(ids), b(ids), atol=1e-5)


def test_quantized_gguf_loads_the_dequantized_values(tmp_path, tiny_config, make_state):
    config = tiny_config("llama")
    state = make_state(config, seed=4)
    types = {
        "blk.0.attn_q.weight": Q.Q4_0,
        "blk.0.ffn_up.weight": Q.Q4_1,
        "token_embd.weight": Q.Q8_0,
        "blk.1.attn_k.weight": Q.BF16,
        "blk.1.ffn_down.weight": Q.F16,
    }
    write_gguf(tmp_path / "q.gguf", config, state, types)
    lm = load_model(tmp_path / "q.gguf", device="cpu")
    q = lm.model.layers[0].self_attn.q_proj.weight
    assert 0 < (q - state["model.layers.0.self_attn.q_proj.weight"]).abs().max() < 0.1  # 4-bit close, not equal
    embed = lm.model.embed_tokens.weight
    assert torch.allclose(embed, state["model.embed_tokens.weight"], atol=0.05)
    assert torch.allclose(
        lm.model.layers[1].mlp.down_proj.weight, state["model.layers.1.mlp.down_proj.weight"], atol=1e-3
    )


def test_q5_k_gguf_loads(tmp_path, tiny_config, make_state):
    """Q5_K (the tensors of a Q5_K_M file) was refused; now it loads, with the values the blocks stand for."""
    config = tiny_config("llama")
    config["hidden_size"], config["intermediate_size"] = 256, 512  # Q5_K rows hold whole 256-value blocks
    config["head_dim"] = 64
    rng = np.random.default_rng(5)
    gate, gate_values = _q5_k_tensor(512, 256, rng)
    embed, embed_values = _q5_k_tensor(128, 256, rng)
    raw = {"blk.1.ffn_gate.weight": (gate, Q.Q5_K), "token_embd.weight": (embed, Q.Q5_K)}
    write_gguf(tmp_path / "q5k.gguf", config, make_state(config), raw=raw)
    assert {t.name: t.type_name for t in open_gguf(tmp_path / "q5k.gguf").tensors}["blk.1.ffn_gate.weight"] == "Q5_K"
    lm = load_model(tmp_path / "q5k.gguf", device="cpu")
    assert torch.equal(lm.model.layers[1].mlp.gate_proj.weight, torch.from_numpy(gate_values))
    assert torch.equal(lm.model.embed_tokens.weight, torch.from_numpy(embed_values))
    assert torch.isfinite(lm(torch.tensor([[1, 5, 9]]))).all()


def test_minicpm_gguf_logit_scale(tmp_path, checkpoint, tiny_config, make_state):
    """llama.cpp stores logit_scale = hidden_size / dim_model_base (4 here: 64 / 16); MiniCPM's logits
    are lm_head(h / 4). The GGUF gives the same dim_model_base and the same logits as the HF folder;
    its LongRoPE factors come from llama.cpp's rope_factors tensors."""
    config = tiny_config("minicpm")
    # as MiniCPM4.1's config.json: the LongRoPE training context is the whole context, so the short factors apply
    config["rope_scaling"]["original_max_position_embeddings"] = config["max_position_embeddings"]
    folder = checkpoint(config, seed=6)
    write_gguf(tmp_path / "minicpm.gguf", config, make_state(config, seed=6))
    assert open_gguf(tmp_path / "minicpm.gguf").fields["minicpm.logit_scale"] == 4.0
    from_gguf = config_from_gguf(open_gguf(tmp_path / "minicpm.gguf"), tmp_path / "minicpm.gguf")
    assert from_gguf.dim_model_base == 16 and from_gguf.logit_scale == 0.25
    assert from_gguf.scale_emb == 12 and from_gguf.scale_depth == pytest.approx(1.4)
    assert from_gguf.rope_scaling.short_factor == pytest.approx(config["rope_scaling"]["short_factor"])
    a = load_model(folder, device="cpu")
    b = load_model(tmp_path / "minicpm.gguf", device="cpu")
    assert a.config.dim_model_base == b.config.dim_model_base
    ids = torch.randint(0, 128, (1, 24), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a(ids), b(ids), atol=1e-5)


def test_truncated_gguf(tmp_path, tiny_config, make_state):
    config = tiny_config("llama")
    write_gguf(tmp_path / "t.gguf", config, make_state(config))
    data = (tmp_path / "t.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelError, match="truncated: its tensors need"):
        load_model(tmp_path / "cut.gguf", device="cpu")
    (tmp_path / "head.gguf").write_bytes(data[:300])
    with pytest.raises(ModelError, match="header is cut short") as err:
        load_model(tmp_path / "head.gguf", device="cpu")
    assert "interrupted download" in err.value.hint
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_model(tmp_path / "junk.gguf", device="cpu")


def test_unknown_quantization_type_is_named(tmp_path, tiny_config, make_state):
    config = tiny_config("llama")
    state = make_state(config)
    write_gguf(tmp_path / "ok.gguf", config, state)
    # same file, but blk.1.ffn_gate stored as I32, a ggml type gguf.quants does not decode
    w = gguf.GGUFWriter(str(tmp_path / "i32.gguf"), "llama")
    src = open_gguf(tmp_path / "ok.gguf")
    for key, value in src.fields.items():
        if key.startswith("llama.") and isinstance(value, int):
            w.add_uint32(key, value)
        elif key.startswith("llama."):
            w.add_float32(key, value)
    for t in src.tensors:
        arr = torch.from_numpy(np.array(src.data[t.offset : t.offset + t.n_bytes])).view(torch.float32).numpy()
        if t.name == "blk.1.ffn_gate.weight":
            w.add_tensor(t.name, np.zeros((96, 64), np.int32))
        else:
            w.add_tensor(t.name, arr.reshape(t.shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match=r"blk\.1\.ffn_gate\.weight \(I32\)") as err:
        load_model(tmp_path / "i32.gguf", device="cpu")
    assert "Q5_K" in err.value.hint and "IQ4_XS" in err.value.hint and err.value.title == "Unsupported quantization"


def test_gguf_missing_metadata_is_named(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_embedding_length(64)
    w.add_tensor("output_norm.weight", np.ones(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match="'llama.attention.head_count' is missing"):
        load_model(tmp_path / "m.gguf", device="cpu")
