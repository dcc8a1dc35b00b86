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

import functools

import torch
import triton
import triton.language as tl

from .._triton_utils import configs, num_sms, tl_dtype_ok

LOG2E = 1.4426950408889634
CHUNK = 64
MAX_SEGMENTS = 128  # per call; bounds the segment-state buffer
MIN_SEGMENT = 256


@triton.jit
def _segment_tile(
    seg_start, seg_len, g, i_s, i_h, i_v, DK: tl.constexpr, DV: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr
):
    """Where program (segment i_s, head i_h, value slice i_v) works: the segment's first flat token and length, the
    head's decay per token in log2 units, and the offsets of a chunk's tokens, the keys and this value slice."""
    start = tl.load(seg_start + i_s).to(tl.int64)
    L = tl.load(seg_len + i_s)
    gh = tl.load(g + i_h).to(tl.float32) * 1.4426950408889634
    o_v = i_v * BV + tl.arange(0, BV)
    return start, L, gh, tl.arange(0, BT), tl.arange(0, DK), o_v, o_v < DV  # BV may exceed DV for small heads


@triton.autotune(
    configs=configs(
        [
            triton.Config({"BV": bv}, num_warps=w, num_stages=s)
            for bv, w, s in [(64, 4, 2), (64, 4, 3), (128, 8, 2), (32, 4, 3)]
        ]
    ),
    key=["DK", "DV", "F32"],
)
@triton.jit(do_not_specialize=["n_tok"])
def _segment_state_kernel(
    k,
    v,
    g,
    seg_start,
    seg_len,
    dstate,
    n_tok,
    s_k,
    s_v,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    F32: tl.constexpr,
):
    i_s, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, L, gh, o_t, o_k, o_v, mv = _segment_tile(seg_start, seg_len, g, i_s, i_h, i_v, DK, DV, BT, BV)
    acc = tl.zeros([DK, BV], dtype=tl.float32)
    for c in range(0, L, BT):
        t = c + o_t
        m = t < L
        tok = start + t  # flat token index (batch * T + position); token strides s_k, s_v, heads D apart
        b_k = tl.load(k + (tok * s_k + i_h * DK)[:, None] + o_k[None, :], mask=m[:, None], other=0.0)
        b_v = tl.load(v + (tok * s_v + i_h * DV)[:, None] + o_v[None, :], mask=m[:, None] & mv[None, :], other=0.0)
        w = tl.where(m, tl.exp2(gh * (L - 1 - t).to(tl.float32)), 0.0)
        if F32 == 2:  # the decayed keys as the sum of two bf16 parts
            kw = b_k.to(tl.float32) * w[:, None]
            kw_hi = kw.to(b_v.dtype)
            acc = tl.dot(tl.trans(kw_hi), b_v, acc)
            acc = tl.dot(tl.trans((kw - kw_hi.to(tl.float32)).to(b_v.dtype)), b_v, acc)
        elif F32:  # the decayed keys stay fp32 (tf32 operands), as fp32 inputs have them
            acc += tl.dot(tl.trans(b_k.to(tl.float32) * w[:, None]), b_v.to(tl.float32), input_precision="tf32")
        else:
            acc += tl.dot(tl.trans((b_k * w[:, None]).to(b_v.dtype)), b_v)
    base = ((i_s * H + i_h) * DK).to(tl.int64)
    tl.store(dstate + (base + o_k[:, None]) * DV + o_v[None, :], acc, mask=mv[None, :])


