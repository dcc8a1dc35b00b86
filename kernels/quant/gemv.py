"""The int4 and int8 matmul for 1-4 rows (batch-1 decode) on CUDA cores in fp32: `_qmm_kernel` feeds tensor cores
and pays for moving unpacked codes into their operand layout through shared memory, which capped int4 at ~1.3 TB/s of
packed bytes on an H200; here a weight costs one LOP3 and one FADD, plus one FFMA per row of x (README.md, "The
GEMV"). int8 goes through the same loop, 4 codes a word instead of 8."""

from __future__ import annotations

import warnings

import torch
import triton
import triton.language as tl

from .._triton_utils import interpreting, num_sms
from .naive import PackedWeight

# quant_matmul sends int4 and int8 products of up to this many rows here (0: none; the kernel keeps one accumulator
# per row, so at most 4)
GEMV_MAX_ROWS = 4
_KERNEL_ROWS = 4
# a config's variant bits: the next chunk's words loaded into registers while this one is converted; codes summed in
# blocks of 4 words instead of whole groups; the chunk's words loaded as one flat tile per row
PREFETCH, SUB, FLAT = 1, 2, 4


@triton.jit
def _codes(v, mask, SHIFT: tl.constexpr, BIAS: tl.constexpr):
    """The code c at bits SHIFT.. of the int32 words v (`mask` = 0xF or 0xFF << SHIFT, SHIFT <= 12) as fp32 c - BIAS
    (int4: 8 without zero points, else 0; int8: 128, its bytes read with the sign bit flipped), with no
    integer-to-float instruction (1/16 of the FMA rate): OR-ed into the mantissa of 2^(23 - SHIFT), whose unit in the
    last place is 2^-SHIFT, the bits read as 2^(23 - SHIFT) + c exactly, and subtracting the offset here is exact
    too. The offset never enters a sum, where 2^(23 - SHIFT) * x would swamp c * x."""
    MAGIC: tl.constexpr = 0x4B000000 - (SHIFT << 23)  # fp32 bits of 2^(23 - SHIFT)
    f = ((v & mask) | MAGIC).to(tl.float32, bitcast=True)
    OFF: tl.constexpr = 8388608.0 / (1 << SHIFT) + BIAS
    return f - OFF


@triton.jit
def _x(xrow, pos, gm, K, EVEN: tl.constexpr):
    """x at code positions pos [NS, WS] as fp32 (0 past K and outside the program's groups)."""
    if EVEN:
        return tl.load(xrow + pos).to(tl.float32)
    else:
        return tl.load(xrow + pos, mask=gm[:, None] & (pos < K), other=0.0).to(tl.float32)


@triton.jit
def _slot(d, xs, f, xrow, pos, gm, K, EVEN: tl.constexpr):
    """One code of every word for one row of x: d [BN, NS, WS] += f * x at pos [NS, WS]; xs [NS, WS] += x."""
    y = _x(xrow, pos, gm, K, EVEN)
    return d + f * y[None, :, :], xs + y


@triton.jit
def _group(acc, d, xs, sc, zp, HAS_ZERO: tl.constexpr):
    """acc [BN, NS] += each block's s * (x . c) (+ z * its sum of x, one per block shared by all BN rows)."""
    acc += sc * tl.sum(d, 2)
    if HAS_ZERO:
        acc += zp * tl.sum(xs, 1)[None, :]
    return acc


@triton.jit
def _group_values(ptr, mask, MASKED: tl.constexpr):
    """A chunk's scales or zero points [BN, NS] in fp32 (a prefetch's are masked past the program's last chunk)."""
    if MASKED:
        return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    return tl.load(ptr).to(tl.float32)


