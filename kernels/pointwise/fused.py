"""Triton row-wise ops of the decoder layers, each one launch instead of the 4-8 elementwise ops of `naive.py`.

Decode runs a few hundred launches per token, so the count matters there; in prefill they save passes over
[T, 4096] activations. Every kernel rounds to the activation dtype exactly where the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import tl_dtype_ok


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as [R, N] with a unit last stride (a view when the leading dims merge, else a copy)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    return x.reshape(-1, x.shape[-1])


@triton.jit
def _rms_norm_kernel(
    x, s_x, a, s_a, h_out, w, out, N, eps, scale, BN: tl.constexpr, ADD: tl.constexpr, HAS_SCALE: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BN)
    m = n < N
    v = tl.load(x + row * s_x + n, mask=m, other=0.0).to(tl.float32)
    if ADD:  # h + scale * a, rounded like the unfused ops: the product, then the sum
        b = tl.load(a + row * s_a + n, mask=m, other=0.0)
        if HAS_SCALE:
            b = (b.to(tl.float32) * scale).to(h_out.dtype.element_ty)
        v = (v + b.to(tl.float32)).to(h_out.dtype.element_ty)
        tl.store(h_out + row * N + n, v, mask=m)
        v = v.to(tl.float32)
    r = tl.rsqrt(tl.sum(v * v, 0) / N + eps)
    y = (v * r).to(x.dtype.element_ty).to(tl.float32)
    wt = tl.load(w + n, mask=m, other=0.0).to(tl.float32)
    tl.store(out + row * N + n, (wt * y).to(out.dtype.element_ty), mask=m)


def _norm_launch(x2, a2, h_out, weight, out, eps, scale):
    N = x2.shape[1]
    BN = triton.next_power_of_2(N)
    _rms_norm_kernel[(x2.shape[0],)](
        x2,
        x2.stride(0),
        a2 if a2 is not None else x2,
        a2.stride(0) if a2 is not None else 0,
        h_out if h_out is not None else out,
        weight,
        out,
        N,
        float(eps),
        float(scale),
        BN=BN,
        ADD=a2 is not None,
        HAS_SCALE=scale != 1.0,
        num_warps=max(1, min(16, BN // 256)),
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    tl_dtype_ok(x)
    x2 = _rows(x)
    out = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    if x2.shape[0]:
        _norm_launch(x2, None, None, weight, out, eps, 1.0)
    return out.view(x.shape)


def add_rms_norm(h, a, scale, weight, eps):
    tl_dtype_ok(h)
    h2, a2 = _rows(h), _rows(a)
    h_out = torch.empty(h2.shape, dtype=h.dtype, device=h.device)
    out = torch.empty(h2.shape, dtype=torch.promote_types(h.dtype, weight.dtype), device=h.device)
    if h2.shape[0]:
        _norm_launch(h2, a2, h_out, weight, out, eps, scale)
    return h_out.view(h.shape), out.view(h.shape)


@triton.jit
def _head_norm_rope_kernel(
    x,
    w,
    cos,
    sin,
    out,
    R,
    T,
    H,
    s_b,
    s_t,
    eps,
    D: tl.constexpr,
    BR: tl.constexpr,
    NORM: tl.constexpr,
    ROPE: tl.constexpr,
):
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    rm = r < R
    b, t, h = r // (T * H), (r // H) % T, r % H
    base = b.to(tl.int64) * s_b + t.to(tl.int64) * s_t + h * D
    HALF: tl.constexpr = D // 2
    d = tl.arange(0, HALF)
    m = rm[:, None]
    lo = tl.load(x + base[:, None] + d[None, :], mask=m, other=0.0).to(tl.float32)
    hi = tl.load(x + base[:, None] + HALF + d[None, :], mask=m, other=0.0).to(tl.float32)
    if NORM:
        rs = tl.rsqrt((tl.sum(lo * lo, 1) + tl.sum(hi * hi, 1)) / D + eps)[:, None]
        w_lo = tl.load(w + d).to(tl.float32)[None, :]
        w_hi = tl.load(w + HALF + d).to(tl.float32)[None, :]
        lo = (w_lo * (lo * rs).to(x.dtype.element_ty).to(tl.float32)).to(x.dtype.element_ty).to(tl.float32)
        hi = (w_hi * (hi * rs).to(x.dtype.element_ty).to(tl.float32)).to(x.dtype.element_ty).to(tl.float32)
    if ROPE:
        c = t.to(tl.int64)[:, None] * D + d[None, :]
        c_lo, c_hi = tl.load(cos + c, mask=m, other=0.0), tl.load(cos + c + HALF, mask=m, other=0.0)
        s_lo, s_hi = tl.load(sin + c, mask=m, other=0.0), tl.load(sin + c + HALF, mask=m, other=0.0)
        lo, hi = lo * c_lo - hi * s_lo, hi * c_hi + lo * s_hi
    dst = r.to(tl.int64)[:, None] * D + d[None, :]
    tl.store(out + dst, lo.to(x.dtype.element_ty).to(out.dtype.element_ty), mask=m)
    tl.store(out + dst + HALF, hi.to(x.dtype.element_ty).to(out.dtype.element_ty), mask=m)


def head_norm_rope(x, weight, eps, cos, sin, out_dtype=None):
    tl_dtype_ok(x)
    B, T, H, D = x.shape
    if D & (D - 1) or D < 2:
        raise ValueError(f"expected a power-of-two head dim, got {D}")
    if x.stride(-1) != 1 or x.stride(-2) != D:
        x = x.contiguous()
    out = torch.empty(B, T, H, D, dtype=out_dtype or x.dtype, device=x.device)
    R = B * T * H
    if R == 0:
        return out
    if cos is not None:
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
    BR = max(1, 4096 // D)
    _head_norm_rope_kernel[(triton.cdiv(R, BR),)](
        x,
        weight if weight is not None else x,
        cos if cos is not None else x,
        sin if sin is not None else x,
        out,
        R,
        T,
        H,
        x.stride(0),
        x.stride(1),
        float(eps),
        D=D,
        BR=BR,
        NORM=weight is not None,
        ROPE=cos is not None,
        num_warps=4,
    )
    return out


@triton.jit
def _gated_norm_kernel(o, s_o, z, s_z, w, out, N, eps, BN: tl.constexpr, NORM: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BN)
    m = n < N
    v = tl.load(o + row * s_o + n, mask=m, other=0.0).to(out.dtype.element_ty).to(tl.float32)
    if NORM:
        r = tl.rsqrt(tl.sum(v * v, 0) / N + eps)
        wt = tl.load(w + n, mask=m, other=0.0).to(tl.float32)
        v = (wt * (v * r).to(out.dtype.element_ty).to(tl.float32)).to(out.dtype.element_ty).to(tl.float32)
    g = tl.load(z + row * s_z + n, mask=m, other=0.0).to(tl.float32)
    sg = tl.sigmoid(g).to(out.dtype.element_ty).to(tl.float32)
    tl.store(out + row * N + n, (v * sg).to(out.dtype.element_ty), mask=m)


def gated_rms_norm(o, gate, weight, eps):
    tl_dtype_ok(gate)
    o2, z2 = _rows(o), _rows(gate)
    out = torch.empty(z2.shape, dtype=gate.dtype, device=gate.device)
    if z2.shape[0]:
        N = z2.shape[1]
        BN = triton.next_power_of_2(N)
        _gated_norm_kernel[(z2.shape[0],)](
            o2,
            o2.stride(0),
            z2,
            z2.stride(0),
            weight if weight is not None else z2,
            out,
            N,
            float(eps),
            BN=BN,
            NORM=weight is not None,
            num_warps=max(1, min(16, BN // 256)),
        )
    return out.view(gate.shape)


@triton.jit
def _silu_mul_kernel(g, s_g, u, s_u, out, N, BN: tl.constexpr):
    row, col = tl.program_id(0).to(tl.int64), tl.program_id(1)
    n = col * BN + tl.arange(0, BN)
    m = n < N
    a = tl.load(g + row * s_g + n, mask=m, other=0.0).to(tl.float32)
    b = tl.load(u + row * s_u + n, mask=m, other=0.0).to(tl.float32)
    act = (a * tl.sigmoid(a)).to(out.dtype.element_ty).to(tl.float32)
    tl.store(out + row * N + n, (act * b).to(out.dtype.element_ty), mask=m)


def silu_mul(gate, up):
    tl_dtype_ok(gate)
    g2, u2 = _rows(gate), _rows(up)
    out = torch.empty(g2.shape, dtype=gate.dtype, device=gate.device)
    R, N = g2.shape
    if R:
        BN = min(2048, triton.next_power_of_2(N))
        _silu_mul_kernel[(R, triton.cdiv(N, BN))](g2, g2.stride(0), u2, u2.stride(0), out, N, BN=BN, num_warps=4)
    return out.view(gate.shape)
