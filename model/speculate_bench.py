"""The speculative-decoding tables of `python -m sala_report.model.speculate`: plain against prompt-lookup greedy
decoding on a copy-heavy prompt (outputs checked identical), and with `--gpu` the cost of a verify pass of each width
against one decode step on MiniCPM-SALA's real shape with random bf16 weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .errors import ModelError
from .quant import CHOICES
from .runtime import MAX_GRAPH_WIDTH, Runtime
from .speculate import SpecResult, speculative_generate

COPY_PROMPT = (
    "Here is a passage.\n\n{text}\n\nCopy the passage above word for word, starting from its first sentence.\n\n"
)
TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "model" / "calibration.txt"


def _progress(msg: str) -> None:
    print(f".. {msg}", flush=True)


def compare(
    lm, ids: list[int], new_tokens: int, *, draft_tokens: int = 8, repeats: int = 3
) -> tuple[SpecResult, SpecResult]:
    """(plain, speculative) greedy runs on one runtime: after an untimed pair that compiles and captures, the fastest
    of `repeats` alternating pairs of each (this machine is shared: the fastest run is the least disturbed)."""
    rt = Runtime.create(lm, 1, len(ids), new_tokens)
    runs: dict[bool, list[SpecResult]] = {False: [], True: []}
    for spec in (False, True) * (repeats + 1):
        runs[spec].append(
            speculative_generate(lm, ids, new_tokens, speculate=spec, draft_tokens=draft_tokens, runtime=rt)
        )
    base, fast = (min(runs[spec][1:], key=lambda r: r.seconds) for spec in (False, True))
    return base, fast


def speed_table(title: str, base: SpecResult, fast: SpecResult) -> str:
    return "\n".join(
        [
            title,
            "| decoding | tokens/s | forward passes | drafted | accepted |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| plain | {len(base.tokens) / base.seconds:.1f} | {base.forwards} | - | - |",
            f"| prompt lookup | {len(fast.tokens) / fast.seconds:.1f} | {fast.forwards} | {fast.drafted} | "
            f"{fast.accepted} |",
            f"speed-up {base.seconds / fast.seconds:.2f}x; outputs identical: {base.tokens == fast.tokens}",
        ]
    )


def copy_bench(
    source: str,
    text: str,
    new_tokens: int,
    *,
    device=None,
    draft_tokens: int = 8,
    dtype: torch.dtype | None = None,
    quantize: str | None = None,
) -> str:
    """Greedy decode with and without prompt-lookup drafts on a copy-heavy prompt (the model is asked to repeat a
    passage it was given, as a report quotes its evidence); checks the outputs are identical."""
    from .load import load_model, load_tokenizer

    _progress(f"loading {source}")
    lm = load_model(source, device=device, dtype=dtype, quantize=quantize)
    tok = load_tokenizer(source)
    ids = tok.encode(COPY_PROMPT.format(text=text))
    base, fast = compare(lm, ids, new_tokens, draft_tokens=draft_tokens)
    where = lm.model.embed_tokens.weight
    title = (
        f"{source} ({where.dtype}, linears {lm.quantize or 'unquantized'}), prompt {len(ids)} tokens, {new_tokens} "
        f"greedy tokens, up to {draft_tokens} drafts, {where.device}"
    )
    return speed_table(title, base, fast)


def _sync_ms(fn, reps: int) -> float:
    from .gpu_bench import _sync_time

    t = _sync_time()
    for _ in range(reps):
        fn()
    return 1e3 * (_sync_time() - t) / reps


def width_table(lm, contexts: list[int], widths: list[int], reps: int = 10) -> str:
    """Per context and width: one verify pass (`extend`, CUDA graph) and one pass with its snapshot and a rollback
    of every draft, against one decode step (graph), in ms."""
    from .gpu_bench import _free, _sync_time

    lines = [
        "| context | width | decode step ms | extend ms | extend / step | snapshot + extend + rollback ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    room = (reps + 2) * (sum(widths) + len(widths) + 1)
    for n in contexts:
        _free()
        rt = Runtime.create(lm, 1, n, room)
        _progress(f"prefill {n:,} tokens")
        t = _sync_time()
        tok = rt.prefill(torch.randint(0, lm.config.vocab_size, (1, n), device="cuda")).argmax(-1)
        _progress(f"prefill {n:,}: {_sync_time() - t:.1f} s")
        rt.decode(tok)  # the eager step that compiles, then the capture
        step = _sync_ms(lambda: rt.decode(tok), reps)
        for w in widths:
            ids = torch.randint(0, lm.config.vocab_size, (w,), device="cuda")
            rt.extend(ids)
            ext = _sync_ms(lambda: rt.extend(ids), reps)

            def verify_and_reject():
                snap = rt.snapshot()
                rt.extend(ids)
                rt.rollback(snap, 0)

            verify_and_reject()
            verify_and_reject()  # the snapshot's and rollback's graphs are captured on their second call
            both = _sync_ms(verify_and_reject, reps)
            lines.append(f"| {n:,} | {w} | {step:.2f} | {ext:.2f} | {ext / step:.2f} | {both:.2f} |")
            _progress(lines[-1])
        del rt
    return "\n".join(lines)


def gpu_bench(
    source: str | None, contexts: list[int], widths: list[int], new_tokens: int, text: str, draft_tokens: int
) -> str:
    from .config import ModelConfig
    from .gpu_bench import BUNDLED_CONFIG, _free, random_model

    t0 = time.perf_counter()
    name = torch.cuda.get_device_name()
    _progress(f"{name}: MiniCPM-SALA shape, random bf16 weights")
    lm = random_model(ModelConfig.from_json(BUNDLED_CONFIG))
    out = [f"{name}, MiniCPM-SALA config, random bf16 weights", width_table(lm, contexts, widths)]
    if source is None:
        # random weights copy nothing from the prompt: this row measures what drafts cost when they are rejected,
        # and what they gain where greedy decoding falls into a loop the lookup then predicts
        g = torch.Generator().manual_seed(0)
        passage = torch.randint(0, lm.config.vocab_size, (500,), generator=g).tolist()
        ids = passage * 4
        _progress(f"plain vs prompt lookup, random weights, prompt {len(ids)} tokens")
        base, fast = compare(lm, ids, new_tokens, draft_tokens=draft_tokens)
        title = f"random weights, prompt {len(ids)} tokens, {new_tokens} greedy tokens, up to {draft_tokens} drafts"
        out.append(speed_table(title, base, fast))
    del lm
    _free()
    if source is not None:
        out.append(copy_bench(source, text, new_tokens, device="cuda", draft_tokens=draft_tokens))
    out.append(f"total {time.perf_counter() - t0:.0f} s")
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sala_report.model.speculate", description=copy_bench.__doc__)
    ap.add_argument(
        "--model", default=None, help="a checkpoint folder, .gguf file or known name (CPU default: smollm2-135m)"
    )
    ap.add_argument("--text", default=str(TEXT), help="the passage to copy (its first 1,500 characters)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None, help="default: the loader's")
    ap.add_argument(
        "--quantize", choices=CHOICES, default=None, help="the loader's weight format (gguf keeps a GGUF's own blocks)"
    )
    ap.add_argument("--drafts", type=int, default=8, help="drafted tokens per verify pass, at most 15")
    ap.add_argument("--gpu", action="store_true", help="verify-pass widths on the real shape, then plain vs lookup")
    ap.add_argument("--contexts", default="65536,262144", help="GPU: contexts of the width table")
    ap.add_argument("--widths", default="1,2,4,8,16", help="GPU: verify-pass widths")
    args = ap.parse_args(argv)
    if not 0 <= args.drafts < MAX_GRAPH_WIDTH:
        ap.error(f"--drafts must be between 0 and {MAX_GRAPH_WIDTH - 1}, got {args.drafts}")
    text = Path(args.text).read_text(encoding="utf-8")[:1500]
    if args.gpu:
        contexts = [int(x) for x in args.contexts.split(",")]
        widths = [int(x) for x in args.widths.split(",")]
        print(gpu_bench(args.model, contexts, widths, args.tokens, text, args.drafts), flush=True)
        return 0
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model = args.model or "smollm2-135m"
    kw = dict(device=args.device, draft_tokens=args.drafts, dtype=dtype, quantize=args.quantize)
    try:
        print(copy_bench(model, text, args.tokens, **kw), flush=True)
    except ModelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0
