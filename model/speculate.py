"""Exact speculative decoding with prompt-lookup drafts: the tokens that followed the latest earlier occurrence of
the last few tokens (in the prompt or the answer so far) are proposed, all checked in one forward pass, and kept
while the model agrees. Greedy decoding keeps exactly the tokens plain greedy decoding would (up to the rounding of
a multi-token pass against a one-token step); sampling uses the standard accept/resample rule, which for a
deterministic draft reduces to: keep draft d with probability p(d), else sample from p with d removed.

Rejected tokens are rolled back: keys and values past the kept length are simply overwritten later, compressed keys
are recomputed for windows that complete again, and the Lightning layers' recurrent states (which cannot be
rewound) are restored from a copy and re-advanced over the kept tokens.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from .cache import LightningLayerState


@dataclass
class SpecResult:
    tokens: list[int]
    forwards: int = 0  # model passes after the prompt
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0
    cache: object = None  # the inference state after the run: prompt and tokens, less the last token


def lookup_draft(seq: list[int], max_tokens: int, ngrams: tuple[int, ...] = (3, 2, 1)) -> list[int]:
    """Up to max_tokens tokens that followed the latest earlier occurrence of seq's last n tokens (longest n first)."""
    for n in ngrams:
        if len(seq) <= n:
            continue
        tail = seq[-n:]
        for i in range(len(seq) - n - 1, -1, -1):
            if seq[i : i + n] == tail:
                return seq[i + n : i + n + max_tokens]
    return []


def _lightning_states(cache) -> list[torch.Tensor]:
    return [layer.state for layer in cache.layers if isinstance(layer, LightningLayerState)]


def speculative_generate(
    lm,
    prompt: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    draft_tokens: int = 8,
    seed: int | None = None,
    stop_ids: frozenset[int] = frozenset(),
    speculate: bool = True,
) -> SpecResult:
    """Generate up to max_new_tokens after prompt (batch 1). speculate=False runs the same loop without drafts (the
    baseline a benchmark compares with)."""
    if not prompt or max_new_tokens < 0 or draft_tokens < 0 or temperature < 0:
        raise ValueError(
            f"expected a non-empty prompt and non-negative sizes, got {len(prompt)}, {max_new_tokens}, "
            f"{draft_tokens}, {temperature}"
        )
    device = lm.model.embed_tokens.weight.device
    gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    cache = lm.new_cache(1, capacity=len(prompt) + max_new_tokens + draft_tokens + 1)
    res = SpecResult(tokens=[])
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = lm(torch.tensor([prompt[:-1]], device=device), cache=cache) if len(prompt) > 1 else None
        del logits
        last = prompt[-1]  # the one token not yet in the cache
        seq = list(prompt)
        while len(res.tokens) < max_new_tokens:
            room = max_new_tokens - len(res.tokens) - 1
            drafts = lookup_draft(seq, min(draft_tokens, room)) if speculate else []
            start = cache.length
            saved = [s.clone() for s in _lightning_states(cache)] if drafts else []
            out = lm(torch.tensor([[last, *drafts]], device=device), cache=cache)[0].float()  # [1 + k, V]
            res.forwards += 1
            res.drafted += len(drafts)
            kept, nxt = _accept(out, drafts, temperature, gen)
            res.accepted += len(kept)
            if len(kept) < len(drafts):
                # roll back to the kept tokens: restore the recurrent states and re-advance them
                cache.length = start
                for s, copy in zip(_lightning_states(cache), saved, strict=True):
                    s.copy_(copy)
                if saved:
                    lm(torch.tensor([[last, *kept]], device=device), cache=cache)
                    res.forwards += 1
                else:
                    cache.length = start + 1 + len(kept)
            new = [*kept, nxt]
            stop = next((i for i, t in enumerate(new) if t in stop_ids), None)
            if stop is not None:
                new = new[: stop + 1]
            res.tokens += new
            seq += new
            last = nxt
            if stop is not None:
                break
    res.tokens = res.tokens[:max_new_tokens]
    res.seconds = time.perf_counter() - t0
    res.cache = cache
    return res


def _accept(logits: torch.Tensor, drafts: list[int], temperature: float, gen) -> tuple[list[int], int]:
    """logits [1 + k, V] of the positions after last, d1 .. dk -> (kept drafts, the next token)."""
    kept = []
    for i, d in enumerate(drafts):
        if temperature == 0:
            if int(logits[i].argmax()) != d:
                return kept, int(logits[i].argmax())
            kept.append(d)
            continue
        p = torch.softmax(logits[i] / temperature, dim=-1).cpu()
        if torch.rand((), generator=gen) < p[d]:  # the draft is a point mass q(d) = 1: keep with min(1, p/q) = p(d)
            kept.append(d)
            continue
        p[d] = 0  # residual max(p - q, 0), renormalised
        return kept, int(torch.multinomial(p / p.sum(), 1, generator=gen))
    last = logits[len(drafts)]
    if temperature == 0:
        return kept, int(last.argmax())
    return kept, int(torch.multinomial(torch.softmax(last / temperature, dim=-1).cpu(), 1, generator=gen))


COPY_PROMPT = (
    "Here is a passage.\n\n{text}\n\nCopy the passage above word for word, starting from its first sentence.\n\n"
)


def bench(source: str, text: str, new_tokens: int, *, device=None) -> str:
    """Greedy decode with and without prompt-lookup drafts on a copy-heavy prompt (the model is asked to repeat a
    passage it was given, as a report quotes its evidence); checks the outputs are identical."""
    from .load import load_model, load_tokenizer

    lm = load_model(source, device=device)
    tok = load_tokenizer(source)
    ids = tok.encode(COPY_PROMPT.format(text=text))
    rows = []
    for spec in (False, True, False, True):  # the first pair warms up
        rows.append(speculative_generate(lm, ids, new_tokens, speculate=spec))
    base, fast = rows[2], rows[3]
    same = base.tokens == fast.tokens
    return "\n".join(
        [
            f"{source}, prompt {len(ids)} tokens, {new_tokens} greedy tokens, {lm.model.embed_tokens.weight.device}",
            "| decoding | tokens/s | forward passes | drafted | accepted |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| plain | {len(base.tokens) / base.seconds:.1f} | {base.forwards} | - | - |",
            f"| prompt lookup | {len(fast.tokens) / fast.seconds:.1f} | {fast.forwards} | {fast.drafted} | {fast.accepted} |",
            f"speed-up {base.seconds / fast.seconds:.2f}x; outputs identical: {same}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m sala_report.model.speculate", description=bench.__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument(
        "--text", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "model" / "calibration.txt")
    )
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    text = Path(args.text).read_text(encoding="utf-8")[:1500]
    print(bench(args.model, text, args.tokens, device=args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
