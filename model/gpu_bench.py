"""The GPU table of `python -m sala_report.model.bench --gpu`: MiniCPM-SALA beside a full-attention peer.

Our side: the real MiniCPM-SALA config with random bf16 weights (nothing downloaded), through the runtime
(chunked prefill, CUDA-graph decode): time to first token, decode tokens/s at batch 1 and at larger batches
(the prefill replicated), peak GPU memory, and where the time goes. The peer, in the same process after ours
is freed: transformers' Qwen3-8B shape with random weights and SDPA, timed as `shared/anchors/baseline_hf_qwen3.py`
does. Contexts the memory plan refuses are recorded with its message instead of being run.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import ModelError
from .model import CausalLM, LightningAttention
from .runtime import Runtime

BUNDLED_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "data" / "model" / "minicpm-sala-config.json"
GB = 1e9


@dataclass(frozen=True)
class GpuBenchSettings:
    config: str | None = None
    contexts: list[int] = field(default_factory=lambda: [65536, 196608, 262144, 1048576])
    decode_contexts: list[int] = field(default_factory=lambda: [65536, 262144, 1048576])
    batches: list[int] = field(default_factory=lambda: [1, 8])
    new_tokens: int = 256
    # the peer runs out of memory at 256K on an H100 and at 512K on an H200; contexts after its first OOM are skipped
    peer_contexts: list[int] = field(default_factory=lambda: [65536, 196608, 262144, 524288])
    peer_new_tokens: int = 64
    # one untimed prefill at each context first: Triton compiles kernel variants per row width (top-k) and tunes the
    # gather above 256K keys the first time a length is seen; an installed app pays that once (Triton's disk cache)
    warmup: bool = True
    profile: int | None = 262144
    out: str | None = None


def _sync_time() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def random_model(config: ModelConfig, *, seed: int = 0, std: float = 0.02) -> CausalLM:
    """CausalLM with random bf16 weights made directly on the GPU (norm weights near 1)."""
    with torch.device("meta"):
        lm = CausalLM(config)
    g = torch.Generator(device="cuda").manual_seed(seed)
    for name, p in list(lm.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        t = torch.empty(p.shape, dtype=torch.bfloat16, device="cuda")
        if name.endswith("norm.weight"):
            t.normal_(1.0, 0.1, generator=g)
        else:
            t.normal_(0.0, std, generator=g)
        setattr(lm.get_submodule(owner), leaf, torch.nn.Parameter(t, requires_grad=False))
    return lm.eval()


def ceilings() -> dict:
    """Copy bandwidth, a large bf16 matmul, and the bf16 GEMV rate decode lives on."""
    out = {}
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    t = _sync_time()
    for _ in range(10):
        y.copy_(x)
    out["copy_TBps"] = 2 * 10 * x.numel() / (_sync_time() - t) / 1e12
    del x, y
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    a @ a
    t = _sync_time()
    for _ in range(10):
        a @ a
    out["matmul_TFLOPs"] = 10 * 2 * 8192**3 / (_sync_time() - t) / 1e12
    w = torch.randn(16384, 4096, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    ws = [w, w.clone(), w.clone(), w.clone()]  # rotate so the 50 MB L2 holds none of them
    for m in ws:
        v @ m.T
    t = _sync_time()
    for i in range(100):
        v @ ws[i % 4].T
    out["gemv_TBps"] = 100 * w.numel() * 2 / (_sync_time() - t) / 1e12
    return out


def _decode_run(rt: Runtime, token: torch.Tensor, steps: int) -> dict:
    """Time one eager-and-capture step, then `steps` graph replays fed greedily on the device (no host sync)."""
    t = _sync_time()
    logits = rt.decode(token)
    first = _sync_time() - t
    tok = logits.argmax(-1)
    t = _sync_time()
    for _ in range(steps):
        tok = rt.decode(tok).argmax(-1)
    elapsed = _sync_time() - t
    return {
        "first_step_s": round(first, 3),
        "ms_per_step": round(1e3 * elapsed / steps, 3),
        "tok_s_per_seq": round(steps / elapsed, 1),
        "tok_s_total": round(rt.batch_size * steps / elapsed, 1),
    }


def ours_at(lm: CausalLM, n: int, *, decode: bool, batches: list[int], new_tokens: int, warmup: bool = True) -> dict:
    row: dict = {"context": n}
    _free()
    if warmup:
        try:
            rt = Runtime.create(lm, 1, n, 1)
        except ModelError:
            rt = None  # the timed run below records the plan's refusal
        if rt is not None:
            t = _sync_time()
            rt.prefill(torch.randint(0, lm.config.vocab_size, (1, n), device="cuda"))
            row["warmup_ttft_s"] = round(_sync_time() - t, 3)
            del rt
            _free()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    try:
        rt = Runtime.create(lm, 1, n, new_tokens + 32)  # room for the profiled steps too
    except ModelError as e:
        return row | {"fits": False, "plan": e.message}
    row["plan_GB"] = round((before + rt.plan.total) / GB, 2)  # the plan's peak, to compare with the measured one
    ids = torch.randint(0, lm.config.vocab_size, (1, n), device="cuda")
    t = _sync_time()
    token = rt.prefill(ids).argmax(-1)
    row["ttft_s"] = round(_sync_time() - t, 3)
    row["prefill_peak_GB"] = round(torch.cuda.max_memory_allocated() / GB, 2)
    if decode:
        for b in batches:
            if b == 1:
                row["decode_b1"] = _decode_run(rt, token, new_tokens)
                cats, wall, launches = kernel_times(lambda: [rt.decode(token) for _ in range(16)])
                row["decode_b1_profile"] = _per_step(cats, wall, launches, 16)
                row["peak_b1_GB"] = round(torch.cuda.max_memory_allocated() / GB, 2)  # prefill and batch-1 decode
                continue
            try:
                fork = rt.fork(b, extra_tokens=new_tokens + 1)
            except ModelError as e:
                row[f"decode_b{b}"] = {"fits": False, "plan": e.message}
                continue
            row[f"decode_b{b}"] = _decode_run(fork, token.expand(b), new_tokens)
            del fork
            _free()
    row["peak_GB"] = round(torch.cuda.max_memory_allocated() / GB, 2)
    del rt
    return row


def checks(lm: CausalLM) -> dict:
    """Before timing: graph decode equals eager decode at a sparse context, and what each Lightning prefill precision
    changes at 32K (LightningAttention.prefill_precision): bf16 loads with fp32 products (the default) against fp32
    copies of q/k/v (the same numbers expected) and against bf16 dot operands."""
    out = {}
    n = 32768
    default = LightningAttention.prefill_precision
    ids = torch.randint(0, lm.config.vocab_size, (1, n), device="cuda")
    logits = {}
    for rnd, precision in enumerate(("fp32", "fp32-copies", "bf16") * 2):  # the first round compiles and tunes
        LightningAttention.prefill_precision = precision
        rt = Runtime.create(lm, 1, n, 16)
        t = _sync_time()
        logits[precision] = rt.prefill(ids).float()
        out[f"ttft_32k_{precision}_lightning_s"] = round(_sync_time() - t, 3)
        if precision == "fp32" and rnd == 0:
            eager = Runtime(lm, rt.cache.replicate(1), cuda_graphs=False)
            tok = logits[precision].argmax(-1)
            a = [rt.decode(tok + i).clone() for i in range(8)]  # the first eager + capture, then replays
            b = [eager.decode(tok + i) for i in range(8)]
            out["graph_vs_eager_rel"] = max(_rel(x, y) for x, y in zip(a, b))
            del eager
        del rt
        _free()
    LightningAttention.prefill_precision = default
    out["fp32_vs_fp32_copies_lightning_logits_rel"] = _rel(logits["fp32"], logits["fp32-copies"])
    out["bf16_vs_fp32_copies_lightning_logits_rel"] = _rel(logits["bf16"], logits["fp32-copies"])
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


_CATEGORIES = [
    ("GEMM", ("gemm", "gemv", "cutlass", "xmma", "nvjet", "cublas", "splitk")),
    ("lightning", ("_segment_state", "_segment_scan", "_chunk_output", "_decode_kernel")),
    ("sparse selection", ("_lse_", "_score_kernel", "_topk_", "_compress_kernel", "_append_window")),
    ("sparse attention", ("_band_attn", "_sparse_attn", "_combine_kernel", "fmha", "flash", "attention")),
    ("fused norms/gates", ("_rms_norm", "_head_norm_rope", "_gated_norm", "_silu_mul")),
]


def _category(name: str) -> str:
    low = name.lower()
    for cat, keys in _CATEGORIES:
        if any(k in low for k in keys):
            return cat
    return "other (copies, elementwise)"


def kernel_times(fn) -> tuple[dict, float, int]:
    """Run fn under the profiler -> ({category: ms of GPU kernel time}, wall ms, kernel launches)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t = _sync_time()
        fn()
        wall = _sync_time() - t
    cats: dict[str, float] = {}
    launches = 0
    for e in prof.key_averages():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        cats[_category(e.key)] = cats.get(_category(e.key), 0.0) + e.self_device_time_total / 1e3
        launches += e.count
    return {k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}, wall * 1e3, launches


