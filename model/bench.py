"""Throughput of the model runtime: `python -m sala_report.model.bench --cpu` or `--gpu`.

The CPU table runs the embedded SmolLM2 default (dequantised to fp32) and, on the same weights in
the same process, transformers' eager LlamaForCausalLM, each checked to agree on the logits first.
The GPU table (`gpu_bench.py`) runs MiniCPM-SALA's real config with random bf16 weights beside the
full-attention peer a user would otherwise run (transformers Qwen3-8B shape, SDPA).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .load import load_model
from .sources import DEFAULT_MODEL


def _time_ours(lm, prompt: torch.Tensor, steps: int) -> tuple[float, float, torch.Tensor]:
    cache = lm.new_cache(1, capacity=prompt.shape[1] + steps + 1)
    t0 = time.perf_counter()
    logits = lm(prompt, cache=cache, last_only=True)
    t1 = time.perf_counter()
    token = logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        token = lm(token, cache=cache)[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, logits[0, -1]


def _time_hf(hf, prompt: torch.Tensor, steps: int) -> tuple[float, float, torch.Tensor]:
    t0 = time.perf_counter()
    out = hf(prompt, use_cache=True, logits_to_keep=1)
    t1 = time.perf_counter()
    past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        out = hf(token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out.logits[0, -1] if steps == 0 else None


def _hf_twin(lm):
    """transformers' eager Llama holding exactly our (dequantised) weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = lm.config
    cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_theta,
        max_position_embeddings=c.max_position_embeddings,
        tie_word_embeddings=c.tie_word_embeddings,
        attn_implementation="eager",
    )
    hf = LlamaForCausalLM(cfg).eval()
    missing, unexpected = hf.load_state_dict(lm.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return hf


def cpu_table(prompt_len: int = 256, steps: int = 64, repeats: int = 3) -> str:
    torch.manual_seed(0)
    lm = load_model(DEFAULT_MODEL, device="cpu", dtype=torch.float32)
    prompt = torch.randint(0, lm.config.vocab_size, (1, prompt_len))
    rows = [("sala_report (ours)", lm, _time_ours)]
    try:
        rows.append(("transformers eager", _hf_twin(lm), _time_hf))
    except ImportError:
        print("transformers is not installed: only our numbers are shown", file=sys.stderr)
    with torch.inference_mode():
        if len(rows) == 2:  # same weights, same answer: otherwise the timing means nothing
            a, b = rows[0][1](prompt)[0, -1], rows[1][1](prompt).logits[0, -1]
            err = ((a - b).abs().max() / b.abs().max()).item()
            if err > 1e-3:
                raise SystemExit(f"our logits differ from transformers' by {err:.2e} (relative); not timing")
        results = {}
        for name, model, fn in rows:
            fn(model, prompt[:, :16], 4)  # warm-up
            best_p, best_d = float("inf"), float("inf")
            for _ in range(repeats):  # best of n: the machine may be shared
                p, d, _ = fn(model, prompt, steps)
                best_p, best_d = min(best_p, p), min(best_d, d)
            results[name] = (prompt_len / best_p, steps / best_d)
    lines = [
        f"SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to fp32), CPU, {torch.get_num_threads()} threads, "
        f"prompt {prompt_len} tokens, {steps} greedy decode steps, best of {repeats}",
        "| runtime | prefill tok/s | decode tok/s |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {p:,.0f} | {d:,.1f} |" for name, (p, d) in results.items()]
    return "\n".join(lines)


PERPLEXITY_TEXT = Path(__file__).resolve().parents[1] / "tests" / "data" / "model" / "perplexity.txt"


def perplexity_table(formats: list[str], checkpoints: list[str]) -> str:
    """SmolLM2 (the embedded GGUF, dequantised to fp32) perplexity on tests/data/model/perplexity.txt per format,
    each quantized by round-to-nearest at load ("gguf": the file's own blocks, kept packed), and of each quantized
    checkpoint given."""
    from .load import load_tokenizer
    from .perplexity import perplexity
    from .plan import packed_layout

    if not PERPLEXITY_TEXT.exists():
        raise SystemExit(f"no perplexity text at {PERPLEXITY_TEXT}: run from a source checkout")
    ids = load_tokenizer(DEFAULT_MODEL).encode(PERPLEXITY_TEXT.read_text(encoding="utf-8"))
    rows = []
    for label, source, fmt in [
        ("fp32", DEFAULT_MODEL, None),
        *(("GGUF-native" if f == "gguf" else f"{f} round-to-nearest", DEFAULT_MODEL, f) for f in formats),
        *((f"checkpoint {c}", c, None) for c in checkpoints),
    ]:
        t = time.perf_counter()
        lm = load_model(source, device="cpu", dtype=torch.float32, quantize=fmt)
        if fmt == "gguf":  # what the file's blocks became, e.g. "int4 g32 + zero points, int8 g32"
            kinds = {f"{k[0]} g{k[1]}" + (" + zero points" if k[2] else "") for k in packed_layout(lm).values()}
            label = f"{label} ({', '.join(sorted(kinds)) or 'no packable layers'})"
        rows.append((label, perplexity(lm, ids), time.perf_counter() - t))
    base = rows[0][1]
    lines = [
        f"SmolLM2-135M-Instruct perplexity on {PERPLEXITY_TEXT.name} ({len(ids)} tokens), CPU, {torch.get_num_threads()} threads",
        "| weights | perplexity | vs fp32 | load + eval s |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {label} | {ppl:.3f} | {100 * (ppl / base - 1):+.2f}% | {secs:.1f} |" for label, ppl, secs in rows]
    return "\n".join(lines)


# Timing random weights packed into GGUF blocks would time the kernels the formats table already times (its Q4_1 /
# Q4_0 / Q8_0 rows), on values no GGUF file holds
GPU_GGUF = (
    "--quantize gguf keeps a GGUF file's own blocks, and --gpu runs random MiniCPM-SALA weights, which come from no "
    "GGUF file: the formats table times Q4_1 / Q4_0 / Q8_0 blocks (groups of 32) in its kernel rows with "
    "--quantize int4,int8; for a GGUF's perplexity use --cpu --quantize gguf"
)


def _sizes(text: str) -> list[int]:
    """'64K,256K,1M' or '65536,262144' -> token counts (K = 1024, M = 1024 * 1024)."""
    out = []
    for part in filter(None, (p.strip().upper() for p in text.split(","))):
        mult = {"K": 1024, "M": 1024**2}.get(part[-1], 1)
        out.append(int(float(part.rstrip("KM")) * mult))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sala_report.model.bench", description=__doc__)
    ap.add_argument("--cpu", action="store_true", help="time SmolLM2 on the CPU beside transformers' eager model")
    ap.add_argument(
        "--gpu", action="store_true", help="time MiniCPM-SALA (random weights) beside the Qwen3-8B-shape peer"
    )
    ap.add_argument("--prompt", type=int, default=256, help="CPU: prompt length in tokens")
    ap.add_argument("--steps", type=int, default=64, help="CPU: decode steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", help="GPU: config.json of the model (default: the bundled MiniCPM-SALA config)")
    ap.add_argument("--contexts", default="64K,192K,256K,1M", help="GPU: prompt lengths for time to first token")
    ap.add_argument("--decode-contexts", default="64K,256K,1M", help="GPU: of those, where decode is timed")
    ap.add_argument("--batches", default="1,8", help="GPU: decode batch sizes (a larger batch replicates the prefill)")
    ap.add_argument("--new-tokens", type=int, default=256, help="GPU: decode steps timed per context and batch")
    ap.add_argument(
        "--peer-contexts", default="64K,192K,256K,512K", help="GPU: prompt lengths for the peer ('' to skip)"
    )
    ap.add_argument(
        "--peer-new-tokens", type=int, default=64, help="GPU: peer decode steps (its baseline script uses 64)"
    )
    ap.add_argument("--profile", default="256K", help="GPU: context of the per-component breakdown ('' to skip)")
    ap.add_argument(
        "--no-warmup", action="store_true", help="GPU: time each context's first prefill (compiles included)"
    )
    ap.add_argument("--out", help="GPU: folder for bench_gpu.json")
    ap.add_argument(
        "--quantize",
        default="",
        help="weight formats beside bf16, e.g. int8,int4,fp8: the GPU formats "
        "table (model/quant_bench.py) or, with --cpu, SmolLM2 perplexity per format (also gguf: the file's own blocks)",
    )
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="CPU perplexity: also a quantized checkpoint "
        "folder written by `python -m sala_report.model.quantize` (repeatable)",
    )
    ap.add_argument(
        "--consumer", default="12,16,24", help="GPU formats: GB left free for the consumer-card runs ('' to skip)"
    )
    ap.add_argument("--no-kernels", action="store_true", help="GPU formats: skip the per-kernel table")
    args = ap.parse_args(argv)
    if args.cpu == args.gpu:
        ap.error("choose one table: --cpu or --gpu")
    formats = [f.strip() for f in args.quantize.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("int8", "int4", "fp8", "gguf")]
    if bad:
        ap.error(f"--quantize takes int8, int4, fp8 and (with --cpu) gguf, got {', '.join(bad)}")
    if args.gpu and "gguf" in formats:
        ap.error(GPU_GGUF)
    if args.cpu and (formats or args.checkpoint):
        print(perplexity_table(formats, args.checkpoint))
        return 0
    if args.cpu:
        print(cpu_table(args.prompt, args.steps, args.repeats))
        return 0
    if formats:
        from .quant_bench import QuantBenchSettings, run_quant_bench

        qs = QuantBenchSettings(
            formats=formats,
            config=args.config,
            ttft_contexts=_sizes(args.contexts),
            decode_contexts=_sizes(args.decode_contexts),
            batches=_sizes(args.batches),
            new_tokens=args.new_tokens,
            kernels=not args.no_kernels,
            consumer=_sizes(args.consumer),
            out=args.out,
        )
        print(run_quant_bench(qs))
        return 0
    from .gpu_bench import GpuBenchSettings, run_gpu_bench

    settings = GpuBenchSettings(
        config=args.config,
        contexts=_sizes(args.contexts),
        decode_contexts=_sizes(args.decode_contexts),
        batches=_sizes(args.batches),
        new_tokens=args.new_tokens,
        peer_contexts=_sizes(args.peer_contexts),
        peer_new_tokens=args.peer_new_tokens,
        profile=(_sizes(args.profile) or [None])[0],
        out=args.out,
        warmup=not args.no_warmup,
    )
    print(run_gpu_bench(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
