"""Triton kernels for quantized weights: one dequantising matmul for every format, tiled for decode (M <= 16,
split along K so that a batch-1 GEMV fills the GPU) or prefill, and a dequantise kernel that writes the weight in
16-bit for cuBLAS. The byte layouts and the math are in README.md; naive.py is the specification."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import interpreting, num_sms, tl_dtype_ok
from .naive import GROUP, PackedWeight

_FMT = {"int8": 0, "int4": 1, "fp8": 2}


@triton.jit
def _qmm_kernel(
    x,
    w,
    s,
    z,
    out,
    part,
    count,
    M,
    N,
    K,
    s_xm,
    s_wn,
    s_sn,
    s_om,
    GPS,
    NG,
    SPLITS,
    FMT: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    GROUPED: tl.constexpr,
    G: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    # G: the int4 group, the int8 group when GROUPED (one scale per G inputs), else just the K step of the loop
    pid_n, pid_m, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    mm, nm = rm < M, rn < N
    xrow = x + rm.to(tl.int64)[:, None] * s_xm
    wrow = w + rn.to(tl.int64)[:, None] * s_wn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    g0 = pid_k * GPS
    g1 = tl.minimum(g0 + GPS, NG)
    for g in range(g0, g1):
        k0 = g * G
        if FMT == 1:
            HALF: tl.constexpr = G // 2
            j = tl.arange(0, HALF)
            p = tl.load(wrow + (g * HALF + j)[None, :], mask=nm[:, None], other=0)  # [BN, G/2] uint8
            # A code c becomes the 16-bit float OFF + c by OR-ing it into the mantissa of OFF (bf16 128, fp16 1024,
            # where the spacing is 1): no integer-to-float conversion, whose low throughput capped this loop at
            # about 1.1 TB/s of packed bytes on an H200. The offset comes out below as OFF times the row sum of x.
            if x.dtype.element_ty == tl.bfloat16:
                OFF: tl.constexpr = 128.0
                lo = ((p & 0xF).to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)
                hi = ((p >> 4).to(tl.int16) | 0x4300).to(tl.bfloat16, bitcast=True)
            elif x.dtype.element_ty == tl.float16:
                OFF: tl.constexpr = 1024.0
                lo = ((p & 0xF).to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)
                hi = ((p >> 4).to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)
            else:
                OFF: tl.constexpr = 0.0
                lo = (p & 0xF).to(tl.float32)
                hi = (p >> 4).to(tl.float32)
            kl, kh = k0 + j, k0 + HALF + j
            xl = tl.load(xrow + kl[None, :], mask=mm[:, None] & (kl < K)[None, :], other=0.0)
            xh = tl.load(xrow + kh[None, :], mask=mm[:, None] & (kh < K)[None, :], other=0.0)
            # OFF + c is an integer below 2048, exact in the 16-bit float: the group's dot is exact up to fp32 sums
            dots = tl.dot(xl, tl.trans(lo)) + tl.dot(xh, tl.trans(hi))  # [BM, BN]
            xs = tl.sum(xl.to(tl.float32), 1) + tl.sum(xh.to(tl.float32), 1)  # [BM]
            sc = tl.load(s + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)
            if HAS_ZERO:
                zp = tl.load(z + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)
                acc += (dots - OFF * xs[:, None]) * sc[None, :] + xs[:, None] * zp[None, :]
            else:
                acc += (dots - (OFF + 8.0) * xs[:, None]) * sc[None, :]
        else:
            kk = k0 + tl.arange(0, G)
            km = kk < K
            q = tl.load(wrow + kk[None, :], mask=nm[:, None] & km[None, :], other=0)  # [BN, G]
            if FMT == 2:
                q = q.to(tl.float8e4nv, bitcast=True)
            xt = tl.load(xrow + kk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
            if GROUPED:  # int8 with a scale per group (GGUF Q8_0): scaled per group, like int4
                sc = tl.load(s + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)
                acc += tl.dot(xt, tl.trans(q.to(x.dtype.element_ty))) * sc[None, :]
            else:
                acc += tl.dot(xt, tl.trans(q.to(x.dtype.element_ty)))
    if FMT != 1 and not GROUPED:  # per-channel scale, applied once
        acc *= tl.load(s + rn, mask=nm, other=0.0).to(tl.float32)[None, :]
    omask = mm[:, None] & nm[None, :]
    tile = rm.to(tl.int64)[:, None] * N + rn[None, :]
    if SPLITS > 1:
        # split K: each program leaves its fp32 partial; the last one of a tile to finish (counted atomically, with
        # release/acquire order) sums them in split order, so the result is deterministic, and re-arms the counter
        tl.store(part + pid_k.to(tl.int64) * M * N + tile, acc, mask=omask)
        slot = count + pid_n * tl.num_programs(1) + pid_m
        # every thread's partial must be stored before the one thread that counts releases them (measured on an
        # H200: without this barrier the last program sometimes summed unwritten partials)
        tl.debug_barrier()
        if tl.atomic_add(slot, 1, sem="acq_rel", scope="gpu") == SPLITS - 1:
            acc = tl.zeros((BM, BN), dtype=tl.float32)
            for k in range(0, SPLITS):
                acc += tl.load(part + k * M * N + tile, mask=omask, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(slot, 0)
        else:
            return
    tl.store(out + rm.to(tl.int64)[:, None] * s_om + rn[None, :], acc.to(out.dtype.element_ty), mask=omask)


@triton.jit
def _dequant_kernel(
    w,
    s,
    z,
    out,
    N,
    K,
    s_wn,
    s_sn,
    FMT: tl.constexpr,
    HAS_ZERO: tl.constexpr,
    GROUPED: tl.constexpr,
    G: tl.constexpr,
    BN: tl.constexpr,
):
    pid_n, g = tl.program_id(0), tl.program_id(1)
    rn = pid_n * BN + tl.arange(0, BN)
    nm = rn < N
    wrow = w + rn.to(tl.int64)[:, None] * s_wn
    orow = out + rn.to(tl.int64)[:, None] * K
    k0 = g * G
    if FMT == 1:
        HALF: tl.constexpr = G // 2
        j = tl.arange(0, HALF)
        p = tl.load(wrow + (g * HALF + j)[None, :], mask=nm[:, None], other=0)
        sc = tl.load(s + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)[:, None]
        if HAS_ZERO:
            zp = tl.load(z + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)[:, None]
        else:
            zp = -8.0 * sc
        lo = (p & 0xF).to(tl.float32) * sc + zp
        hi = (p >> 4).to(tl.float32) * sc + zp
        kl, kh = k0 + j, k0 + HALF + j
        tl.store(orow + kl[None, :], lo.to(out.dtype.element_ty), mask=nm[:, None] & (kl < K)[None, :])
        tl.store(orow + kh[None, :], hi.to(out.dtype.element_ty), mask=nm[:, None] & (kh < K)[None, :])
    else:
        kk = k0 + tl.arange(0, G)
        m = nm[:, None] & (kk < K)[None, :]
        q = tl.load(wrow + kk[None, :], mask=m, other=0)
        if FMT == 2:
            q = q.to(tl.float8e4nv, bitcast=True)
        if GROUPED:
            sc = tl.load(s + rn * s_sn + g, mask=nm, other=0.0).to(tl.float32)[:, None]
        else:
            sc = tl.load(s + rn, mask=nm, other=0.0).to(tl.float32)[:, None]
        tl.store(orow + kk[None, :], (q.to(tl.float32) * sc).to(out.dtype.element_ty), mask=m)


def dequantize_triton(p: PackedWeight, dtype: torch.dtype) -> torch.Tensor:
    """-> w [N, K] in dtype, one pass over the packed bytes."""
    N, K = p.out_features, p.in_features
    out = torch.empty(N, K, dtype=dtype, device=p.data.device)
    BN = 32
    G = _step(p)
    grid = (triton.cdiv(N, BN), triton.cdiv(K, G))
    _dequant_kernel[grid](
        p.data,
        p.scale,
        p.zero if p.zero is not None else p.scale,
        out,
        N,
        K,
        p.data.stride(0),
        _scale_stride(p),
        FMT=_FMT[p.fmt],
        HAS_ZERO=p.zero is not None,
        GROUPED=p.fmt != "int4" and p.group > 0,
        G=G,
        BN=BN,
        num_warps=4,
    )
    return out


def _step(p: PackedWeight) -> int:
    """The K step of the kernels' loops: the format's group, or 128 for per-channel scales."""
    return p.group or GROUP


def _scale_stride(p: PackedWeight) -> int:
    return p.scale.stride(0) if p.group else 0


# (BN, programs per SM aimed at through the K split, warps, stages), tried in order on the first call of a shape
_DECODE_CANDIDATES = [(bn, per_sm, 4, st) for bn in (32, 64, 128) for per_sm in (2, 4, 8) for st in (3, 4)]
_PREFILL = (64, 128, 8, 3)  # BM, BN, warps, stages
_tuned: dict[tuple, tuple] = {}


def quant_matmul(x: torch.Tensor, p: PackedWeight, *, config: tuple | None = None) -> torch.Tensor:
    """x [..., K] @ dequantize(p).T -> [..., N] in x.dtype, accumulated in fp32.

    Up to 16 rows (decode) the weight is streamed once, split along K so that enough programs keep the packed bytes
    in flight; `config` = (BN, K splits, warps, stages) pins the tiling (benchmarks), else it is tuned per shape.
    int4 and int8 with up to gemv.GEMV_MAX_ROWS rows and no `config` goes to the CUDA-core GEMV (gemv.py) instead.
    """
    tl_dtype_ok(x)
    if x.shape[-1] != p.in_features:
        raise ValueError(f"expected input of size {p.in_features} in the last dim, got {tuple(x.shape)}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, p.in_features)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M, N, K = x2.shape[0], p.out_features, p.in_features
    if M == 0:
        return x.new_empty(*lead, N)
    from . import gemv

    if config is None and gemv.supports(p, M) and gemv.beats_qmm(x2, p):
        return gemv.gemv(x2, p).view(*lead, N)
    NG = triton.cdiv(K, _step(p))
    if M > 16:
        BM, BN, warps, stages = _PREFILL
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
        _launch(x2, p, out, M, N, K, NG, NG, 1, BM, BN, warps, stages)
        return out.view(*lead, N)
    BN, splits, warps, stages = config or decode_config(x2, p)
    return _decode(x2, p, NG, BN, splits, warps, stages).view(*lead, N)


def decode_config(x2: torch.Tensor, p: PackedWeight) -> tuple:
    """The decode tiling (BN, K splits, warps, stages) of `_qmm_kernel` for x2 [M <= 16, K] times p, tuned on first
    use of the shape (benchmarks pin it to time this path where quant_matmul would take the GEMV)."""
    key = (x2.shape[0] > 1, p.out_features, p.in_features, p.kind, x2.dtype, x2.device)
    config = _tuned.get(key)
    if config is None:
        config = _tuned[key] = _tune(x2, p, triton.cdiv(p.in_features, _step(p)))
    return config


def _decode(x2, p, NG, BN, splits, warps, stages):
    M, N, K = x2.shape[0], p.out_features, p.in_features
    gps = triton.cdiv(NG, splits)
    splits = triton.cdiv(NG, gps)
    out = torch.empty(M, N, dtype=x2.dtype, device=x2.device)
    _launch(x2, p, out, M, N, K, NG, gps, splits, 16, BN, warps, stages)
    return out


_COUNTERS: dict[torch.device, torch.Tensor] = {}


def _counters(device: torch.device, n: int) -> torch.Tensor:
    """Per-tile arrival counters of the split-K reduction; every launch leaves them at zero again."""
    c = _COUNTERS.get(device)
    if c is None or c.numel() < n:
        c = _COUNTERS[device] = torch.zeros(max(n, 8192), dtype=torch.int32, device=device)
    return c


def _launch(x2, p, out, M, N, K, NG, gps, splits, BM, BN, warps, stages):
    grid = (triton.cdiv(N, BN), triton.cdiv(M, BM), splits)
    part = torch.empty(splits, M, N, dtype=torch.float32, device=x2.device) if splits > 1 else out
    count = _counters(x2.device, grid[0] * grid[1])
    _qmm_kernel[grid](
        x2,
        p.data,
        p.scale,
        p.zero if p.zero is not None else p.scale,
        out,
        part,
        count,
        M,
        N,
        K,
        x2.stride(0),
        p.data.stride(0),
        _scale_stride(p),
        out.stride(0),
        gps,
        NG,
        splits,
        FMT=_FMT[p.fmt],
        HAS_ZERO=p.zero is not None,
        GROUPED=p.fmt != "int4" and p.group > 0,
        G=_step(p),
        BM=BM,
        BN=BN,
        num_warps=warps,
        num_stages=stages,
    )


def _splits(N: int, BN: int, NG: int, per_sm: int, sms: int) -> int:
    tiles = triton.cdiv(N, BN)
    return max(1, min(NG, triton.cdiv(per_sm * sms, tiles)))


def _tune(x2, p, NG) -> tuple:
    """The fastest decode tiling for this shape (the first candidate under the interpreter, which times nothing)."""
    sms = num_sms(x2.device)
    cands = [(bn, _splits(p.out_features, bn, NG, per_sm, sms), w, st) for bn, per_sm, w, st in _DECODE_CANDIDATES]
    cands = list(dict.fromkeys(cands))
    if interpreting() or x2.device.type != "cuda":
        return cands[0]
    from triton.testing import do_bench_cudagraph

    # graph replays, as decode runs (a Python launch costs more than a small GEMV), over copies of the weight
    copies = rotation(p)
    ref = _decode(x2, p, NG, 64, 1, 4, 2).float()  # no K split: no cross-program reduction
    times = []
    for c in cands:  # compile outside the timed graphs, and keep only tilings that reproduce the unsplit result
        got = _decode(x2, p, NG, *c).float()
        if not torch.isfinite(got).all() or (got - ref).norm() > 1e-2 * ref.norm():
            continue
        fn = lambda c=c: [_decode(x2, q, NG, *c) for q in copies]  # noqa: E731
        times.append((do_bench_cudagraph(fn, rep=20), c))
    return min(times)[1] if times else (64, 1, 4, 2)


def rotation(p: PackedWeight) -> list[PackedWeight]:
    """p and copies of it, together over 2.5 times the GPU's L2 (at most 16), for tuners to time in turn: decode
    streams each weight from memory once a step, and a tiling timed on a weight that stays in the L2 is chosen for
    the wrong bytes. (The first tuners rotated 4 copies of weights under 32 MB and none above: an int4 o_proj, 8 MB,
    and down projection, 34 MB, stayed in an H200's 50 MB L2, and the picks ran 8-15% slower from memory than the
    best tiling.)"""
    l2 = _l2_bytes(p.data.device)
    n = min(16, max(1, -(-5 * l2 // (2 * max(1, p.nbytes)))))
    out = [p]
    try:
        while len(out) < n:
            out.append(_copy(p))
    except torch.OutOfMemoryError:  # a card at the memory plan's edge: fewer copies, a less exact timing
        pass
    return out


def _l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).L2_cache_size


def _copy(p: PackedWeight) -> PackedWeight:
    z = None if p.zero is None else p.zero.clone()
    return PackedWeight(p.fmt, p.data.clone(), p.scale.clone(), z, p.in_features, p.group)
