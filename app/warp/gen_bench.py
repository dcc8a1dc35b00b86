"""Benchmark: the app's constrained generation (LocalGenerator with the WRITE grammar) against the runtime's own
decode rate, one table.

    python -m sala_report.app.warp.gen_bench --gpu [--tokenizer DIR]   # real MiniCPM-SALA config, random bf16 weights
    python -m sala_report.app.warp.gen_bench --cpu                     # SmolLM2-135M here
    python -m sala_report.app.warp.gen_bench --save-tokenizer DIR      # SmolLM2's tokenizer as a folder to carry

Per prompt length: the runtime decoding greedily with tokens fed on the device (no host in the loop), then the app's
generation decoding greedily under the WRITE grammar (masks from llguidance), with and without prompt-lookup
speculation, sampled as the app samples by default, and the path before one runtime was kept (a new runtime per
call, masks applied by the host hook). Decode rates leave out the first token (prefill). With random weights the
model does not copy its prompt, so speculation shows its cost here, not its gain.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

import torch

from sala_report.app.warp.decoding import GrammarHook, ll_tokenizer
from sala_report.app.warp.generator import GenRequest, LocalGenerator
from sala_report.app.warp.grammar import write_constraint
from sala_report.app.warp.validate import Limits
from sala_report.model import GenerationConfig, ModelError, generate, load_tokenizer

KEYS = ["textid1", "textid2", "textid3"]
CLOSERS = ("</action>", " \\cite{textid1}.</action>")


@dataclass(frozen=True)
class BenchSettings:
    prompts: tuple[int, ...]
    new_tokens: int
    draft_tokens: int = 8


GPU = BenchSettings(prompts=(2048, 16384, 65536), new_tokens=256)
CPU = BenchSettings(prompts=(256, 1024), new_tokens=48)


def write_request(tok, prompt_tokens: int, new_tokens: int, *, temperature: float = 0.0) -> GenRequest:
    """A WRITE over about `prompt_tokens` tokens of evidence (the demo corpus, repeated), under the WRITE grammar."""
    corpus = files("sala_report.assets") / "demo" / "corpus"
    docs = [p.read_text("utf-8") for p in sorted(corpus.iterdir()) if p.name.endswith(".md") and p.name.count(".") == 1]
    text = "\n\n".join(f"[{KEYS[i % len(KEYS)]}] {' '.join(d.split())}" for i, d in enumerate(docs))
    ids = tok.encode(text)
    ids = (ids * (prompt_tokens // len(ids) + 1))[: max(16, prompt_tokens - 80)]
    prompt = f"Evidence:\n{tok.decode(ids)}\n\nWrite the section 'Heat pumps in cold climates' from the evidence."
    return GenRequest(
        "",
        prompt,
        write_constraint(Limits(), KEYS),
        new_tokens,
        temperature=temperature,
        top_p=0.8,
        closers=CLOSERS,
        seed=0,
    )


def _sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _rate(gen) -> tuple[float, int]:
    """(decode tokens/s after the first token, tokens generated) of a model.Generation."""
    n = gen.completion_tokens
    return (n - 1) / max(gen.seconds - gen.first_token_seconds, 1e-9), n


def runtime_rate(local: LocalGenerator, n: int, steps: int) -> float:
    """Greedy decode on the generator's own runtime, each token fed on the device: the rate the app aims at."""
    from sala_report.model.gpu_bench import _decode_run

    lm = local.lm
    if torch.cuda.is_available():
        rt = local.runtime.get(n, n + steps + 32)  # its graphs then serve the app's calls too
    else:  # sized to this run, as the app's CPU path sizes its state (a step attends over all of it)
        from sala_report.model.runtime import Runtime

        rt = Runtime.create(lm, 1, n, steps + 1)
    with torch.inference_mode():
        first = rt.prefill(torch.randint(0, lm.config.vocab_size, (1, n))).argmax(-1)
        if rt.device.type == "cuda":
            return _decode_run(rt, first, steps)["tok_s_per_seq"]
        t = time.perf_counter()
        tok = first
        for _ in range(steps):
            tok = rt.decode(tok).argmax(-1)
        return steps / (time.perf_counter() - t)


def app_rate(local: LocalGenerator, request: GenRequest, draft_tokens: int) -> dict:
    local._draft_tokens = draft_tokens
    local.mask_seconds, local.masks, local.drafted, local.accepted = 0.0, 0, 0, 0
    text = local.generate(request).text
    rate, n = _rate(local.last)
    return {
        "text": text,
        "tok_s": rate,
        "tokens": n,
        "prompt": local.last.prompt_tokens,
        "mask_ms": 1e3 * local.mask_seconds / max(1, local.masks),
        "accepted": f"{local.accepted}/{local.drafted}" if draft_tokens else "",
    }


def old_path_rate(local: LocalGenerator, request: GenRequest) -> dict:
    """A new runtime per call (on a GPU: memory plan, graph capture) and the grammar as a host logits hook."""
    tok = local.tok
    lt = ll_tokenizer(tok.hf, vocab_size=tok.vocab_size, eos_token_ids=tok.eos_token_ids)
    hook = GrammarHook(
        lt,
        request.constraint.lark,
        vocab_size=tok.vocab_size,
        max_new_tokens=request.max_tokens,
        closers=[tok.encode(c) for c in request.closers],
    )
    config = GenerationConfig(max_new_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed)
    gen = generate(local.lm, tok, local.prompt_ids(request), config, logits_hook=hook)
    for _ in gen:
        pass
    rate, n = _rate(gen)
    return {"text": gen.text, "tok_s": rate, "tokens": n}