@triton.jit
def _fetch(
    wptr,
    sptr,
    zptr,
    c,
    g1,
    cg,
    WG: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    EVEN: tl.constexpr,
    AHEAD: tl.constexpr,
    FLAT: tl.constexpr,
    BN: tl.constexpr,
    NS: tl.constexpr,
    WS: tl.constexpr,
):
    """The words [BN, NS, WS], scales and zero points [BN, NS] of the chunk at group c (fp32; zero points = scales
    without them; ROW_SCALE: one scale a row, int8 without groups). AHEAD: a prefetch, which past the program's last
    chunk loads nothing (the loads are predicated off, so a whole chunk needs no mask) and streams the words with
    evict-first (each is read once)."""
    gm = c + cg < g1
    if FLAT:
        # the chunk's words as one contiguous [BN, NS * WS] tile, so that Triton lays a row's words along the lanes
        # (4 to a thread) and spreads the rows over threads, then viewed as [BN, NS, WS]
        gw = c + tl.arange(0, NS * WS) // WG < g1
        if AHEAD:
            v = tl.load(wptr + c * WG, mask=gw[None, :], other=0, eviction_policy="evict_first")
        elif EVEN:
            v = tl.load(wptr + c * WG)
        else:
            v = tl.load(wptr + c * WG, mask=gw[None, :], other=0)
        v = tl.reshape(v, (BN, NS, WS))
    elif AHEAD:
        v = tl.load(wptr + c * WG, mask=gm[None, :, None], other=0, eviction_policy="evict_first")
    elif EVEN:
        v = tl.load(wptr + c * WG)
    else:
        v = tl.load(wptr + c * WG, mask=gm[None, :, None], other=0)
    sc = _group_values(sptr + (0 if ROW_SCALE else c), gm[None, :], AHEAD or not EVEN)
    zp = sc
    if HAS_ZERO:
        zp = _group_values(zptr + c, gm[None, :], AHEAD or not EVEN)
    return v, sc, zp


@triton.jit
def _part(part, k, m, M: tl.constexpr, N, rn, nm, acc):
    tl.store(part + (k * M + m) * N + rn, tl.sum(acc, 1), mask=nm)


@triton.jit
def _store(out, part, m, M: tl.constexpr, N, s_om, rn, nm, acc, SPLITS):
    """Row m of the output: this program's sum, or (split K) the partials summed in split order."""
    if SPLITS > 1:
        o = tl.zeros_like(rn).to(tl.float32)
        for k in range(0, SPLITS):
            o += tl.load(part + (k * M + m) * N + rn, mask=nm, other=0.0, cache_modifier=".cg")
    else:
        o = tl.sum(acc, 1)
    tl.store(out + m * s_om + rn, o.to(out.dtype.element_ty), mask=nm)