@triton.jit
def _segment_scan_kernel(
    dstate,
    h0,
    ht,
    g,
    seq_first_seg,
    seg_len,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_H0: tl.constexpr,
):
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
    configs=configs(
        [
            triton.Config({"BV": bv}, num_warps=w, num_stages=s)
            for bv, w, s in [(64, 4, 2), (64, 4, 3), (128, 8, 2), (64, 8, 2)]
        ]
    ),
    key=["DK", "DV", "F32"],
)
@triton.jit(do_not_specialize=["n_tok"])
def _chunk_output_kernel(
    q,
    k,
    v,
    o,
    g,
    seg_start,
    seg_len,
    state,
    scale,
    n_tok,
    s_q,
    s_k,
    s_v,
    H: tl.constexpr,
    DK: tl.constexpr,
    DV: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    F32: tl.constexpr,
):
    i_s, i_h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, L, gh, o_t, o_k, o_v, mv = _segment_tile(seg_start, seg_len, g, i_s, i_h, i_v, DK, DV, BT, BV)
    base = ((i_s * H + i_h) * DK).to(tl.int64)
    S = tl.load(state + (base + o_k[:, None]) * DV + o_v[None, :], mask=mv[None, :], other=0.0)  # [DK, BV] fp32
    diff = o_t[:, None] - o_t[None, :]
    q_decay = tl.exp2(gh * (o_t + 1).to(tl.float32))
    # 64-bit base pointers of the segment, 32-bit offsets within it: 64-bit offset tiles cost registers (an sm_90
    # build of the split mode spilled 365 instructions' worth with them, 158 without)
    q_seg = q + start * s_q + i_h * DK
    k_seg = k + start * s_k + i_h * DK
    v_seg = v + start * s_v + i_h * DV
    o_seg = o + (start * H + i_h) * DV
    for c in range(0, L, BT):
        t = c + o_t
        m = t < L
        b_q = tl.load(q_seg + (t * s_q)[:, None] + o_k[None, :], mask=m[:, None], other=0.0)
        b_k = tl.load(k_seg + (t * s_k)[:, None] + o_k[None, :], mask=m[:, None], other=0.0)
        b_v = tl.load(v_seg + (t * s_v)[:, None] + o_v[None, :], mask=m[:, None] & mv[None, :], other=0.0)
        # QKᵀ in the inputs' dtype: 16-bit products are exact and accumulate in fp32 (as tf32 of their fp32 copies).
        # Exponents are differences <= 0 only (clamped before exp2), so nothing overflows at any decay.
        A = tl.dot(b_q, tl.trans(b_k))
        A = tl.where(diff >= 0, A * tl.exp2(gh * tl.maximum(diff, 0).to(tl.float32)), 0.0)
        n = tl.minimum(L - c, BT)
        w = tl.where(m, tl.exp2(gh * (n - 1 - o_t).to(tl.float32)), 0.0)
        if F32 == 2:  # bf16 inputs: each fp32 operand as the sum of two bf16 parts, two bf16 dots (~16-bit mantissa)
            A_hi = A.to(b_v.dtype)
            acc = tl.dot(A_hi, b_v)
            acc = tl.dot((A - A_hi.to(tl.float32)).to(b_v.dtype), b_v, acc)
            S_hi = S.to(b_v.dtype)
            qs = tl.dot(b_q, S_hi)
            qs = tl.dot(b_q, (S - S_hi.to(tl.float32)).to(b_v.dtype), qs)
            acc += qs * q_decay[:, None]  # diag(q_decay) Q S: the decay scales rows after the product
            tl.store(
                o_seg + (t * (H * DV))[:, None] + o_v[None, :],
                (acc * scale).to(o.dtype.element_ty),
                mask=m[:, None] & mv[None, :],
            )
            kw = b_k.to(tl.float32) * w[:, None]
            kw_hi = kw.to(b_v.dtype)
            S = tl.dot(tl.trans(kw_hi), b_v, S * tl.exp2(gh * n.to(tl.float32)))
            S = tl.dot(tl.trans((kw - kw_hi.to(tl.float32)).to(b_v.dtype)), b_v, S)
        elif F32:  # A, the decayed q and k and the state stay fp32 (tf32 operands): the numbers of fp32 inputs
            b_vf = b_v.to(tl.float32)
            acc = tl.dot(A, b_vf, input_precision="tf32")
            acc = tl.dot(b_q.to(tl.float32) * q_decay[:, None], S, acc, input_precision="tf32")
            tl.store(
                o_seg + (t * (H * DV))[:, None] + o_v[None, :],
                (acc * scale).to(o.dtype.element_ty),
                mask=m[:, None] & mv[None, :],
            )
            S = tl.dot(
                tl.trans(b_k.to(tl.float32) * w[:, None]),
                b_vf,
                S * tl.exp2(gh * n.to(tl.float32)),
                input_precision="tf32",
            )
        else:  # rounded to the input dtype for 16-bit dots (fla's precision)
            acc = tl.dot(A.to(b_v.dtype), b_v)
            acc = tl.dot((b_q * q_decay[:, None]).to(b_v.dtype), S.to(b_v.dtype), acc)
            tl.store(
                o_seg + (t * (H * DV))[:, None] + o_v[None, :],
                (acc * scale).to(o.dtype.element_ty),
                mask=m[:, None] & mv[None, :],
            )
            S = tl.dot(tl.trans((b_k * w[:, None]).to(b_v.dtype)), b_v, S * tl.exp2(gh * n.to(tl.float32)))


