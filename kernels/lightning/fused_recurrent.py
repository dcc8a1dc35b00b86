"""Triton Lightning-attention decode step: one token for each of B sequences, states updated in place.

Memory-bound: each program streams one [Dk, BV] fp32 slice of a state in and out once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import tl_dtype_ok


@triton.jit
def _decode_kernel(q, k, v, g, state, o, scale, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BV: tl.constexpr):
    i_bh, i_v = tl.program_id(0), tl.program_id(1)
    i_h = i_bh % H
    o_k = tl.arange(0, DK)
    o_v = i_v * BV + tl.arange(0, BV)
    b_q = tl.load(q + i_bh * DK + o_k).to(tl.float32)
    b_k = tl.load(k + i_bh * DK + o_k).to(tl.float32)
    b_v = tl.load(v + i_bh * DV + o_v).to(tl.float32)
    ptr = state + (i_bh.to(tl.int64) * DK + o_k[:, None]) * DV + o_v[None, :]
    S = tl.load(ptr) * tl.exp(tl.load(g + i_h).to(tl.float32)) + b_k[:, None] * b_v[None, :]
    tl.store(ptr, S)
    tl.store(o + i_bh * DV + o_v, (tl.sum(b_q[:, None] * S, 0) * scale).to(o.dtype.element_ty))


def fused_recurrent_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q, k: [B, H, Dk]; v: [B, H, Dv]; state: [B, H, Dk, Dv] fp32 (contiguous), updated in place -> o [B, H, Dv]."""
    for x in (q, k, v):
        tl_dtype_ok(x)
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"expected a contiguous float32 state, got {state.dtype}, contiguous={state.is_contiguous()}")
    B, H, DK = q.shape
    DV = v.shape[-1]
    o = torch.empty(B, H, DV, dtype=q.dtype, device=q.device) if out is None else out
    bv = min(32, DV)
    _decode_kernel[(B * H, DV // bv)](
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        log_decay.float().contiguous(),
        state,
        o,
        float(scale),
        H=H,
        DK=DK,
        DV=DV,
        BV=bv,
        num_warps=4,
    )
    return o
