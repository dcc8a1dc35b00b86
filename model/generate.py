"""Token generation: one prefill, then one-token steps with sampling, stops, streaming and cancellation.

`generate(...)` returns a Generation; iterating it runs the model and yields text deltas that never split a UTF-8
character and never show text that may still turn out to be the start of a stop string. A constraint given as a
`TokenGrammar` is applied on the model's device (its masks computed on the host while the forward pass runs), and
then exact prompt-lookup speculation may verify several drafted tokens in one pass.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .errors import ModelError
from .tokenizer import Tokenizer

LogitsHook = Callable[[list[int], torch.Tensor], torch.Tensor]
# generated ids -> the tokens that must come next (a grammar's forced tokens); fed to the model in one chunk
FastForward = Callable[[list[int]], list[int]]
# drafts per verify pass: with the token before them, one of the runtime's graph-captured widths (1 .. 16)
MAX_DRAFT = 15


class TokenGrammar(Protocol):
    """A constraint given as bitmasks (int32 words, bit j of word w: token 32 w + j allowed), which Generation
    applies on the model's device instead of calling a host logits hook."""

    needs_top: bool  # override() wants the unconstrained favourite token; speculation is then off

    def bitmasks(self, generated_ids: list[int], drafts: Sequence[int] = ()) -> np.ndarray | None:
        """int32 [1 + len(drafts), W]: the tokens allowed after generated_ids, then after each draft in turn (drafts
        that valid_drafts kept); None: nothing is masked at this position (the grammar failed)."""

    def override(self, generated_ids: list[int], top: int, allowed: np.ndarray) -> int | None:
        """The token to take at this position instead of the sampled one, given the favourite `top` before the mask
        and the position's bitmask row; None: keep the sampled one."""

    def valid_drafts(self, generated_ids: list[int], drafts: list[int]) -> list[int]:
        """The longest prefix of `drafts` the grammar accepts after generated_ids, at positions whose masks are the
        grammar's alone (bitmasks then gives the mask the plain path would use at each of them)."""


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


