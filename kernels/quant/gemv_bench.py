"""The int4 and int8 decode linears on one GPU (`python -m sala_report.kernels.quant.gemv_bench`): bf16 cuBLAS, the
tensor-core `_qmm_kernel` decode path and the CUDA-core GEMV (every candidate tiling, and the tuned one at 1, 2 and 4
rows), at MiniCPM-SALA's stacked projections, as a Markdown table of microseconds, TB/s of the bytes read and error vs
fp64."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import gemv, matmul
from .naive import dequantize, quantize

# label -> (format, zero points, group): our own int4 as load_model(quantize="int4") makes it, GGUF's 32-wide blocks,
# int8 with one scale a row (load_model(quantize="int8")) and GGUF's Q8_0
KINDS = {
    "g128": ("int4", False, 128),
    "g128z": ("int4", True, 128),
    "q4_0": ("int4", False, 32),
    "q4_1": ("int4", True, 32),
    "int8": ("int8", False, 0),
    "q8_0": ("int8", False, 32),
}
ROTATE_BYTES = 3e8  # bf16 bytes of weight copies timed in turn, several times the H200's 50 MB L2


@dataclass
class Row:
    shape: str
    N: int
    K: int
    kind: str
    path: str
    config: str
    M: int
    us: float
    TBps: float
    err: float


def graph_ms(fn: Callable[[], object]) -> float:
    """Milliseconds per call of fn, as CUDA-graph replays (decode runs captured; a Python launch costs more than a
    small GEMV)."""
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(fn, rep=20)


# (name, N, K) of the stacked projections a MiniCPM-SALA decode step streams (model/runtime.py's fuse_projections);
# model/quant_bench.py's kernel table times the same ones
SHAPES = [
    ("lightning qkvz", 16384, 4096),
    ("sparse qkv+gate", 8704, 4096),
    ("o_proj", 4096, 4096),
    ("gate_up", 32768, 4096),
    ("down", 4096, 16384),
    ("lm_head", 73448, 4096),
]


def shapes() -> list[tuple[str, int, int]]:
    return SHAPES


def max_rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (inf when got is not finite): a race or a wrong nibble shows here even in one row."""
    got = got.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - ref).abs().max() / ref.abs().max())


