"""The weight formats on a GPU (`python -m sala_report.model.bench --gpu --quantize int8,int4,fp8`): kernels, logits
error against bf16 on the same random MiniCPM-SALA weights, time to first token, decode, peak memory, and runs on a
card made to look like a consumer one (filler allocated first so that only 12 / 16 / 24 GB stay free).

Decode at long contexts is timed on a state filled with random keys, values and Lightning states rather than one
made by a prefill: a step reads the same bytes either way (the weights are random too), and it saves a 1M-token
prefill per format. Time to first token is a real prefill.
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sala_report.kernels import quant as kq
from sala_report.kernels.quant.gemv_bench import SHAPES

from .config import ModelConfig
from .errors import ModelError
from .gpu_bench import BUNDLED_CONFIG, GB, _decode_run, _rel, _sync_time, ceilings
from .model import CausalLM
from .plan import format_contexts, free_cuda_bytes
from .quant import QuantLinear, format_for, quantize_model, quantize_weight, set_module, target_linears
from .runtime import Runtime, fuse_projections


@dataclass(frozen=True)
class QuantBenchSettings:
    formats: list[str] = field(default_factory=lambda: ["int8", "int4"])
    config: str | None = None
    ttft_contexts: list[int] = field(default_factory=lambda: [65536, 262144])
    decode_contexts: list[int] = field(default_factory=lambda: [262144, 1048576])
    batches: list[int] = field(default_factory=lambda: [1, 8])
    new_tokens: int = 256
    kernels: bool = True
    consumer: list[int] = field(default_factory=lambda: [12, 16, 24])  # GB left free
    consumer_cap: int = 1048576  # longest context tried on the consumer runs
    out: str | None = None


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def random_model(config: ModelConfig, fmt: str | None, *, seed: int = 0, std: float = 0.02) -> CausalLM:
    """The random bf16 model of gpu_bench.random_model (same seed, same values), each target linear quantized as
    soon as its bf16 weight exists, so a small card never holds the bf16 model."""
    with torch.device("meta"):
        lm = CausalLM(config)
    roles = {f"{n}.weight": (n, r) for n, r in target_linears(lm)}
    g = torch.Generator(device="cuda").manual_seed(seed)
    for name, p in list(lm.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        t = torch.empty(p.shape, dtype=torch.bfloat16, device="cuda")
        if name.endswith("norm.weight"):
            t.normal_(1.0, 0.1, generator=g)
        else:
            t.normal_(0.0, std, generator=g)
        hit = roles.get(name) if fmt else None
        if hit is not None:
            set_module(lm, hit[0], QuantLinear(quantize_weight(t, format_for(fmt, hit[1]))))
            del t
            continue
        setattr(lm.get_submodule(owner), leaf, torch.nn.Parameter(t, requires_grad=False))
    lm.quantize = fmt
    return lm.eval()


def weight_gb(lm) -> float:
    return round(sum(p.numel() * p.element_size() for p in lm.parameters()) / GB, 2)


def _time(fn, reps: int = 50) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=reps, return_mode="median")


# GGUF blocks kept packed (kernels/quant/ggml.py): label -> (format, zero points, group), timed beside our formats
GGUF_KINDS = {
    "Q4_1 (int4 g32)": ("int4", True, 32),
    "Q4_0 (int4 g32)": ("int4", False, 32),
    "Q8_0 (int8 g32)": ("int8", False, 32),
}


def kernel_table(formats: list[str]) -> list[dict]:
    """Each stacked projection at batch 1/8/16 per format (and in GGUF's 32-wide blocks), timed as graph replays (as
    decode runs them) over copies rotated past the L2, and 16K-row prefill GEMMs."""
    from triton.testing import do_bench_cudagraph

    kinds = {f: (f, True, None) for f in formats}  # as before: min/max groups
    kinds |= {label: k for label, k in GGUF_KINDS.items() if k[0] in formats}
    rows = []
    for name, N, K in SHAPES:
        copies = max(2, int(3e8 // (N * K * 2)) + 1)
        ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        for fmt in ["bf16", *kinds]:
            kind = kinds.get(fmt)
            packs = None if kind is None else [kq.quantize(w, kind[0], zero=kind[1], group=kind[2]) for w in ws]
            nbytes = N * K * 2 if packs is None else packs[0].nbytes
            for m in (1, 8):
                x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
                if packs is None:
                    fn = lambda: [F.linear(x, w) for w in ws]  # noqa: E731
                    err = 0.0
                else:
                    ref = x.double() @ kq.dequantize(packs[0], torch.float64, backend="reference").T
                    err = _rel(kq.linear(x, packs[0]).double(), ref)  # also tunes
                    fn = lambda: [kq.linear(x, p) for p in packs]  # noqa: E731
                ms = do_bench_cudagraph(fn, rep=50) / copies
                rows.append(
                    {
                        "shape": name,
                        "N": N,
                        "K": K,
                        "fmt": fmt,
                        "M": m,
                        "us": round(ms * 1e3, 1),
                        "GBps": round(nbytes / ms / 1e6, 1),
                        "rel_err": err,
                    }
                )
                print("kernel", rows[-1], flush=True)
            packs = None
        ws = None
        _free()
    rows += prefill_gemms(formats)
    return rows


def prefill_gemms(formats: list[str], M: int = 16384) -> list[dict]:
    """A 16K-token chunk through gate_up and down: bf16 cuBLAS, dequantise + cuBLAS, the Triton dequantising GEMM,
    fp8 scaled_mm."""
    from sala_report.kernels.quant.matmul import quant_matmul

    from .quant import fp8_linear

    rows = []
    for name, N, K in (("gate_up", 32768, 4096), ("down", 4096, 16384)):
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        flops = 2 * M * N * K
        ref = F.linear(x, w).double()
        variants = {"bf16 cuBLAS": lambda: F.linear(x, w)}
        for fmt in formats:
            p = kq.quantize(w, fmt)
            if fmt == "fp8":
                variants["fp8 scaled_mm"] = lambda p=p: fp8_linear(x, p)
            else:
                variants[f"{fmt} dequant+cuBLAS"] = lambda p=p: F.linear(x, kq.dequantize(p, x.dtype))
                variants[f"{fmt} Triton GEMM"] = lambda p=p: quant_matmul(x, p)
        for label, fn in variants.items():
            err = _rel(fn().double(), ref)
            ms = _time(fn, 100)
            rows.append(
                {
                    "shape": name,
                    "M": M,
                    "variant": label,
                    "ms": round(ms, 3),
                    "TFLOPs": round(flops / ms / 1e9, 1),
                    "rel_err_vs_bf16": err,
                }
            )
            print("prefill", rows[-1], flush=True)
        del w, x, ref
        _free()
    return rows


def logits_errors(config: ModelConfig, formats: list[str], n: int = 2048, std: float = 0.02) -> dict:
    """Relative error (Frobenius) of every position's logits against the bf16 model with the same weights, through
    a prefill (dequantised GEMMs) and through 16 one-token steps (the decode kernels). Weights of std 0.02 (the
    bench's model) make a chaotic network that amplifies any rounding change (bf16 Lightning operands alone move its
    logits by 4e-2, BENCH.md); a smaller std gives a tamer one."""
    ids = torch.randint(0, config.vocab_size, (1, n), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    out = {}
    ref = None
    for fmt in [None, *formats]:
        lm = random_model(config, None, std=std)
        if fmt:
            quantize_model(lm, fmt)
        fuse_projections(lm)
        with torch.inference_mode():
            full = lm(ids[:, : n - 16]).float()
            cache = lm.new_cache(1, capacity=n)
            lm(ids[:, : n - 16], cache=cache, last_only=True)
            steps = torch.cat([lm(ids[:, t : t + 1], cache=cache) for t in range(n - 16, n)], 1).float()
        if fmt is None:
            ref = (full, steps)
        else:
            out[fmt] = {"prefill_logits_rel": _rel(full, ref[0]), "decode_logits_rel": _rel(steps, ref[1])}
            print("logits", fmt, out[fmt], flush=True)
        del lm, full, steps, cache
        _free()
    return out


def fill_state(rt: Runtime, n: int, seed: int = 0) -> None:
    """Pretend n tokens were prefilled: random keys, values, compressed keys and Lightning states (timing only)."""
    g = torch.Generator("cuda").manual_seed(seed)
    cache = rt.cache
    cache.reserve(n)
    for layer in cache.layers:
        for name in ("k", "v", "k1", "k2", "state"):
            t = getattr(layer, name, None)
            if t is not None:
                t.normal_(0.0, 0.01 if name == "state" else 1.0, generator=g)
    cache.length = n


def format_rows(config: ModelConfig, fmt: str | None, s: QuantBenchSettings, warmup: bool) -> dict:
    _free()
    torch.cuda.reset_peak_memory_stats()
    lm = random_model(config, fmt)
    row: dict = {"format": fmt or "bf16", "weights_GB": weight_gb(lm)}
    vocab = config.vocab_size
    for n in s.ttft_contexts:
        _free()
        try:
            if warmup:
                rt = Runtime.create(lm, 1, n, 1)
                rt.prefill(torch.randint(0, vocab, (1, n), device="cuda"))
                del rt
                _free()
            rt = Runtime.create(lm, 1, n, 1)
        except ModelError as e:
            row[f"ttft_{n}"] = {"fits": False, "plan": e.message}
            continue
        ids = torch.randint(0, vocab, (1, n), device="cuda")
        t = _sync_time()
        rt.prefill(ids)
        row[f"ttft_{n}"] = round(_sync_time() - t, 3)
        del rt
        print("ttft", row["format"], n, row[f"ttft_{n}"], flush=True)
    row["prefill_peak_GB"] = round(torch.cuda.max_memory_allocated() / GB, 2)
    for n in s.decode_contexts:
        for b in s.batches:
            _free()
            torch.cuda.reset_peak_memory_stats()
            try:
                rt = Runtime.create(lm, b, n, s.new_tokens + 2)
            except ModelError as e:
                row[f"decode_{n}_b{b}"] = {"fits": False, "plan": e.message}
                continue
            fill_state(rt, n)
            tok = torch.randint(0, vocab, (b,), device="cuda")
            row[f"decode_{n}_b{b}"] = _decode_run(rt, tok, s.new_tokens) | {
                "peak_GB": round(torch.cuda.max_memory_allocated() / GB, 2)
            }
            print("decode", row["format"], n, b, row[f"decode_{n}_b{b}"], flush=True)
            del rt
    del lm
    _free()
    return row


def consumer_run(config: ModelConfig, fmt: str | None, free_gb: int, s: QuantBenchSettings) -> dict:
    """Leave only `free_gb` GB free, load the format, prefill the longest context the plan allows, decode."""
    _free()
    free, _ = torch.cuda.mem_get_info()
    filler = torch.empty(max(0, free - free_gb * 2**30), dtype=torch.uint8, device="cuda")
    row: dict = {"free_GB": free_gb, "format": fmt or "bf16", "filler_GB": round(filler.numel() / GB, 2)}
    try:
        plan_ctx = format_contexts(config, free_cuda_bytes("cuda"), max_new_tokens=s.new_tokens, formats=[fmt])[fmt]
        n = min(plan_ctx // 1024 * 1024, s.consumer_cap)
        row["plan_max_context"] = plan_ctx
        if n <= 0:
            return row | {"fits": False}
        torch.cuda.reset_peak_memory_stats()
        lm = random_model(config, fmt)
        rt = Runtime.create(lm, 1, n, s.new_tokens)
        t = _sync_time()
        tok = rt.prefill(torch.randint(0, config.vocab_size, (1, n), device="cuda")).argmax(-1)
        row |= {"context": n, "ttft_s": round(_sync_time() - t, 2)}
        row["decode"] = _decode_run(rt, tok, s.new_tokens - 2)
        row["peak_GB"] = round((torch.cuda.max_memory_allocated() - filler.numel()) / GB, 2)  # ours, filler excluded
        del rt, lm
    except (torch.OutOfMemoryError, ModelError) as e:
        row["error"] = str(e)[:300]
    finally:
        del filler
        _free()
    print("consumer", row, flush=True)
    return row


def run_quant_bench(s: QuantBenchSettings) -> str:
    import triton

    props = torch.cuda.get_device_properties(0)
    res: dict = {
        "device": props.name,
        "memory_GB": round(props.total_memory / GB, 1),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "settings": asdict(s),
        "ceilings": ceilings(),
    }
    print("ceilings", res["ceilings"], flush=True)
    config = ModelConfig.from_json(s.config or BUNDLED_CONFIG)
    res["plan_contexts"] = {
        str(gb): {str(k or "bf16"): v for k, v in format_contexts(config, gb * 2**30).items()}
        for gb in (8, 12, 16, 24, 32, 48, 80, 141)
    }
    if s.kernels:
        res["kernels"] = kernel_table(s.formats)
        _save(res, s.out)
    res["logits"] = logits_errors(config, s.formats)
    _save(res, s.out)
    res["formats"] = []
    for i, fmt in enumerate([None, *s.formats]):
        res["formats"].append(format_rows(config, fmt, s, warmup=i == 0))
        _save(res, s.out)
    res["consumer"] = []
    for gb in s.consumer:  # issue 14's targets: int4 on 12 and 16 GB, int8 on 24 GB
        fmt = "int8" if gb >= 24 else "int4"
        if fmt in s.formats:
            res["consumer"].append(consumer_run(config, fmt, gb, s))
            _save(res, s.out)
    return table(res)


def _save(res: dict, out: str | None) -> None:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "bench_quant.json").write_text(json.dumps(res, indent=1, default=str))


def table(res: dict) -> str:
    c = res["ceilings"]
    lines = [
        f"{res['device']} ({res['memory_GB']} GB), torch {res['torch']}, triton {res['triton']}; copy {c['copy_TBps']:.2f} TB/s, "
        f"bf16 GEMV {c['gemv_TBps']:.2f} TB/s",
        "| format | weights GB | logits rel err (prefill / decode) | TTFT 64K s | TTFT 256K s | decode b1 256K | b1 1M | "
        "b8 256K (total) | b8 1M (total) | peak b1 1M GB |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def dec(r, key, total=False):
        d = r.get(key, {})
        return "does not fit" if d.get("fits") is False else d.get("tok_s_total" if total else "tok_s_per_seq", "-")

    for r in res.get("formats", []):
        e = res.get("logits", {}).get(r["format"], {})
        err = f"{e['prefill_logits_rel']:.1e} / {e['decode_logits_rel']:.1e}" if e else "reference"
        t64, t256 = r.get("ttft_65536", "-"), r.get("ttft_262144", "-")
        peak = r.get("decode_1048576_b1", {}).get("peak_GB", "-")
        lines.append(
            f"| {r['format']} | {r['weights_GB']} | {err} | {t64} | {t256} | {dec(r, 'decode_262144_b1')} | "
            f"{dec(r, 'decode_1048576_b1')} | {dec(r, 'decode_262144_b8', True)} | {dec(r, 'decode_1048576_b8', True)} | {peak} |"
        )
    for r in res.get("consumer", []):
        lines.append(
            f"consumer {r['free_GB']} GB free, {r['format']}: plan max {r.get('plan_max_context')}, ran {r.get('context')} "
            f"tokens: TTFT {r.get('ttft_s')} s, decode {r.get('decode', {}).get('tok_s_per_seq')} tok/s, peak {r.get('peak_GB')} GB"
            f"{', ' + r['error'] if 'error' in r else ''}"
        )
    return "\n".join(lines)