def _warp(logits: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Logits [..., V] scaled by the temperature, with what top-k and top-p cut set to -inf (the distribution
    sample() draws from is their softmax)."""
    logits = logits / config.temperature
    if 0 < config.top_k < logits.shape[-1]:
        kth = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token once the tokens ranked above it already hold top_p of the mass; the first always stays
        drop = (torch.cumsum(probs, dim=-1) - probs) > config.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def _sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """sample(), left on the logits' device (a 0-dim id)."""
    if config.temperature == 0:
        return torch.argmax(logits)
    probs = torch.softmax(_warp(logits, config), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[0]


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> int:
    """Pick one token id from fp32 logits [V] (already penalised and hooked)."""
    return int(_sample(logits, config, generator))


def penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style repetition penalty over the ids in `seen` (prompt and output), as transformers applies it."""
    picked = logits.gather(0, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(0, seen, picked)


def apply_bitmask(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """logits [N, V] with -inf where bits (int32 [N, W], on the logits' device) has no bit set; ids past 32 W too."""
    N, V = logits.shape
    if logits.device.type == "cpu":
        # numpy, single-threaded: torch would split this 50k-wide op over threads, which costs more than it saves
        # on a small, busy CPU
        allowed = np.unpackbits(bits.numpy().view(np.uint8), axis=-1, bitorder="little")[:, :V].astype(bool)
        values = logits.numpy().copy()
        values[:, : allowed.shape[1]][~allowed] = -np.inf
        values[:, allowed.shape[1] :] = -np.inf
        return torch.from_numpy(values)
    return logits.masked_fill(~_allowed_on_device(bits, V), float("-inf"))


def _allowed_on_device(bits: torch.Tensor, vocab: int) -> torch.Tensor:
    """int32 bitmasks [N, W] -> bool [N, vocab], in a few device ops (no host round trip)."""
    N = bits.shape[0]
    shifts = torch.arange(32, dtype=torch.int32, device=bits.device)
    allowed = ((bits.unsqueeze(-1) >> shifts) & 1).view(N, -1)[:, :vocab].bool()  # [N, 32 W] -> [N, <= vocab]
    if allowed.shape[1] < vocab:
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]))
    return allowed


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
        *,
        grammar: TokenGrammar | None = None,
        runtime: RuntimeSlot | None = None,
        draft_tokens: int = 0,
    ):
        if len(prompt_ids) == 0:
            raise ValueError("prompt_ids is empty; give at least one token")
        if logits_hook is not None and grammar is not None:
            raise ValueError("expected a logits_hook or a grammar, got both")
        if not 0 <= draft_tokens <= MAX_DRAFT:
            raise ValueError(f"draft_tokens must be in 0..{MAX_DRAFT}, got {draft_tokens}")
        self.lm, self.tok, self.config = lm, tok, config
        self.prompt_ids = list(prompt_ids)
        self.logits_hook, self.cancel, self.cache = logits_hook, cancel, cache
        self.fast_forward, self.grammar, self.slot = fast_forward, grammar, runtime
        self.draft_tokens = draft_tokens
        self.forced_tokens = 0  # of completion_tokens, how many were forced (and fed in chunks)
        self.drafted = 0  # tokens proposed by prompt lookup and verified
        self.accepted = 0  # of those, how many were kept
        self.text = ""
        self.token_ids: list[int] = []  # generated ids, without the stop token
        self.finish_reason: str | None = None  # "stop" | "length" | "cancelled"
        self.prompt_tokens = len(self.prompt_ids)
        self.seconds = 0.0
        self.prefill_seconds = 0.0
        self.first_token_seconds = 0.0  # until the first token was chosen (the prefill finished on a GPU too)
        self._pinned: torch.Tensor | None = None  # the bitmasks' staging buffer on the way to a GPU
        self._spec_generator: torch.Generator | None = None
        self._budget = DraftBudget(0)
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
            self._spec_generator = torch.Generator().manual_seed(c.seed)  # speculate._accept draws on the host
        stream, pending = _TextStream(self.tok), ""
        seen = torch.tensor(self.prompt_ids, device=device)
        try:
            if c.max_new_tokens == 0 or self._cancelled():
                self.finish_reason = "cancelled" if self._cancelled() else "length"
                return
            feed = self._feeder(device)
            index = None
            if self._can_speculate(feed):
                from .speculate import NgramIndex

                index = NgramIndex(self.prompt_ids)
                self._budget = DraftBudget(self.draft_tokens)
            with torch.inference_mode():
                rows = feed.prefill(self.prompt_ids)
                self.prefill_seconds = time.perf_counter() - start
                drafts, snap = [], None
                while True:
                    forced = self._forced(stops)
                    if forced:  # fed to the model in one chunk below, none of them sampled
                        tokens = forced
                        self.forced_tokens += len(forced)
                    else:
                        if self.finish_reason == "stop":  # the grammar's next token is a stop token
                            break
                        kept, token = self._pick(rows, drafts, seen, generator)
                        self.first_token_seconds = self.first_token_seconds or time.perf_counter() - start
                        if drafts:
                            feed.rollback(snap, len(kept))
                            self.accepted += len(kept)
                            self._budget.verified(len(drafts), len(kept))
                        tokens = [*kept, token]
                        if token in stops:
                            tokens.pop()
                            self.finish_reason = "stop"
                    done = self.finish_reason is not None or len(self.token_ids) + len(tokens) >= c.max_new_tokens
                    # on a runtime the next pass is launched before the text goes out, so the GPU works meanwhile
                    ahead = feed.ahead and not done
                    if ahead:
                        rows, drafts, snap = self._feed(feed, tokens, bool(forced), index, stops)
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
                    if done:
                        self.finish_reason = self.finish_reason or "length"
                        break
                    if self._cancelled():
                        self.finish_reason = "cancelled"
                        break
                    if not ahead:
                        rows, drafts, snap = self._feed(feed, tokens, bool(forced), index, stops)
            if pending:  # the generation ended without the held-back text becoming a stop string
                self.text += pending
                yield pending
        finally:
            self.seconds = time.perf_counter() - start

    def _feeder(self, device: torch.device) -> _Eager | _OnRuntime:
        """How the model is fed: the given cache, the given runtime slot, a new runtime on a GPU (memory plan checked
        first, chunked prefill, CUDA-graph decode), or plain forward calls."""
        lm, n = self.lm, len(self.prompt_ids) + self.config.max_new_tokens + self.draft_tokens + 1
        if self.cache is not None:
            return _Eager(lm, self.cache, device)
        if self.slot is not None:
            return _OnRuntime(self.slot.get(len(self.prompt_ids), n))
        if device.type == "cuda":
            return _OnRuntime(RuntimeSlot(lm).get(len(self.prompt_ids), n))
        return _Eager(lm, lm.new_cache(1, capacity=n), device)

    def _can_speculate(self, feed) -> bool:
        """Drafts are verified only where the result is exactly the plain path's: no host hook, forced chunks or
        repetition penalty (each would see drafted tokens differently), and no grammar override."""
        g = self.grammar
        return (
            self.draft_tokens > 0
            and isinstance(feed, _OnRuntime)
            and self.logits_hook is None
            and self.fast_forward is None
            and self.config.repetition_penalty == 1.0
            and not (g is not None and g.needs_top)
        )

    def _feed(self, feed, tokens: list[int], forced: bool, index, stops: set[int]):
        """Feed what was just chosen -> (logits rows of the positions to choose next, drafts fed, snapshot)."""
        if forced:
            return feed.extend_last(tokens), [], None
        drafts = []
        if index is not None:
            for token in tokens:
                index.append(token)
            generated = self.token_ids + tokens
            room = self.config.max_new_tokens - len(generated) - 1
            size = min(self._budget.next(), room)
            drafts = index.draft(size) if size > 0 else []
            drafts = drafts[: next((i for i, t in enumerate(drafts) if t in stops), len(drafts))]
            if drafts and self.grammar is not None:
                drafts = self.grammar.valid_drafts(generated, drafts)
        if not drafts:
            return feed.step(tokens[-1]), [], None
        snap = feed.snapshot()
        self.drafted += len(drafts)
        return feed.extend([tokens[-1], *drafts]), drafts, snap

    def _pick(self, rows: torch.Tensor, drafts: list[int], seen: torch.Tensor, generator) -> tuple[list[int], int]:
        """logits rows [1 + len(drafts), V] -> (the drafts kept, the token chosen after them)."""
        c, g = self.config, self.grammar
        if self.logits_hook is not None:  # the host hook: one position, as it always was
            logits = rows[-1]
            if c.repetition_penalty != 1.0:
                logits = penalise(logits, seen, c.repetition_penalty)
            return [], sample(self.logits_hook(list(self.token_ids), logits), c, generator)
        # computed on the host while the pass that gave `rows` still runs on a GPU
        bits = g.bitmasks(list(self.token_ids), drafts) if g is not None else None
        if drafts:
            from .speculate import _accept

            masked = rows if bits is None else apply_bitmask(rows, self._on_device(bits, rows.device))
            if c.temperature == 0:
                return _accept(masked, drafts, 0.0, None)
            probs = torch.softmax(_warp(masked, c), dim=-1)  # what sample() would draw from at each position
            return _accept(torch.log(probs), drafts, 1.0, self._spec_generator)
        logits = rows[-1]
        if c.repetition_penalty != 1.0:
            logits = penalise(logits, seen, c.repetition_penalty)
        masked = logits if bits is None else apply_bitmask(logits[None], self._on_device(bits, logits.device))[0]
        choice = _sample(masked, c, generator)
        if bits is None or not g.needs_top:
            return [], int(choice)  # the one sync of the step
        top, token = torch.stack((torch.argmax(logits), choice)).tolist()
        override = g.override(list(self.token_ids), top, bits[0])
        return [], token if override is None else override

    def _on_device(self, bits: np.ndarray, device: torch.device) -> torch.Tensor:
        """bits on `device`; to a GPU through a pinned buffer, without waiting (the caller syncs once it sampled)."""
        if device.type == "cpu":
            return torch.from_numpy(bits)
        n, w = bits.shape
        if self._pinned is None or self._pinned.shape[0] < n or self._pinned.shape[1] != w:
            self._pinned = torch.empty((max(n, MAX_DRAFT + 1), w), dtype=torch.int32, pin_memory=True)
        staged = self._pinned[:n]
        staged.numpy()[...] = bits
        return staged.to(device, non_blocking=True)

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


