"""Quantized matmuls on the GPU at the model's shapes (MiniCPM-SALA's and SmolLM2's), against fp64 products of the
dequantised weights; groups of 32 are GGUF's Q4_0 / Q4_1 / Q8_0 blocks."""

from __future__ import annotations

import pytest
import torch

from sala_report.kernels import quant
from sala_report.kernels.quant import naive

pytestmark = pytest.mark.gpu


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# (format, zero points, group): the defaults, and GGUF's 32-wide blocks (Q4_1, Q4_0, Q8_0)
KINDS = [
    ("int8", True, None),
    ("int4", True, None),
    ("int4", False, None),
    ("fp8", True, None),
    ("int4", True, 32),
    ("int4", False, 32),
    ("int8", False, 32),
]


@pytest.mark.parametrize("fmt,zero,group", KINDS)
@pytest.mark.parametrize("M", [1, 8, 100])
@pytest.mark.parametrize("N,K", [(8704, 4096), (4096, 16384), (1000, 1000), (1536, 576), (576, 1536)])
def test_cuda_matmul_matches_fp64(fmt, zero, group, M, N, K):
    g = torch.Generator(device="cuda").manual_seed(M + N + K)
    w = torch.randn(N, K, device="cuda", generator=g, dtype=torch.bfloat16) * 0.02
    p = naive.quantize(w, fmt, zero=zero, group=group)
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    for _ in range(3):  # repeated: a split-K reduction that races shows up as a changing or garbage result
        out.copy_(quant.linear(x, p))
        assert torch.isfinite(out).all()
        assert _rel(out, ref) < 1e-2  # bf16 output rounding: ~3e-3


@pytest.mark.parametrize("fmt,zero,group", KINDS)
def test_cuda_dequantize_is_exact(fmt, zero, group):
    w = torch.randn(3000, 1000, device="cuda") * 0.02
    p = naive.quantize(w, fmt, zero=zero, group=group)
    assert torch.equal(quant.dequantize(p, torch.float32), naive.dequantize(p, torch.float32))


# The CUDA-core GEMV that quant.linear takes for int4 at 1-4 rows (kernels/quant/gemv.py): MiniCPM-SALA's stacked
# decode projections (kernels/quant/gemv_bench.py's SHAPES) and an awkward shape, tuned on first use as decode runs it
SALA_DECODE = [(16384, 4096), (8704, 4096), (4096, 4096), (32768, 4096), (4096, 16384), (73448, 4096)]


# (zero points, group, rows): every kind at one row; more rows with our default (symmetric, 128) and GGUF Q4_1's
GEMV_CASES = [(z, g, 1) for z in (False, True) for g in (128, 32)] + [
    (False, 128, 2),
    (True, 32, 2),
    (False, 128, 4),
    (True, 32, 4),
]


@pytest.mark.parametrize("zero,group,M", GEMV_CASES)
@pytest.mark.parametrize("N,K", [*SALA_DECODE, (1000, 1000)])  # 1000: neither a multiple of the group nor of a tile
def test_cuda_gemv_matches_fp64(zero, group, M, N, K):
    from sala_report.kernels.quant import gemv

    g = torch.Generator(device="cuda").manual_seed(M + N + K)
    p = naive.quantize(
        torch.randn(N, K, device="cuda", generator=g, dtype=torch.bfloat16) * 0.02, "int4", zero=zero, group=group
    )
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    assert gemv.supports(p, M)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
    for _ in range(3):  # repeated: a split-K reduction that races shows up as a changing or garbage result
        out.copy_(gemv.gemv(x, p))
        assert torch.isfinite(out).all()
        assert _rel(out, ref) < 1e-2  # bf16 output rounding: ~3e-3


