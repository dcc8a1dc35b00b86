"""Triton InfLLM-V2 block selection (sala-model.md §3.5) without a [Hkv, Tq, n1] score matrix.

Per chunk of queries (sized so the block-score buffer stays <= 512 MiB at any length):
1. `_lse_kernel`: online log-sum-exp of scale·q·K2 over the visible K2 entries, optionally split over K2 ranges
   (partial (max, sum) pairs; decode splits so batch 1 fills the GPU).
2. `_score_kernel`: for the group's query heads (one [BM tokens x G heads, D] tile), p = exp(scale·q·K1 - lse2),
   summed over the group in registers, max-pooled to 64-token blocks (window pool_stride + 1, padding 1) in the
   same pass; only blocks left of the forced local band are scored. Writes one fp32 per (row, block).
3. `_topk_kernel`: one program per row: forces init/local blocks to +inf and later blocks to -inf, finds the
   k-th largest score by bisection on order-preserving integer keys (stopping once a threshold passes exactly k
   keys), keeps ties at the lowest block indices and compacts the chosen blocks in ascending order (a cumulative
   sum), -1 for blocks after the query's own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import configs, num_sms, tl_dtype_ok
from .params import SparseParams

LOG2E = 1.4426950408889634
SCORE_BUFFER_ELEMS = 2**27  # 512 MiB of fp32 block scores per query chunk


@triton.jit
def _rows(pid, chunk_start, chunk_len, BM: tl.constexpr, BG: tl.constexpr, G: tl.constexpr):
    """Rows of a tile = BM consecutive absolute positions (aligned to BM) x BG head slots of the group."""
    r = tl.arange(0, BM * BG)
    pos = (chunk_start // BM + pid) * BM + r // BG
    h = r % BG
    valid = (h < G) & (pos >= chunk_start) & (pos < chunk_start + chunk_len)
    return pos, h, valid


@triton.jit
def _load_q(q, q0, b, g, pos, h, valid, s_qb, s_qt, s_qh, G: tl.constexpr, D: tl.constexpr, BD: tl.constexpr):
    """q row i holds absolute position q0 + i."""
    d = tl.arange(0, BD)
    ptr = q + b.to(tl.int64) * s_qb + (pos - q0).to(tl.int64)[:, None] * s_qt + (g * G + h)[:, None] * s_qh + d[None, :]
    return tl.load(ptr, mask=valid[:, None] & (d < D)[None, :], other=0.0)


@triton.jit
def _windows(length, KS: tl.constexpr, STRIDE: tl.constexpr):
    """Complete compression windows over the first `length` keys."""
    return tl.where(length >= KS, (length - KS) // STRIDE + 1, 0)


@triton.jit
def _lse_kernel(
    q,
    q0,
    k2,
    part_m,
    part_l,
    chunk_start,
    chunk_len,
    n2,
    per_split,
    scale_log2,
    s_qb,
    s_qt,
    s_qh,
    s_kb,
    s_kn,
    s_kh,
    pos_ptr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    BG: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    KS2: tl.constexpr,
    STRIDE2: tl.constexpr,
    CAUSAL: tl.constexpr,
    DEV: tl.constexpr = False,
):
    """DEV (graph decode): one query row per (batch, kv head) at the position stored in pos_ptr; n2 follows from it."""
    pid, i_bg, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_split = tl.num_programs(2)
    if DEV:
        n2 = _windows(tl.load(pos_ptr).to(tl.int32) + 1, KS2, STRIDE2)
    b, g = i_bg // HKV, i_bg % HKV
    pos, h, valid = _rows(pid, chunk_start, chunk_len, BM, BG, G)
    b_q = _load_q(q, q0, b, g, pos, h, valid, s_qb, s_qt, s_qh, G, D, BD)
    c_lo = i_s * per_split
    c_hi = tl.minimum(n2, c_lo + per_split)
    if CAUSAL:
        p_max = tl.max(tl.where(valid, pos, -1))
        c_hi = tl.minimum(c_hi, tl.where(p_max >= KS2 - 1, (p_max - KS2 + 1) // STRIDE2 + 1, 0))
    d = tl.arange(0, BD)
    kb = k2 + b.to(tl.int64) * s_kb + g * s_kh
    m = tl.full([BM * BG], float("-inf"), tl.float32)
    l = tl.zeros([BM * BG], tl.float32)
    for c0 in range(c_lo, c_hi, BN):
        c = c0 + tl.arange(0, BN)
        b_k = tl.load(
            kb + c.to(tl.int64)[:, None] * s_kn + d[None, :], mask=(c < c_hi)[:, None] & (d < D)[None, :], other=0.0
        )
        s = tl.dot(b_q, tl.trans(b_k)) * scale_log2
        ok = (c < c_hi)[None, :]
        if CAUSAL:
            ok = ok & ((c * STRIDE2 + KS2 - 1)[None, :] <= pos[:, None])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_use) + tl.sum(tl.exp2(s - m_use[:, None]), 1)
        m = m_new
    dst = ((i_bg * n_split + i_s) * chunk_len + (pos - chunk_start)).to(tl.int64) * G + h
    tl.store(part_m + dst, m, mask=valid)
    tl.store(part_l + dst, l, mask=valid)


@triton.jit
def _lse_combine_kernel(part_m, part_l, lse2, total, n_rows, n_split, NSP: tl.constexpr, BR: tl.constexpr):
    """lse2 (log2 domain) of each (row, head) from the K2-range partials; 0 where no K2 entry was visible."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)  # flat (kv head, query, head) index
    s = tl.arange(0, NSP)
    bg, rest = r // n_rows, r % n_rows
    src = ((bg[None, :] * n_split + s[:, None]) * n_rows + rest[None, :]).to(tl.int64)
    pm = (s[:, None] < n_split) & (r < total)[None, :]
    m_s = tl.load(part_m + src, mask=pm, other=float("-inf"))  # [NSP, BR]
    l_s = tl.load(part_l + src, mask=pm, other=0.0)
    m = tl.max(m_s, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    l = tl.sum(tl.where(m_s == float("-inf"), 0.0, l_s * tl.exp2(m_s - m_use[None, :])), 0)
    tl.store(lse2 + r, tl.where(l > 0, m_use + tl.log2(tl.where(l > 0, l, 1.0)), 0.0), mask=r < total)


@triton.jit
def _score_kernel(
    q,
    q0,
    k1,
    lse2,
    scores,
    chunk_start,
    chunk_len,
    n1,
    nb,
    per_split,
    scale_log2,
    s_qb,
    s_qt,
    s_qh,
    s_kb,
    s_kn,
    s_kh,
    pos_ptr,
    HKV: tl.constexpr,
    G: tl.constexpr,
    BG: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    BM: tl.constexpr,
    GB: tl.constexpr,
    PS: tl.constexpr,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    BS: tl.constexpr,
    LOCAL: tl.constexpr,
    CAUSAL: tl.constexpr,
    DEV: tl.constexpr = False,
):
    pid, i_bg, i_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, g = i_bg // HKV, i_bg % HKV
    pos, h, valid = _rows(pid, chunk_start, chunk_len, BM, BG, G)
    b_q = _load_q(q, q0, b, g, pos, h, valid, s_qb, s_qt, s_qh, G, D, BD)

    lse = tl.load(lse2 + (i_bg * chunk_len + (pos - chunk_start)).to(tl.int64) * G + h, mask=valid, other=0.0)

    # blocks left of the forced band need scores: [0, band_start), band_start = own block - LOCAL
    if DEV:
        p_dev = tl.load(pos_ptr).to(tl.int32)
        n1 = _windows(p_dev + 1, KS, STRIDE)
        band = p_dev // BS - LOCAL
    else:
        band = tl.max(tl.where(valid, pos // BS - LOCAL, 0))
    j_lo = i_s * per_split
    j_hi = tl.minimum(tl.minimum(j_lo + per_split, band), nb)
    d = tl.arange(0, BD)
    kb = k1 + b.to(tl.int64) * s_kb + g * s_kh
    tok_pos = (chunk_start // BM + pid) * BM + tl.arange(0, BM)  # [BM]
    tok_ok = (tok_pos >= chunk_start) & (tok_pos < chunk_start + chunk_len)
    jj = tl.arange(0, GB)
    e = tl.arange(0, GB * PS)
    # the entry just before the first block (the pool's padding-1 side), computed directly once; for every later
    # tile it is the previous tile's last entry, carried in registers
    cp = d * 0 + (j_lo * PS - 1)  # as a vector: the same entry for every lane
    k_prev = tl.load(kb + tl.maximum(cp, 0).to(tl.int64) * s_kn + d, mask=(d < D) & (cp >= 0) & (cp < n1), other=0.0)
    cp = tok_pos * 0 + (j_lo * PS - 1)
    p_prev = tl.exp2(tl.sum(b_q.to(tl.float32) * k_prev.to(tl.float32)[None, :], 1) * scale_log2 - lse)
    p_prev = tl.sum(tl.reshape(tl.where(valid, p_prev, 0.0), [BM, BG]), 1)  # [BM]
    ok_prev = (cp >= 0) & (cp < n1)
    if CAUSAL:
        ok_prev = ok_prev & (cp * STRIDE + KS - 1 <= tok_pos)
    p_prev = tl.where(ok_prev, p_prev, -1.0)
    for j0 in range(j_lo, j_hi, GB):
        c = j0 * PS + e  # the K1 entries of blocks j0 .. j0+GB-1, except the one before each block
        b_k = tl.load(
            kb + c.to(tl.int64)[:, None] * s_kn + d[None, :], mask=(c < n1)[:, None] & (d < D)[None, :], other=0.0
        )
        p = tl.exp2(tl.dot(b_q, tl.trans(b_k)) * scale_log2 - lse[:, None])
        p = tl.where(valid[:, None], p, 0.0)
        shared = tl.sum(tl.reshape(p, [BM, BG, GB * PS]), 1)  # [BM, GB*PS]: summed over the group's heads
        ok = (c < n1)[None, :]
        if CAUSAL:
            ok = ok & ((c * STRIDE + KS - 1)[None, :] <= tok_pos[:, None])
        shared = tl.where(ok, shared, -1.0)  # -1: no entry (scores are >= 0)
        grp = tl.reshape(shared, [BM, GB, PS])
        m4 = tl.max(grp, 2)
        last = tl.max(tl.where(tl.arange(0, PS)[None, None, :] == PS - 1, grp, -1.0), 2)  # [BM, GB]
        prev = tl.gather(last, tl.broadcast_to(tl.maximum(jj - 1, 0)[None, :], [BM, GB]), 1)
        prev = tl.where(jj[None, :] == 0, p_prev[:, None], prev)
        blk = tl.maximum(m4, prev)
        j = j0 + jj
        dst = scores + ((i_bg * chunk_len + (tok_pos - chunk_start)).to(tl.int64) * nb)[:, None] + j[None, :]
        tl.store(dst, blk, mask=tok_ok[:, None] & (j < j_hi)[None, :])
        p_prev = tl.max(tl.where(jj[None, :] == GB - 1, last, -1.0), 1)  # entry (j0 + GB) * PS - 1, masked as above


@triton.jit
def _row_keys(row, j, band, bt, nb, INIT: tl.constexpr):
    """Order-preserving int32 keys of a row's block scores with init/local blocks forced to +inf, blocks after
    the query's own (and padding) to -inf; unscored (-1) entries become -inf."""
    scored = (j < band) & (j >= INIT) & (j < nb)
    x = tl.load(row + j, mask=scored, other=-1.0)
    x = tl.where(x < 0, float("-inf"), x)
    x = tl.where((j < INIT) | ((j >= band) & (j <= bt)), float("inf"), x)
    x = tl.where((j > bt) | (j >= nb), float("-inf"), x)
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _topk_kernel(
    scores,
    out,
    chunk_start,
    chunk_len,
    nb,
    K,
    s_ob,
    s_oh,
    s_ot,
    out_t0,
    pos_ptr,
    HKV: tl.constexpr,
    NBP: tl.constexpr,
    BS: tl.constexpr,
    LOCAL: tl.constexpr,
    INIT: tl.constexpr,
    QUAD: tl.constexpr,
    DEV: tl.constexpr = False,
):
    """The K largest keys of a row = those above tau, the largest key with count(key >= tau) >= K, plus the lowest
    indices among keys equal to tau. tau by bisection with the row's keys in registers: up to 33 halving rounds, or
    (QUAD, for decode, where the rounds' latency is the cost) 17 quartering rounds, whose three counts share one
    reduction packed in 20-bit fields of an int64."""
    i, i_bg = tl.program_id(0), tl.program_id(1)
    b, g = i_bg // HKV, i_bg % HKV
    if DEV:
        pos = tl.load(pos_ptr).to(tl.int32)
    else:
        pos = chunk_start + i
    bt = pos // BS
    band = bt - LOCAL
    j = tl.arange(0, NBP)
    key = _row_keys(scores + (i_bg * chunk_len + i).to(tl.int64) * nb, j, band, bt, nb, INIT)
    if QUAD:
        lo = _kth_key(key, K)
    else:
        lo = tl.full([], -2147483648, tl.int64)
        hi = tl.full([], 2147483647, tl.int64)
        # halving rounds until tau is isolated, or until some threshold passes exactly K keys: then every key at or
        # above it is chosen and no tie needs breaking, so the search may stop well before 33 rounds
        while lo < hi:
            mid = lo + (hi - lo + 1) // 2
            cnt = tl.sum((key >= mid.to(tl.int32)).to(tl.int32), 0)
            lo = tl.where(cnt >= K, mid, lo)
            hi = tl.where(cnt == K, mid, tl.where(cnt >= K, hi, mid - 1))
    sel, slot = _take(key, lo.to(tl.int32), K)  # ties: lowest block indices first
    dst = out + b.to(tl.int64) * s_ob + g * s_oh + (out_t0 + i).to(tl.int64) * s_ot + slot
    tl.store(dst, tl.where(j > bt, -1, j).to(tl.int32), mask=sel)


@triton.jit
def _kth_key(key, K):
    """The largest tau with count(key >= tau) >= K, by 17 quartering rounds whose three counts share one
    reduction (packed in 20-bit fields of an int64)."""
    lo = tl.full([], -2147483648, tl.int64)
    hi = tl.full([], 2147483647, tl.int64)
    for _ in range(17):
        span = hi - lo + 1
        m1, m2, m3 = lo + span // 4, lo + span // 2, lo + (3 * span) // 4
        packed = (
            (key >= m1.to(tl.int32)).to(tl.int64)
            + ((key >= m2.to(tl.int32)).to(tl.int64) << 20)
            + ((key >= m3.to(tl.int32)).to(tl.int64) << 40)
        )
        tot = tl.sum(packed, 0)
        ok1, ok2, ok3 = (tot & 0xFFFFF) >= K, ((tot >> 20) & 0xFFFFF) >= K, (tot >> 40) >= K
        new_lo = tl.where(ok3, m3, tl.where(ok2, m2, tl.where(ok1, m1, lo)))
        hi = tl.where(ok3, hi, tl.where(ok2, m3 - 1, tl.where(ok1, m2 - 1, m1 - 1)))
        lo = new_lo
    return lo.to(tl.int32)


@triton.jit
def _take(key, tau, K):
    """The K chosen among keys: all above tau, then the first ones equal to tau (lowest index) -> (mask, slot)."""
    gt = key > tau
    eq = key == tau
    need = K - tl.sum(gt.to(tl.int32), 0)
    sel = gt | (eq & (tl.cumsum(eq.to(tl.int32), 0) <= need))
    return sel, tl.cumsum(sel.to(tl.int32), 0) - 1


@triton.jit
def _topk_segment_kernel(
    scores,
    cand_key,
    cand_idx,
    nb,
    K,
    pos_ptr,
    SEG: tl.constexpr,
    BS: tl.constexpr,
    LOCAL: tl.constexpr,
    INIT: tl.constexpr,
):
    """Decode top-k, stage 1: program (segment, row) keeps the K best keys of its SEG blocks (ties to the lowest
    block) as candidates, ascending by block. The row's top K are among the candidates of all its segments."""
    i_s, i_bg = tl.program_id(0), tl.program_id(1)
    n_seg = tl.num_programs(0)
    pos = tl.load(pos_ptr).to(tl.int32)
    bt = pos // BS
    j = i_s * SEG + tl.arange(0, SEG)
    key = _row_keys(scores + i_bg.to(tl.int64) * nb, j, bt - LOCAL, bt, nb, INIT)
    sel, slot = _take(key, _kth_key(key, K), K)
    dst = (i_bg * n_seg + i_s).to(tl.int64) * K + slot
    tl.store(cand_key + dst, key, mask=sel)
    tl.store(cand_idx + dst, j, mask=sel)


@triton.jit
def _topk_merge_kernel(
    cand_key, cand_idx, out, n_cand, K, s_ob, s_oh, pos_ptr, HKV: tl.constexpr, NC: tl.constexpr, BS: tl.constexpr
):
    """Decode top-k, stage 2: the K best of a row's candidates, written ascending (candidates are in block order)."""
    i_bg = tl.program_id(0)
    b, g = i_bg // HKV, i_bg % HKV
    bt = tl.load(pos_ptr).to(tl.int32) // BS
    c = tl.arange(0, NC)
    src = i_bg.to(tl.int64) * n_cand + c
    key = tl.load(cand_key + src, mask=c < n_cand, other=-2147483648)
    j = tl.load(cand_idx + src, mask=c < n_cand, other=2147483647)
    sel, slot = _take(key, _kth_key(key, K), K)
    tl.store(out + b.to(tl.int64) * s_ob + g * s_oh + slot, tl.where(j > bt, -1, j), mask=sel)


TOPK_SEGMENT = 1024  # decode top-k: blocks per first-stage program (two stages once a row has > 2 segments)


# Prefill scoring tile: BM tokens x BG head slots (64 or 128 rows for SALA's 16-head groups).
_score_prefill = triton.autotune(
    configs=configs(
        [
            triton.Config({"BM": bm, "GB": gb}, num_warps=w, num_stages=st)
            for bm, gb, w, st in [(8, 16, 4, 3), (4, 16, 4, 3), (8, 32, 8, 3), (16, 16, 8, 2), (16, 16, 8, 3)]
        ]
    ),
    key=["G", "D", "CAUSAL", "PS"],
)(_score_kernel)


def _splits(work: int, unit: int, base_programs: int, device) -> tuple[int, int]:
    """Split `work` items (in multiples of `unit`) so base_programs x splits fills the GPU; -> (per_split, n_split)."""
    units = max(1, -(-work // unit))
    want = max(1, min(units, -(-4 * num_sms(device) // max(1, base_programs))))
    per = -(-units // want) * unit
    return per, max(1, -(-work // per))


def select_blocks_triton(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    *,
    q_start: int,
    kv_len: int,
    params: SparseParams,
    causal: bool,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    tl_dtype_ok(q)
    B, Tq, Hq, D = q.shape
    Hkv = k1.shape[2]
    G = Hq // Hkv
    n1, n2 = k1.shape[1], k2.shape[1]
    scale = D**-0.5 if scale is None else scale
    nb, K = params.num_blocks(kv_len), params.k_eff(kv_len)
    ps = params.pool_stride
    if ps & (ps - 1):
        raise ValueError(f"expected block_size / kernel_stride to be a power of two, got {ps}")
    out = torch.empty(B, Hkv, Tq, K, dtype=torch.int32, device=q.device) if out is None else out
    if Tq == 0:
        return out
    q, k1, k2 = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k1, k2))
    k1, k2 = k1.to(q.dtype), k2.to(q.dtype)
    BG = triton.next_power_of_2(G)
    decode = Tq * B * Hkv < 2 * num_sms(q.device)  # too few rows to fill the GPU: split every row's work
    BM = max(1, 16 // BG) if decode else max(1, 64 // BG)  # LSE tile: BM tokens x BG heads
    BD = triton.next_power_of_2(D)
    GB, BN2 = 16, 64
    bs, local = params.block_size, params.local_blocks
    tc = max(64, min(Tq, SCORE_BUFFER_ELEMS // max(1, B * Hkv * nb)) // 64 * 64)
    scores = torch.empty(B * Hkv, min(tc, Tq), nb, dtype=torch.float32, device=q.device)
    strides_q = (q.stride(0), q.stride(1), q.stride(2))
    for c0 in range(0, Tq, tc):
        cl = min(tc, Tq - c0)
        cs = q_start + c0

        def tiles(bm, cs=cs, cl=cl):
            return -(-(cs + cl) // bm) - cs // bm

        base = tiles(BM) * B * Hkv
        per2, ns2 = _splits(n2, BN2, base, q.device)
        band_max = max(0, (cs + cl - 1) // bs - local)
        per1, ns1 = _splits(band_max, GB, base, q.device)
        part_m = torch.empty(B * Hkv, ns2, cl, G, dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
        lse2 = torch.empty(B * Hkv, cl, G, dtype=torch.float32, device=q.device)
        _lse_kernel[(tiles(BM), B * Hkv, ns2)](
            q,
            q_start,
            k2,
            part_m,
            part_l,
            cs,
            cl,
            n2,
            per2,
            scale * LOG2E,
            *strides_q,
            k2.stride(0),
            k2.stride(1),
            k2.stride(2),
            out,
            HKV=Hkv,
            G=G,
            BG=BG,
            D=D,
            BD=BD,
            BM=BM,
            BN=BN2,
            KS2=params.lse_kernel_size,
            STRIDE2=params.lse_stride,
            CAUSAL=causal,
            num_warps=4,
        )
        br = max(16, 2048 // triton.next_power_of_2(ns2))
        _lse_combine_kernel[(triton.cdiv(lse2.numel(), br),)](
            part_m, part_l, lse2, lse2.numel(), cl * G, ns2, NSP=triton.next_power_of_2(ns2), BR=br, num_warps=4
        )
        if band_max > 0:
            args = (
                q,
                q_start,
                k1,
                lse2,
                scores,
                cs,
                cl,
                n1,
                nb,
                per1,
                scale * LOG2E,
                *strides_q,
                k1.stride(0),
                k1.stride(1),
                k1.stride(2),
                out,
            )
            kw = dict(
                HKV=Hkv,
                G=G,
                BG=BG,
                D=D,
                BD=BD,
                PS=ps,
                KS=params.kernel_size,
                STRIDE=params.kernel_stride,
                BS=bs,
                LOCAL=local,
                CAUSAL=causal,
            )
            if decode:
                _score_kernel[(tiles(BM), B * Hkv, ns1)](*args, BM=BM, GB=GB, **kw, num_warps=4)
            else:
                _score_prefill[lambda meta, ns1=ns1: (tiles(meta["BM"]), B * Hkv, ns1)](*args, **kw)
        # rows of this chunk never pick a block after the chunk's last own block
        nbp = triton.next_power_of_2(max(K, min(nb, (cs + cl - 1) // bs + 1)))
        _topk_kernel[(cl, B * Hkv)](
            scores,
            out,
            cs,
            cl,
            nb,
            K,
            out.stride(0),
            out.stride(1),
            out.stride(2),
            c0,
            out,
            HKV=Hkv,
            NBP=nbp,
            BS=bs,
            LOCAL=local,
            INIT=params.init_blocks,
            QUAD=decode,
            num_warps=16 if decode else max(4, min(16, nbp // 256)),
        )
    return out


def select_blocks_decode_triton(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    pos: torch.Tensor,
    *,
    params: SparseParams,
    max_kv_len: int,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode selection that a CUDA graph can replay at any length: one query per sequence at the position held in
    `pos` (int64 [1] device tensor; keys 0..pos are visible), with every size taken from `max_kv_len`.

    q: [B, 1, Hq, D]; k1, k2: compressed-key buffers [B, >= n(max_kv_len), Hkv, D] holding at least the windows
    complete at pos + 1 keys. -> int32 [B, Hkv, 1, k_eff(max_kv_len)], ascending, -1 after the row's own block.
    """
    tl_dtype_ok(q)
    B, Tq, Hq, D = q.shape
    if Tq != 1:
        raise ValueError(f"expected one query per sequence, got {Tq}")
    Hkv = k1.shape[2]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    nb, K = params.num_blocks(max_kv_len), params.k_eff(max_kv_len)
    ps = params.pool_stride
    out = torch.empty(B, Hkv, 1, K, dtype=torch.int32, device=q.device) if out is None else out
    q = q if q.stride(-1) == 1 else q.contiguous()
    k1, k2 = k1.to(q.dtype), k2.to(q.dtype)
    n1 = min(k1.shape[1], max(0, (max_kv_len - params.kernel_size) // params.kernel_stride + 1))
    n2 = min(k2.shape[1], max(0, (max_kv_len - params.lse_kernel_size) // params.lse_stride + 1))
    BG = triton.next_power_of_2(G)
    BM = max(1, 16 // BG)
    BD = triton.next_power_of_2(D)
    GB, BN2 = 16, 64
    bs, local = params.block_size, params.local_blocks
    base = B * Hkv
    per2, ns2 = _splits(n2, BN2, base, q.device)
    band_max = max(0, (max_kv_len - 1) // bs - local)
    per1, ns1 = _splits(band_max, GB, base, q.device)
    scores = torch.empty(B * Hkv, 1, nb, dtype=torch.float32, device=q.device)
    part_m = torch.empty(B * Hkv, ns2, 1, G, dtype=torch.float32, device=q.device)
    part_l = torch.empty_like(part_m)
    lse2 = torch.empty(B * Hkv, 1, G, dtype=torch.float32, device=q.device)
    strides_q = (q.stride(0), q.stride(1), q.stride(2))
    # the rows sit at a nominal position 0 (chunk_start = q0 = 0); the kernels read the real one from pos
    _lse_kernel[(1, B * Hkv, ns2)](
        q,
        0,
        k2,
        part_m,
        part_l,
        0,
        1,
        n2,
        per2,
        scale * LOG2E,
        *strides_q,
        k2.stride(0),
        k2.stride(1),
        k2.stride(2),
        pos,
        HKV=Hkv,
        G=G,
        BG=BG,
        D=D,
        BD=BD,
        BM=BM,
        BN=BN2,
        KS2=params.lse_kernel_size,
        STRIDE2=params.lse_stride,
        CAUSAL=False,
        DEV=True,
        num_warps=4,
    )
    br = max(16, 2048 // triton.next_power_of_2(ns2))
    _lse_combine_kernel[(triton.cdiv(lse2.numel(), br),)](
        part_m, part_l, lse2, lse2.numel(), G, ns2, NSP=triton.next_power_of_2(ns2), BR=br, num_warps=4
    )
    if band_max > 0:
        _score_kernel[(1, B * Hkv, ns1)](
            q,
            0,
            k1,
            lse2,
            scores,
            0,
            1,
            n1,
            nb,
            per1,
            scale * LOG2E,
            *strides_q,
            k1.stride(0),
            k1.stride(1),
            k1.stride(2),
            pos,
            HKV=Hkv,
            G=G,
            BG=BG,
            D=D,
            BD=BD,
            BM=BM,
            GB=GB,
            PS=ps,
            KS=params.kernel_size,
            STRIDE=params.kernel_stride,
            BS=bs,
            LOCAL=local,
            CAUSAL=False,
            DEV=True,
            num_warps=4,
        )
    nbp = triton.next_power_of_2(max(K, nb))
    seg = max(TOPK_SEGMENT, triton.next_power_of_2(K))
    if nbp <= 2 * seg:
        _topk_kernel[(1, B * Hkv)](
            scores,
            out,
            0,
            1,
            nb,
            K,
            out.stride(0),
            out.stride(1),
            out.stride(2),
            0,
            pos,
            HKV=Hkv,
            NBP=nbp,
            BS=bs,
            LOCAL=local,
            INIT=params.init_blocks,
            QUAD=True,
            DEV=True,
            num_warps=16,
        )
        return out
    # one row per (batch, kv head) leaves most of the GPU idle: rank segments of the row in parallel first
    n_seg = nbp // seg
    cand_key = torch.empty(B * Hkv, n_seg * K, dtype=torch.int32, device=q.device)
    cand_idx = torch.empty_like(cand_key)
    _topk_segment_kernel[(n_seg, B * Hkv)](
        scores, cand_key, cand_idx, nb, K, pos, SEG=seg, BS=bs, LOCAL=local, INIT=params.init_blocks, num_warps=4
    )
    nc = triton.next_power_of_2(n_seg * K)
    _topk_merge_kernel[(B * Hkv,)](
        cand_key,
        cand_idx,
        out,
        n_seg * K,
        K,
        out.stride(0),
        out.stride(1),
        pos,
        HKV=Hkv,
        NC=nc,
        BS=bs,
        num_warps=max(4, min(16, nc // 256)),
    )
    return out