# fp32 products of bf16 inputs: an fp32 operand x as hi = bf16(x) plus lo = bf16(x - hi), two bf16 dots (about
# 16 mantissa bits, more than tf32's 10, at tf32's cost; bf16 operands also keep the kernel's registers in bounds).
# False: tf32 dots on fp32 operands, as fp32 inputs get.
SPLIT_BF16 = True


def _token_major(x: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D] as the kernels index it: unit last stride, heads D apart, batch b starting T token strides after
    batch b - 1 (so flat token b * T + t sits at (b * T + t) * stride(1)); a copy only when x is laid out otherwise."""
    B, T, H, D = x.shape
    if (
        x.stride(3) != 1
        or (H > 1 and x.stride(2) != D)
        or x.stride(1) < H * D
        or (B > 1 and x.stride(0) != T * x.stride(1))
    ):
        return x.contiguous()
    return x


def _segments(
    bounds: list[int], device, seg: int | None, programs_per_segment: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The segment tables for these bounds, made once: a CUDA graph capturing a verify pass (model/runtime.py) may
    not copy host lists to the device, and the eager run before each capture leaves the tables here."""
    return _segment_tables(tuple(bounds), torch.device(device), seg, programs_per_segment)


@functools.lru_cache(maxsize=256)
def _segment_tables(
    bounds: tuple[int, ...], device: torch.device, seg: int | None, programs_per_segment: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def chunk_lightning(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    fp32_products: bool = False,
    segment_len: int | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: [B, T, H, Dk]; v: [B, T, H, Dv] -> (o [B, T, H, Dv] q.dtype, final_state [N, H, Dk, Dv] fp32).

    fp32_products: every product after QKᵀ (the decay-masked scores times V, Q times the state, the state update)
    keeps its fp32 operand instead of rounding it to the 16-bit input dtype: for bf16 inputs as two bf16 parts (two
    bf16 dots, about 16 mantissa bits; SPLIT_BF16), otherwise in tf32 dots as fp32 inputs get. bf16 inputs then give
    the numbers of their fp32 copies (slightly closer to an fp32 reference) without the copies being made.
    segment_len (rounded up to 64) overrides the automatic segment length: tests use it to cross segment borders.
    out: an optional preallocated output (tests poison it to prove every element is written).
    """
    for x in (q, k, v):
        tl_dtype_ok(x)
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    if DK & (DK - 1) or DV & (DV - 1) or DK < 16 or DV < 16:
        raise ValueError(f"expected power-of-two head dims >= 16 for the Triton kernel, got Dk={DK}, Dv={DV}")
    # q, k, v may be strided views (v straight out of a fused projection): only the token stride is free
    q, k, v = _token_major(q), _token_major(k.to(q.dtype)), _token_major(v.to(q.dtype))
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
    # F32: 0 = 16-bit dot operands, 1 = tf32 dots on fp32 operands, 2 = each fp32 operand split into two bf16 parts
    f32 = (
        1
        if q.dtype == torch.float32
        else (0 if not fp32_products else (2 if q.dtype == torch.bfloat16 and SPLIT_BF16 else 1))
    )
    _segment_state_kernel[grid](
        k, v, g, seg_start, seg_len, dstate, n_tok, k.stride(1), v.stride(1), H=H, DK=DK, DV=DV, BT=CHUNK, F32=f32
    )
    h0 = initial_state.to(torch.float32).contiguous() if initial_state is not None else dstate
    bk, bv = min(DK, 64), min(DV, 64)
    _segment_scan_kernel[(N, H, (DK // bk) * (DV // bv))](
        dstate,
        h0,
        ht,
        g,
        first,
        seg_len,
        H=H,
        DK=DK,
        DV=DV,
        BK=bk,
        BV=bv,
        HAS_H0=initial_state is not None,
        num_warps=4,
    )
    _chunk_output_kernel[grid](
        q,
        k,
        v,
        o,
        g,
        seg_start,
        seg_len,
        dstate,
        float(scale),
        n_tok,
        q.stride(1),
        k.stride(1),
        v.stride(1),
        H=H,
        DK=DK,
        DV=DV,
        BT=CHUNK,
        F32=f32,
    )
    return o, ht
