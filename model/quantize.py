"""`python -m sala_report.model.quantize SOURCE OUT --calib TEXT [--calib TEXT ...]`: quantize a checkpoint offline
to int4 and write a folder that `load_model` reads back in that format.

Methods (model/BENCH.md has SmolLM2's perplexity for each): `gptq`, the default (model/gptq.py: columns in act
order, each onto its group's grid, the grid from activation-aware clipping unless `--grid minmax`, then each group's
scale and zero refitted to GPTQ's codes unless `--no-refit`, then, unless `--no-block-tune`, each decoder layer's
grids tuned against the full-precision layer's output with the codes fixed (model/block_tune.py; the last
calibration batch judges each layer); with its own samples as calibration text,
tests/data/model/calibration-smollm2.txt; `--sequential` takes the Hessians layer by layer from the quantized
model, measured worse on SmolLM2, and skips the block tuning), `clip` (model/clip.py: the clipped grid,
round-to-nearest on it, then the block tuning; +15.2% without it) and `rtn` (round-to-nearest, what
`load_model(quantize="int4")` does at load; +54%). Groups have zero points unless `--no-zero-point`. The head is
int8 (quant.HEAD_FORMAT).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sala_report.kernels.quant import naive

from . import quant, quant_checkpoint
from .block_tune import tune_grids
from .clip import clip_int4
from .errors import ModelError
from .gptq import gptq_int4, input_hessians, quantize_sequential, refit_grid
from .load import load_model, load_tokenizer

METHODS = ("gptq", "clip", "rtn")
GRIDS = ("clip", "minmax")


@dataclass(frozen=True)
class OfflineOptions:
    """How `quantize_offline` rounds: GPTQ's column order and damping, where its grid comes from, the int4 group,
    whether groups have zero points, and whether the grids are then refitted per linear and tuned per decoder layer
    (block_tune: needs two or more calibration batches; not with `sequential`) (the measured defaults:
    model/BENCH.md)."""

    act_order: bool = True
    damp: float = 0.03
    grid: str = "clip"
    zero: bool = True
    group: int = naive.GROUP
    refit: bool = True
    sequential: bool = False
    block_tune: bool = True


def quantize_offline(lm, batches: list[torch.Tensor], method: str, options: OfflineOptions | None = None) -> None:
    """Quantize lm (full precision) in place to int4 by `method`, using the calibration token batches."""
    o = options or OfflineOptions()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if o.grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {o.grid!r}")
    naive.check_group("int4", o.group)
    if method != "rtn" and o.sequential:

        def stage(names: list[str], hessian: torch.Tensor) -> None:
            ws = [lm.get_submodule(n).weight.detach() for n in names]
            # linears reading one input share H: one call on their stacked rows, then each takes its own rows
            packed = _offline_int4(torch.cat(ws).float().cpu(), hessian.cpu(), method, o)
            a = 0
            for n, w in zip(names, ws, strict=True):
                rows = packed.index_rows(torch.arange(a, a + w.shape[0])).to(w.device)
                quant.set_module(lm, n, quant.QuantLinear(rows))
                a += w.shape[0]

        quantize_sequential(lm, batches, stage)
    hessians = input_hessians(lm, batches) if method != "rtn" and not o.sequential else {}
    packed: dict[str, naive.PackedWeight] = {}
    for name, role in list(quant.target_linears(lm)):
        module = lm.get_submodule(name)
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight.detach()
        if role == "head":
            packed[name] = quant.quantize_weight(w, quant.format_for("int4", role))
        elif method == "rtn":
            packed[name] = naive.quantize_int4(w, zero=o.zero, group=o.group)
        else:
            packed[name] = _offline_int4(w.float().cpu(), hessians[name].cpu(), method, o).to(w.device)
    if o.block_tune and method != "rtn" and not o.sequential and len(batches) > 1:
        # lm is still full precision here: the tuning's targets
        packed.update(tune_grids(lm, batches, {n: p for n, p in packed.items() if p.fmt == "int4"}))
    for name, p in packed.items():
        quant.set_module(lm, name, quant.QuantLinear(p))
    lm.quantize = "int4"


def _offline_int4(w: torch.Tensor, hessian: torch.Tensor, method: str, o: OfflineOptions) -> naive.PackedWeight:
    clipped = None
    if method == "clip" or o.grid == "clip":
        clipped = clip_int4(w, torch.diag(hessian), zero=o.zero, group=o.group)
    if method == "clip":
        return clipped
    grid = None if clipped is None else (clipped.scale, clipped.zero)
    p = gptq_int4(w, hessian, damp=o.damp, zero=o.zero, act_order=o.act_order, grid=grid, group=o.group)
    return refit_grid(w, p, hessian, damp=o.damp) if o.refit else p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sala_report.model.quantize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("source", help="checkpoint folder, .gguf file or known name (e.g. smollm2-135m)")
    ap.add_argument("out", help="folder to write (config.json, quantization.json, model.safetensors)")
    ap.add_argument(
        "--calib",
        action="append",
        required=True,
        help="a plain-text file of calibration text (repeatable; GPTQ wants many more tokens than the widest input)",
    )
    ap.add_argument("--method", choices=METHODS, default="gptq")
    ap.add_argument("--tokens", type=int, default=2048, help="calibration tokens per batch")
    ap.add_argument("--max-tokens", type=int, default=32768, help="calibration tokens used at most")
    ap.add_argument("--grid", choices=GRIDS, default="clip", help="gptq: each group's grid")
    ap.add_argument("--no-act-order", action="store_true", help="gptq: round columns in their stored order")
    ap.add_argument("--damp", type=float, default=0.03, help="gptq: fraction of the mean Hessian diagonal added")
    ap.add_argument("--no-refit", action="store_true", help="gptq: keep the grid GPTQ rounded onto")
    ap.add_argument(
        "--no-block-tune",
        action="store_true",
        help="gptq/clip: keep the grids as rounded, without tuning them layer by layer against the fp32 layers",
    )
    ap.add_argument(
        "--sequential", action="store_true", help="gptq/clip: Hessians layer by layer from the quantized model's inputs"
    )
    ap.add_argument("--no-zero-point", action="store_true", help="symmetric int4 groups (no zero points)")
    ap.add_argument("--group", type=int, default=naive.GROUP, help="int4 group size (a power of two >= 32)")
    ap.add_argument("--device", default="cpu", help="where the full-precision model runs (cpu or cuda)")
    args = ap.parse_args(argv)
    try:
        text = "\n\n".join(Path(f).read_text(encoding="utf-8") for f in args.calib)
    except (OSError, UnicodeDecodeError) as e:
        print(
            f"error: cannot read the calibration text {getattr(e, 'filename', None) or args.calib}: {e}",
            file=sys.stderr,
        )
        return 2
    options = OfflineOptions(
        act_order=not args.no_act_order,
        damp=args.damp,
        grid=args.grid,
        zero=not args.no_zero_point,
        group=args.group,
        refit=not args.no_refit,
        sequential=args.sequential,
        block_tune=not args.no_block_tune,
    )
    try:
        naive.check_group("int4", options.group)
        ids = load_tokenizer(args.source).encode(text)[: args.max_tokens]
        if len(ids) < 64:
            print(f"error: the calibration text holds {len(ids)} tokens; give at least a few hundred", file=sys.stderr)
            return 2
        dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
        lm = load_model(args.source, device=args.device, dtype=dtype)
        t = torch.tensor(ids, device=args.device)
        batches = [t[None, a : a + args.tokens] for a in range(0, len(ids), args.tokens)]
        quantize_offline(lm, batches, args.method, options)
        out = quant_checkpoint.save(lm, args.out, method=args.method)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    print(f"wrote {out} (int4, {args.method}, {len(ids)} calibration tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
