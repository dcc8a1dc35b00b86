"""Token generation: one prefill, then one-token steps with sampling, stops, streaming and cancellation.

`generate(...)` returns a Generation; iterating it runs the model and yields text deltas that never
split a UTF-8 character and never show text that may still turn out to be the start of a stop string.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .tokenizer import Tokenizer

LogitsHook = Callable[[list[int], torch.Tensor], torch.Tensor]
# generated ids -> the tokens that must come next (a grammar's forced tokens); fed to the model in one chunk
FastForward = Callable[[list[int]], list[int]]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k cut
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_strings: Sequence[str] = ()
    stop_token_ids: Sequence[int] | None = None  # None: the tokenizer's EOS ids

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """Pick one token id from fp32 logits [V] (already penalised and hooked)."""
    if config.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / config.temperature
    if 0 < config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the tokens ranked above it already hold top_p of the mass; the first always stays
        drop = (torch.cumsum(probs, dim=-1) - probs) > config.top_p
        logits = logits.index_fill(0, order[drop], float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style repetition penalty over the ids in `seen` (prompt and output), as transformers applies it."""
    picked = logits.gather(0, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(0, seen, picked)


class _TextStream:
    """Incremental detokenizer: emits only text whose bytes are complete (no trailing U+FFFD)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.ids: list[int] = []
        self.prefix = 0  # ids before this are emitted and fixed
        self.read = 0  # ids before this are emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        old = self.tok.decode(self.ids[self.prefix : self.read])
        new = self.tok.decode(self.ids[self.prefix :])
        if len(new) > len(old) and not new.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return new[len(old) :]
        return ""


class Generation:
    """An iterator of text deltas; after (or during) iteration it holds the result so far."""

    def __init__(
        self,
        lm,
        tok: Tokenizer,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        logits_hook: LogitsHook | None,
        cancel: threading.Event | None,
        cache=None,
        fast_forward: FastForward | None = None,
    ):
        if len(prompt_ids) == 0:
            raise ValueError("prompt_ids is empty; give at least one token")
        self.lm, self.tok, self.config = lm, tok, config
        self.prompt_ids = list(prompt_ids)
        self.logits_hook, self.cancel, self.cache = logits_hook, cancel, cache
        self.fast_forward = fast_forward
        self.forced_tokens = 0  # of completion_tokens, how many were forced (and fed in chunks)
        self.text = ""
        self.token_ids: list[int] = []  # generated ids, without the stop token
        self.finish_reason: str | None = None  # "stop" | "length" | "cancelled"
        self.prompt_tokens = len(self.prompt_ids)
        self.seconds = 0.0
        self.prefill_seconds = 0.0
        self._iter = self._run()

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def _run(self) -> Iterator[str]:
        c, lm = self.config, self.lm
        start = time.perf_counter()
        device = lm.lm_head.weight.device
        stops = set(c.stop_token_ids if c.stop_token_ids is not None else self.tok.eos_token_ids)
        generator = None
        if c.seed is not None:
            generator = torch.Generator(device=device).manual_seed(c.seed)
        stream, pending = _TextStream(self.tok), ""
        seen = torch.tensor(self.prompt_ids, device=device)
        try:
            if c.max_new_tokens == 0 or self._cancelled():
                self.finish_reason = "cancelled" if self._cancelled() else "length"
                return
            prefill, step, chunk = self._steps(device)
            with torch.inference_mode():
                logits = prefill(torch.tensor([self.prompt_ids], device=device))
                self.prefill_seconds = time.perf_counter() - start
                while True:
                    forced = self._forced(stops)
                    if forced:  # fed to the model in one chunk below, none of them sampled
                        tokens = forced
                        self.forced_tokens += len(forced)
                    else:
                        if self.finish_reason == "stop":  # the grammar's next token is a stop token
                            break
                        if c.repetition_penalty != 1.0:
                            logits = penalise(logits, seen, c.repetition_penalty)
                        if self.logits_hook is not None:
                            logits = self.logits_hook(list(self.token_ids), logits)
                        token = sample(logits, c, generator)
                        if token in stops:
                            self.finish_reason = "stop"
                            break
                        tokens = [token]
                    for token in tokens:
                        self.token_ids.append(token)
                        pending += stream.push(token)
                        out, pending, hit = _split_stop(pending, c.stop_strings)
                        if out:
                            self.text += out
                            yield out
                        if hit:
                            self.finish_reason = "stop"
                            return
                    if c.repetition_penalty != 1.0:
                        seen = torch.cat((seen, seen.new_tensor(tokens)))
                    if self.finish_reason is not None or len(self.token_ids) >= c.max_new_tokens:
                        self.finish_reason = self.finish_reason or "length"
                        break
                    if self._cancelled():
                        self.finish_reason = "cancelled"
                        break
                    logits = chunk(tokens) if forced else step(tokens[0])
            if pending:  # the generation ended without the held-back text becoming a stop string
                self.text += pending
                yield pending
        finally:
            self.seconds = time.perf_counter() - start

    def _steps(self, device: torch.device):
        """(prefill(ids [1, T]) -> logits [V], step(token) -> logits [V]). On a GPU without a given cache: the
        runtime (memory plan checked first, chunked prefill, CUDA-graph decode); otherwise plain forward calls."""
        lm, n_new = self.lm, self.config.max_new_tokens
        if self.cache is None and device.type == "cuda":
            from .runtime import Runtime

            rt = Runtime.create(lm, 1, len(self.prompt_ids), n_new + 1)

            def decode(token: int) -> torch.Tensor:
                return rt.decode(torch.tensor([token], device=device))[0]

            # the CUDA-graph decode takes one token: forced tokens go through it one by one
            return (lambda ids: rt.prefill(ids)[0]), decode, (lambda ids: [decode(t) for t in ids][-1])
        cache = self.cache if self.cache is not None else lm.new_cache(1, capacity=len(self.prompt_ids) + n_new + 1)
        return (
            (lambda ids: lm(ids, cache=cache, last_only=True)[0, -1]),
            (lambda token: lm(torch.tensor([[token]], device=device), cache=cache)[0, -1]),
            (lambda ids: lm(torch.tensor([ids], device=device), cache=cache, last_only=True)[0, -1]),
        )

    def _forced(self, stops: set[int]) -> list[int]:
        """The forced tokens from `fast_forward`, up to a stop token (which then ends the generation) and
        within max_new_tokens."""
        if self.fast_forward is None:
            return []
        forced = list(self.fast_forward(list(self.token_ids)))[: self.config.max_new_tokens - len(self.token_ids)]
        for i, token in enumerate(forced):
            if token in stops:
                self.finish_reason = "stop"
                return forced[:i]
        return forced

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def _split_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """(text safe to emit, text to hold back, whether a stop string was found)."""
    if not stops:
        return text, "", False
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if found:
        return text[: min(found)], "", True
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return text[: len(text) - hold], text[len(text) - hold :], False


def generate(
    lm,
    tok: Tokenizer,
    prompt_ids: Sequence[int],
    config: GenerationConfig | None = None,
    *,
    logits_hook: LogitsHook | None = None,
    cancel: threading.Event | None = None,
    cache=None,
    fast_forward: FastForward | None = None,
) -> Generation:
    """Stream a continuation of `prompt_ids`; the model runs as the returned Generation is iterated.

    logits_hook(generated_ids, logits[V]) -> logits is called before each token is sampled; cancel is
    checked between tokens. Pass `cache` to continue a sequence already in that inference state.
    fast_forward(generated_ids) -> tokens that must come next: they are fed to the model as one chunk
    (one forward call) instead of one step each; the hook still sees them before the next sample.
    """
    return Generation(lm, tok, prompt_ids, config or GenerationConfig(), logits_hook, cancel, cache, fast_forward)