@pytest.mark.parametrize("zero,group", [(False, 128), (True, 32)])
def test_cuda_gemv_every_candidate_tiling(zero, group):
    # each tiling the tuner may pick, split along K or not, at the down projection (the longest K)
    from sala_report.kernels.quant import gemv

    g = torch.Generator(device="cuda").manual_seed(group)
    p = naive.quantize(torch.randn(4096, 16384, device="cuda", generator=g) * 0.02, "int4", zero=zero, group=group)
    x = torch.randn(1, 16384, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    for c in gemv.candidates(p, x.device):
        for _ in range(3):
            out = gemv.gemv(x, p, config=c)
            assert torch.isfinite(out).all() and _rel(out, ref) < 1e-2, c


@pytest.mark.parametrize("N,K", [(4096, 4096), (8704, 4096), (73448, 4096)])
@pytest.mark.parametrize("zero,M", [(False, 1), (True, 4)])
def test_cuda_gemv_variants_split_along_k(N, K, zero, M):
    # the variants (flat tile; with prefetch; with 4-word sums too; prefetch and 4-word sums on the 3D tile) at SALA's
    # small shapes and the head, split 1-16 ways (16: a split of o_proj holds one chunk, so the prefetch loads
    # nothing), at one row and at four; the flat tile at 128 rows too
    from sala_report.kernels.quant import gemv

    g = torch.Generator(device="cuda").manual_seed(N + M)
    p = naive.quantize(torch.randn(N, K, device="cuda", generator=g) * 0.02, "int4", zero=zero, group=128)
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    P, S, F = gemv.PREFETCH, gemv.SUB, gemv.FLAT
    for variant in (F, F | P, F | P | S, P | S):
        for bn, cg, splits in ((64, 4, 1), (64, 4, 3), (64, 2, 16), *([(128, 4, 2)] if variant == F else [])):
            for _ in range(3):
                out = gemv.gemv(x, p, config=(bn, cg, splits, 4, 1, variant))
                assert torch.isfinite(out).all() and _rel(out, ref) < 1e-2, (bn, cg, splits, variant)


@pytest.mark.parametrize("group,M", [(0, 1), (0, 4), (32, 1)])
@pytest.mark.parametrize("N,K", SALA_DECODE)
def test_cuda_int8_decode_rows_match_fp64(group, M, N, K):
    # int8 with one scale a row (load_model's) and GGUF Q8_0 groups, through quant.linear as decode calls it: the
    # shape tuned on first use, then the GEMV or _qmm_kernel, whichever timed faster
    g = torch.Generator(device="cuda").manual_seed(M + N + K)
    p = naive.quantize(torch.randn(N, K, device="cuda", generator=g) * 0.02, "int8", group=group)
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    for _ in range(3):
        out = quant.linear(x, p)
        assert torch.isfinite(out).all() and _rel(out, ref) < 1e-2


def test_cuda_int8_gemv_every_candidate_tiling():
    from sala_report.kernels.quant import gemv

    g = torch.Generator(device="cuda").manual_seed(8)
    p = naive.quantize(torch.randn(4096, 16384, device="cuda", generator=g) * 0.02, "int8")
    x = torch.randn(1, 16384, device="cuda", generator=g, dtype=torch.bfloat16)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    assert gemv.supports(p, 1)
    for c in gemv.candidates(p, x.device):
        for _ in range(2):
            out = gemv.gemv(x, p, config=c)
            assert torch.isfinite(out).all() and _rel(out, ref) < 1e-2, c


@pytest.mark.parametrize("M,K", [(16384, 4096), (100, 16384), (7, 1000)])
def test_cuda_fp8_rows_equal_the_reference(M, K):
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16) * torch.logspace(-2, 2, M, device="cuda")[:, None]
    got = quant.quantize_fp8_rows(x)
    # the scale: the row's maximum / 448, correctly rounded; PyTorch's CUDA division by a Python number multiplies
    # by its reciprocal instead, so naive.quantize_fp8 on CUDA may differ in the last bit (it did on an H200)
    amax = x.float().abs().amax(dim=1).double()
    assert torch.equal(got.scale, (amax / 448).float())
    # the codes: x / scale (a division of two tensors, correctly rounded on CUDA), saturated, cast by PyTorch
    codes = (x.float() / got.scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(got.data, codes.view(torch.uint8))
