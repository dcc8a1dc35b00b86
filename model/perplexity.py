"""Perplexity of a CausalLM over a text: how the weight formats are compared on real weights (SmolLM2).

`python -m sala_report.model.perplexity SOURCE --quantize gguf` measures one load through `load_model` (e.g. a GGUF
kept in its own blocks) beside the same source in fp32; `python -m sala_report.model.bench --cpu --quantize ...`
prints the table of formats.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "model" / "perplexity.txt"


def perplexity(lm, ids: list[int] | torch.Tensor, *, window: int = 1024) -> float:
    """exp(mean next-token negative log-likelihood) over ids, in non-overlapping windows of `window` tokens."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() < 2:
        raise ValueError(f"expected at least 2 tokens, got {ids.numel()}")
    device = lm.model.embed_tokens.weight.device
    total, count = 0.0, 0
    with torch.inference_mode():
        for a in range(0, ids.numel() - 1, window):
            chunk = ids[a : a + window + 1].to(device)
            if chunk.numel() < 2:
                break
            logits = lm(chunk[None, :-1])[0].float()
            total += F.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += chunk.numel() - 1
    return math.exp(total / count)


def main(argv: list[str] | None = None) -> int:
    from .errors import ModelError
    from .load import load_model, load_tokenizer

    ap = argparse.ArgumentParser(prog="python -m sala_report.model.perplexity", description=__doc__)
    ap.add_argument("source", nargs="?", default="smollm2-135m", help="checkpoint folder, .gguf file or known name")
    ap.add_argument("--quantize", default="gguf", help="load_model's quantize= (gguf, int8, int4, fp8, bf16)")
    ap.add_argument("--text", default=str(TEXT), help="plain text to score (default: the shipped perplexity text)")
    args = ap.parse_args(argv)
    try:
        text = Path(args.text).read_text(encoding="utf-8")
        ids = load_tokenizer(args.source).encode(text)
        rows = []
        for label, fmt in (("fp32", None), (args.quantize, args.quantize)):
            t = time.perf_counter()
            lm = load_model(args.source, device="cpu", dtype=torch.float32, quantize=fmt)
            rows.append((f"{label} (model.quantize={lm.quantize})", perplexity(lm, ids), time.perf_counter() - t))
    except (OSError, UnicodeDecodeError, ValueError, ModelError) as e:
        print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
        return 2
    base = rows[0][1]
    print(f"{args.source} on {Path(args.text).name} ({len(ids)} tokens), CPU, {torch.get_num_threads()} threads")
    for label, ppl, secs in rows:
        print(f"{label}: perplexity {ppl:.4f} ({100 * (ppl / base - 1):+.3f}% vs fp32), load + eval {secs:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
