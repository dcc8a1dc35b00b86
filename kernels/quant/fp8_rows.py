"""fp8 (e4m3) rows with one scale each, in one launch: the activations of the fp8 prefill GEMMs, per token.

The PyTorch expression (naive.quantize_fp8, the reference) passes over [T, K] five times (abs, amax, divide, cast,
copy): 1.47 s of a 256K-token fp8 prefill's 8.4 s on an H200 (model/BENCH.md). Here a row is read once and written
once as bytes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import FP8_MAX, PackedWeight


@triton.jit
def _e4m3_round(y):
    """y (|y| <= FP8_MAX) rounded to the nearest e4m3 number, ties to even, in fp32: the cast that follows is then
    exact, whatever its own rounding (Triton 3.6's interpreter drops the carry when rounding up crosses a power of
    two: 124 became 64, not 128). Normal numbers keep 3 mantissa bits (the fp32 word rounded at bit 20); below
    2^-6 the step is the subnormal one, 2^-9, which adding and taking away 2^14 rounds to."""
    a = tl.abs(y)
    b = a.to(tl.int32, bitcast=True)
    b = (b + (0x7FFFF + ((b >> 20) & 1))) & -0x100000
    r = tl.where(a < 0.015625, (a + 16384.0) - 16384.0, b.to(tl.float32, bitcast=True))
    sign = y.to(tl.int32, bitcast=True) & -0x80000000  # -0.0 stays -0.0, as the reference casts it
    return (r.to(tl.int32, bitcast=True) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _fp8_rows_kernel(x, s_x, q, scale, K, FMAX: tl.constexpr, BK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    k = tl.arange(0, BK)
    m = k < K
    v = tl.load(x + row * s_x + k, mask=m, other=0.0).to(tl.float32)
    # IEEE divisions (Triton's `/` on fp32 is the approximate one), so that the scale and every code are what
    # the reference computes; the clamp saturates where x / s rounds just past the largest code
    s = tl.maximum(tl.math.div_rn(tl.max(tl.abs(v), 0), FMAX), 1e-12)
    y = _e4m3_round(tl.clamp(tl.math.div_rn(v, s), -FMAX, FMAX))
    tl.store(q + row * K + k, y.to(tl.float8e4nv), mask=m)
    tl.store(scale + row, s)


def quantize_fp8_rows(x2: torch.Tensor) -> PackedWeight:
    """x2 [M, K] (fp32 / fp16 / bf16, unit stride along K) -> its rows as fp8 with one fp32 scale each, exactly
    naive.quantize_fp8(x2)."""
    if x2.dim() != 2 or x2.stride(1) != 1 or x2.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"expected a float [M, K] tensor with unit stride along K, got {x2.dtype} {tuple(x2.shape)} with "
            f"strides {x2.stride()}"
        )
    M, K = x2.shape
    q = torch.empty(M, K, dtype=torch.float8_e4m3fn, device=x2.device)
    scale = torch.empty(M, dtype=torch.float32, device=x2.device)
    BK = triton.next_power_of_2(K)
    if M:
        _fp8_rows_kernel[(M,)](x2, x2.stride(0), q, scale, K, FMAX=FP8_MAX, BK=BK, num_warps=max(1, min(16, BK // 512)))
    return PackedWeight("fp8", q.view(torch.uint8), scale, None, K)
