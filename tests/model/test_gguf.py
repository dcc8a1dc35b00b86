"""GGUF: dequantisation against the gguf package's reference, llama.cpp's Q/K permutation, and damaged files."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from sala_report.model import ConfigError, ModelError, load_model
from sala_report.model.gguf import DEQUANT, _unpermute, open_gguf

Q = gguf.GGMLQuantizationType


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


@pytest.mark.parametrize("name", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_dequantize_matches_gguf_reference(name):
    qtype = Q[name]
    rng = np.random.default_rng(0)
    data = _random_blocks(qtype, 96, rng)
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    expected = gguf.quants.dequantize(data, qtype).reshape(-1)
    raw = torch.from_numpy(np.ascontiguousarray(data).view(np.uint8).reshape(-1).copy())
    got = DEQUANT[name](raw, 96 * block).reshape(-1)
    assert torch.allclose(got, torch.from_numpy(expected.astype(np.float32)), rtol=1e-6, atol=1e-7)


def test_unpermute_inverts_llama_cpp_permutation():
    w = torch.randn(6 * 16, 40)

    def permute(x, heads):  # convert_hf_to_gguf.py LlamaModel.permute
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    assert torch.equal(_unpermute(permute(w, 6), 6), w)
    assert not torch.equal(permute(w, 6), w)


def write_gguf(path, config: dict, state: dict, types: dict[str, Q] | None = None):
    """A llama-arch GGUF the way convert_hf_to_gguf.py writes it (permuted q/k rows, ggml names)."""
    types = types or {}
    H, Hkv, L = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), "llama")
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
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}  # fmt: skip
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip
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
        if qtype == Q.F32:
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
    types = {"blk.0.attn_q.weight": Q.Q4_0, "blk.0.ffn_up.weight": Q.Q4_1, "token_embd.weight": Q.Q8_0,
             "blk.1.attn_k.weight": Q.BF16, "blk.1.ffn_down.weight": Q.F16}  # fmt: skip
    write_gguf(tmp_path / "q.gguf", config, state, types)
    lm = load_model(tmp_path / "q.gguf", device="cpu")
    q = lm.model.layers[0].self_attn.q_proj.weight
    assert 0 < (q - state["model.layers.0.self_attn.q_proj.weight"]).abs().max() < 0.1  # 4-bit close, not equal
    embed = lm.model.embed_tokens.weight
    assert torch.allclose(embed, state["model.embed_tokens.weight"], atol=0.05)
    assert torch.allclose(lm.model.layers[1].mlp.down_proj.weight, state["model.layers.1.mlp.down_proj.weight"], atol=1e-3)


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
    # same file, but blk.1.ffn_gate stored as Q5_0 (22 bytes per 32 values), which we do not decode
    w = gguf.GGUFWriter(str(tmp_path / "q5.gguf"), "llama")
    src = open_gguf(tmp_path / "ok.gguf")
    for key, value in src.fields.items():
        if key.startswith("llama.") and isinstance(value, int):
            w.add_uint32(key, value)
        elif key.startswith("llama."):
            w.add_float32(key, value)
    for t in src.tensors:
        arr = torch.from_numpy(np.array(src.data[t.offset : t.offset + t.n_bytes])).view(torch.float32).numpy()
        if t.name == "blk.1.ffn_gate.weight":
            w.add_tensor(t.name, np.zeros((96, 44), np.uint8), raw_dtype=Q.Q5_0)
        else:
            w.add_tensor(t.name, arr.reshape(t.shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match=r"blk\.1\.ffn_gate\.weight \(Q5_0\)") as err:
        load_model(tmp_path / "q5.gguf", device="cpu")
    assert "Q4_K" in err.value.hint and err.value.title == "Unsupported quantization"


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
