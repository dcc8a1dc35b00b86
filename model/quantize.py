"""`python -m sala_report.model.quantize SOURCE OUT --calib TEXT`: quantize a checkpoint offline to int4 and write a
folder that `load_model` reads back in that format.

Methods: `clip` (activation-aware clipping, model/clip.py; the default: it beat round-to-nearest on SmolLM2, while
GPTQ did not with this little calibration text, model/BENCH.md), `gptq` (model/gptq.py) and `rtn` (round-to-nearest,
what `load_model(quantize="int4")` does at load). The head is int8 (quant.HEAD_FORMAT).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from . import quant, quant_checkpoint
from .clip import clip_int4
from .errors import ModelError
from .gptq import gptq_int4, input_hessians
from .load import load_model, load_tokenizer

METHODS = ("clip", "gptq", "rtn")


def quantize_offline(lm, batches: list[torch.Tensor], method: str) -> None:
    """Quantize lm (full precision) in place to int4 by `method`, using the calibration token batches."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    hessians = input_hessians(lm, batches) if method != "rtn" else {}
    for name, role in list(quant.target_linears(lm)):
        module = lm.get_submodule(name)
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight.detach()
        if role == "head" or method == "rtn":
            packed = quant.quantize_weight(w, quant.format_for("int4", role))
        elif method == "clip":
            packed = clip_int4(w.float().cpu(), torch.diag(hessians[name]).cpu(), zero=quant.ZERO_POINT).to(w.device)
        else:
            packed = gptq_int4(w.cpu(), hessians[name].cpu(), zero=quant.ZERO_POINT).to(w.device)
        quant.set_module(lm, name, quant.QuantLinear(packed))
    lm.quantize = "int4"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sala_report.model.quantize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("source", help="checkpoint folder, .gguf file or known name (e.g. smollm2-135m)")
    ap.add_argument("out", help="folder to write (config.json, quantization.json, model.safetensors)")
    ap.add_argument("--calib", required=True, help="a plain-text file of calibration text (a few thousand tokens)")
    ap.add_argument("--method", choices=METHODS, default="clip")
    ap.add_argument("--tokens", type=int, default=2048, help="calibration tokens per batch")
    ap.add_argument("--device", default="cpu", help="where the full-precision model runs (cpu or cuda)")
    args = ap.parse_args(argv)
    try:
        text = Path(args.calib).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"error: cannot read the calibration text {args.calib}: {e}", file=sys.stderr)
        return 2
    try:
        ids = load_tokenizer(args.source).encode(text)
        if len(ids) < 64:
            print(f"error: {args.calib} holds {len(ids)} tokens; give at least a few hundred", file=sys.stderr)
            return 2
        dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
        lm = load_model(args.source, device=args.device, dtype=dtype)
        t = torch.tensor(ids, device=args.device)
        batches = [t[None, a : a + args.tokens] for a in range(0, len(ids), args.tokens)]
        quantize_offline(lm, batches, args.method)
        out = quant_checkpoint.save(lm, args.out, method=args.method)
    except ModelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    print(f"wrote {out} (int4, {args.method}, {len(ids)} calibration tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
