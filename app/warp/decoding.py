"""Logits hooks for in-process sampling (model.generate's `logits_hook`): the grammar mask over llguidance,
and the aids a small model needs to stay on its outline, a repeat blocker and a topic echo, chained into one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Decoding:
    """How an in-process model samples beyond what the grammar allows (GenRequest.decoding); a server
    ignores it. For small models: with `no_repeat_ngram` >= 3, no run of that many tokens is copied from
    `avoid` (the prompt's instructions) nor repeated as `repeats` says (RepeatBlocker's `within`);
    `close_early` forces a closer once the model tries to end where the grammar won't let it; `echo_topics`
    makes section titles follow the topics listed in the thought (TopicEcho). `fast_forward`: tokens the
    grammar forces are fed in one chunk instead of sampled one by one."""

    no_repeat_ngram: int = 0
    avoid: tuple[str, ...] = ()
    repeats: str = "prose"
    close_early: bool = False
    echo_topics: bool = False
    fast_forward: bool = False


class GrammarHook:
    """The grammar mask over llguidance, as a `logits_hook` for model.generate or as its `grammar` (bitmasks the
    generation applies on the model's device, drafts checked for speculation).

    Near the token limit it forces the first of `closers` (token sequences, e.g. those of
    "</action>" or " \\cite{textid1}.</action>") that the grammar accepts at that point, so a long
    WRITE still ends as a well-formed answer instead of being cut off mid-sentence. With `stop_tokens`
    (end of text, tags), a closer is also forced as soon as the model's favourite next token is one of
    them and the grammar does not allow it: a small model that has said its piece but never cited would
    otherwise be held to ramble on until the limit.
    """

    def __init__(
        self,
        ll_tokenizer,
        lark: str,
        *,
        vocab_size: int,
        max_new_tokens: int,
        closers: list[list[int]] = (),
        stop_tokens: frozenset[int] = frozenset(),
    ):
        import llguidance

        self.matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(lark))
        if self.matcher.is_error():
            raise ValueError(f"grammar rejected by llguidance: {self.matcher.get_error()}")
        self.vocab_size = vocab_size
        self.max_new_tokens = max_new_tokens
        self.closers = sorted((list(c) for c in closers if c), key=len)
        self.wrap_up_at = max((len(c) for c in self.closers), default=0) + 4
        self.stop_tokens = stop_tokens
        self.fed: list[int] = []  # the tokens the matcher consumed, drafts included
        self.drafted = 0  # of `fed`, the last ones consumed as drafts (rolled back where the answer differs)
        self.forced: list[int] = []
        self.forced_here = False  # the latest position's mask was a forced token's
        self.error: str | None = None
        self.mask_seconds = 0.0
        self.masks = 0

    @property
    def needs_top(self) -> bool:
        """Whether override() has anything to decide (closing early needs the favourite token)."""
        return bool(self.stop_tokens and self.closers)

    def __call__(self, generated_ids: list[int], logits):
        import numpy as np

        from sala_report.model.generate import apply_bitmask

        bits = self.bitmasks(generated_ids)
        if bits is None:
            return logits  # the validator will reject the answer; never mask everything
        start = time.perf_counter()
        if self.needs_top:
            token = self.override(generated_ids, int(logits.argmax()), bits[0])
            if token is not None:
                bits = self._one_hot(token)
        out = apply_bitmask(logits[None], _to(np.ascontiguousarray(bits), logits.device))[0]
        self.mask_seconds += time.perf_counter() - start
        return out

    def bitmasks(self, generated_ids: list[int], drafts=()):
        """int32 [1 + len(drafts), W]: what may follow generated_ids, then each draft (from valid_drafts) in turn;
        None after an error, so nothing is masked."""
        import numpy as np

        start = time.perf_counter()
        self._consume(generated_ids)
        rows = [self._position(len(generated_ids))]
        if rows[0] is not None:
            for token in drafts:
                self.matcher.consume_token(token)
                self.fed.append(token)
                self.drafted += 1
                rows.append(self._grammar_mask())
        self.mask_seconds += time.perf_counter() - start
        self.masks += len(rows)
        return None if rows[0] is None else np.stack(rows)

    def _position(self, generated: int):
        """The mask at the position after `generated` tokens: a closer's next token while one is forced, else the
        grammar's; None after an error."""
        self.forced_here = False
        if self.error is not None:
            return None
        remaining = self.max_new_tokens - generated
        if not self.forced and self.closers and remaining <= self.wrap_up_at:
            self.forced = self._closer(remaining)
        if self.forced:
            self.forced_here = True
            return self._one_hot(self.forced.pop(0))[0]
        bits = self._grammar_mask()
        if not bits.any():
            self.error = "the grammar allows no token here"
            return None
        return bits

    def override(self, generated_ids: list[int], top: int, allowed) -> int | None:
        """A closer's first token when the favourite `top` is a stop token the grammar does not allow here (bitmask
        row `allowed`); the rest of the closer is then forced. None: sample as usual."""
        if self.forced_here or self.forced or self.error is not None or not self.needs_top:
            return None
        if top not in self.stop_tokens or (top < 32 * len(allowed) and (int(allowed[top >> 5]) >> (top & 31)) & 1):
            return None
        self._consume(generated_ids)
        self.forced = self._closer(self.max_new_tokens - len(generated_ids))
        return self.forced.pop(0) if self.forced else None

    def valid_drafts(self, generated_ids: list[int], drafts: list[int]) -> list[int]:
        """The longest prefix of `drafts` the grammar accepts after generated_ids and whose positions all stay short of
        the closers' wrap-up, so the masks there are the grammar's alone."""
        self._consume(generated_ids)
        if self.error is not None or self.forced:
            return []
        if self.closers:
            drafts = drafts[: max(0, self.max_new_tokens - len(generated_ids) - self.wrap_up_at - 1)]
        return drafts[: self.matcher.validate_tokens(drafts)] if drafts else []

    def _closer(self, remaining: int) -> list[int]:
        return next(
            (list(c) for c in self.closers if len(c) <= remaining and self.matcher.validate_tokens(c) == len(c)), []
        )

    def _grammar_mask(self):
        import numpy as np

        return np.frombuffer(self.matcher.compute_bitmask(), dtype=np.int32)

    def _one_hot(self, token: int):
        import numpy as np

        bits = np.zeros((1, (self.vocab_size + 31) // 32), dtype=np.int32)
        bits.view(np.uint32)[0, token >> 5] = np.uint32(1 << (token & 31))
        return bits

    def _consume(self, generated_ids: list[int]) -> None:
        """Bring the matcher to generated_ids: drafts that were not kept rolled back, new tokens consumed."""
        fed, keep = self.fed, len(self.fed) - self.drafted
        while keep < len(fed) and keep < len(generated_ids) and fed[keep] == generated_ids[keep]:
            keep += 1
        if keep < len(fed):
            self.matcher.rollback(len(fed) - keep)
            del fed[keep:]
        self.drafted = 0
        for token in generated_ids[len(fed) :]:
            fed.append(token)
            if not self.matcher.consume_token(token) and self.error is None:
                self.error = self.matcher.get_error() or "token rejected"

    def fast_forward(self, generated_ids: list[int]) -> list[int]:
        """The tokens the grammar allows as the only continuation of `generated_ids` (llguidance's
        fast-forward tokens): model.generate feeds them in one chunk instead of sampling each. Empty
        when there is a choice, after an error, or while a closer is being forced."""
        start = time.perf_counter()
        self._consume(generated_ids)
        forced = [] if self.error is not None or self.forced else list(self.matcher.compute_ff_tokens())
        self.mask_seconds += time.perf_counter() - start
        return forced


def _to(bits, device):
    import torch

    return torch.from_numpy(bits).to(device)


def ll_tokenizer(hf_tokenizer, *, vocab_size: int, eos_token_ids: list[int]):
    """An llguidance tokenizer from a `tokenizers.Tokenizer` (about 0.3 s for a 50k vocabulary: build once)."""
    import llguidance

    return llguidance.LLTokenizer(hf_tokenizer.to_str(), n_vocab=vocab_size, eos_token=list(eos_token_ids))


# Characters of markup: tokens holding one are never masked by RepeatBlocker and end its n-grams.
_MARKUP = frozenset('"<>{}[]\\')


@dataclass(frozen=True)
class TokenClasses:
    """What RepeatBlocker needs to know of each token id (computed once per tokenizer)."""

    markup: frozenset[int]  # tokens with markup: they end a run of words and are never masked
    free: frozenset[int]  # whitespace or digits: part of runs, never masked (citing a key twice stays possible)
    tags: frozenset[int]  # tokens with "<": only tags have one, as the grammars keep it out of text
    quotes: tuple[int, ...]  # tokens with '"': those that can end a JSON string
    pieces: tuple[str, ...]  # each token's text

    @classmethod
    def of(cls, pieces: list[str]) -> TokenClasses:
        markup = frozenset(i for i, p in enumerate(pieces) if _MARKUP & set(p))
        free = frozenset(i for i, p in enumerate(pieces) if not p.strip() or p.strip().isdigit())
        return cls(
            markup,
            free - markup,
            frozenset(i for i, p in enumerate(pieces) if "<" in p),
            tuple(i for i, p in enumerate(pieces) if '"' in p),
            tuple(pieces),
        )


class RepeatBlocker:
    """A `logits_hook` that keeps a small model from looping and from copying its instructions.

    A token is masked when it would complete a run of `n` tokens found in `avoid` (token ids of the
    prompt's instructions), or one already written in the thought; in the action, `within` says:
    - "prose": a run of `n` tokens already written in the action;
    - "fields" (JSON answers): a string that starts with the same `n` tokens as an earlier one, or
      ends as an exact copy of one (so no two titles or plans are the same).
    Runs are the text between markup tokens (quotes, brackets, backslashes, tags); markup, whitespace and
    digits are never masked by the n-gram rules, so keys, separators, citation keys and closing tags stay
    free. A tag starts a new block. A mask that would leave no token allowed is skipped. Compose it
    after a GrammarHook, which it relies on to have masked what the grammar forbids."""

    def __init__(self, n: int, classes: TokenClasses, *, avoid: list[list[int]] = (), within: str = "prose"):
        if n < 3:
            raise ValueError(f"n must be at least 3 (shorter runs repeat in normal prose), got {n}")
        if within not in ("prose", "fields", "none"):
            raise ValueError(f'within must be "prose", "fields" or "none", got {within!r}')
        self.n, self.classes, self.within = n, classes, within
        self.rule = "prose"  # within the thought; `within` once the action has begun
        self.text = ""  # the answer so far, until its action begins
        self.consumed = 0
        self.run: list[int] = []  # the tokens since the last markup token
        self.seen: dict[tuple[int, ...], set[int]] = {}  # n-1 tokens -> the maskable tokens that followed them
        self.fixed: dict[tuple[int, ...], set[int]] = {}  # the same, from `avoid`
        self.fields: set[str] = set()  # "fields": the strings written so far, case-folded
        for ids in avoid:
            for token in ids:
                self._push(token, self.fixed)
            self.run = []
        self.blocked = 0  # times a mask was applied, for measurements

    def _push(self, token: int, into: dict[tuple[int, ...], set[int]]) -> None:
        if token in self.classes.markup:
            if self.run and into is self.seen and self.rule == "fields":
                self.fields.add(self._folded_run())
            self.run = []
            return
        self.run.append(token)
        if token in self.classes.free or len(self.run) < self.n:
            return
        if into is self.fixed or self.rule == "prose":
            into.setdefault(tuple(self.run[-self.n : -1]), set()).add(token)
        elif self.rule == "fields" and len(self.run) == self.n:
            into.setdefault(tuple(self.run[:-1]), set()).add(token)

    def banned(self) -> set[int]:
        run, n = self.run, self.n
        out: set[int] = set()
        if len(run) >= n - 1:
            last = tuple(run[len(run) - n + 1 :])
            out |= self.fixed.get(last, set())
            if self.rule == "prose" or (self.rule == "fields" and len(run) == n - 1):
                out |= self.seen.get(last, set())
        if self.rule == "fields" and run and self._folded_run() in self.fields:
            out.update(self.classes.quotes)
        return out

    def _folded_run(self) -> str:
        pieces = self.classes.pieces
        text = "".join(pieces[t] for t in self.run if t < len(pieces))
        return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())

    def __call__(self, generated_ids: list[int], logits):
        import torch

        for token in generated_ids[self.consumed :]:
            if token in self.classes.tags:
                self.seen, self.fields = {}, set()
            if self.rule == "prose" and self.within != "prose" and token < len(self.classes.pieces):
                self.text += self.classes.pieces[token]
                if "<action>" in self.text:
                    self.rule = self.within
            self._push(token, self.seen)
        self.consumed = len(generated_ids)
        banned = self.banned()
        if not banned:
            return logits
        index = torch.tensor(sorted(banned), device=logits.device)
        open_now = torch.isfinite(logits)
        if int(open_now.sum()) <= int(open_now[index].sum()):
            return logits  # the grammar allows nothing else here
        self.blocked += 1
        return logits.index_fill(0, index, float("-inf"))


def chain(*hooks):
    """One logits hook that applies `hooks` (None ones skipped) in order; None when there are none."""
    live = [h for h in hooks if h is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def hook(generated_ids: list[int], logits):
        for h in live:
            logits = h(generated_ids, logits)
        return logits

    return hook


class TopicEcho:
    """A `logits_hook` for a compact outline (init_plan_constraint(compact=True)): the section titles
    follow the list of topics the model wrote in its thought. Small models list sensible topics, then
    lose them by the time they write JSON; so while a "title" value is being written, the tokens that
    continue a listed topic not used yet get `bias` added. Compose it after the GrammarHook."""

    def __init__(self, encode, classes: TokenClasses, *, bias: float = 8.0):
        self.encode, self.classes, self.bias = encode, classes, bias
        self.consumed = 0
        self.text = ""  # the answer until its action begins
        self.topics: list[list[int]] | None = None  # token ids of each listed topic, once the thought is over
        self.used: set[int] = set()
        self.run: list[int] = []  # the tokens since the last markup token
        self.after: str = ""  # the last finished string, case-folded ("title" while a title is written)

    def _topics(self) -> list[list[int]]:
        thought = self.text.split("<thought>", 1)[-1].split("</thought>", 1)[0]
        lines = [line[2:].strip() for line in thought.splitlines() if line.startswith("- ")]
        return [self.encode(line) for line in lines if line]

    def _push(self, token: int) -> None:
        piece = self.classes.pieces[token] if token < len(self.classes.pieces) else ""
        if self.topics is None:
            self.text += piece
            if "<action>" in self.text:
                self.topics = self._topics()
            return
        if token not in self.classes.markup:
            self.run.append(token)
            return
        if self.run:
            if self.after == "title" and self.run in self.topics:
                self.used.add(self.topics.index(self.run))
            self.after = "".join(self.classes.pieces[t] for t in self.run).strip().casefold()
        self.run = []

    def __call__(self, generated_ids: list[int], logits):
        for token in generated_ids[self.consumed :]:
            self._push(token)
        self.consumed = len(generated_ids)
        if not self.topics or self.after != "title":
            return logits
        n = len(self.run)
        follow = {
            topic[n]
            for i, topic in enumerate(self.topics)
            if i not in self.used and len(topic) > n and topic[:n] == self.run
        }
        if not follow:
            return logits
        out = logits.clone()
        for token in follow:
            out[token] += self.bias
        return out