class _Eager:
    """Plain forward calls over one inference state: a given cache, or a CPU without a runtime."""

    ahead = False

    def __init__(self, lm, cache, device: torch.device):
        self.lm, self.cache, self.device = lm, cache, device

    def prefill(self, ids: list[int]) -> torch.Tensor:
        return self.lm(torch.tensor([ids], device=self.device), cache=self.cache, last_only=True)[0]  # [1, V]

    def step(self, token: int) -> torch.Tensor:
        return self.lm(torch.tensor([[token]], device=self.device), cache=self.cache)[0, -1:]

    def extend_last(self, ids: list[int]) -> torch.Tensor:
        return self.lm(torch.tensor([ids], device=self.device), cache=self.cache, last_only=True)[0, -1:]


class _OnRuntime:
    """A Runtime: chunked prefill, CUDA-graph steps and multi-token passes, snapshots to take drafts back."""

    ahead = True

    def __init__(self, rt):
        self.rt = rt

    def prefill(self, ids: list[int]) -> torch.Tensor:
        return self.rt.prefill(torch.tensor([ids]))  # [1, V]

    def step(self, token: int) -> torch.Tensor:
        return self.rt.decode(torch.tensor([token]))

    def extend_last(self, ids: list[int]) -> torch.Tensor:
        return self.rt.extend(ids)[-1:]

    def extend(self, ids: list[int]) -> torch.Tensor:
        return self.rt.extend(ids)

    def snapshot(self):
        return self.rt.snapshot()

    def rollback(self, snap, kept: int) -> None:
        self.rt.rollback(snap, kept)


