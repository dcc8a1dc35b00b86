"""Grammars for evidence mode (evidence.py): answers made only of choices among given pieces of text.

Each list is an ordered choice: a subsequence of the candidates in the order given, between `low` and
`high` of them. Order makes repeats impossible in the grammar itself (a context-free grammar cannot
otherwise say "each at most once"), and the candidates are offered in a sensible reading order. Once
the model's first tokens single out a candidate, the rest of it is forced, which llguidance reports as
fast-forward tokens (GrammarHook.fast_forward) so they can be fed to the model in one chunk.
"""

from __future__ import annotations

import json
from typing import Any

from sala_report.app.warp.grammar import Constraint

THOUGHT = "-"  # evidence-mode answers have nothing to think aloud: a fixed thought, fed as forced tokens
_HEAD = f'start: "<thought>{THOUGHT}</thought>\\n<action>" body "</action>"\n'


def literal(text: str) -> str:
    """`text` as a Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def ordered_choice(name: str, items: list[str], low: int, high: int, separator: str) -> list[str]:
    """Lark rules: rule `name` matches `low`..`high` of `items` (Lark expressions) in the given order,
    joined by `separator`. Returns the rule lines (rule `name` is defined only when `low` are reachable)."""
    if not 0 < low <= high:
        raise ValueError(f"expected 0 < low <= high, got low={low}, high={high}")
    if len(items) < low:
        raise ValueError(f"need at least {low} items to choose from, got {len(items)}")
    k, sep = len(items), literal(separator)
    lines: dict[str, str] = {}

    def rule(i: int, n: int) -> str | None:
        """The rule choosing from items[i:], n already chosen; None when nothing but stopping is left."""
        key = f"{name}_{i}_{n}"
        if key in lines:
            return key
        alternatives = []
        if i < k and n < high:
            then = rule(i + 1, n + 1) if k - (i + 1) >= low - (n + 1) else None
            take = items[i] if n == 0 else f"{sep} {items[i]}"
            if then is not None:
                alternatives.append(f"{take} {then}")
            elif n + 1 >= low:
                alternatives.append(take)
        if i < k and k - (i + 1) >= low - n:
            skip = rule(i + 1, n)
            if skip is not None:
                alternatives.append(skip)
        if not alternatives:
            return None
        body = " | ".join(alternatives)
        lines[key] = f"{key}: ({body})?" if n >= low else f"{key}: {body}"
        return key

    first = rule(0, 0)
    assert first is not None, "k >= low guarantees a first rule"
    return [f"{name}: {first}", *lines.values()]


def sentences_constraint(sentences: list[str], low: int, high: int, *, lead_chars: int = 0) -> Constraint:
    """WRITE: `low`..`high` of `sentences` (each already followed by its citation), in order, optionally
    after one lead sentence of the model's own of at most `lead_chars` characters."""
    high = min(high, len(sentences))
    low = min(low, high)
    items = [f"s{i}" for i in range(len(sentences))]
    lines = [_HEAD.rstrip("\n")]
    if lead_chars >= 20:
        lines.append('body: (LEAD " ")? chosen')
        # one plain sentence: a capital, no markup, no sentence end inside, a full stop at the end
        lines.append(f"LEAD: /[A-Z][^#<>\\\\\\n.!?*\\[\\]{{}}]{{10,{lead_chars - 2}}}[.]/")
    else:
        lines.append("body: chosen")
    lines += ordered_choice("chosen", items, low, high, " ")
    lines += [f"s{i}: {literal(text)}" for i, text in enumerate(sentences)]
    schema = {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "text": {"type": "string"}},
        "required": ["thought", "text"],
        "additionalProperties": False,
    }
    return Constraint("write", "\n".join(lines) + "\n", schema)


def _json(value: Any) -> str:
    """The fixed JSON layout of grammar.py (`", "` and `": "` separators)."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _pairs(name: str, pairs: list[tuple[str, str]]) -> list[str]:
    return [f"{name}{i}: {literal(_json({'title': t, 'plan': p}))}" for i, (t, p) in enumerate(pairs)]


def outline_constraint(titles: list[str], sections: list[tuple[str, str]], low: int, high: int) -> Constraint:
    """INIT-PLAN: `low`..`high` (title, plan) pairs from `sections`, in order, then a report title from
    `titles` (a single one is simply written out, as forced tokens)."""
    high = min(high, len(sections))
    items = [f"p{i}" for i in range(len(sections))]
    lines = [
        _HEAD.rstrip("\n"),
        'body: "{\\"name\\": \\"init-plan\\", \\"sections\\": [" chosen "], \\"title\\": " title "}"',
        "title: " + " | ".join(literal(json.dumps(t, ensure_ascii=False)) for t in titles),
    ]
    lines += ordered_choice("chosen", items, low, high, ", ")
    lines += _pairs("p", sections)
    schema = {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "action": {"type": "object"}},
        "required": ["thought", "action"],
        "additionalProperties": False,
    }
    return Constraint("init-plan", "\n".join(lines) + "\n", schema)


def extend_choice_constraint(
    options: dict[str, list[tuple[str, str]]], low: int, high: int, *, allow_nop: bool
) -> Constraint:
    """EXPAND: one position of `options` with `low`..`high` of its (title, plan) pairs, in order; or nop."""
    lines = [_HEAD.rstrip("\n")]
    alternatives = []
    for j, (position, pairs) in enumerate(options.items()):
        if len(pairs) < low:
            continue
        head = literal('{"name": "extend-plan", "position": ' + json.dumps(position) + ', "subsections": [')
        alternatives.append(f'{head} chosen{j} "]}}"')
        lines += ordered_choice(
            f"chosen{j}", [f"q{j}_{i}" for i in range(len(pairs))], low, min(high, len(pairs)), ", "
        )
        lines += _pairs(f"q{j}_", pairs)
    if allow_nop or not alternatives:
        alternatives.append(literal('{"name": "nop"}'))
    lines.insert(1, "body: " + " | ".join(alternatives))
    schema = {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "action": {"type": "object"}},
        "required": ["thought", "action"],
        "additionalProperties": False,
    }
    return Constraint("extend", "\n".join(lines) + "\n", schema)


def keywords_constraint(phrases: list[str], high: int) -> Constraint:
    """SEARCH: 1..`high` of `phrases`, in order, none twice."""
    items = [f"k{i}" for i in range(len(phrases))]
    lines = [_HEAD.rstrip("\n"), 'body: "{\\"name\\": \\"search\\", \\"keywords\\": [" chosen "]}"']
    lines += ordered_choice("chosen", items, 1, min(high, len(phrases)), ", ")
    lines += [f"k{i}: {literal(json.dumps(p, ensure_ascii=False))}" for i, p in enumerate(phrases)]
    schema = {
        "type": "object",
        "properties": {"thought": {"type": "string"}, "action": {"type": "object"}},
        "required": ["thought", "action"],
        "additionalProperties": False,
    }
    return Constraint("search", "\n".join(lines) + "\n", schema)