@triton.jit(do_not_specialize=["N", "K", "GPS", "NG", "SPLITS", "cmask"])
def _gemv_kernel(
    x,
    w,
    s,
    z,
    out,
    part,
    count,
    N,
    K,
    s_xm,
    s_wn,
    s_sn,
    s_om,
    GPS,
    NG,
    SPLITS,
    cmask,
    M: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    BITS: tl.constexpr,
    ROW_SCALE: tl.constexpr,
    G: tl.constexpr,
    BN: tl.constexpr,
    CG: tl.constexpr,
    EVEN: tl.constexpr,
    STAGES: tl.constexpr,
    PREFETCH: tl.constexpr,
    SUB: tl.constexpr,
    FLAT: tl.constexpr,
):
    # program (n-tile, k-split): rows rn, groups g0..g1 walked CG groups at a time; w is the packed codes as int32
    # words [N, Kp / 8] (int8: [N, K / 4], its "groups" sharing the row's scale unless GGUF blocks), WG words per
    # group, split into NS blocks of WS words: a group each, or with SUB blocks of 4 words (one 16-byte load a
    # thread), each summed on its own and scaled by its group's scale, so that no thread shares a sum with another (no
    # shuffles) and the sums keep the layout of the words (sm_90, G = 128: no shared-memory layout change and its two
    # CTA barriers per chunk)
    CPW: tl.constexpr = 32 // BITS  # codes a word
    WG: tl.constexpr = G // CPW
    HALF: tl.constexpr = G // 2
    BIAS: tl.constexpr = 128 if BITS == 8 else (0 if HAS_ZERO else 8)
    WS: tl.constexpr = 4 if SUB else WG  # SUB only where groups are wider (WG > 4)
    NS: tl.constexpr = CG * (WG // WS)
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rn = pid_n * BN + tl.arange(0, BN)
    nm = rn < N
    rl = tl.minimum(rn, N - 1).to(tl.int64)  # rows past N read row N - 1 (never stored): loads need no row mask
    wj = tl.arange(0, NS)[:, None] * WS + tl.arange(0, WS)[None, :]  # [NS, WS]: each word's index in the chunk
    cg = tl.arange(0, NS) // (WG // WS)  # [NS]: each block's group in the chunk
    if FLAT:
        wptr = w + rl[:, None] * s_wn + tl.arange(0, NS * WS)[None, :]  # [BN, NS * WS]
    else:
        wptr = w + rl[:, None, None] * s_wn + wj[None, :, :]  # [BN, NS, WS]
    sptr = s + rl[:, None] * s_sn + cg[None, :] * (0 if ROW_SCALE else 1)  # [BN, NS]
    zptr = z + rl[:, None] * s_sn + cg[None, :]
    pos0 = (wj // WG) * G + 4 * (wj % WG)  # [NS, WS]: first code of each word, from the chunk's start
    acc0 = tl.zeros((BN, NS), dtype=tl.float32)
    acc1 = tl.zeros((BN, NS), dtype=tl.float32)
    acc2 = tl.zeros((BN, NS), dtype=tl.float32)
    acc3 = tl.zeros((BN, NS), dtype=tl.float32)
    g0 = pid_k * GPS
    g1 = tl.minimum(g0 + GPS, NG)
    # STAGES > 1: the next chunks' words are fetched into shared memory (cp.async) while this one is computed, for
    # programs that walk many chunks (few K splits). PREFETCH: the next chunk's words are loaded into registers
    # before this one is converted, so they are in flight during the conversion (twice the registers for words)
    if PREFETCH:
        v, sc, zp = _fetch(wptr, sptr, zptr, g0, g1, cg, WG, HAS_ZERO, ROW_SCALE, EVEN, True, FLAT, BN, NS, WS)
    for c in tl.range(g0, g1, CG, num_stages=1 if PREFETCH else STAGES):
        gm = c + cg < g1  # [NS]; EVEN: every chunk is whole, nothing is masked
        if PREFETCH:
            vn, scn, zpn = _fetch(
                wptr, sptr, zptr, c + CG, g1, cg, WG, HAS_ZERO, ROW_SCALE, EVEN, True, FLAT, BN, NS, WS
            )
        else:
            v, sc, zp = _fetch(wptr, sptr, zptr, c, g1, cg, WG, HAS_ZERO, ROW_SCALE, EVEN, False, FLAT, BN, NS, WS)
        u = v
        if BITS == 8:
            u = v ^ -0x7F7F7F80  # 0x80808080: each signed byte b read as b + 128 (BIAS)
        h = u >> 16  # arithmetic: the masks keep low bits only
        pos = c * G + pos0
        d0 = tl.zeros((BN, NS, WS), dtype=tl.float32)
        d1, d2, d3 = d0, d0, d0
        xs0 = tl.zeros((NS, WS), dtype=tl.float32)
        xs1, xs2, xs3 = xs0, xs0, xs0
        # code t of every word, then its products with every row of x (so that it dies before the next): bits
        # 4t.. of v for t < 4, of h after; naive.py's layout (byte j of a group holds codes j and j + G/2) puts
        # them at positions 4i + t // 2 (+ G/2 for odd t) of word i's group
        # (the masks come from an argument, cmask = 15 or 255, not literals: ptxas rematerialised literal masks with a
        # move before most LOP3s; sm_90 SASS, BN = 32, 512 codes a chunk: 5.3 instead of 4.3 instructions per code).
        # int8: byte t of word i is code 4i + t
        for t in tl.static_range(CPW):
            if BITS == 8:
                at = pos + t
            else:
                at = pos + (t // 2 + HALF * (t % 2))
            if t < CPW // 2:
                f = _codes(u, cmask << (BITS * t), BITS * t, BIAS)
            else:
                f = _codes(h, cmask << (BITS * t - 16), BITS * t - 16, BIAS)
            d0, xs0 = _slot(d0, xs0, f, x, at, gm, K, EVEN)
            if M > 1:
                d1, xs1 = _slot(d1, xs1, f, x + s_xm, at, gm, K, EVEN)
            if M > 2:
                d2, xs2 = _slot(d2, xs2, f, x + 2 * s_xm, at, gm, K, EVEN)
            if M > 3:
                d3, xs3 = _slot(d3, xs3, f, x + 3 * s_xm, at, gm, K, EVEN)
        acc0 = _group(acc0, d0, xs0, sc, zp, HAS_ZERO)
        if M > 1:
            acc1 = _group(acc1, d1, xs1, sc, zp, HAS_ZERO)
        if M > 2:
            acc2 = _group(acc2, d2, xs2, sc, zp, HAS_ZERO)
        if M > 3:
            acc3 = _group(acc3, d3, xs3, sc, zp, HAS_ZERO)
        if PREFETCH:
            v, sc, zp = vn, scn, zpn
    if SPLITS > 1:
        # split K as in _qmm_kernel: fp32 partials, then the last program of the tile to arrive (counted with
        # release/acquire order, after a CTA barrier so that every thread's partial is stored before the count)
        # sums them in split order and re-arms the counter
        _part(part, pid_k, 0, M, N, rn, nm, acc0)
        if M > 1:
            _part(part, pid_k, 1, M, N, rn, nm, acc1)
        if M > 2:
            _part(part, pid_k, 2, M, N, rn, nm, acc2)
        if M > 3:
            _part(part, pid_k, 3, M, N, rn, nm, acc3)
        tl.debug_barrier()
        if tl.atomic_add(count + pid_n, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
            tl.atomic_xchg(count + pid_n, 0)
        else:
            return
    _store(out, part, 0, M, N, s_om, rn, nm, acc0, SPLITS)
    if M > 1:
        _store(out, part, 1, M, N, s_om, rn, nm, acc1, SPLITS)
    if M > 2:
        _store(out, part, 2, M, N, s_om, rn, nm, acc2, SPLITS)
    if M > 3:
        _store(out, part, 3, M, N, s_om, rn, nm, acc3, SPLITS)


def words(p: PackedWeight) -> torch.Tensor | None:
    """p's codes as int32 words (a view): int4 [N, Kp / 8], 8 codes a word; int8 [N, K / 4], 4 a word, where K is
    a multiple of the kernel's group (kernel_group). None where the bytes cannot be viewed so (not unit stride
    along K, rows not starting at multiples of 4 bytes) or the format is another."""
    if (p.fmt, p.data.dtype) not in (("int4", torch.uint8), ("int8", torch.int8)) or kernel_group(p) is None:
        return None
    try:
        return p.data.view(torch.int32)
    except RuntimeError:
        return None


def kernel_group(p: PackedWeight) -> int | None:
    """The inputs the kernel walks as one group: int4's and GGUF Q8_0's own; for int8 with one scale a row, the
    widest of 128 / 64 / 32 that divides K. int8 rows are not padded, so no group may run past K (else None)."""
    if p.fmt == "int4":
        return p.group
    if p.group:
        return p.group if p.in_features % p.group == 0 else None
    return next((g for g in (128, 64, 32) if p.in_features % g == 0), None)


def supports(p: PackedWeight, rows: int) -> bool:
    """Whether quant_matmul sends `rows` rows times p here."""
    return 0 < rows <= min(GEMV_MAX_ROWS, _KERNEL_ROWS) and words(p) is not None


def gemv(x2: torch.Tensor, p: PackedWeight, *, config: tuple | None = None) -> torch.Tensor:
    """x2 [M, K] (M <= 4, unit stride along K) @ dequantize(p).T -> [M, N] in x2.dtype, fp32 accumulation.
    `config` = (BN, groups per chunk, K splits, warps, stages[, variant bits]) pins the tiling, else it is tuned per
    shape on first use."""
    w = words(p)
    M = x2.shape[0]
    if w is None or x2.dim() != 2 or not 0 < M <= _KERNEL_ROWS or x2.stride(1) != 1 or x2.shape[1] != p.in_features:
        raise ValueError(
            f"expected int4 / int8 weights viewable as int32 words and x [1..{_KERNEL_ROWS}, {p.in_features}] with "
            f"unit stride, got {p.fmt} weights{'' if w is not None else ' (not viewable)'} and x {tuple(x2.shape)}"
        )
    return _launch(x2, p, w, *(config or tuned_config(x2, p)))


def tuned_config(x2: torch.Tensor, p: PackedWeight) -> tuple:
    """The config gemv uses for x2's rows times p, tuned on the shape's first use."""
    return _tuned_entry(x2, p)[0]


def beats_qmm(x2: torch.Tensor, p: PackedWeight) -> bool:
    """Whether quant_matmul takes the GEMV for x2's rows times p: int4 always (its GEMV beat `_qmm_kernel` on every
    decode shape by 1.5x and more); int8 where the tuned GEMV was faster than the tuned `_qmm_kernel` when this shape
    was tuned on this card (`_qmm_kernel` streams large int8 weights at up to ~3.6 TB/s on an H200)."""
    return _tuned_entry(x2, p)[1]


def _tuned_entry(x2: torch.Tensor, p: PackedWeight) -> tuple[tuple, bool]:
    key = (x2.shape[0], p.out_features, p.in_features, p.kind, x2.dtype, x2.device)
    entry = _tuned.get(key)
    if entry is None:
        config, times = tune(x2, p)
        faster = True
        if p.fmt == "int8" and times:  # timed (a GPU): against the tuned _qmm_kernel on the same copies
            from . import matmul

            qc = matmul.decode_config(x2, p)
            ms = _timed(lambda q, _w, qc=qc: matmul.quant_matmul(x2, q, config=qc), matmul.rotation(p))
            faster = min(times)[0] < ms
        entry = _tuned[key] = (config, faster)
    return entry


def _timed(fn, copies: list[PackedWeight]) -> float:
    """ms of one fn(q, words(q)) per copy, as CUDA-graph replays (decode is captured; a launch from Python costs
    more than a small GEMV)."""
    from triton.testing import do_bench_cudagraph

    ws = [words(q) for q in copies]
    return do_bench_cudagraph(lambda: [fn(q, w) for q, w in zip(copies, ws)], rep=20)


def _launch(x2, p, w, BN, CG, splits, warps, stages, variant=0):
    M, N, K, G = x2.shape[0], p.out_features, p.in_features, kernel_group(p)
    bits = 8 if p.fmt == "int8" else 4
    NG = w.shape[1] * (32 // bits) // G
    gps = triton.cdiv(triton.cdiv(NG, splits), CG) * CG  # whole chunks per split
    splits = triton.cdiv(NG, gps)
    out = torch.empty(M, N, dtype=x2.dtype, device=x2.device)
    part = torch.empty(splits, M, N, dtype=torch.float32, device=x2.device) if splits > 1 else out
    tiles = triton.cdiv(N, BN)
    from .matmul import _counters

    _gemv_kernel[(tiles, splits)](
        x2,
        w,
        p.scale,
        p.zero if p.zero is not None else p.scale,
        out,
        part,
        _counters(x2.device, tiles),
        N,
        K,
        x2.stride(0),
        w.stride(0),
        p.scale.stride(0),
        out.stride(0),
        gps,
        NG,
        splits,
        (1 << bits) - 1,
        M=M,
        HAS_ZERO=p.zero is not None,
        BITS=bits,
        ROW_SCALE=p.fmt == "int8" and not p.group,
        G=G,
        BN=BN,
        CG=CG,
        EVEN=K % G == 0 and NG % CG == 0,
        STAGES=stages,
        PREFETCH=bool(variant & PREFETCH),
        SUB=bool(variant & SUB) and G * bits > 128,  # groups wider than 4 words
        FLAT=bool(variant & FLAT),
        num_warps=warps,
        enable_fp_fusion=True,  # the FMAs of the dot
    )
    return out


# (rows per program, codes per chunk, programs per SM aimed at through the K split, warps, stages, variant), tried in
# order. Words a thread holds per chunk (BN * codes / 8 / 128 threads): 4, 8, 16, 32, 64; more amortise the loads of x
# over more rows but take more registers, which limits the programs per SM (and a second row of x nearly doubles
# them). The variants (README.md, "The GEMV"): FLAT fixes the layout Triton 3.6 picks for the word tile (sm_90 SASS
# at 64 rows x 512 codes, one row: 3.78 instead of 4.61 instructions per weight; G = 32: 3.72 instead of 5.85),
# PREFETCH keeps the next chunk in flight, SUB drops the CTA barriers of the per-group sums (Triton 3.9); tried at
# more K splits too, for the small shapes (o_proj, the sparse qkv), which the H200 streamed at only 1.1-1.4 TB/s
_TILES = ((16, 256), (32, 256), (32, 512), (64, 512))
_FP, _FPS = FLAT | PREFETCH, FLAT | PREFETCH | SUB
# On the H200 (triton 3.6) a FLAT or FLAT + PREFETCH tile won every SALA shape, by 10-25% over the best plain one
# (kernels/quant/README.md): three plain tilings stay (the first is the reference and the interpreter's pick),
# the other thirteen only cost tuning time
CANDIDATES = [(bn, ck, per_sm, 4, st, 0) for bn, ck in _TILES[:1] for per_sm, st in ((2, 1), (4, 1))] + [
    (64, 512, 4, 4, 1, 0),
    *[(64, 512, per_sm, 4, 1, FLAT) for per_sm in (1, 2, 4, 8)],
    *[(128, 512, per_sm, 4, 1, FLAT) for per_sm in (1, 2)],  # 64 words a thread: 3.61 per weight, 142 registers
    *[(32, 512, per_sm, 4, 1, FLAT) for per_sm in (2, 4)],
    *[(32, 256, per_sm, 4, 1, FLAT) for per_sm in (4, 8)],
    (16, 256, 2, 4, 1, FLAT),
    *[(64, 512, per_sm, 4, 1, _FP) for per_sm in (1, 2, 4)],
    *[(32, 512, per_sm, 4, 1, _FP) for per_sm in (4, 8)],
    *[(64, 256, per_sm, 4, 1, _FP) for per_sm in (8, 16)],
    (64, 512, 2, 4, 1, _FPS),  # Triton 3.9: no CTA barrier in the loop (3.6 keeps two)
]
_tuned: dict[tuple, tuple] = {}


def candidates(p: PackedWeight, device: torch.device) -> list[tuple]:
    """CANDIDATES as launch configs (BN, groups per chunk, splits, warps, stages, variant) for p on device,
    duplicates dropped."""
    G, N, bits = kernel_group(p), p.out_features, 8 if p.fmt == "int8" else 4
    NG = triton.cdiv(p.in_features, G)
    sms = num_sms(device)
    out = []
    for bn, ck, per_sm, warps, stages, variant in CANDIDATES:
        cg = max(1, ck * 4 // bits // G)  # ck int4 codes' words: as many words, half the codes, for int8
        chunks = triton.cdiv(NG, cg)
        splits = max(1, min(chunks, triton.cdiv(per_sm * sms, triton.cdiv(N, bn))))
        out.append((bn, cg, splits, warps, stages, variant if G * bits > 128 else variant & ~SUB))  # 4-word groups
    return list(dict.fromkeys(out))


def tune(x2: torch.Tensor, p: PackedWeight) -> tuple[tuple, list[tuple[float, tuple]]]:
    """(the fastest config, [(ms, config)] of those timed) for this shape; under the interpreter the first candidate,
    untimed. As matmul._tune: graph replays over copies of the weight that together exceed the L2
    (matmul.rotation), keeping only configs that reproduce the unsplit result."""
    cands = candidates(p, x2.device)
    if interpreting() or x2.device.type != "cuda":
        return cands[0], []
    from .matmul import rotation

    copies = rotation(p)
    bn, cg, _, warps, stages, _ = cands[0]
    ref = _launch(x2, p, words(p), bn, cg, 1, warps, stages).float()  # no K split: no cross-program reduction
    times = []
    for c in cands:
        try:
            got = _launch(x2, p, words(p), *c).float()
        except Exception as e:  # a variant this Triton cannot build (or too many registers) is not a candidate
            if not c[5]:
                raise
            warnings.warn(f"GEMV: variant config {c} skipped: {type(e).__name__}: {e}", stacklevel=2)
            continue
        if not torch.isfinite(got).all() or (got - ref).norm() > 1e-2 * ref.norm():
            continue
        times.append((_timed(lambda q, w, c=c: _launch(x2, q, w, *c), copies), c))
    return (min(times)[1] if times else (bn, cg, 1, warps, stages, 0)), times