def bench(local: LocalGenerator, s: BenchSettings, *, old_path: bool = True) -> list[dict]:
    rows = []
    warm = write_request(local.tok, s.prompts[0], 24)
    for draft in (0, s.draft_tokens):  # kernels compiled, graphs of every pass width captured
        app_rate(local, warm, draft)
    for n in s.prompts:
        row: dict = {"prompt": n, "runtime": runtime_rate(local, n, s.new_tokens)}
        print(f"{n}: runtime {row['runtime']:.1f} tok/s", flush=True)
        greedy = write_request(local.tok, n, s.new_tokens)
        app_rate(local, replace(greedy, max_tokens=24), s.draft_tokens)  # this regime's graphs captured
        for name, request, draft in (
            ("app", greedy, 0),
            ("app_spec", greedy, s.draft_tokens),
            ("app_sampled", replace(greedy, temperature=0.7), 0),
        ):
            row[name] = app_rate(local, request, draft)
            print(f"{n}: {name} {_short(row[name])}", flush=True)
        if old_path:
            row["old"] = old_path_rate(local, greedy)
            print(f"{n}: old path {_short(row['old'])}", flush=True)
        rows.append(row)
        gc.collect()
    return rows


def _short(result: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k != "text"}


def _same(row: dict, key: str) -> str:
    """Whether a greedy run gave the plain app run's answer (speculation may differ only at a tie within rounding)."""
    return "-" if key not in row else ("yes" if row[key]["text"] == row["app"]["text"] else "NO")


def table(rows: list[dict], title: str) -> str:
    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        r = row[key]
        return f"{r['tok_s']:.1f} ({100 * r['tok_s'] / row['runtime']:.0f} %)"

    lines = [
        title,
        "| prompt | runtime decode tok/s | app, WRITE grammar, greedy | app + speculation (kept/drafted) | "
        "app sampled T=0.7 | old path (runtime per call, host mask) | grammar mask ms/token | tokens | "
        "same answer (speculation, old path) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['app']['prompt']:,} | {row['runtime']:.1f} | {cell(row, 'app')} | {cell(row, 'app_spec')} "
            f"{row['app_spec']['accepted']} | {cell(row, 'app_sampled')} | {cell(row, 'old')} | "
            f"{row['app']['mask_ms']:.2f} | {row['app']['tokens']} | {_same(row, 'app_spec')}, {_same(row, 'old')} |"
        )
    return "\n".join(lines)


def gpu_generator(tokenizer: str) -> LocalGenerator:
    """The real MiniCPM-SALA config with random bf16 weights on the GPU, with a real tokenizer (SmolLM2's: its ids
    are a subset of SALA's 73,448, and its llguidance masks cost what a 49K vocabulary costs)."""
    from sala_report.model import ModelConfig
    from sala_report.model.gpu_bench import BUNDLED_CONFIG, random_model

    tok = load_tokenizer(tokenizer)
    lm = random_model(ModelConfig.from_json(BUNDLED_CONFIG))
    return LocalGenerator(lm, tok, name="MiniCPM-SALA (random bf16)")


def save_tokenizer(source: str, folder: Path) -> None:
    """A tokenizer as a folder model.load_tokenizer reads (a few MB, small enough to carry to a GPU machine)."""
    tok = load_tokenizer(source)
    folder.mkdir(parents=True, exist_ok=True)
    tok.hf.save(str(folder / "tokenizer.json"))
    config = {"chat_template": tok.chat_template, "bos_token": tok.bos_token, "eos_token": tok.eos_token}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "config.json").write_text(
        json.dumps({"vocab_size": tok.vocab_size, "eos_token_id": tok.eos_token_ids}), encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpu", action="store_true")
    mode.add_argument("--cpu", action="store_true")
    mode.add_argument("--save-tokenizer", metavar="DIR")
    parser.add_argument("--tokenizer", default="smollm2-135m", help="a tokenizer folder or a known model name")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    args = parser.parse_args(argv)
    if args.save_tokenizer:
        save_tokenizer(args.tokenizer, Path(args.save_tokenizer))
        return
    start = time.perf_counter()
    if args.gpu:
        try:
            local = gpu_generator(args.tokenizer)
        except ModelError as e:
            raise SystemExit(
                f"no tokenizer: {e.message}\nOn a machine without the model cache, save one where it is "
                "(--save-tokenizer .device/tokenizer) and pass that folder (--tokenizer .device/tokenizer)."
            ) from None
        print(f"model built in {time.perf_counter() - start:.0f} s", flush=True)
        rows = bench(local, GPU)
        title = f"{local.name} on {torch.cuda.get_device_name()}, tokenizer {args.tokenizer}, {GPU.new_tokens} tokens"
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        local = LocalGenerator.load("smollm2-135m", device="cpu", dtype="float32")
        rows = bench(local, CPU)
        title = f"SmolLM2-135M on the CPU, {torch.get_num_threads()} torch threads, {CPU.new_tokens} tokens"
    print(table(rows, title + f" (whole run {time.perf_counter() - start:.0f} s)"))


if __name__ == "__main__":
    main()
