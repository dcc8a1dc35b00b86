"""Triton chunked Lightning-attention prefill in bounded memory (see README.md for the math).

Three launches, none of which stores a per-chunk state:
1. `_segment_state_kernel`: each segment (about 16 programs per SM in all, at most 128 segments) reduces its keys and values to the state it would
   add from zero, dS_s = sum_j exp(g (L_s - 1 - j)) k_jᵀ v_j  -- one big K-loop matmul per (segment, head, V tile).
2. `_segment_scan_kernel`: per sequence, S_in[s] = state entering segment s (exp(g L) S + dS, in place, fp32).
3. `_chunk_output_kernel`: each (segment, head, V tile) walks its 64-token chunks from S_in[s], keeping the state
   in registers: intra-chunk decay-masked QKᵀV plus Q S, then the chunk's state update.
Extra memory is n_segments x H x Dk x Dv fp32 (<= 256 MiB at H = 32, D = 128, any length).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import configs, num_sms, tl_dtype_ok

LOG2E = 1.4426950408889634
CHUNK = 64
MAX_SEGMENTS = 128  # per call; bounds the segment-state buffer
MIN_SEGMENT = 256


@triton.autotune(
    configs=configs([triton.Config({"BV": bv}, num_warps=w, num_stages=s) for bv, w, s in [(64, 4, 2), (64, 4, 3), (128, 8, 2), (32, 4, 3)]]),
    key=["DK", "DV"],
)
@triton.jit(do_not_specialize=["n_tok"])
def _segment_state_kernel(k, v, g, seg_start, seg_len, dstate, n_tok, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                          BT: tl.constexpr, BV: tl.constexpr):
    i_s, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(seg_start + i_s).to(tl.int64)
    L = tl.load(seg_len + i_s)
    gh = tl.load(g + i_h).to(tl.float32) * 1.4426950408889634
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, DK)
    o_v = i_v * BV + tl.arange(0, BV)
    mv = o_v < DV  # BV may exceed DV for small heads
    acc = tl.zeros([DK, BV], dtype=tl.float32)
    for c in range(0, L, BT):
        t = c + o_t
        m = t < L
        row = (start + t) * H + i_h
        b_k = tl.load(k + row[:, None] * DK + o_k[None, :], mask=m[:, None], other=0.0)
        b_v = tl.load(v + row[:, None] * DV + o_v[None, :], mask=m[:, None] & mv[None, :], other=0.0)
        w = tl.where(m, tl.exp2(gh * (L - 1 - t).to(tl.float32)), 0.0)
        acc += tl.dot(tl.trans((b_k * w[:, None]).to(b_v.dtype)), b_v)
    base = ((i_s * H + i_h) * DK).to(tl.int64)
    tl.store(dstate + (base + o_k[:, None]) * DV + o_v[None, :], acc, mask=mv[None, :])


@triton.jit
def _segment_scan_kernel(dstate, h0, ht, g, seq_first_seg, seg_len, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
                         BK: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr):
    i_n, i_h, i_t = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NVT: tl.constexpr = DV // BV
    o_k = (i_t // NVT) * BK + tl.arange(0, BK)
    o_v = (i_t % NVT) * BV + tl.arange(0, BV)
    tile = o_k[:, None] * DV + o_v[None, :]
    gh = tl.load(g + i_h).to(tl.float32) * 1.4426950408889634
    if HAS_H0:
        S = tl.load(h0 + (i_n * H + i_h).to(tl.int64) * DK * DV + tile).to(tl.float32)
    else:
        S = tl.zeros([BK, BV], dtype=tl.float32)
    lo = tl.load(seq_first_seg + i_n)
    hi = tl.load(seq_first_seg + i_n + 1)
    for s in range(lo, hi):
        ptr = dstate + (s * H + i_h).to(tl.int64) * DK * DV + tile
        d = tl.load(ptr)
        tl.store(ptr, S)
        S = tl.exp2(gh * tl.load(seg_len + s).to(tl.float32)) * S + d
    tl.store(ht + (i_n * H + i_h).to(tl.int64) * DK * DV + tile, S)


@triton.autotune(
    configs=configs([triton.Config({"BV": bv}, num_warps=w, num_stages=s) for bv, w, s in [(64, 4, 2), (64, 4, 3), (128, 8, 2), (64, 8, 2)]]),
    key=["DK", "DV", "STATE_TF32"],
)
@triton.jit(do_not_specialize=["n_tok"])
def _chunk_output_kernel(q, k, v, o, g, seg_start, seg_len, state, scale, n_tok, H: tl.constexpr, DK: tl.constexpr,
                         DV: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, STATE_TF32: tl.constexpr):
    i_s, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(seg_start + i_s).to(tl.int64)
    L = tl.load(seg_len + i_s)
    gh = tl.load(g + i_h).to(tl.float32) * 1.4426950408889634
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, DK)
    o_v = i_v * BV + tl.arange(0, BV)
    mv = o_v < DV  # BV may exceed DV for small heads
    base = ((i_s * H + i_h) * DK).to(tl.int64)
    S = tl.load(state + (base + o_k[:, None]) * DV + o_v[None, :], mask=mv[None, :], other=0.0)  # [DK, BV] fp32
    diff = (o_t[:, None] - o_t[None, :]).to(tl.float32)
    # exponents are differences <= 0 only (clamped before exp2), so nothing overflows at any decay
    intra_decay = tl.where(diff >= 0, tl.exp2(gh * tl.maximum(diff, 0.0)), 0.0)
    q_decay = tl.exp2(gh * (o_t + 1).to(tl.float32))
    for c in range(0, L, BT):
        t = c + o_t
        m = t < L
        row = (start + t) * H + i_h
        b_q = tl.load(q + row[:, None] * DK + o_k[None, :], mask=m[:, None], other=0.0)
        b_k = tl.load(k + row[:, None] * DK + o_k[None, :], mask=m[:, None], other=0.0)
        b_v = tl.load(v + row[:, None] * DV + o_v[None, :], mask=m[:, None] & mv[None, :], other=0.0)
        A = tl.dot(b_q, tl.trans(b_k)) * intra_decay
        acc = tl.dot(A.to(b_v.dtype), b_v)
        if STATE_TF32:
            acc += tl.dot(b_q.to(tl.float32) * q_decay[:, None], S, input_precision="tf32")
        else:
            acc += tl.dot((b_q * q_decay[:, None]).to(b_v.dtype), S.to(b_v.dtype))
        tl.store(o + row[:, None] * DV + o_v[None, :], (acc * scale).to(o.dtype.element_ty), mask=m[:, None] & mv[None, :])
        n = tl.minimum(L - c, BT)
        w = tl.where(m, tl.exp2(gh * (n - 1 - o_t).to(tl.float32)), 0.0)
        S = S * tl.exp2(gh * n.to(tl.float32)) + tl.dot(tl.trans((b_k * w[:, None]).to(b_v.dtype)), b_v)


def _segments(bounds: list[int], device, seg: int | None, programs_per_segment: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split each sequence [bounds[n], bounds[n+1]) into segments (multiples of CHUNK except each sequence's last).

    Enough segments to give ~16 programs per SM, no more: each segment adds a serial step to the state scan.
    """
    if seg is None:
        n_seg = min(MAX_SEGMENTS, max(1, -(-16 * num_sms(device) // programs_per_segment)))
        seg = max(MIN_SEGMENT, -(-bounds[-1] // n_seg))
    seg = -(-seg // CHUNK) * CHUNK
    starts, lens, first = [], [], [0]
    for a, b in zip(bounds[:-1], bounds[1:]):
        for s in range(a, b, seg):
            starts.append(s)
            lens.append(min(seg, b - s))
        first.append(len(starts))
    mk = lambda x: torch.tensor(x, dtype=torch.int32, device=device)  # noqa: E731
    return mk(starts), mk(lens), mk(first)


def chunk_lightning(q, k, v, log_decay, *, scale, initial_state=None, cu_seqlens=None, state_tf32=False, segment_len=None, out=None):
    """q, k: [B, T, H, Dk]; v: [B, T, H, Dv] -> (o [B, T, H, Dv] q.dtype, final_state [N, H, Dk, Dv] fp32).

    segment_len (rounded up to 64) overrides the automatic segment length: tests use it to cross segment borders.
    state_tf32 multiplies Q by the fp32 state in tf32 instead of rounding the state to the input dtype.
    out: an optional preallocated output (tests poison it to prove every element is written).
    """
    for x in (q, k, v):
        tl_dtype_ok(x)
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    if DK & (DK - 1) or DV & (DV - 1) or DK < 16 or DV < 16:
        raise ValueError(f"expected power-of-two head dims >= 16 for the Triton kernel, got Dk={DK}, Dv={DV}")
    q, k, v = q.contiguous(), k.contiguous(), v.to(q.dtype).contiguous()
    k = k.to(q.dtype)
    g = log_decay.to(device=q.device, dtype=torch.float32).contiguous()
    if cu_seqlens is None:
        bounds = [b * T for b in range(B + 1)]
    else:
        bounds = [int(x) for x in cu_seqlens.tolist()]
    N = len(bounds) - 1
    seg_start, seg_len, first = _segments(bounds, q.device, segment_len, H * triton.cdiv(DV, 64))
    n_seg = seg_start.numel()
    o = torch.empty(B, T, H, DV, dtype=q.dtype, device=q.device) if out is None else out
    ht = torch.empty(N, H, DK, DV, dtype=torch.float32, device=q.device)
    if n_seg == 0:
        if initial_state is not None:
            ht.copy_(initial_state)
        else:
            ht.zero_()
        return o, ht
    dstate = torch.empty(n_seg, H, DK, DV, dtype=torch.float32, device=q.device)
    n_tok = B * T
    grid = lambda meta: (n_seg, H, triton.cdiv(DV, meta["BV"]))  # noqa: E731
    _segment_state_kernel[grid](k, v, g, seg_start, seg_len, dstate, n_tok, H=H, DK=DK, DV=DV, BT=CHUNK)
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else dstate
    bk, bv = min(DK, 64), min(DV, 64)
    _segment_scan_kernel[(N, H, (DK // bk) * (DV // bv))](dstate, h0, ht, g, first, seg_len, H=H, DK=DK, DV=DV, BK=bk,
                                                          BV=bv, HAS_H0=initial_state is not None, num_warps=4)
    _chunk_output_kernel[grid](q, k, v, o, g, seg_start, seg_len, dstate, float(scale), n_tok, H=H, DK=DK, DV=DV, BT=CHUNK,
                               STATE_TF32=state_tf32)
    return o, ht
