"""The CUDA-core int4 GEMV (kernels/quant/gemv.py) against fp64 products of the dequantised weights, on GGUF blocks
quantized by the `gguf` package itself, and quant_matmul's routing to it. Without a GPU the kernel runs under
TRITON_INTERPRET=1 (tests/kernels/conftest.py); it has no tl.dot, so bf16 inputs are checked too."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from sala_report.kernels import quant
from sala_report.kernels.quant import ggml, naive

pytest.importorskip("triton")

from sala_report.kernels.quant import gemv, gemv_bench, matmul  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 8e-3}  # the output's rounding


def _rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _case(N, K, M, group, zero, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    p = naive.quantize(torch.randn(N, K, generator=g), "int4", zero=zero, group=group)
    x = torch.randn(M, K, generator=g).to(dtype)
    return p, x, x.double() @ naive.dequantize(p, torch.float64).T


# (N, K, group): N never a multiple of the block of rows; K a multiple of the group (whole chunks or a partial
# last chunk) or not (padded last group)
SHAPES = [(37, 512, 128), (21, 520, 128), (37, 256, 32), (45, 200, 32)]


@pytest.mark.parametrize("N,K,group", SHAPES)
@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_gemv_matches_fp64(N, K, group, zero, M):
    p, x, ref = _case(N, K, M, group, zero, seed=N + K + M)
    _every_config(x, p, ref)


_P, _S, _F = gemv.PREFETCH, gemv.SUB, gemv.FLAT
# unsplit; split along K (some splits hold a partial chunk); the variants: all three unsplit (one program walks
# several chunks, the last one partial or not), prefetch split (a split may hold one chunk only), flat tile with
# 4-word sums split (G = 32: 4-word sums are the plain kernel's), flat tile alone split
CONFIGS = [
    (16, 2, 1, 4, 1),
    (16, 1, 3, 4, 3),
    (16, 2, 1, 4, 1, _F | _P | _S),
    (16, 1, 3, 4, 1, _P),
    (32, 2, 3, 4, 1, _F | _S),
    (16, 2, 3, 4, 1, _F),
]


def _every_config(x, p, ref):
    for config in CONFIGS:
        got = gemv.gemv(x, p, config=config)
        assert got.shape == (x.shape[0], p.out_features) and got.dtype == x.dtype
        assert _rel(got, ref) < 1e-5, config
    assert not matmul._COUNTERS[x.device].any()  # the split-K arrival counters are re-armed for the next launch


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [128, 32])
def test_gemv_half_inputs(dtype, group):
    p, x, ref = _case(40, 256, 2, group, True, seed=5, dtype=dtype)
    got = gemv.gemv(x, p, config=(32, 2, 2, 4, 1))
    assert got.dtype == dtype and _rel(got, ref) < TOL[dtype]


def test_gemv_every_candidate_tiling_agrees():
    p, x, ref = _case(70, 1024, 1, 32, False, seed=3)
    cands = gemv.candidates(p, x.device)
    assert len(cands) > 4 and any(c[2] > 1 for c in cands)
    assert any(c[5] and c[2] > 1 for c in cands)  # a variant, split along K
    for c in cands:
        assert _rel(gemv.gemv(x, p, config=c), ref) < 1e-5, c


@pytest.mark.parametrize("zero", [False, True])
def test_gemv_prefetch_walks_many_chunks(zero):
    # one program walks all 8 chunks of its rows (K = 1024, groups of 32, 4 a chunk), so every prefetched chunk is
    # used, then 3 splits of 3, 3 and 2 chunks: the prefetch past a split's end must load and add nothing
    p, x, ref = _case(19, 1024, 2, 32, zero, seed=12)
    for splits in (1, 3):
        for variant in (gemv.PREFETCH, gemv.PREFETCH | gemv.FLAT):
            assert _rel(gemv.gemv(x, p, config=(16, 4, splits, 4, 1, variant)), ref) < 1e-5, (splits, variant)
    # groups of 128 in 4-word blocks, each scaled by its own group's scale: 2 groups a chunk, 4 blocks each
    p, x, ref = _case(19, 1024, 2, 128, zero, seed=13)
    for splits in (1, 3):
        for variant in (gemv.PREFETCH | gemv.SUB, gemv.PREFETCH | gemv.SUB | gemv.FLAT):
            assert _rel(gemv.gemv(x, p, config=(16, 2, splits, 4, 1, variant)), ref) < 1e-5, (splits, variant)


def test_gemv_groups_wider_than_a_chunk():
    # G = 256: one group per 256-code chunk (CG = 1)
    p, x, ref = _case(19, 600, 2, 256, True, seed=8)
    assert _rel(gemv.gemv(x, p, config=(16, 1, 2, 4, 2)), ref) < 1e-5
    assert _rel(gemv.gemv(x, p, config=(16, 1, 2, 4, 1, gemv.PREFETCH | gemv.SUB)), ref) < 1e-5  # 8 blocks a group


@pytest.mark.parametrize("G,variant", [(32, 0), (32, 5), (128, 3), (128, 7)])
def test_codes_at_every_nibble_position(G, variant):
    # one row per (code position, code): the weight is a single code c at position k (others 8: zero weight), so
    # each output is exactly c - 8 times x[k], scale 1; covers every byte, nibble and word of a group (G = 128: of
    # every 4-word block too)
    K = 2 * G
    n = torch.arange(K * 16)
    codes = torch.full((K * 16, K), 8, dtype=torch.uint8)
    codes[n, n // 16] = (n % 16).to(torch.uint8)
    p = naive.PackedWeight(
        "int4", naive.pack_int4(codes.reshape(-1, K // G, G)), torch.ones(K * 16, K // G).half(), None, K, G
    )
    x = torch.randn(1, K, generator=torch.Generator().manual_seed(2)).bfloat16().float()  # c * x exact in fp32
    want = ((n % 16).double() - 8) * x[0, n // 16].double()
    got = gemv.gemv(x, p, config=(64, 2, 1, 4, 1, variant))[0]
    assert torch.equal(got.double(), want)


Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1"])
def test_gguf_blocks_through_the_gemv(type_name):
    # gguf's own quantizer and dequantizer are the independent reference for the nibble layout
    rng = np.random.default_rng(4)
    N, K = 33, 256
    w = rng.standard_normal((N, K)).astype(np.float32) * np.geomspace(1e-2, 1, N, dtype=np.float32)[:, None]
    raw = np.ascontiguousarray(gguf.quants.quantize(w, Q[type_name])).view(np.uint8).reshape(-1)
    p = ggml.from_ggml(torch.from_numpy(raw.copy()), type_name, (N, K))
    assert p.group == 32 and (p.zero is not None) == (type_name == "Q4_1")
    wref = torch.from_numpy(gguf.quants.dequantize(raw.reshape(N, -1), Q[type_name]).astype(np.float64))
    x = torch.randn(3, K, generator=torch.Generator().manual_seed(6))
    ref = x.double() @ wref.T
    assert _rel(gemv.gemv(x, p, config=(16, 4, 2, 4, 3)), ref) < 1e-5
    assert _rel(quant.linear(x[:1], p, backend="triton"), ref[:1]) < 1e-5  # routed, tuned


def _spy(monkeypatch):
    calls = {"gemv": 0, "qmm": 0}

    def wrap(mod, name, key):
        real = getattr(mod, name)

        def counted(*a, **k):
            calls[key] += 1
            return real(*a, **k)

        monkeypatch.setattr(mod, name, counted)

    wrap(gemv, "_launch", "gemv")
    wrap(matmul, "_launch", "qmm")
    return calls


def test_quant_matmul_routes_few_int4_rows_to_the_gemv(monkeypatch):
    calls = _spy(monkeypatch)
    p, x, ref = _case(24, 256, 5, 128, False, seed=9)
    assert _rel(quant.linear(x[:1], p, backend="triton"), ref[:1]) < 1e-5
    assert calls == {"gemv": 1, "qmm": 0}
    assert _rel(quant.linear(x[:4], p, backend="triton"), ref[:4]) < 1e-5
    assert calls == {"gemv": 2, "qmm": 0}
    assert _rel(quant.linear(x, p, backend="triton"), ref) < 1e-5  # 5 rows: the tensor-core kernel
    assert calls == {"gemv": 2, "qmm": 1}
    quant.linear(x[:1], p, backend="triton", config=(32, 1, 4, 2))  # a pinned tiling is the old kernel's
    assert calls == {"gemv": 2, "qmm": 2}
    p8 = naive.quantize(torch.randn(24, 256), "int8")
    quant.linear(x[:1], p8, backend="triton")  # int8 too (nothing timed here: no _qmm to beat)
    assert calls == {"gemv": 3, "qmm": 2}
    monkeypatch.setattr(gemv, "GEMV_MAX_ROWS", 0)  # the switch
    assert _rel(quant.linear(x[:1], p, backend="triton"), ref[:1]) < 1e-5
    assert calls == {"gemv": 3, "qmm": 3}


def test_int8_takes_the_gemv_only_where_it_timed_faster_than_qmm(monkeypatch):
    # a card where the tuned _qmm_kernel beat every GEMV tiling for this shape: quant_matmul keeps _qmm there
    calls = _spy(monkeypatch)
    p = naive.quantize(torch.randn(24, 256, generator=torch.Generator().manual_seed(1)), "int8")
    x = torch.randn(1, 256)
    monkeypatch.setattr(gemv, "tune", lambda x2, p: (gemv.candidates(p, x2.device)[0], [(5.0, None)]))
    monkeypatch.setattr(gemv, "_timed", lambda fn, copies: 1.0)  # _qmm: 1 ms against the GEMV's 5
    monkeypatch.setattr(gemv, "_tuned", {})
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    assert _rel(quant.linear(x, p, backend="triton"), ref) < 1e-5
    assert calls == {"gemv": 0, "qmm": 1}
    monkeypatch.setattr(gemv, "_timed", lambda fn, copies: 9.0)  # the GEMV faster: taken
    monkeypatch.setattr(gemv, "_tuned", {})
    assert _rel(quant.linear(x, p, backend="triton"), ref) < 1e-5
    assert calls == {"gemv": 1, "qmm": 1}


# (N, K, group): one scale a row with K a multiple of 128, of 64 only (SmolLM2's 576), of 32 only; GGUF Q8_0 groups
INT8_SHAPES = [(37, 512, 0), (21, 576, 0), (30, 96, 0), (45, 256, 32)]


@pytest.mark.parametrize("N,K,group", INT8_SHAPES)
@pytest.mark.parametrize("M", [1, 2, 4])
def test_int8_gemv_matches_fp64(N, K, group, M):
    g = torch.Generator().manual_seed(N + K + M)
    p = naive.quantize(torch.randn(N, K, generator=g), "int8", group=group)
    x = torch.randn(M, K, generator=g)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    assert gemv.supports(p, M) and gemv.kernel_group(p) == (group or {512: 128, 576: 64, 96: 32}[K])
    _every_config(x, p, ref)


def test_int8_rows_the_gemv_cannot_walk_take_the_old_kernel(monkeypatch):
    # K = 1000 is no multiple of 32: a group would run past the row's end, which int8 does not pad
    calls = _spy(monkeypatch)
    p = naive.quantize(torch.randn(19, 1000, generator=torch.Generator().manual_seed(2)), "int8")
    x = torch.randn(1, 1000)
    assert not gemv.supports(p, 1) and gemv.kernel_group(p) is None
    assert _rel(quant.linear(x, p, backend="triton"), x.double() @ naive.dequantize(p, torch.float64).T) < 1e-5
    assert calls == {"gemv": 0, "qmm": 1}


@pytest.mark.parametrize("variant", [0, 5, 3])
def test_int8_codes_at_every_byte_position(variant):
    # one row per (position, code): a single code c at position k, zeros elsewhere, scale 1, so each output is
    # exactly c * x[k]; every byte of every word of a 64-input group, codes at both ends of int8 (-128 too, which
    # the quantizer never writes but a checkpoint may hold) and around the sign bit
    K, values = 128, torch.tensor([-128, -127, -65, -1, 0, 1, 2, 63, 64, 126, 127])
    n = torch.arange(K * len(values))
    codes = torch.zeros(len(n), K, dtype=torch.int8)
    codes[n, n // len(values)] = values[n % len(values)].to(torch.int8)
    p = naive.PackedWeight("int8", codes, torch.ones(len(n)), None, K)
    x = torch.randn(1, K, generator=torch.Generator().manual_seed(2)).bfloat16().float()  # c * x exact in fp32
    want = values[n % len(values)].double() * x[0, n // len(values)].double()
    got = gemv.gemv(x, p, config=(64, 1, 1, 4, 1, variant))[0]
    assert torch.equal(got.double(), want)


def test_gguf_q8_0_through_the_gemv():
    rng = np.random.default_rng(5)
    N, K = 29, 256
    w = rng.standard_normal((N, K)).astype(np.float32) * np.geomspace(1e-2, 1, N, dtype=np.float32)[:, None]
    raw = np.ascontiguousarray(gguf.quants.quantize(w, Q.Q8_0)).view(np.uint8).reshape(-1)
    p = ggml.from_ggml(torch.from_numpy(raw.copy()), "Q8_0", (N, K))
    assert p.fmt == "int8" and p.group == 32
    wref = torch.from_numpy(gguf.quants.dequantize(raw.reshape(N, -1), Q.Q8_0).astype(np.float64))
    x = torch.randn(2, K, generator=torch.Generator().manual_seed(7))
    assert _rel(gemv.gemv(x, p, config=(16, 2, 2, 4, 1)), x.double() @ wref.T) < 1e-5


def test_bytes_not_viewable_as_words_take_the_old_kernel(monkeypatch):
    calls = _spy(monkeypatch)
    p, x, ref = _case(24, 256, 1, 128, True, seed=10)
    wide = torch.zeros(24, 130, dtype=torch.uint8)
    wide[:, 2:] = p.data
    odd = naive.PackedWeight("int4", wide[:, 2:], p.scale, p.zero, 256, 128)  # rows start 2 bytes past a word
    assert gemv.words(odd) is None and gemv.words(p) is not None
    assert _rel(quant.linear(x, odd, backend="triton"), ref) < 1e-5
    assert calls == {"gemv": 0, "qmm": 1}
    with pytest.raises(ValueError, match="int32 words"):
        gemv.gemv(x, odd)
    with pytest.raises(ValueError, match=r"x \[1..4, 256\]"):
        gemv.gemv(torch.randn(5, 256), p)


def test_bench_table_runs_on_a_tiny_shape():
    # the real kernels under the interpreter; the only fake is the clock (1 ms a call)
    lines = []
    rows = gemv_bench.bench_shape(
        "tiny",
        40,
        256,
        "q4_1",
        [1, 2],
        device="cpu",
        dtype=torch.float32,
        rotate_bytes=0,
        every=False,
        timer=lambda fn: (fn(), 1.0)[1],
        log=lines.append,
    )
    assert [r.path for r in rows] == ["float32 cuBLAS", "_qmm (tuned)", "GEMV (tuned)", "GEMV (tuned)"]
    assert all(r.err < 1e-5 for r in rows) and len(lines) == 4
    text = gemv_bench.table(rows)
    assert text.count("\n") == 5 and "| tiny | 40 x 256 | q4_1 | GEMV (tuned) |" in text
    assert any(s[0] == "lm_head" for s in gemv_bench.shapes())


def test_bench_summary_sets_the_variants_beside_the_plain_kernel():
    # every candidate timed (the fake clock says 1 ms each), without the slow _qmm tuning; the summary names the
    # fastest plain config, the fastest variant and the tuned one
    rows = gemv_bench.bench_shape(
        "tiny",
        24,
        512,
        "g128",
        [1],
        qmm=False,
        device="cpu",
        dtype=torch.float32,
        rotate_bytes=0,
        timer=lambda fn: (fn(), 1.0)[1],
        log=lambda s: None,
    )
    assert "_qmm (tuned)" not in {r.path for r in rows} and all(r.err < 1e-5 for r in rows)
    assert {r.config[-1] for r in rows if r.path == "GEMV"} == {"0", "4", "5", "7"}
    summary = gemv_bench.best(rows).splitlines()
    assert len(summary) == 3 and summary[2].startswith("| tiny | g128 | 1 | ")
    plain, variant, tuned = (c.strip() for c in summary[2].split("|")[4:7])
    assert plain.split(",")[0].endswith("/0") and not variant.split(",")[0].endswith("/0") and tuned


def test_tuners_rotate_copies_past_the_l2(monkeypatch):
    # decode reads each weight from memory once a step: the timed copies must not fit in the L2 together
    p = naive.quantize(torch.randn(64, 256), "int4")  # 8,192 code bytes + scales
    monkeypatch.setattr(matmul, "_l2_bytes", lambda device: 50_000)
    copies = matmul.rotation(p)
    assert sum(q.nbytes for q in copies) > 2.5 * 50_000 and len(copies) == -(-125_000 // p.nbytes)
    assert all(q.data.data_ptr() != p.data.data_ptr() for q in copies[1:]) and torch.equal(copies[-1].data, p.data)
    monkeypatch.setattr(matmul, "_l2_bytes", lambda device: 10**9)
    assert len(matmul.rotation(p)) == 16  # at most 16, however small the weight
    monkeypatch.setattr(matmul, "_l2_bytes", lambda device: 1_000)
    assert matmul.rotation(p) == [p]  # larger than the L2 already: no copy
