"""Constrained decoding of whole answers: `<thought>` text of bounded length, then the action (JSON per
its schema, or for WRITE Markdown without `#` whose citations name only the passages shown).

One Constraint per step carries the shape twice: as an llguidance Lark grammar over the exact tag
format (in-process through the logits hook; vLLM's `structured_outputs.grammar`), and as a JSON schema
of `{thought, action}` / `{thought, text}` for servers that only take `response_format` json_schema.
We use llguidance rather than xgrammar: it reads tokenizer.json directly (byte-level BPE and
SentencePiece byte-fallback alike) and builds a matcher without a per-grammar compile over the
vocabulary, which matters because the cited keys, and so the grammar, change at every WRITE.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp.validate import Limits

# Compact, fixed JSON layout: no whitespace for a small model to loop in.
_JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Text the writer may use: no heading marks, no tags, no backslash except inside \cite{...}.
_PROSE = r"[^#<\\]"


@dataclass(frozen=True)
class Constraint:
    kind: str  # "search" | "init-plan" | "extend" | "write"
    lark: str
    json_schema: dict[str, Any]

    def from_json(self, text: str) -> str:
        """Rebuild the tag format from a JSON-mode answer; text that is not such JSON is returned as is."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return text
        if not isinstance(obj, dict):
            return text
        thought = obj.get("thought", "")
        action = obj.get("text", "") if self.kind == "write" else json.dumps(obj.get("action"), ensure_ascii=False)
        return f"<thought>{thought}</thought>\n<action>{action}</action>"


def _line(max_chars: int) -> dict[str, Any]:
    # One line, not starting with a space; no "<", so no string can pass for a closing tag.
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": r"^[^\s<][^\n\r<]*$"}


def _sections_schema(low: int, high: int, limits: Limits) -> dict[str, Any]:
    item = {"type": "object", "properties": {"title": _line(limits.title_chars), "plan": _line(limits.plan_chars)},
            "required": ["title", "plan"], "additionalProperties": False}  # fmt: skip
    return {"type": "array", "items": item, "minItems": low, "maxItems": high}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _json_constraint(kind: str, schema: dict[str, Any], limits: Limits) -> Constraint:
    lark = (
        'start: "<thought>" THOUGHT "</thought>\\n<action>" action "</action>"\n'
        f"THOUGHT: /[^<]{{1,{limits.thought_chars}}}/\n"
        f"action: %json {json.dumps({'x-guidance': _JSON_LAYOUT, **schema})}\n"
    )
    wrapped = _object({"thought": {"type": "string", "maxLength": limits.thought_chars}, "action": schema})
    return Constraint(kind, lark, wrapped)


def search_constraint(limits: Limits) -> Constraint:
    keywords = {"type": "array", "items": _line(limits.keyword_chars), "minItems": 1, "maxItems": limits.max_keywords}
    return _json_constraint("search", _object({"name": {"const": "search"}, "keywords": keywords}), limits)


def init_plan_constraint(limits: Limits) -> Constraint:
    schema = _object({"name": {"const": "init-plan"}, "title": _line(limits.title_chars),
                      "sections": _sections_schema(limits.min_sections, limits.max_sections, limits)})  # fmt: skip
    return _json_constraint("init-plan", schema, limits)


def extend_constraint(limits: Limits, positions: list[str], *, allow_nop: bool = True) -> Constraint:
    """`positions`: the nodes that may be expanded now; with none, only nop remains."""
    options = []
    if positions:
        options.append(_object({"name": {"const": "extend-plan"}, "position": {"enum": positions},
                                "subsections": _sections_schema(limits.min_subsections, limits.max_subsections, limits)}))  # fmt: skip
    if allow_nop or not positions:
        options.append(_object({"name": {"const": "nop"}}))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return _json_constraint("extend", schema, limits)


