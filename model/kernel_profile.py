"""`python -m sala_report.model.kernel_profile`: where a MiniCPM-SALA decode step or prefill spends its GPU time, per
kernel name (the bench's `--profile` sums kernels into categories), for each weight format on the same random
weights as `model/quant_bench.py`. Prints one table per run: microseconds a step (decode) or milliseconds (prefill),
launches, kernel name."""

from __future__ import annotations

import argparse
import sys

import torch

from .bench import _sizes
from .config import ModelConfig
from .gpu_bench import BUNDLED_CONFIG, _sync_time
from .quant_bench import _free, fill_state, random_model
from .runtime import Runtime


def by_name(fn) -> tuple[float, list[tuple[float, int, str]]]:
    """Run fn under the profiler -> (wall ms, [(GPU ms, launches, kernel name)] slowest first)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t = _sync_time()
        fn()
        wall = _sync_time() - t
    rows = [
        (e.self_device_time_total / 1e3, e.count, e.key[:90])
        for e in prof.key_averages()
        if e.device_type == torch.autograd.DeviceType.CUDA
    ]
    return wall * 1e3, sorted(rows, reverse=True)


def decode_profile(lm, n: int, steps: int = 16) -> str:
    """A batch-1 graph decode step on a state filled as if n tokens were prefilled (quant_bench.fill_state)."""
    rt = Runtime.create(lm, 1, n, 4 * steps)
    fill_state(rt, n)
    tok = torch.randint(0, lm.config.vocab_size, (1,), device="cuda")
    for _ in range(4):  # the eager step, the capture, tuning on first use
        tok = rt.decode(tok).argmax(-1)
    t = _sync_time()
    for _ in range(2 * steps):
        tok = rt.decode(tok).argmax(-1)
    step = (_sync_time() - t) / (2 * steps) * 1e3
    wall, rows = by_name(lambda: [rt.decode(tok) for _ in range(steps)])
    kernels = sum(r[0] for r in rows) / steps
    head = f"decode at {n}: {step:.3f} ms a step ({wall / steps:.3f} profiled, kernels {kernels:.3f} ms, "
    head += f"{sum(r[1] for r in rows) // steps} launches)"
    return _table(head, [(ms / steps * 1e3, c // steps, name) for ms, c, name in rows], "us a step")


def prefill_profile(lm, n: int) -> str:
    """A prefill of n random tokens, after an untimed one (Triton compiles per length) and a timed one."""
    ids = torch.randint(0, lm.config.vocab_size, (1, n), device="cuda")
    times = []
    for _ in range(2):
        rt = Runtime.create(lm, 1, n, 1)
        t = _sync_time()
        rt.prefill(ids)
        times.append(_sync_time() - t)
        del rt
        _free()
    rt = Runtime.create(lm, 1, n, 1)
    wall, rows = by_name(lambda: rt.prefill(ids))
    head = f"prefill of {n}: first {times[0]:.2f} s, time to first token {times[1]:.3f} s ({wall / 1e3:.3f} profiled)"
    return _table(head, rows, "ms")


def _table(head: str, rows: list[tuple[float, int, str]], unit: str, top: int = 30) -> str:
    lines = [head, "", f"| {unit} | launches | kernel |", "| ---: | ---: | --- |"]
    lines += [f"| {t:.1f} | {c} | `{name}` |" for t, c, name in rows[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sala_report.model.kernel_profile", description=__doc__)
    ap.add_argument("--formats", default="bf16,int8,int4", help="weight formats: bf16, int8, int4, fp8")
    ap.add_argument("--decode", default="256K", help="contexts of the profiled decode step ('' to skip)")
    ap.add_argument("--prefill", default="", help="prefill lengths to profile, e.g. 256K ('' to skip)")
    ap.add_argument("--config", help="config.json of the model (default: the bundled MiniCPM-SALA config)")
    args = ap.parse_args(argv)
    formats = [f for f in args.formats.split(",") if f]
    if bad := [f for f in formats if f not in ("bf16", "int8", "int4", "fp8")]:
        ap.error(f"--formats takes bf16, int8, int4 and fp8, got {', '.join(bad)}")
    try:
        decode, prefill = _sizes(args.decode), _sizes(args.prefill)
    except ValueError:
        ap.error(f"--decode and --prefill take token counts such as 256K,1M, got {args.decode!r} / {args.prefill!r}")
    if not torch.cuda.is_available():
        print("error: the kernel profile needs a CUDA GPU (none is visible)", file=sys.stderr)
        return 2
    config = ModelConfig.from_json(args.config or BUNDLED_CONFIG)
    for fmt in formats:
        _free()
        lm = random_model(config, None if fmt == "bf16" else fmt)
        for n in decode:
            print(f"## {fmt}\n\n{decode_profile(lm, n)}\n", flush=True)
            _free()
        for n in prefill:
            print(f"## {fmt}\n\n{prefill_profile(lm, n)}\n", flush=True)
            _free()
        del lm
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
