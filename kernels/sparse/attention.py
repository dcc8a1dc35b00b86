"""Triton block-sparse attention over the selected blocks (sala-model.md §3.6), prefill and decode.

One program per (query token, KV head) holds the G query heads of the group in one [G, D] tile, so every head
shares the block list and each K/V block is loaded once for the whole group. The selected blocks are visited
with an online softmax (exp2, fp32 accumulators); keys after the query's position are masked. When there are
too few queries to fill the GPU (decode), each row's block list is split across programs and a second kernel
merges the partial (max, sum, output) triples, Flash-Decoding style.

Prefill with `forced_blocks` (contexts up to BAND_MAX_KV): the init blocks and the local band are the same for
all 64 queries of a block, so `_band_attn_kernel` runs them once as dense FlashAttention tiles, and the gather
kernel starts from that partial result and visits only the scored blocks. Optionally (`range_blocks`) the scored
blocks are visited in passes over key ranges, carrying an fp32 partial between passes (measured, off by default).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import configs, num_sms, tl_dtype_ok

LOG2E = 1.4426950408889634


@triton.jit
def _online_softmax(s, b_v, m, l, acc):
    """One key tile of flash attention (log2 domain): fold scores s [rows, keys] and values b_v into the running
    max m, sum l and unnormalised output acc; rows with no visible key yet keep m = -inf and l = 0."""
    m_new = tl.maximum(m, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_use[:, None])
    alpha = tl.exp2(m - m_use)
    return m_new, l * alpha + tl.sum(p, 1), acc * alpha[:, None] + tl.dot(p.to(b_v.dtype), b_v)


@triton.jit
def _band_attn_kernel(
    q,
    k,
    v,
    o,
    lse,
    q_start,
    Tq,
    L,
    scale_log2,
    s_qb,
    s_qt,
    s_qh,
    s_kb,
    s_kt,
    s_kh,
    s_vb,
    s_vt,
    s_vh,
    s_ob,
    s_ot,
    s_oh,
    HQ: tl.constexpr,
    G: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    DV: tl.constexpr,
    BDV: tl.constexpr,
    BS: tl.constexpr,
    INIT: tl.constexpr,
    LOCAL: tl.constexpr,
    NB: tl.constexpr = 1,
):
    """Dense part shared by a whole query block: its init blocks and local band, as FlashAttention tiles of
    BS queries x (NB x BS) keys for one query head. Writes the normalised partial output and its log2-sum-exp."""
    i_qb, i_bh = tl.program_id(0), tl.program_id(1)
    b, hq = i_bh // HQ, i_bh % HQ
    g = hq // G
    qb = q_start // BS + i_qb  # absolute query block
    pos = qb * BS + tl.arange(0, BS)
    rm = (pos >= q_start) & (pos < q_start + Tq)
    d = tl.arange(0, BD)
    dv = tl.arange(0, BDV)
    b_q = tl.load(
        q + b.to(tl.int64) * s_qb + (pos - q_start).to(tl.int64)[:, None] * s_qt + hq * s_qh + d[None, :],
        mask=rm[:, None] & (d < D)[None, :],
        other=0.0,
    )
    kb = k + b.to(tl.int64) * s_kb + g * s_kh
    vb = v + b.to(tl.int64) * s_vb + g * s_vh
    t = tl.arange(0, NB * BS)
    m = tl.full([BS], float("-inf"), tl.float32)
    l = tl.zeros([BS], tl.float32)
    acc = tl.zeros([BS, BDV], tl.float32)
    lo = tl.maximum(qb - LOCAL, 0)
    n_init = tl.minimum(lo, INIT)
    # the init blocks, then the band's keys [lo * BS, (qb + 1) * BS) NB blocks a step
    n_band = tl.cdiv(qb - lo + 1, NB)
    for jj in range(0, n_init + n_band):
        first = tl.where(jj < n_init, jj * BS, (lo + (jj - n_init) * NB) * BS)
        key = first + t
        km = (key < L) & (((t * 0 + jj) >= n_init) | (t < BS)) & (key < (qb + 1) * BS)  # an init step is one block
        b_k = tl.load(
            kb + key.to(tl.int64)[:, None] * s_kt + d[None, :], mask=km[:, None] & (d < D)[None, :], other=0.0
        )
        b_v = tl.load(
            vb + key.to(tl.int64)[:, None] * s_vt + dv[None, :], mask=km[:, None] & (dv < DV)[None, :], other=0.0
        )
        ok = km[None, :] & (key[None, :] <= pos[:, None])
        s = tl.where(ok, tl.dot(b_q, tl.trans(b_k)) * scale_log2, float("-inf"))
        m, l, acc = _online_softmax(s, b_v, m, l, acc)
    out = acc / tl.where(l > 0, l, 1.0)[:, None]
    dst = o + b.to(tl.int64) * s_ob + (pos - q_start).to(tl.int64)[:, None] * s_ot + hq * s_oh + dv[None, :]
    tl.store(dst, out.to(o.dtype.element_ty), mask=rm[:, None] & (dv < DV)[None, :])
    lse_v = tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), float("-inf"))
    tl.store(lse + (i_bh.to(tl.int64) * Tq + (pos - q_start)), lse_v, mask=rm)


@triton.jit
def _sparse_attn_kernel(
    q,
    k,
    v,
    idx,
    o,
    part_o,
    part_ml,
    lse,
    acc_buf,
    q_start,
    Tq,
    L,
    K,
    per_split,
    r_lo,
    r_hi,
    scale_log2,
    s_qb,
    s_qt,
    s_qh,
    s_kb,
    s_kt,
    s_kh,
    s_vb,
    s_vt,
    s_vh,
    s_ib,
    s_ih,
    s_it,
    s_ob,
    s_ot,
    s_oh,
    pos_ptr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    BH: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    DV: tl.constexpr,
    BDV: tl.constexpr,
    BS: tl.constexpr,
    SPLIT: tl.constexpr,
    BAND: tl.constexpr,
    INIT: tl.constexpr,
    LOCAL: tl.constexpr,
    KP: tl.constexpr = 1,
    ACC_IN: tl.constexpr = False,
    ACC_OUT: tl.constexpr = False,
    DEV: tl.constexpr = False,
    NBLK: tl.constexpr = 1,
):
    """DEV (graph decode): the single query's position is read from pos_ptr and the keys end after it.

    BAND with ACC_IN / ACC_OUT (one pass of a ranged gather): visit only the scored blocks in [r_lo, r_hi), starting
    from the fp32 partial (normalised output in acc_buf [Tq, Hq, DV], log2-sum-exp in lse) and writing it back
    (ACC_OUT), or writing the final output to o (the last pass)."""
    i, i_bg, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_split = tl.num_programs(2)
    b, g = i_bg // HKV, i_bg % HKV
    if DEV:
        pos = tl.load(pos_ptr).to(tl.int32)
        L = pos + 1
    else:
        pos = q_start + i
    h = tl.arange(0, BH)
    d = tl.arange(0, BD)
    dv = tl.arange(0, BDV)
    hm = h < G
    b_q = tl.load(
        q + b.to(tl.int64) * s_qb + i.to(tl.int64) * s_qt + (g * G + h)[:, None] * s_qh + d[None, :],
        mask=hm[:, None] & (d < D)[None, :],
        other=0.0,
    )
    kb = k + b.to(tl.int64) * s_kb + g * s_kh
    vb = v + b.to(tl.int64) * s_vb + g * s_vh
    ib = idx + b.to(tl.int64) * s_ib + g * s_ih + i.to(tl.int64) * s_it
    k_lo = i_s * per_split
    k_hi = tl.minimum(K, k_lo + per_split)
    if BAND:
        # start from the band kernel's result for this query (init blocks + local band, already normalised) and
        # visit only the scored blocks: the sorted list is [init..., scored..., band..., -1...]
        hq = g * G + h
        bt = pos // BS
        lo = tl.maximum(bt - LOCAL, 0)
        k_lo = tl.minimum(lo, INIT)
        k_hi = tl.minimum(K, bt + 1) - (bt - lo + 1)
        work = hm
        if ACC_IN:
            # the scored part of the row is sorted, so its blocks in [r_lo, r_hi) are one run [k_lo, k_hi) of it
            kv = tl.arange(0, KP)
            in_row = (kv >= k_lo) & (kv < k_hi)
            ids = tl.load(ib + kv, mask=in_row, other=0)
            k_lo, k_hi = (
                k_lo + tl.sum((in_row & (ids < r_lo)).to(tl.int32), 0),
                k_lo + tl.sum((in_row & (ids < r_hi)).to(tl.int32), 0),
            )
            if ACC_OUT:  # a middle pass with nothing in its range leaves the partial as it is
                work = work & ((h * 0 + (k_hi - k_lo)) > 0)  # as a vector: masks must be tensors of booleans
        lse_at = lse + ((b * HKV * G + hq).to(tl.int64) * Tq + i)
        m = tl.load(lse_at, mask=work, other=float("-inf"))
        l = tl.where(m == float("-inf"), 0.0, 1.0)
        if ACC_IN:
            acc_at = acc_buf + ((b * Tq + i).to(tl.int64) * (HKV * G) + hq)[:, None] * BDV + dv[None, :]
            acc = tl.load(acc_at, mask=work[:, None], other=0.0)
        else:
            acc = tl.load(
                o + b.to(tl.int64) * s_ob + i.to(tl.int64) * s_ot + hq[:, None] * s_oh + dv[None, :],
                mask=hm[:, None] & (dv < DV)[None, :],
                other=0.0,
            ).to(tl.float32)
    else:
        m = tl.full([BH], float("-inf"), tl.float32)
        l = tl.zeros([BH], tl.float32)
        acc = tl.zeros([BH, BDV], tl.float32)
    # NBLK blocks a step: one [NBLK * BS, D] tile of keys and values, twice the bytes in flight per program for 2
    # (the tuner of the generic path may take it; the band mode measured best with 1)
    r = tl.arange(0, NBLK * BS)
    for kk in range(k_lo, k_hi, NBLK):
        j = r * 0 + tl.load(ib + kk)  # each row's block: scalar loads broadcast to the block's rows
        for sb in tl.static_range(1, NBLK):
            jn = tl.load(ib + kk + sb, mask=kk + sb < k_hi, other=-1)
            j = tl.where(r // BS == sb, r * 0 + jn, j)
        key = tl.maximum(j, 0) * BS + r % BS
        km = (j >= 0) & (key < L) & (key <= pos)
        b_k = tl.load(
            kb + key.to(tl.int64)[:, None] * s_kt + d[None, :], mask=km[:, None] & (d < D)[None, :], other=0.0
        )
        b_v = tl.load(
            vb + key.to(tl.int64)[:, None] * s_vt + dv[None, :], mask=km[:, None] & (dv < DV)[None, :], other=0.0
        )
        s = tl.where(km[None, :], tl.dot(b_q, tl.trans(b_k)) * scale_log2, float("-inf"))
        m, l, acc = _online_softmax(s, b_v, m, l, acc)
    if ACC_OUT:
        tl.store(acc_at, acc / tl.where(l > 0, l, 1.0)[:, None], mask=work[:, None])
        tl.store(lse_at, tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), float("-inf")), mask=work)
    elif SPLIT:
        row = ((i_bg * tl.num_programs(0) + i) * n_split + i_s).to(tl.int64) * BH + h
        tl.store(part_o + row[:, None] * BDV + dv[None, :], acc)
        tl.store(part_ml + row * 2, m)
        tl.store(part_ml + row * 2 + 1, l)
    else:
        out = acc / tl.where(l > 0, l, 1.0)[:, None]
        dst = o + b.to(tl.int64) * s_ob + i.to(tl.int64) * s_ot + (g * G + h)[:, None] * s_oh + dv[None, :]
        tl.store(dst, out.to(o.dtype.element_ty), mask=hm[:, None] & (dv < DV)[None, :])


# Memory-bound gather loop: warps and pipelining depth are tuned per GPU. The band mode updates its partial in
# place and is launched with the fixed (warps, stages) below, measured on an H100 (kernels/BENCH.md): a tuner
# would re-run it, and the model's first long prompt would pay for the tuning.
_sparse_attn_tuned = triton.autotune(
    configs=configs(
        [
            triton.Config({"NBLK": nb}, num_warps=w, num_stages=st)
            for nb, w, st in [(1, 4, 3), (1, 4, 2), (1, 8, 3), (1, 2, 3), (2, 4, 3), (2, 8, 3)]
        ]
    ),
    key=["G", "D", "DV", "BS", "SPLIT"],
)(_sparse_attn_kernel)
# (num_warps, num_stages, blocks a step) of the band-mode gather and the band kernel's (num_warps, num_stages, key
# blocks a tile). Measured on an H100 (kernels/BENCH.md): in the model's 256K prefill two blocks a step cost 5% more
# attention time than one, and 8 warps or two-block tiles for the band kernel gained nothing.
BAND_GATHER = (4, 3, 1)
BAND_TILE = (4, 3, 1)

BAND_MAX_KV = 2**18  # measured: longer contexts serve the shared band from L2 inside the gather loop at no cost
# Ranged gather (off by default): the scored blocks visited in passes over key ranges of RANGE_BLOCKS blocks (32 KiB
# of K and V each per KV head), so one pass's keys could stay in L2 while every query of the chunk reads its blocks
# there; the partial result is carried in fp32 between passes. Measured on an H100: 10% faster for a 16K-query chunk
# at 256K on random inputs, but 8% slower inside the model's 256K prefill (kernels/BENCH.md), so 0.
RANGE_BLOCKS = 0
RANGE_QUERIES = 16384  # queries per ranged sub-chunk: bounds the fp32 partial (Tq x Hq x Dv x 4 bytes)


@triton.jit
def _combine_kernel(
    part_o,
    part_ml,
    o,
    n_split,
    s_ob,
    s_ot,
    s_oh,
    HKV: tl.constexpr,
    G: tl.constexpr,
    BH: tl.constexpr,
    DV: tl.constexpr,
    BDV: tl.constexpr,
    NSP: tl.constexpr,
):
    """One program per (query, KV head, query head): all splits' partials are merged in one vectorised step."""
    i, i_bg, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, g = i_bg // HKV, i_bg % HKV
    s = tl.arange(0, NSP)
    dv = tl.arange(0, BDV)
    row = ((i_bg * tl.num_programs(0) + i) * n_split + s).to(tl.int64) * BH + h  # [NSP]
    sm = s < n_split
    m_s = tl.load(part_ml + row * 2, mask=sm, other=float("-inf"))
    l_s = tl.load(part_ml + row * 2 + 1, mask=sm, other=0.0)
    o_s = tl.load(part_o + row[:, None] * BDV + dv[None, :], mask=sm[:, None], other=0.0)
    m = tl.max(m_s, 0)
    w = tl.where(m_s == float("-inf"), 0.0, tl.exp2(m_s - tl.where(m == float("-inf"), 0.0, m)))
    l = tl.sum(l_s * w, 0)
    out = tl.sum(o_s * w[:, None], 0) / tl.where(l > 0, l, 1.0)
    dst = o + b.to(tl.int64) * s_ob + i.to(tl.int64) * s_ot + (g * G + h) * s_oh + dv
    tl.store(dst, out.to(o.dtype.element_ty), mask=dv < DV)


