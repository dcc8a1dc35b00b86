"""Exact speculative decoding with prompt-lookup drafts: the tokens that followed the latest earlier occurrence of
the last few tokens (in the prompt or the answer so far) are proposed, all checked in one pass, and kept while the
model agrees. Greedy decoding keeps exactly the tokens plain greedy decoding would (up to the rounding of a multi-token
pass against a one-token step); sampling uses the standard accept/resample rule, which for a deterministic draft
reduces to: keep draft d with probability p(d), else sample from p with d removed.

Both run on a `Runtime`: the verify pass is `extend` (a CUDA graph per width on a GPU) and rejected drafts are taken
back with `snapshot` / `rollback`; the plain baseline is the runtime's decode step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .runtime import MAX_GRAPH_WIDTH, Runtime

NGRAMS = (3, 2, 1)


@dataclass
class SpecResult:
    tokens: list[int]
    forwards: int = 0  # model passes after the prompt
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0  # after the prompt
    cache: object = None  # the inference state after the run: prompt and tokens, less the last token


def lookup_draft(seq: list[int], max_tokens: int, ngrams: tuple[int, ...] = NGRAMS) -> list[int]:
    """Up to max_tokens tokens that followed the latest earlier occurrence of seq's last n tokens (longest n first)."""
    for n in ngrams:
        if len(seq) <= n:
            continue
        tail = seq[-n:]
        for i in range(len(seq) - n - 1, -1, -1):
            if seq[i : i + n] == tail:
                return seq[i + n : i + n + max_tokens]
    return []


class NgramIndex:
    """`lookup_draft` over a growing sequence at a constant cost per token (a scan of a 64K-token prompt per step
    would take longer than a GPU decode step): for each n, where every n-gram followed by a token last started."""

    def __init__(self, seq: list[int], ngrams: tuple[int, ...] = NGRAMS):
        self.seq: list[int] = []
        self.ngrams = ngrams
        self.latest: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in ngrams}
        for t in seq:
            self.append(t)

    def append(self, token: int) -> None:
        j = len(self.seq)
        for n in self.ngrams:
            if j >= n:  # the n-gram ending just before `token` is now followed by one
                self.latest[n][tuple(self.seq[j - n : j])] = j - n
        self.seq.append(token)

    def draft(self, max_tokens: int) -> list[int]:
        seq = self.seq
        for n in self.ngrams:
            if len(seq) <= n:
                continue
            i = self.latest[n].get(tuple(seq[-n:]))
            if i is not None:
                return seq[i + n : i + n + max_tokens]
        return []


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
    runtime: Runtime | None = None,
) -> SpecResult:
    """Generate up to max_new_tokens after prompt (batch 1) on `runtime` (reset first; by default a new one with room
    for the prompt and the answer). speculate=False is the baseline a benchmark compares with: greedy, the runtime's
    decode steps fed on the device without waiting for the host; sampled, the same loop as with drafts, without them."""
    if not prompt or max_new_tokens < 0 or not 0 <= draft_tokens < MAX_GRAPH_WIDTH or temperature < 0:
        raise ValueError(
            f"expected a non-empty prompt, max_new_tokens >= 0, 0 <= draft_tokens < {MAX_GRAPH_WIDTH} and "
            f"temperature >= 0, got {len(prompt)}, {max_new_tokens}, {draft_tokens}, {temperature}"
        )
    if runtime is None:
        # the last pass ends at most at the last answer token, whose logits are not needed
        runtime = Runtime.create(lm, 1, len(prompt), max_new_tokens)
    else:
        runtime.reset()
    gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    res = SpecResult(tokens=[], cache=runtime.cache)
    with torch.inference_mode():
        if len(prompt) > 1:
            runtime.prefill(torch.tensor([prompt[:-1]]))
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)
        t0 = time.perf_counter()  # decoding only: the prefill is the same with or without drafts
        if max_new_tokens and not speculate and temperature == 0:
            _plain_greedy(runtime, prompt[-1], max_new_tokens, stop_ids, res)
        elif max_new_tokens:
            _speculative(
                runtime, prompt, max_new_tokens, temperature, draft_tokens if speculate else 0, gen, stop_ids, res
            )
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)
    res.seconds = time.perf_counter() - t0
    return res


def _plain_greedy(rt: Runtime, last: int, n: int, stop_ids: frozenset[int], res: SpecResult) -> None:
    """n greedy decode steps, each fed the previous argmax on the device. Stops are looked for every 16 tokens, so
    the state may hold up to 15 tokens past one."""
    tok = torch.tensor([last], device=rt.device)
    out: list[torch.Tensor] = []
    for _ in range(n):
        tok = rt.decode(tok).argmax(-1)
        out.append(tok)
        res.forwards += 1
        if stop_ids and (len(out) % 16 == 0 or len(out) == n):
            new = torch.cat(out[len(res.tokens) :]).tolist()
            stop = next((j for j, t in enumerate(new) if t in stop_ids), None)
            res.tokens += new if stop is None else new[: stop + 1]
            if stop is not None:
                return
    if not stop_ids:
        res.tokens = torch.cat(out).tolist()


def _speculative(
    rt: Runtime,
    prompt: list[int],
    n: int,
    temperature: float,
    draft_tokens: int,
    gen: torch.Generator | None,
    stop_ids: frozenset[int],
    res: SpecResult,
) -> None:
    index = NgramIndex(prompt)
    last = prompt[-1]  # the one token not yet in the state
    while len(res.tokens) < n:
        room = n - len(res.tokens) - 1
        drafts = index.draft(min(draft_tokens, room)) if draft_tokens else []
        snap = rt.snapshot() if drafts else None
        logits = rt.extend([last, *drafts])  # [1 + k, V]
        res.forwards += 1
        res.drafted += len(drafts)
        kept, nxt = _accept(logits, drafts, temperature, gen)
        res.accepted += len(kept)
        if snap is not None:
            rt.rollback(snap, len(kept))
        new = [*kept, nxt]
        stop = next((i for i, t in enumerate(new) if t in stop_ids), None)
        if stop is not None:
            new = new[: stop + 1]
        res.tokens += new
        for t in new:
            index.append(t)
        last = nxt
        if stop is not None:
            break


def _accept(logits: torch.Tensor, drafts: list[int], temperature: float, gen) -> tuple[list[int], int]:
    """logits [1 + k, V] of the positions after last, d1 .. dk -> (kept drafts, the next token)."""
    kept: list[int] = []
    if temperature == 0:
        best = logits.argmax(-1).tolist()  # one transfer for every position
        for d, b in zip(drafts, best, strict=False):
            if b != d:
                return kept, b
            kept.append(d)
        return kept, best[len(drafts)]
    probs = torch.softmax(logits.float() / temperature, dim=-1).cpu()
    for i, d in enumerate(drafts):
        p = probs[i]
        if torch.rand((), generator=gen) < p[d]:  # the draft is a point mass q(d) = 1: keep with min(1, p/q) = p(d)
            kept.append(d)
            continue
        p[d] = 0  # residual max(p - q, 0), renormalised
        return kept, int(torch.multinomial(p / p.sum(), 1, generator=gen))
    return kept, int(torch.multinomial(probs[len(drafts)], 1, generator=gen))


def main(argv: list[str] | None = None) -> int:
    from .speculate_bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
