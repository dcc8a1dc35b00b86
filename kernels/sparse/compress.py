"""Triton key compression: K1/K2 mean-pooled windows over the keys (sala-model.md §3.4).

Decode needs one new entry every `stride` tokens: compress the newest window, `k[:, L - kernel_size:]`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import tl_dtype_ok


@triton.jit
def _compress_kernel(k, out, n, s_kb, s_kt, s_kh, s_ob, s_on, s_oh, H: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
                     KS: tl.constexpr, STRIDE: tl.constexpr, BN: tl.constexpr, BW: tl.constexpr):
    """BN entries a program; each window is summed BW keys at a time ([BN, BW, D] loads, all independent)."""
    i_bh, i_n = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    c = i_n * BN + tl.arange(0, BN)
    w = tl.arange(0, BW)
    d = tl.arange(0, BD)
    m = (c < n)[:, None, None] & (d < D)[None, None, :]
    base = k + b.to(tl.int64) * s_kb + h * s_kh
    acc = tl.zeros([BN, BD], dtype=tl.float32)
    for w0 in range(0, KS, BW):
        rows = (c * STRIDE + w0)[:, None] + w[None, :]  # [BN, BW]
        x = tl.load(base + rows.to(tl.int64)[:, :, None] * s_kt + d[None, None, :], mask=m & (w0 + w < KS)[None, :, None],
                    other=0.0)
        acc += tl.sum(x.to(tl.float32), 1)
    dst = out + b.to(tl.int64) * s_ob + h * s_oh + c.to(tl.int64)[:, None] * s_on + d[None, :]
    tl.store(dst, (acc / KS).to(out.dtype.element_ty), mask=(c < n)[:, None] & (d < D)[None, :])


def compress_keys_triton(k: torch.Tensor, *, kernel_size: int, stride: int, out=None) -> torch.Tensor:
    """k: [B, L, Hkv, D] (last dim contiguous) -> [B, n, Hkv, D], entry c = mean(k[:, c*stride : c*stride + kernel_size])."""
    tl_dtype_ok(k)
    B, L, H, D = k.shape
    n = 0 if L < kernel_size else (L - kernel_size) // stride + 1
    out = torch.empty(B, n, H, D, dtype=k.dtype, device=k.device) if out is None else out
    if n == 0:
        return out
    if k.stride(-1) != 1:
        k = k.contiguous()
    # many entries: 4 a program, 8 keys a step; a few (decode's new entry): one a program, 64 keys a step
    bn, bw, warps = (4, min(8, triton.next_power_of_2(kernel_size)), 4) if n > 64 else (1, min(64, triton.next_power_of_2(kernel_size)), 8)
    _compress_kernel[(B * H, triton.cdiv(n, bn))](k, out, n, k.stride(0), k.stride(1), k.stride(2), out.stride(0), out.stride(1),
                                                 out.stride(2), H=H, D=D, BD=triton.next_power_of_2(D), KS=kernel_size,
                                                 STRIDE=stride, BN=bn, BW=bw, num_warps=warps)
    return out
