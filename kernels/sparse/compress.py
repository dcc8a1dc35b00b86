"""Triton key compression: K1/K2 mean-pooled windows over the keys (sala-model.md §3.4).

Decode needs one new entry every `stride` tokens: compress the newest window, `k[:, L - kernel_size:]`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import tl_dtype_ok


@triton.jit
def _compress_kernel(
    k,
    out,
    n,
    s_kb,
    s_kt,
    s_kh,
    s_ob,
    s_on,
    s_oh,
    H: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    BN: tl.constexpr,
    BW: tl.constexpr,
):
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
        x = tl.load(
            base + rows.to(tl.int64)[:, :, None] * s_kt + d[None, None, :],
            mask=m & (w0 + w < KS)[None, :, None],
            other=0.0,
        )
        acc += tl.sum(x.to(tl.float32), 1)
    dst = out + b.to(tl.int64) * s_ob + h * s_oh + c.to(tl.int64)[:, None] * s_on + d[None, :]
    tl.store(dst, (acc / KS).to(out.dtype.element_ty), mask=(c < n)[:, None] & (d < D)[None, :])


def compress_keys_triton(
    k: torch.Tensor, *, kernel_size: int, stride: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """k: [B, L, Hkv, D] (last dim contiguous) -> [B, n, Hkv, D], entry c = mean(k[:, c*stride : c*stride + kernel_size])."""
    tl_dtype_ok(k)
    B, L, H, D = k.shape
    n = 0 if kernel_size > L else (L - kernel_size) // stride + 1
    out = torch.empty(B, n, H, D, dtype=k.dtype, device=k.device) if out is None else out
    if n == 0:
        return out
    if k.stride(-1) != 1:
        k = k.contiguous()
    # many entries: 4 a program, 8 keys a step; a few (decode's new entry): one a program, 64 keys a step
    bn, bw, warps = (
        (4, min(8, triton.next_power_of_2(kernel_size)), 4)
        if n > 64
        else (1, min(64, triton.next_power_of_2(kernel_size)), 8)
    )
    _compress_kernel[(B * H, triton.cdiv(n, bn))](
        k,
        out,
        n,
        k.stride(0),
        k.stride(1),
        k.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        H=H,
        D=D,
        BD=triton.next_power_of_2(D),
        KS=kernel_size,
        STRIDE=stride,
        BN=bn,
        BW=bw,
        num_warps=warps,
    )
    return out


@triton.jit
def _append_window_kernel(
    k,
    k1,
    k2,
    pos_ptr,
    n1_cap,
    n2_cap,
    s_kb,
    s_kt,
    s_kh,
    s_1b,
    s_1n,
    s_1h,
    s_2b,
    s_2n,
    s_2h,
    H: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    KS1: tl.constexpr,
    ST1: tl.constexpr,
    KS2: tl.constexpr,
    ST2: tl.constexpr,
    BW: tl.constexpr,
):
    """Program (b*h, tier): if the key at pos completes a window of this tier, write that window's mean."""
    i_bh, tier = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    length = tl.load(pos_ptr).to(tl.int32) + 1
    ks = tl.where(tier == 0, KS1, KS2)
    st = tl.where(tier == 0, ST1, ST2)
    c = (length - ks) // st
    cap = tl.where(tier == 0, n1_cap, n2_cap)
    hit = (length >= ks) & ((length - ks) % st == 0) & (c < cap)
    w = tl.arange(0, BW)
    d = tl.arange(0, BD)
    hit_w = (w * 0 + hit.to(tl.int32)) > 0  # as vectors: masks must be tensors of booleans
    hit_d = (d * 0 + hit.to(tl.int32)) > 0
    base = k + b.to(tl.int64) * s_kb + h * s_kh
    acc = tl.zeros([BD], dtype=tl.float32)
    for w0 in range(0, KS2, BW):
        rows = length - ks + w0 + w
        m = hit_w & (w0 + w < ks)
        x = tl.load(
            base + rows.to(tl.int64)[:, None] * s_kt + d[None, :], mask=m[:, None] & (d < D)[None, :], other=0.0
        )
        acc += tl.sum(x.to(tl.float32), 0)
    mean = acc / ks.to(tl.float32)
    if tier == 0:
        dst = k1 + b.to(tl.int64) * s_1b + h * s_1h + c.to(tl.int64) * s_1n + d
    else:
        dst = k2 + b.to(tl.int64) * s_2b + h * s_2h + c.to(tl.int64) * s_2n + d
    tl.store(dst, mean.to(dst.dtype.element_ty), mask=hit_d & (d < D))


def append_windows_triton(
    k: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    pos: torch.Tensor,
    *,
    kernel_size: int,
    stride: int,
    n1_cap: int | None = None,
    n2_cap: int | None = None,
) -> None:
    """After the key at position `pos` (int64 [1] device tensor) was written into k [B, cap, Hkv, D]: write the K1
    entry (window kernel_size, stride) and the K2 entry (4x both) that this key completes, if any, in place.
    Reads the position on the device, so a CUDA graph of it replays at any length."""
    tl_dtype_ok(k)
    B, _, H, D = k.shape
    ks2, st2 = 4 * kernel_size, 4 * stride
    _append_window_kernel[(B * H, 2)](
        k,
        k1,
        k2,
        pos,
        k1.shape[1] if n1_cap is None else n1_cap,
        k2.shape[1] if n2_cap is None else n2_cap,
        k.stride(0),
        k.stride(1),
        k.stride(2),
        k1.stride(0),
        k1.stride(1),
        k1.stride(2),
        k2.stride(0),
        k2.stride(1),
        k2.stride(2),
        H=H,
        D=D,
        BD=triton.next_power_of_2(D),
        KS1=kernel_size,
        ST1=stride,
        KS2=ks2,
        ST2=st2,
        BW=min(32, triton.next_power_of_2(kernel_size)),
        num_warps=4,
    )