def bench_shape(
    name: str,
    N: int,
    K: int,
    kind: str,
    rows: list[int],
    *,
    every: bool = True,
    qmm: bool = True,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    rotate_bytes: float = ROTATE_BYTES,
    timer: Callable[[Callable[[], object]], float] = graph_ms,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """The table's rows for one shape and kind: at rows[0] cuBLAS on the bf16 weight, the tuned `_qmm_kernel` and
    every GEMV candidate (`qmm`, `every`: whether to time those two); the tuned GEMV at each of `rows`. Each timed over copies of the weight (`rotate_bytes` of
    bf16 in all), so that they stream from memory rather than L2."""
    fmt, zero, G = KINDS[kind]
    g = torch.Generator(device=device).manual_seed(N + K)
    copies = max(2, int(rotate_bytes // (N * K * 2)) + 1)
    ws = [torch.randn(N, K, device=device, dtype=torch.bfloat16, generator=g) * 0.02 for _ in range(copies)]
    packs = [quantize(w, fmt, zero=zero, group=G) for w in ws]
    wref = dequantize(packs[0], torch.float64)
    out: list[Row] = []

    def add(path: str, config: str, x: torch.Tensor, fn: Callable, nbytes: int, ref: torch.Tensor) -> None:
        err = max_rel(fn(0), ref)
        ms = timer(lambda: [fn(i) for i in range(copies)]) / copies
        out.append(Row(name, N, K, kind, path, config, x.shape[0], round(ms * 1e3, 2), nbytes / ms / 1e9, err))
        log(f"{name} {kind} {path} {config} M={x.shape[0]}: {out[-1].us} us, {out[-1].TBps:.2f} TB/s, err {err:.1e}")

    for m in rows:
        x = torch.randn(m, K, device=device, generator=g).to(dtype)
        ref = x.double() @ wref.T
        q = packs[0].nbytes
        if m == rows[0]:
            wx = [w.to(dtype) for w in ws]
            nb = N * K * x.element_size()
            label = f"{str(dtype).removeprefix('torch.')} cuBLAS"
            add(label, "", x, lambda i: F.linear(x, wx[i]), nb, x.double() @ wx[0].double().T)
            if qmm:
                qc = matmul.decode_config(x, packs[0])
                add("_qmm (tuned)", _fmt(qc), x, lambda i, c=qc: matmul.quant_matmul(x, packs[i], config=c), q, ref)
            for c in gemv.candidates(packs[0], x.device) if every else []:
                try:
                    add("GEMV", _fmt(c), x, lambda i, c=c: gemv.gemv(x, packs[i], config=c), q, ref)
                except Exception as e:  # a variant this Triton cannot build: said, and the table goes on
                    if not c[5]:
                        raise
                    log(f"{name} {kind} GEMV {_fmt(c)}: skipped, {type(e).__name__}: {str(e)[:200]}")
        c = gemv.tuned_config(x, packs[0])
        add("GEMV (tuned)", _fmt(c), x, lambda i, c=c: gemv.gemv(x, packs[i], config=c), q, ref)
    return out


def _fmt(config: tuple) -> str:
    return "/".join(map(str, config))


def table(rows: list[Row]) -> str:
    head = (
        "| shape | N x K | kind | path | config | M | us | TB/s | max rel err |\n" + "| --- " * 5 + "| ---: " * 4 + "|"
    )
    lines = [
        f"| {r.shape} | {r.N} x {r.K} | {r.kind} | {r.path} | {r.config} | {r.M} | {r.us:.2f} | {r.TBps:.2f} | "
        f"{r.err:.1e} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def best(rows: list[Row]) -> str:
    """Per shape, kind and rows: the fastest plain GEMV candidate (variant 0, the kernel as first timed), the fastest
    variant (prefetch and/or 4-word sums, gemv.PREFETCH | gemv.SUB) and what the tuner picked, as a Markdown table."""
    lines = ["| shape | kind | M | plain: config, TB/s | variant: config, TB/s | tuned: config, TB/s |"]
    lines.append("| --- " * 3 + "| ---: " * 3 + "|")
    keys = dict.fromkeys((r.shape, r.kind, r.M) for r in rows if r.path.startswith("GEMV"))
    for key in keys:
        mine = [r for r in rows if (r.shape, r.kind, r.M) == key]
        cells = []
        for pick in (
            lambda r: r.path == "GEMV" and r.config.endswith("/0"),
            lambda r: r.path == "GEMV" and not r.config.endswith("/0"),
            lambda r: r.path == "GEMV (tuned)",
        ):
            got = [r for r in mine if pick(r)]
            top = max(got, key=lambda r: r.TBps) if got else None
            cells.append(f"{top.config}, {top.TBps:.2f}" if top else "")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kinds", default="g128,q4_0", help=f"comma-separated of {sorted(KINDS)}")
    ap.add_argument("--rows", default="1,2,4", help="rows of x for the tuned GEMV (the first one for every path)")
    ap.add_argument("--shapes", default="", help="comma-separated shape names (default: all)")
    ap.add_argument("--no-candidates", action="store_true", help="time the tuned GEMV only, not every candidate")
    ap.add_argument("--no-qmm", action="store_true", help="skip the tensor-core _qmm kernel (its tuning is slow)")
    a = ap.parse_args(argv)
    kinds = a.kinds.split(",")
    if bad := [k for k in kinds if k not in KINDS]:
        raise SystemExit(f"expected kinds among {sorted(KINDS)}, got {bad}")
    rows = [int(r) for r in a.rows.split(",") if r.strip().isdigit()]
    if not rows or not all(1 <= r <= 4 for r in rows):
        raise SystemExit(f"expected --rows of 1..4 (the GEMV's), got {a.rows!r}")
    chosen = [s for s in shapes() if not a.shapes or s[0] in a.shapes.split(",")]
    if not chosen:
        raise SystemExit(f"expected shape names among {[s[0] for s in shapes()]}, got {a.shapes!r}")
    t0 = time.perf_counter()
    print(
        f"{torch.cuda.get_device_name()}; config = BN/CG/splits/warps/stages/variant (gemv; variant bits 1 prefetch, "
        "2 4-word sums, 4 flat tile), BN/splits/warps/stages (_qmm)",
        flush=True,
    )
    res = []
    for name, N, K in chosen:
        for kind in kinds:
            log = lambda s: print(f"[{time.perf_counter() - t0:6.1f} s] {s}", flush=True)  # noqa: E731
            got = bench_shape(name, N, K, kind, rows, every=not a.no_candidates, qmm=not a.no_qmm, log=log)
            for line in best(got).splitlines()[2:]:  # as it comes, in case the run is cut short
                log(f"best (plain | variant | tuned): {line}")
            res += got
            torch.cuda.empty_cache()
    print(table(res), flush=True)
    print(best(res), flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