def write_constraint(limits: Limits, keys: list[str], *, max_chars: int = 1500) -> Constraint:
    """Prose that opens with text and cites 1..max_citations times, each `\\cite{k[, k]}` naming only `keys`.
    Without keys (no evidence found) the prose carries no citations."""
    lead = max(1, limits.min_chars - 10)
    thought = f"THOUGHT: /[^<]{{1,{limits.thought_chars}}}/\n"
    head = 'start: "<thought>" THOUGHT "</thought>\\n<action>" body "</action>"\n'
    if keys:
        names = " | ".join(json.dumps(k) for k in keys)
        lark = (head + thought
                + f"body: LEAD (CITE TEXT?){{1,{limits.max_citations}}}\n"
                + f"LEAD: /{_PROSE}{{{lead},{max_chars}}}/\n"
                + f"TEXT: /{_PROSE}{{1,{max_chars}}}/\n"
                + 'CITE: "\\\\cite{" KEY (", " KEY)* "}"\n'
                + f"KEY: {names}\n")  # fmt: skip
        alternatives = "|".join(keys)
        cite = rf"\\cite\{{({alternatives})(, ({alternatives}))*\}}"
        pattern = rf"^{_PROSE}{{{lead},}}({cite}{_PROSE}*){{1,{limits.max_citations}}}$"
    else:
        lark = head + thought + f"body: /{_PROSE}{{{limits.min_chars + 1},{max_chars * 2}}}/\n"
        pattern = rf"^{_PROSE}{{{limits.min_chars + 1},}}$"
    text = {"type": "string", "pattern": pattern}
    return Constraint("write", lark, _object({"thought": {"type": "string", "maxLength": limits.thought_chars}, "text": text}))


class GrammarHook:
    """A `logits_hook` for model.generate: masks every token the grammar does not allow next.

    Near the token limit it forces the first of `closers` (token sequences, e.g. those of
    "</action>" or " \\cite{textid1}.</action>") that the grammar accepts at that point, so a long
    WRITE still ends as a well-formed answer instead of being cut off mid-sentence.
    """

    def __init__(self, ll_tokenizer, lark: str, *, vocab_size: int, max_new_tokens: int,
                 closers: list[list[int]] = ()):  # fmt: skip
        import llguidance

        self.matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(lark))
        if self.matcher.is_error():
            raise ValueError(f"grammar rejected by llguidance: {self.matcher.get_error()}")
        self.vocab_size = vocab_size
        self.max_new_tokens = max_new_tokens
        self.closers = sorted((list(c) for c in closers if c), key=len)
        self.wrap_up_at = max((len(c) for c in self.closers), default=0) + 4
        self.consumed = 0
        self.forced: list[int] = []
        self.error: str | None = None
        self.mask_seconds = 0.0
        self.masks = 0

    def __call__(self, generated_ids: list[int], logits):
        import numpy as np
        import torch

        start = time.perf_counter()
        for token in generated_ids[self.consumed :]:
            if not self.matcher.consume_token(token) and self.error is None:
                self.error = self.matcher.get_error() or "token rejected"
        self.consumed = len(generated_ids)
        if self.error is not None:
            return logits  # the validator will reject the answer; never mask everything
        allowed = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = allowed[: logits.shape[-1]].astype(bool)
        remaining = self.max_new_tokens - len(generated_ids)
        if not self.forced and self.closers and remaining <= self.wrap_up_at:
            self.forced = next((list(c) for c in self.closers
                                if len(c) <= remaining and self.matcher.validate_tokens(c) == len(c)), [])  # fmt: skip
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


def ll_tokenizer(hf_tokenizer, *, vocab_size: int, eos_token_ids: list[int]):
    """An llguidance tokenizer from a `tokenizers.Tokenizer` (about 0.3 s for a 50k vocabulary: build once)."""
    import llguidance

    return llguidance.LLTokenizer(hf_tokenizer.to_str(), n_vocab=vocab_size, eos_token=list(eos_token_ids))