def sparse_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_idx: torch.Tensor,
    *,
    q_start: int,
    block_size: int,
    scale: float,
    n_split: int | None = None,
    forced_blocks: tuple[int, int] | None = None,
    out: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
    range_blocks: int | None = None,
) -> torch.Tensor:
    """q: [B, Tq, Hq, D]; k, v: [B, L, Hkv, D]; block_idx int [B, Hkv, Tq, K] -> [B, Tq, Hq, Dv] in q.dtype.

    forced_blocks = (init_blocks, local_blocks) promises that every row lists blocks [0, init_blocks) and
    [own - local_blocks, own] and is sorted ascending with -1 last, as select_blocks returns it. Prefill then runs
    that shared part once per 64-query block as dense tiles and only the scored blocks per query.
    pos (int64 [1] device tensor, Tq == 1, for graph decode): the query's position, read on the device; q_start is
    then ignored and k, v may be longer buffers (keys after pos are never read).
    range_blocks (with forced_blocks, prefill): visit the scored blocks in passes over key ranges of that many blocks
    (default RANGE_BLOCKS; 0 = one pass), so the keys of a pass stay in L2.
    """
    if pos is not None:
        if q.shape[1] != 1:
            raise ValueError(f"pos is for one query per sequence, got {q.shape[1]}")
        forced_blocks, q_start = None, 0
    tl_dtype_ok(q)
    B, Tq, Hq, D = q.shape
    L, Hkv, DV = k.shape[1], k.shape[2], v.shape[-1]
    G = Hq // Hkv
    K = block_idx.shape[-1]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    k, v = k.to(q.dtype), v.to(q.dtype)
    idx = block_idx.to(torch.int32)
    o = torch.empty(B, Tq, Hq, DV, dtype=q.dtype, device=q.device) if out is None else out
    if Tq == 0:
        return o
    rows = B * Hkv * Tq
    if n_split is None:  # split each row's blocks (>= 2 a program) only when rows alone cannot fill the GPU
        n_split = max(1, min(-(-K // 2), -(-2 * num_sms(q.device) // rows)))
    per = max(1, -(-K // n_split))
    n_split = max(1, -(-K // per))
    BH, BD, BDV = max(16, triton.next_power_of_2(G)), triton.next_power_of_2(D), triton.next_power_of_2(DV)
    split = n_split > 1
    rb = RANGE_BLOCKS if range_blocks is None else range_blocks
    n_blocks = -(-L // block_size)
    ranged = forced_blocks is not None and not split and G > 1 and pos is None and 0 < rb < n_blocks
    if ranged:
        for a in range(0, Tq, RANGE_QUERIES):
            b = min(Tq, a + RANGE_QUERIES)
            _ranged_attention(
                q[:, a:b], k, v, idx[:, :, a:b], o[:, a:b], q_start + a, block_size, scale, forced_blocks, rb
            )
        return o
    band = forced_blocks is not None and not split and G > 1 and L <= BAND_MAX_KV
    init, local = forced_blocks if band else (0, 0)
    part_o = torch.empty(B * Hkv * Tq * n_split * BH, BDV, dtype=torch.float32, device=q.device) if split else o
    part_ml = torch.empty(B * Hkv * Tq * n_split * BH, 2, dtype=torch.float32, device=q.device) if split else o
    lse = torch.empty(B * Hq, Tq, dtype=torch.float32, device=q.device) if band else o
    strides = (
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
    )
    if band:
        n_qb = (q_start + Tq - 1) // block_size - q_start // block_size + 1
        w, st, nb = BAND_TILE
        _band_attn_kernel[(n_qb, B * Hq)](
            q,
            k,
            v,
            o,
            lse,
            q_start,
            Tq,
            L,
            scale * LOG2E,
            *strides,
            o.stride(0),
            o.stride(1),
            o.stride(2),
            HQ=Hq,
            G=G,
            D=D,
            BD=BD,
            DV=DV,
            BDV=BDV,
            BS=block_size,
            INIT=init,
            LOCAL=local,
            NB=nb,
            num_warps=w,
            num_stages=st,
        )
    args = (
        q,
        k,
        v,
        idx,
        o,
        part_o,
        part_ml,
        lse,
        o,
        q_start,
        Tq,
        L,
        K,
        per,
        0,
        0,
        scale * LOG2E,
        *strides,
        idx.stride(0),
        idx.stride(1),
        idx.stride(2),
        o.stride(0),
        o.stride(1),
        o.stride(2),
        idx if pos is None else pos,
    )
    kw = dict(
        HKV=Hkv,
        G=G,
        BH=BH,
        D=D,
        BD=BD,
        DV=DV,
        BDV=BDV,
        BS=block_size,
        SPLIT=split,
        INIT=init,
        LOCAL=local,
        DEV=pos is not None,
    )
    if band:
        w, st, nb = BAND_GATHER
        _sparse_attn_kernel[(Tq, B * Hkv, n_split)](*args, **kw, BAND=True, NBLK=nb, num_warps=w, num_stages=st)
    else:
        _sparse_attn_tuned[(Tq, B * Hkv, n_split)](*args, **kw, BAND=False)
    if split:
        _combine_kernel[(Tq, B * Hkv, G)](
            part_o,
            part_ml,
            o,
            n_split,
            o.stride(0),
            o.stride(1),
            o.stride(2),
            HKV=Hkv,
            G=G,
            BH=BH,
            DV=DV,
            BDV=BDV,
            NSP=triton.next_power_of_2(n_split),
            num_warps=2,
        )
    return o


def _ranged_attention(q, k, v, idx, o, q_start, block_size, scale, forced_blocks, rb) -> None:
    """Band + scored blocks of queries q (positions q_start..) in passes over key ranges of rb blocks: the band kernel
    writes an fp32 partial, each pass but the last updates it in place, the last writes o."""
    B, Tq, Hq, D = q.shape
    L, Hkv, DV = k.shape[1], k.shape[2], v.shape[-1]
    G, K = Hq // Hkv, idx.shape[-1]
    BH, BD, BDV = max(16, triton.next_power_of_2(G)), triton.next_power_of_2(D), triton.next_power_of_2(DV)
    init, local = forced_blocks
    acc = torch.empty(B, Tq, Hq, BDV, dtype=torch.float32, device=q.device)
    lse = torch.empty(B * Hq, Tq, dtype=torch.float32, device=q.device)
    strides = (
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
    )
    n_qb = (q_start + Tq - 1) // block_size - q_start // block_size + 1
    w, st, nb = BAND_TILE
    _band_attn_kernel[(n_qb, B * Hq)](
        q,
        k,
        v,
        acc,
        lse,
        q_start,
        Tq,
        L,
        scale * LOG2E,
        *strides,
        acc.stride(0),
        acc.stride(1),
        acc.stride(2),
        HQ=Hq,
        G=G,
        D=D,
        BD=BD,
        DV=DV,
        BDV=BDV,
        BS=block_size,
        INIT=init,
        LOCAL=local,
        NB=nb,
        num_warps=w,
        num_stages=st,
    )
    # scored blocks lie before the last query's band
    top = max(1, (q_start + Tq - 1) // block_size - local)
    bounds = list(range(0, top, rb)) + [top]
    for n, (r_lo, r_hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        last = n == len(bounds) - 2
        args = (
            q,
            k,
            v,
            idx,
            o,
            o,
            o,
            lse,
            acc,
            q_start,
            Tq,
            L,
            K,
            K,
            r_lo,
            r_hi if not last else 2**31 - 1,
            scale * LOG2E,
            *strides,
            idx.stride(0),
            idx.stride(1),
            idx.stride(2),
            o.stride(0),
            o.stride(1),
            o.stride(2),
            idx,
        )
        w, st, nb = BAND_GATHER
        _sparse_attn_kernel[(Tq, B * Hkv, 1)](
            *args,
            HKV=Hkv,
            G=G,
            BH=BH,
            D=D,
            BD=BD,
            DV=DV,
            BDV=BDV,
            BS=block_size,
            SPLIT=False,
            BAND=True,
            INIT=init,
            LOCAL=local,
            KP=triton.next_power_of_2(K),
            ACC_IN=True,
            ACC_OUT=not last,
            NBLK=nb,
            num_warps=w,
            num_stages=st,
        )