class RuntimeSlot:
    """The Runtime of one model, kept across generations: reset between them (buffers and captured CUDA graphs
    kept), made anew only when a generation needs more room than it has, then with some to spare."""

    def __init__(self, lm, *, cuda_graphs: bool = True):
        self.lm, self.cuda_graphs = lm, cuda_graphs
        self.runtime = None
        self.created = 0  # runtimes made so far

    def get(self, prompt_tokens: int, tokens: int):
        """A reset runtime with room for `tokens` in all, of which `prompt_tokens` are prefilled."""
        from .runtime import Runtime

        rt = self.runtime
        if rt is not None and (rt.cache.capacity is None or rt.cache.capacity >= tokens):
            rt.reset()
            return rt
        self.runtime = rt = None
        device = self.lm.model.embed_tokens.weight.device
        if device.type == "cuda":  # the old state's memory back before the plan counts what is free
            gc.collect()
            torch.cuda.empty_cache()
        for room in dict.fromkeys((_rounded_up(tokens), tokens)):
            try:
                rt = Runtime.create(self.lm, 1, prompt_tokens, room - prompt_tokens, cuda_graphs=self.cuda_graphs)
                break
            except ModelError:
                if room == tokens:
                    raise
        self.runtime, self.created = rt, self.created + 1
        return rt


class DraftBudget:
    """How many tokens to draft next: fewer after rejections, none for a while once drafts keep failing (a verify
    pass of several tokens that keeps none costs more than a step), more again as they are kept. Any budget leaves
    the result exact; it only decides what speculation costs."""

    PAUSE = 16  # plain steps before drafting is tried again

    def __init__(self, most: int):
        self.most, self.size, self.paused = most, most, 0

    def next(self) -> int:
        if self.size == 0 and self.most:
            self.paused += 1
            if self.paused > self.PAUSE:
                self.size, self.paused = 1, 0
        return self.size

    def verified(self, drafted: int, kept: int) -> None:
        if kept == drafted:
            self.size = min(self.most, max(self.size, 2 * drafted))
        else:
            self.size = kept if kept else drafted // 2


def _rounded_up(tokens: int) -> int:
    """A room of at most 25 % more than `tokens` (at least 4096), so slowly growing prompts rarely make a new one."""
    step = max(4096, 1 << max(0, tokens.bit_length() - 3))
    return -(-tokens // step) * step


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
    grammar: TokenGrammar | None = None,
    runtime: RuntimeSlot | None = None,
    draft_tokens: int = 0,
) -> Generation:
    """Stream a continuation of `prompt_ids`; the model runs as the returned Generation is iterated.

    logits_hook(generated_ids, logits[V]) -> logits is called before each token is sampled; cancel is
    checked between tokens. Pass `cache` to continue a sequence already in that inference state.
    fast_forward(generated_ids) -> tokens that must come next: they are fed to the model as one chunk
    (one forward call) instead of one step each; the hook still sees them before the next sample.
    `grammar` (instead of a logits_hook) masks on the model's device, with one host sync per token. `runtime`
    reuses one Runtime across calls. With `draft_tokens` > 0 on a runtime, prompt-lookup drafts of up to that many
    tokens are verified in one pass where that keeps the result exact (speculate.py says how).
    """
    return Generation(
        lm,
        tok,
        prompt_ids,
        config or GenerationConfig(),
        logits_hook,
        cancel,
        cache,
        fast_forward,
        grammar=grammar,
        runtime=runtime,
        draft_tokens=draft_tokens,
    )
