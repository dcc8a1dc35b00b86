"""Constrained decoding of whole answers: `<thought>` text of bounded length, then the action (JSON per
its schema, or for WRITE Markdown without `#` whose citations name only the passages shown).

One Constraint per step carries the shape three times: as an llguidance Lark grammar over the exact tag
format (in-process through the logits hook; vLLM's guidance backend), as a GBNF grammar of the same tag
format (llama.cpp's `grammar`, SGLang's `ebnf`, vLLM's default xgrammar backend), and as a JSON schema
of `{thought, action}` / `{thought, text}` for servers that only take a schema (Ollama's `format`).
Patterns keep to what llguidance, xgrammar and llama.cpp's GBNF read alike (gbnf.py says which).
In-process we use llguidance rather than xgrammar: it reads tokenizer.json directly (byte-level BPE and
SentencePiece byte-fallback alike) and builds a matcher without a per-grammar compile over the
vocabulary, which matters because the cited keys, and so the grammar, change at every WRITE.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp import gbnf
from sala_report.app.warp.validate import Limits

# Text the writer may use under the strict style: no heading marks, no tags, no backslash except in \cite{...}.
_PROSE = r"[^#<\\]"
# Free text in a JSON schema: no minLength/maxLength, as xgrammar 0.2.9 then refuses every escape
# (a quote, a newline, the backslash of \cite); the validators check the lengths.
_FREE_TEXT = {"type": "string"}
# Compact, fixed JSON layout: no whitespace for a small model to loop in.
_JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Characters no JSON string field may hold raw: control characters, quotes and backslashes (so a value's
# JSON encoding is the value itself, and engines that match patterns on the encoded text agree).
_RAW = r'\x00-\x1f"\\'
# Letters and digits of the common scripts as ranges of raw characters: xgrammar reads `\\p{L}` as the
# letters "p{L}", llama.cpp refuses it, and llguidance's GBNF reader drops the zeros of `\\u00c0`.
# Latin (without × and ÷), Greek, Cyrillic, Hebrew, Arabic, Indic, Thai, Lao, kana, CJK and Hangul.
_SCRIPTS = [
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x590, 0x6FF),
    (0x900, 0xEFF),
    (0x3040, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),
]
# Upper-case Latin, Greek and Cyrillic, and the scripts without case.
_CAPITALS = [(0xC0, 0xD6), (0xD8, 0xDE), (0x391, 0x3A9), (0x410, 0x42F), *_SCRIPTS[5:]]


def _ranges(spans: list[tuple[int, int]]) -> str:
    return "".join(f"{chr(low)}-{chr(high)}" for low, high in spans)


_WORDLIKE = f"[0-9A-Za-z{_ranges(_SCRIPTS)}]"
_CAPITAL = f"[0-9A-Z{_ranges(_CAPITALS)}]"


@dataclass(frozen=True)
class Style:
    """How tight the WRITE grammar is. `open_prose`: `<`, `>` and `\\` may appear in prose except where
    they would open or close a tag or a citation ("COP < 2"); `span`: the most characters before the first
    citation and after each one, under the strict style (open prose has no such limit, as the released
    validator has none)."""

    open_prose: bool = False
    span: int = 1500  # unused with open_prose


STRICT = Style()
OPEN = Style(open_prose=True)


@dataclass(frozen=True)
class Constraint:
    kind: str  # "search" | "init-plan" | "extend" | "write"
    lark: str
    json_schema: dict[str, Any]
    gbnf: str = ""

    def from_json(self, text: str) -> str:
        """Rebuild the tag format from a JSON-mode answer; text that is not such JSON is returned as is."""
        try:
            obj = json.loads(text, strict=False)
        except json.JSONDecodeError:
            return text
        if not isinstance(obj, dict):
            return text
        thought = obj.get("thought", "")
        action = obj.get("text", "") if self.kind == "write" else json.dumps(obj.get("action"), ensure_ascii=False)
        return f"<thought>{thought}</thought>\n<action>{action}</action>"


def _pattern(first: str, rest: str, max_chars: int) -> dict[str, Any]:
    """A string of one `first` character then up to `max_chars - 1` of `rest`. The length is in the
    pattern, not in maxLength: llama.cpp's and xgrammar's converters ignore maxLength beside a pattern."""
    return {"type": "string", "pattern": f"^{first}{rest}{{0,{max_chars - 1}}}$"}


def _line(max_chars: int) -> dict[str, Any]:
    # One line, not starting with a space; no "<", so no string can pass for a closing tag.
    return _pattern(f"[^ <{_RAW}]", f"[^<{_RAW}]", max_chars)


def _title(max_chars: int, short: bool = False) -> dict[str, Any]:
    """A heading: starting with a letter or digit (validate.check_title rejects titles without one),
    without brackets, braces or backslashes, which small models fill with citation marks like "[n]" or
    "textid1}" (validate.clean_title drops a bare key; one spelled out of single letters is rejected).
    `short`: a phrase of at most seven words, not starting in lower case, without the punctuation of a
    sentence, a question or code (":", "?", "!", "*", "_"), which keeps a small model to naming a topic."""
    if short:
        word = rf"[^ <>\[\]{{}}:?!*_{_RAW}]"
        longest = max(2, (max_chars - 7) // 7)
        return {"type": "string", "pattern": rf"^{_CAPITAL}{word}{{0,{longest}}}( {word}{{1,{longest}}}){{0,6}}$"}
    return _pattern(_WORDLIKE, rf"[^<>\[\]{{}}{_RAW}]", max_chars)


def _sections_schema(low: int, high: int, limits: Limits, compact: bool = False) -> dict[str, Any]:
    """`compact`: short titles, and plans without brackets or braces (a small model's JSON loops)."""
    plan = _line(limits.plan_chars)
    if compact:
        plan = _pattern(rf"[^ <>\[\]{{}}{_RAW}]", rf"[^<>\[\]{{}}{_RAW}]", limits.plan_chars)
    item = {
        "type": "object",
        "properties": {"title": _title(limits.title_chars, compact), "plan": plan},
        "required": ["title", "plan"],
        "additionalProperties": False,
    }
    return {"type": "array", "items": item, "minItems": low, "maxItems": high}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _thought_gbnf(thought: str | None, limits: Limits) -> str:
    if thought is None:
        return f"[^<]{{1,{limits.thought_chars}}}"
    return gbnf.pattern_rule(f"^{thought}$")


# Between the tags: the released parser finds each block by regex, so a newline, or a space after
# "<action>", is the same answer; the grammars allow both, as the model was trained on either.
_LARK_HEAD = 'start: "<thought>" THOUGHT "</thought>" /[ \\n]{0,2}/ "<action>" " "? '
_GBNF_HEAD = 'root ::= "<thought>" thought "</thought>" [ \\n]{0,2} "<action>" " "? '


def _json_constraint(kind: str, schema: dict[str, Any], limits: Limits, thought: str | None = None) -> Constraint:
    """`thought`: a regex for the thought instead of any text of up to `limits.thought_chars`."""
    lark = (
        _LARK_HEAD + 'action "</action>"\n'
        f"THOUGHT: /{thought or f'[^<]{{1,{limits.thought_chars}}}'}/\n"
        f"action: %json {json.dumps({'x-guidance': _JSON_LAYOUT, **schema})}\n"
    )
    rules = {
        "root": _GBNF_HEAD[len("root ::= ") :] + 'action "</action>"',
        "thought": _thought_gbnf(thought, limits),
        **gbnf.json_rules(schema, "action"),
    }
    wrapped = _object({"thought": _FREE_TEXT, "action": schema})
    return Constraint(kind, lark, wrapped, gbnf.render(rules))


def search_constraint(limits: Limits) -> Constraint:
    keywords = {"type": "array", "items": _line(limits.keyword_chars), "minItems": 1, "maxItems": limits.max_keywords}
    return _json_constraint("search", _object({"name": {"const": "search"}, "keywords": keywords}), limits)


def init_plan_constraint(limits: Limits, *, compact: bool = False) -> Constraint:
    """`compact` (small models): short section titles, and a thought that is just a list of the topics,
    one per line ("- …", no Markdown), so the model names the topics before its JSON and can copy them."""
    title = _title(limits.title_chars)
    sections = _sections_schema(limits.min_sections, limits.max_sections, limits, compact)
    # Compact: the sections come first, while the listed topics are fresh; the report's title after them.
    order = {"sections": sections, "title": title} if compact else {"title": title, "sections": sections}
    schema = _object({"name": {"const": "init-plan"}, **order})
    topics = rf"[\n]{{0,2}}(- [^ \t\n\r<*#][^\n<*#]{{0,{limits.title_chars - 1}}}[\n]){{1,{limits.max_sections}}}"
    return _json_constraint("init-plan", schema, limits, topics if compact else None)


def topic_list_chars(limits: Limits) -> int:
    """The longest thought `init_plan_constraint(compact=True)` allows."""
    return 2 + limits.max_sections * (limits.title_chars + 3)


def extend_constraint(
    limits: Limits, positions: list[str], *, allow_nop: bool = True, compact: bool = False
) -> Constraint:
    """`positions`: the nodes that may be expanded now; with none, only nop remains."""
    options = []
    if positions:
        options.append(
            _object(
                {
                    "name": {"const": "extend-plan"},
                    "position": {"enum": positions},
                    "subsections": _sections_schema(limits.min_subsections, limits.max_subsections, limits, compact),
                }
            )
        )
    if allow_nop or not positions:
        options.append(_object({"name": {"const": "nop"}}))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return _json_constraint("extend", schema, limits)


def write_constraint(limits: Limits, keys: list[str], *, style: Style = STRICT) -> Constraint:
    """Prose that opens with text and cites 1..max_citations times, each `\\cite{k[, k]}` naming only `keys`.
    Without keys (no evidence found) the prose carries no citations. The JSON schema (for servers that take
    no grammar) leaves the text free: a pattern could not say `\\cite` alike in every engine (xgrammar
    matches patterns on the escaped JSON text), so there the validator alone checks the citations."""
    thought_rule = f"[^<]{{1,{limits.thought_chars}}}"
    lark = _LARK_HEAD + 'body "</action>"\n' + f"THOUGHT: /{thought_rule}/\n"
    rules = {"root": _GBNF_HEAD[len("root ::= ") :] + 'body "</action>"', "thought": thought_rule}
    cite_lark = 'CITE: "\\\\cite{" KEY (", " KEY)* "}"\n' + "KEY: " + " | ".join(json.dumps(k) for k in keys) + "\n"
    cite_rules = {"cite": '"\\\\cite{" key (", " key)* "}"', "key": " | ".join(json.dumps(k) for k in keys)}
    if style.open_prose:
        # "<" before a space, "=" or a digit, "\\" before anything but the "c" of \\cite. Each is its own
        # lexeme: llguidance's lexer is greedy, so a run of text that could take a "\\" would swallow the
        # one that starts a citation (or the "<" of the closing tag) and fail on the next byte.
        lark += "prose: (CHUNK | LT | ESC)+\nCHUNK: /[^#<\\\\]+/\nLT: /<[ =0-9]/\nESC: /\\\\[^c#<\\\\]/\n" + (
            f"body: prose (CITE prose?){{1,{limits.max_citations}}}\n" + cite_lark if keys else "body: prose\n"
        )
        rules["prose"] = '([^#<\\\\] | "<" [ =0-9] | "\\\\" [^c#<\\\\])+'  # one character at a time: unambiguous
        rules |= (
            {"body": f"prose (cite prose?){{1,{limits.max_citations}}}", **cite_rules} if keys else {"body": "prose"}
        )
    elif keys:
        lead = max(1, limits.min_chars - 10)
        lark += (
            f"body: LEAD (CITE TEXT?){{1,{limits.max_citations}}}\n"
            + f"LEAD: /{_PROSE}{{{lead},{style.span}}}/\nTEXT: /{_PROSE}{{1,{style.span}}}/\n"
            + cite_lark
        )
        rules |= {
            "body": f"lead (cite text?){{1,{limits.max_citations}}}",
            "lead": f"{_PROSE}{{{lead},{style.span}}}",
            "text": f"{_PROSE}{{1,{style.span}}}",
            **cite_rules,
        }
    else:
        lark += f"body: /{_PROSE}{{{limits.min_chars + 1},{style.span * 2}}}/\n"
        rules["body"] = f"{_PROSE}{{{limits.min_chars + 1},{style.span * 2}}}"
    schema = _object({"thought": _FREE_TEXT, "text": _FREE_TEXT})
    return Constraint("write", lark, schema, gbnf.render(rules))


class GrammarHook:
    """A `logits_hook` for model.generate: masks every token the grammar does not allow next.

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
        self.consumed = 0
        self.forced: list[int] = []
        self.error: str | None = None
        self.mask_seconds = 0.0
        self.masks = 0

    def __call__(self, generated_ids: list[int], logits):
        import numpy as np
        import torch

        start = time.perf_counter()
        self._consume(generated_ids)
        if self.error is not None:
            return logits  # the validator will reject the answer; never mask everything
        allowed = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = allowed[: logits.shape[-1]].astype(bool)
        remaining = self.max_new_tokens - len(generated_ids)
        if not self.forced and self.closers and (remaining <= self.wrap_up_at or self._wants_to_stop(logits, allowed)):
            self.forced = next(
                (list(c) for c in self.closers if len(c) <= remaining and self.matcher.validate_tokens(c) == len(c)), []
            )
        if self.forced:
            allowed = np.zeros_like(allowed)
            allowed[self.forced.pop(0)] = True
        if not allowed.any():
            self.error = "the grammar allows no token here"
            return logits
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            # numpy, single-threaded: torch would split this 50k-wide op over threads, which costs
            # more than it saves on a small, busy CPU
            values = logits.numpy().copy()
            values[~allowed] = -np.inf
            out = torch.from_numpy(values)
        else:
            out = logits.masked_fill(~torch.from_numpy(allowed).to(logits.device), float("-inf"))
        self.mask_seconds += time.perf_counter() - start
        self.masks += 1
        return out

    def _consume(self, generated_ids: list[int]) -> None:
        for token in generated_ids[self.consumed :]:
            if not self.matcher.consume_token(token) and self.error is None:
                self.error = self.matcher.get_error() or "token rejected"
        self.consumed = len(generated_ids)

    def fast_forward(self, generated_ids: list[int]) -> list[int]:
        """The tokens the grammar allows as the only continuation of `generated_ids` (llguidance's
        fast-forward tokens): model.generate feeds them in one chunk instead of sampling each. Empty
        when there is a choice, after an error, or while a closer is being forced."""
        start = time.perf_counter()
        self._consume(generated_ids)
        forced = [] if self.error is not None or self.forced else list(self.matcher.compute_ff_tokens())
        self.mask_seconds += time.perf_counter() - start
        return forced

    def _wants_to_stop(self, logits, allowed) -> bool:
        if not self.stop_tokens:
            return False
        top = int(logits.argmax())
        return top in self.stop_tokens and not (top < len(allowed) and allowed[top])


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
