"""Evidence ranking helpers: safe FTS5 queries from free text, CJK bigrams, and spreading over sources.

Queries come from a model or a person, so FTS5 syntax in them (quotes, AND, NEAR, *, :, parentheses)
must never reach MATCH as syntax: we keep only word tokens and quote each one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

# Hiragana, Katakana, CJK ideographs (with extension A and compatibility forms), Hangul syllables
CJK_CLASS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{CJK_CLASS}]+")
_WORD = re.compile(f"[{CJK_CLASS}]+|[^\\W{CJK_CLASS}]+")

# Words that match nearly every chunk: they cost query time and add nothing to BM25's ordering.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "there",
        "these",
        "this",
        "those",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "about",
        "after",
        "before",
        "between",
        "than",
        "then",
        "them",
        "they",
        "we",
        "our",
        "not",
        "no",
        "so",
        "such",
    ]
)

MAX_TERMS = 24

T = TypeVar("T")


def has_cjk(text: str) -> bool:
    return _CJK_RUN.search(text) is not None


def cjk_bigrams(text: str) -> str:
    """Rewrite CJK runs as space-separated overlapping bigrams ("机器学习" -> "机器 器学 学习").

    FTS5's unicode61 tokenizer does not segment Chinese or Japanese; indexing bigrams is the classic
    dictionary-free way to make two-character words (the most common length) findable and rankable.
    """

    def bigrams(match: re.Match) -> str:
        run = match.group(0)
        if len(run) == 1:
            return f" {run} "
        return " " + " ".join(run[i : i + 2] for i in range(len(run) - 1)) + " "

    return _CJK_RUN.sub(bigrams, text)


def query_terms(text: str) -> list[str]:
    """Distinct searchable terms of a free-text query, stopwords dropped unless nothing else is left."""
    words = [w.lower() for w in _WORD.findall(cjk_bigrams(text) if has_cjk(text) else text)]
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word, None)
    terms = [w for w in seen if w not in STOPWORDS] or list(seen)
    return terms[:MAX_TERMS]


def fts_match(terms: Sequence[str]) -> str | None:
    """An FTS5 MATCH expression that ORs the quoted terms; BM25 then favours chunks with more of them."""
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def affordable_terms(frequencies: dict[str, int], budget: int) -> list[str]:
    """The rarest terms whose matches together fit `budget` rows (at least one term; none that match nothing).

    BM25's cost grows with the rows a query matches, while a term found in a large share of the chunks
    adds almost nothing to the ranking (FTS5's bm25 gives a term in half the rows an IDF of ~0). So a
    query keeps its rare terms and drops the common ones that would blow the time budget.
    """
    ordered = sorted((t for t, n in frequencies.items() if n > 0), key=lambda t: frequencies[t])
    chosen: list[str] = []
    rows = 0
    for term in ordered:
        if chosen and rows + frequencies[term] > budget:
            break
        chosen.append(term)
        rows += frequencies[term]
    return chosen


def spread(ranked: Sequence[T], k: int, source_of, *, per_source: int | None = None) -> list[T]:
    """Take the best `k` of `ranked` (best first) with at most `per_source` from one source, then
    fill any remaining places in rank order, so one long page cannot crowd out the others."""
    if k <= 0:
        return []
    cap = per_source if per_source is not None else max(1, (k + 2) // 3)
    chosen: list[T] = []
    taken: dict[object, int] = {}
    rest: list[T] = []
    for item in ranked:
        source = source_of(item)
        if taken.get(source, 0) < cap and len(chosen) < k:
            chosen.append(item)
            taken[source] = taken.get(source, 0) + 1
        else:
            rest.append(item)
    for item in rest:
        if len(chosen) >= k:
            break
        chosen.append(item)
    order = {id(item): i for i, item in enumerate(ranked)}
    return sorted(chosen, key=lambda item: order[id(item)])