def breakdown(lm: CausalLM, n: int, steps: int = 32) -> dict:
    """Where prefill of n tokens and a decode step at n go, by kernel category; gaps = wall - kernel time."""
    _free()
    rt = Runtime.create(lm, 1, n, steps + 2)
    ids = torch.randint(0, lm.config.vocab_size, (1, n), device="cuda")
    holder = {}
    cats, wall, launches = kernel_times(lambda: holder.setdefault("logits", rt.prefill(ids)))
    out = {
        "context": n,
        "prefill": {
            "wall_ms": round(wall, 1),
            "kernels_ms": cats,
            "launches": launches,
            "gaps_ms": round(wall - sum(cats.values()), 1),
        },
    }
    tok = holder["logits"].argmax(-1)
    rt.decode(tok)  # capture
    cats, wall, launches = kernel_times(lambda: [rt.decode(tok) for _ in range(steps)])
    out["decode_graph"] = _per_step(cats, wall, launches, steps)
    eager = Runtime(lm, rt.cache, cuda_graphs=False)  # the same state, stepped without graphs
    eager.decode(tok)
    cats, wall, launches = kernel_times(lambda: [eager.decode(tok) for _ in range(4)])
    out["decode_eager"] = _per_step(cats, wall, launches, 4)
    del rt, eager
    _free()
    return out


