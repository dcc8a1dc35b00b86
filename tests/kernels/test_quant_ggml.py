"""GGUF blocks kept packed (kernels/quant/ggml.py) against the `gguf` package's own dequantize, bit for bit, and the
Triton matmuls over them (TRITON_INTERPRET=1 on a CPU) against fp64 products of gguf-dequantised weights.

Real blocks come from tests/data/model/smollm2-blocks.npz: the first rows of three tensors of the SmolLM2-135M
Q4_1 GGUF (blk.0.attn_q and blk.3.ffn_down in Q4_1, token_embd in Q8_0), keys "name|type|row length".
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from sala_report.kernels import quant
from sala_report.kernels.quant import ggml, naive

pytest.importorskip("triton")

Q = gguf.GGMLQuantizationType
BLOCKS = Path(__file__).parents[1] / "data" / "model" / "smollm2-blocks.npz"


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _real() -> list[tuple[str, str, np.ndarray, tuple[int, int]]]:
    out = []
    with np.load(BLOCKS) as z:
        for key in z.files:
            name, type_name, k = key.split("|")
            K = int(k)
            block, size = gguf.GGML_QUANT_SIZES[Q[type_name]]
            raw = z[key]
            out.append((name, type_name, raw, (raw.size // (K // block * size), K)))
    return out


def _synthetic(type_name: str, N: int, K: int, seed: int) -> np.ndarray:
    """Bytes of an [N, K] tensor: gguf's own quantizer on weights whose rows differ in scale (one row all zeros,
    one constant); Q4_K, which gguf cannot quantize, from random bytes with small fp16 d and dmin."""
    rng = np.random.default_rng(seed)
    if type_name == "Q4_K":
        raw = rng.integers(0, 256, (N, K // 256, 144), dtype=np.uint8)
        for at in (0, 2):
            d = rng.uniform(1e-4, 3e-3, (N, K // 256)).astype(np.float16)
            raw[:, :, at : at + 2] = d.view(np.uint8).reshape(N, K // 256, 2)
        return raw.reshape(-1)
    x = rng.standard_normal((N, K)).astype(np.float32) * np.geomspace(1e-3, 10, N, dtype=np.float32)[:, None]
    x[0] = 0
    x[1] = 0.5
    return np.ascontiguousarray(gguf.quants.quantize(x, Q[type_name])).view(np.uint8).reshape(-1)


def _reference(raw: np.ndarray, type_name: str, shape) -> torch.Tensor:
    """gguf's dequantize: the independent reference (fp32 numpy)."""
    rows = raw.reshape(shape[0], -1)
    return torch.from_numpy(gguf.quants.dequantize(rows, Q[type_name]).reshape(shape).copy())


def _packed(raw: np.ndarray, type_name: str, shape) -> naive.PackedWeight:
    return ggml.from_ggml(torch.from_numpy(raw.copy()), type_name, shape)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("name,type_name,raw,shape", _real(), ids=lambda v: v if isinstance(v, str) else "")
def test_real_smollm2_blocks_are_exact(name, type_name, raw, shape):
    p = _packed(raw, type_name, shape)
    assert (p.fmt, p.group) == {"Q4_1": ("int4", 32), "Q8_0": ("int8", 32)}[type_name]
    assert p.nbytes == raw.size  # the same bytes, rearranged into codes and scales: nothing expanded
    assert _same_bits(naive.dequantize(p), _reference(raw, type_name, shape))


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0"])
def test_synthetic_blocks_are_exact(type_name):
    raw = _synthetic(type_name, 12, 256, seed=1)
    p = _packed(raw, type_name, (12, 256))
    assert (p.zero is not None) == (type_name == "Q4_1")
    assert _same_bits(naive.dequantize(p), _reference(raw, type_name, (12, 256)))


def test_q4_0_with_zero_points_is_the_same_weight():
    raw = _synthetic("Q4_0", 6, 128, seed=2)
    p = ggml.with_zero(_packed(raw, "Q4_0", (6, 128)))
    # equal values; only zeros may differ in sign (c·d + (-8·d) gives +0 where (c - 8)·d gives -0)
    assert p.zero is not None and torch.equal(naive.dequantize(p), _reference(raw, "Q4_0", (6, 128)))


def test_q4_k_is_exact_up_to_its_fp16_scales():
    raw = _synthetic("Q4_K", 8, 512, seed=3)
    ref = _reference(raw, "Q4_K", (8, 512))
    got = naive.dequantize(_packed(raw, "Q4_K", (8, 512)))
    # d·sc (17 bits) rounded to fp16 (11): the scale moves by at most 2^-12 relative, as does the zero point
    assert 0 < _rel(got, ref) < 5e-4
    # with d and dmin powers of two, d·sc and dmin·m are exact in fp16, so every value is
    raw = raw.reshape(8, 2, 144).copy()
    raw[:, :, 0:2] = np.array([2**-10], np.float16).view(np.uint8)
    raw[:, :, 2:4] = np.array([2**-9], np.float16).view(np.uint8)
    raw = raw.reshape(-1)
    assert _same_bits(naive.dequantize(_packed(raw, "Q4_K", (8, 512))), _reference(raw, "Q4_K", (8, 512)))


def test_other_types_are_not_packed_and_bad_sizes_are_named():
    assert ggml.from_ggml(torch.zeros(22, dtype=torch.uint8), "Q5_0", (1, 32)) is None
    assert ggml.packed_format("Q6_K") is None
    with pytest.raises(ValueError, match="expected 40 bytes of Q4_1"):
        ggml.from_ggml(torch.zeros(41, dtype=torch.uint8), "Q4_1", (1, 64))


CASES = [(name, t, raw, shape) for name, t, raw, shape in _real() if name != "token_embd.weight"]
CASES += [(f"synthetic {t}", t, _synthetic(t, 20, 512, seed=4), (20, 512)) for t in ("Q4_0", "Q4_1", "Q8_0", "Q4_K")]


@pytest.mark.parametrize("name,type_name,raw,shape", CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("M", [1, 3, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matmul_on_gguf_blocks_matches_fp64(name, type_name, raw, shape, M, dtype):
    """Decode (M <= 16, split along K) and prefill (M = 20) tilings against x @ Wᵀ in fp64, W from gguf itself
    (Q4_K: from our fp16-scale copy, whose distance to gguf's values the test above bounds)."""
    p = _packed(raw, type_name, shape)
    w = naive.dequantize(p, torch.float64) if type_name == "Q4_K" else _reference(raw, type_name, shape).double()
    x = torch.randn(M, shape[1], generator=torch.Generator().manual_seed(M)).to(dtype)
    ref = x.double() @ w.T
    got = quant.linear(x, p, backend="triton")
    assert got.dtype == dtype and got.shape == (M, shape[0])
    assert _rel(got, ref) < (1e-5 if dtype == torch.float32 else 2e-3)
    assert _rel(got, naive.linear(x, p)) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize(
    "name,type_name,raw,shape", CASES[:2] + CASES[-2:], ids=lambda v: v if isinstance(v, str) else ""
)
def test_triton_dequantize_of_gguf_blocks_is_exact(name, type_name, raw, shape):
    p = _packed(raw, type_name, shape)
    assert _same_bits(quant.dequantize(p, torch.float32, backend="triton"), naive.dequantize(p))