def _per_step(cats: dict, wall: float, launches: int, steps: int) -> dict:
    return {
        "ms_per_step": round(wall / steps, 3),
        "kernels_ms_per_step": {k: round(v / steps, 3) for k, v in cats.items()},
        "launches_per_step": launches // steps,
        "gaps_ms_per_step": round((wall - sum(cats.values())) / steps, 3),
    }


def peer_qwen3(contexts: list[int], gen: int) -> dict:
    """The full-attention peer, exactly as shared/anchors/baseline_hf_qwen3.py: HF transformers Qwen3-8B shape,
    random bf16 weights, SDPA; TTFT = prefill of N tokens with cache; decode = tokens/s over `gen` steps."""
    import transformers
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        hidden_size=4096,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=12288,
        vocab_size=151936,
        rope_theta=1e6,
        max_position_embeddings=1 << 20,
        tie_word_embeddings=False,
        torch_dtype=torch.bfloat16,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    res: dict = {
        "transformers": transformers.__version__,
        "params_B": round(sum(p.numel() for p in m.parameters()) / 1e9, 3),
    }
    for n in contexts:
        if any(r.get("oom") for r in res.values() if isinstance(r, dict)):
            res[n] = {"skipped": "a shorter context ran out of memory"}
            continue
        _free()
        torch.cuda.reset_peak_memory_stats()
        ids = torch.randint(0, cfg.vocab_size, (1, n), device="cuda")
        out = pkv = None
        try:
            with torch.inference_mode():
                t = _sync_time()
                out = m(input_ids=ids, use_cache=True, logits_to_keep=1)
                ttft = _sync_time() - t
                pkv, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                t = _sync_time()
                for _ in range(gen):
                    out = m(input_ids=nxt, past_key_values=pkv, use_cache=True)
                    pkv, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                dec = gen / (_sync_time() - t)
            res[n] = {
                "ttft_s": round(ttft, 2),
                "decode_tok_s": round(dec, 1),
                "peak_GB": round(torch.cuda.max_memory_allocated() / GB, 1),
            }
        except torch.OutOfMemoryError:
            res[n] = {"oom": True, "peak_GB": round(torch.cuda.max_memory_allocated() / GB, 1)}
        del ids
        out = pkv = None
        print("peer", n, res[n], flush=True)
    del m
    _free()
    return res


def run_gpu_bench(s: GpuBenchSettings) -> str:
    props = torch.cuda.get_device_properties(0)
    import triton

    res: dict = {
        "device": props.name,
        "memory_GB": round(props.total_memory / GB, 1),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "settings": asdict(s),
    }
    res["ceilings"] = ceilings()
    print("ceilings", res["ceilings"], flush=True)
    if s.config is None and not BUNDLED_CONFIG.exists():
        raise SystemExit("no bundled MiniCPM-SALA config next to this checkout: pass --config path/to/config.json")
    config = ModelConfig.from_json(s.config or BUNDLED_CONFIG)
    lm = random_model(config)
    res["weights_GB"] = round(sum(p.numel() * p.element_size() for p in lm.parameters()) / GB, 2)
    res["checks"] = checks(lm)
    print("checks", res["checks"], flush=True)
    res["ours"] = {}
    for n in s.contexts:
        res["ours"][n] = ours_at(
            lm, n, decode=n in s.decode_contexts, batches=s.batches, new_tokens=s.new_tokens, warmup=s.warmup
        )
        print("ours", n, res["ours"][n], flush=True)
        _save(res, s.out)
    if s.profile:
        res["breakdown"] = breakdown(lm, s.profile)
        print("breakdown", res["breakdown"], flush=True)
    del lm
    _free()
    _save(res, s.out)
    if s.peer_contexts:
        res["peer"] = peer_qwen3(s.peer_contexts, s.peer_new_tokens)
    _save(res, s.out)
    return table(res)


def _save(res: dict, out: str | None) -> None:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "bench_gpu.json").write_text(json.dumps(res, indent=1, default=str))


def table(res: dict) -> str:
    ours, peer = res.get("ours", {}), res.get("peer", {})
    c = res["ceilings"]
    lines = [
        f"{res['device']} ({res['memory_GB']} GB), torch {res['torch']}, triton {res['triton']}; copy {c['copy_TBps']:.2f} TB/s, "
        f"bf16 matmul {c['matmul_TFLOPs']:.0f} TFLOP/s, bf16 GEMV {c['gemv_TBps']:.2f} TB/s",
        "MiniCPM-SALA (real config, random bf16 weights; runtime: 16K-token prefill chunks, CUDA-graph decode, "
        f"{res['settings']['new_tokens']} new tokens) vs Qwen3-8B shape (transformers {peer.get('transformers', '-')}, SDPA, "
        f"{res['settings']['peer_new_tokens']} new tokens)",
        "| context | SALA TTFT s | peer TTFT s | peer / SALA | SALA decode b1 tok/s | SALA decode b8 tok/s (total) | "
        "peer decode tok/s | SALA peak GB | peer peak GB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sorted(set(ours) | {k for k in peer if isinstance(k, int)}):
        o, p = ours.get(n, {}), peer.get(n, {})
        if o.get("fits") is False:
            ttft = "does not fit"
        else:
            ttft = f"{o['ttft_s']:.2f}" if "ttft_s" in o else "-"
        pt = (
            "OOM"
            if p.get("oom")
            else (f"{p['ttft_s']:.2f}" if "ttft_s" in p else "not run" if p.get("skipped") else "-")
        )
        ratio = f"{p['ttft_s'] / o['ttft_s']:.1f}x" if "ttft_s" in o and "ttft_s" in p else "-"
        d1 = o.get("decode_b1", {}).get("tok_s_per_seq", "-")
        d8 = o.get("decode_b8", {})
        d8 = "does not fit" if d8.get("fits") is False else d8.get("tok_s_total", "-")
        lines.append(
            f"| {n // 1024}K | {ttft} | {pt} | {ratio} | {d1} | {d8} | {p.get('decode_tok_s', '-')} | "
            f"{o.get('peak_GB', '-')} | {p.get('peak_GB', '-')} |"
        )
    ch = res.get("checks", {})
    if ch:
        lines.append(
            f"checks: graph vs eager decode rel {ch['graph_vs_eager_rel']:.1e}; Lightning prefill precision at 32K, logits rel "
            f"to fp32 copies: fp32 products {ch['fp32_vs_fp32_copies_lightning_logits_rel']:.1e}, bf16 operands "
            f"{ch['bf16_vs_fp32_copies_lightning_logits_rel']:.1e}; TTFT fp32 products {ch['ttft_32k_fp32_lightning_s']} s, "
            f"fp32 copies {ch['ttft_32k_fp32-copies_lightning_s']} s, bf16 {ch['ttft_32k_bf16_lightning_s']} s"
        )
    b = res.get("breakdown")
    if b:
        p = b["prefill"]
        lines.append(
            f"prefill {b['context'] // 1024}K: wall {p['wall_ms'] / 1e3:.2f} s = kernels {p['kernels_ms']} ms + gaps {p['gaps_ms']} ms"
        )
        for name in ("decode_graph", "decode_eager"):
            d = b[name]
            lines.append(
                f"{name} step at {b['context'] // 1024}K: {d['ms_per_step']} ms = kernels {d['kernels_ms_per_step']} ms + "
                f"gaps {d['gaps_ms_per_step']} ms, {d['launches_per_step']} launches"
            )
    return "\n".join(lines)
