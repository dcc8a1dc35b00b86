"""The citation registry (every passage shown to the model, with its stored source) and citation checks.

The writer cites `\\cite{textidN}`; a key not in the registry is removed and counted. Each cited
sentence gets a cheap support score against the passage it cites (shared words; across scripts, shared numbers
and names, comparable.py), and weak support is flagged.
Reports number citations [n] by first appearance (see report.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from sala_report.app.warp import comparable

CITE = re.compile(r"\\cite\{([^{}]*)\}")
KEY = re.compile(r"^textid(\d+)$")


@dataclass(frozen=True)
class Entry:
    """A passage as it was shown: its text is kept so citations stay checkable if the source changes."""

    key: str  # "textid7"
    chunk_id: str
    source_id: int
    title: str
    location: str
    kind: str
    text: str

    @property
    def number(self) -> int:
        return int(self.key.removeprefix("textid"))


class Registry:
    """Key ↔ passage for one session; the same passage (by chunk id or text) keeps its key across searches."""

    def __init__(self, entries: list[Entry] | None = None):
        self.entries: dict[str, Entry] = {}
        self._by_chunk: dict[str, str] = {}
        self._by_text: dict[str, str] = {}
        self._last_number = 0  # the highest key number ever given, hidden entries included
        for entry in entries or []:
            self._index(entry)

    def without_sources(self, source_ids: set[int]) -> Registry:
        """A copy that never shows the passages of `source_ids` (the person excluded them), yet numbers new
        keys after theirs, so a key stays unique within the session."""
        kept = Registry([e for e in self.entries.values() if e.source_id not in source_ids])
        kept._last_number = max(self._last_number, kept._last_number)
        return kept

    def insert(self, entry: Entry) -> None:
        """Add an entry made by `add` on a copy of this registry (the engine's steps work on copies)."""
        self._index(entry)

    def _index(self, entry: Entry) -> None:
        self.entries[entry.key] = entry
        self._last_number = max(self._last_number, entry.number)
        self._by_chunk[entry.chunk_id] = entry.key
        self._by_text[_text_hash(entry.text)] = entry.key

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def key_for(self, chunk_id: str, text: str) -> str | None:
        return self._by_chunk.get(chunk_id) or self._by_text.get(_text_hash(text))

    def add(self, chunk_id: str, source_id: int, title: str, location: str, kind: str, text: str) -> tuple[Entry, bool]:
        """(entry, whether it is new)."""
        known = self.key_for(chunk_id, text)
        if known is not None:
            return self.entries[known], False
        n = 1 + self._last_number
        entry = Entry(f"textid{n}", chunk_id, source_id, title, location, kind, text)
        self._index(entry)
        return entry, True

    def source_ids(self) -> set[int]:
        return {e.source_id for e in self.entries.values()}


def _text_hash(text: str) -> str:
    return hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()


def cited_keys(text: str) -> list[str]:
    """Keys in order of first citation."""
    keys: dict[str, None] = {}
    for match in CITE.finditer(text):
        for key in _split_keys(match.group(1)):
            keys.setdefault(key, None)
    return list(keys)


def citation_count(text: str) -> int:
    return len(CITE.findall(text))


def _split_keys(inner: str) -> list[str]:
    return [k.strip() for k in inner.split(",") if k.strip()]


def drop_unknown(text: str, known) -> tuple[str, list[str]]:
    """Remove cited keys not in `known` (a `\\cite{}` left empty goes entirely); return the removed keys."""
    removed: list[str] = []

    def keep(match: re.Match) -> str:
        keys = _split_keys(match.group(1))
        good = [k for k in keys if k in known]
        removed.extend(k for k in keys if k not in known)
        return "\\cite{" + ", ".join(dict.fromkeys(good)) + "}" if good else ""

    cleaned = CITE.sub(keep, text)
    if removed:
        cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
        cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    return cleaned, removed


# A bare reference mark copied from a page ("[7]", "[3, 12]", "[4-6]", "[^2]"): it would read as one of the
# report's own [n] citations and point at the wrong reference, or at none.
BARE_MARK = re.compile(r"\[\^?\s*\d+(?:\s*[,;–-]\s*\d+)*\s*\]")


def drop_marks(text: str) -> tuple[str, list[str]]:
    """Remove bare `[n]` marks from model text (only `\\cite{key}` cites); return the marks removed."""
    removed = BARE_MARK.findall(text)
    if not removed:
        return text, []
    cleaned = BARE_MARK.sub("", text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    return re.sub(r"[ \t]{2,}", " ", cleaned), removed


def strip_cites(text: str) -> str:
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", CITE.sub("", text))


def render_cites(text: str, numbers: dict[str, int]) -> str:
    """`\\cite{textid3, textid1}` -> `[1][3]` with the given numbering; keys without a number vanish."""

    def number(match: re.Match) -> str:
        ns = sorted({numbers[k] for k in _split_keys(match.group(1)) if k in numbers})
        return "".join(f"[{n}]" for n in ns)

    return CITE.sub(number, text)


_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "than",
        "that",
        "this",
        "these",
        "those",
        "there",
        "their",
        "they",
        "them",
        "it",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "to",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "into",
        "onto",
        "about",
        "over",
        "under",
        "after",
        "before",
        "between",
        "through",
        "during",
        "not",
        "no",
        "nor",
        "so",
        "such",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "also",
        "more",
        "most",
        "much",
        "many",
        "some",
        "any",
        "each",
        "other",
        "own",
        "same",
        "very",
        "just",
        "only",
        "both",
        "all",
        "few",
        "while",
        "because",
        "since",
        "until",
        "up",
        "down",
        "out",
        "off",
        "again",
        "further",
        "once",
        "here",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "his",
        "her",
        "i",
        "me",
        "my",
        "us",
        "one",
        "two",
        "new",
        "use",
        "used",
        "using",
    ]
)
_WORD = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _stem(word: str) -> str:
    """A light English stemmer: enough that "modules" meets "module" and "dropped" meets "drop"."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    for suffix in ("ation", "ment", "ing", "ed", "ly", "er"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    words: set[str] = set()
    for token in _WORD.findall(text.lower()):
        if _CJK.search(token):
            chars = _CJK.findall(token)  # CJK has no spaces: compare character bigrams
            words.update(a + b for a, b in zip(chars, chars[1:]))
        elif token not in _STOP and (len(token) > 2 or token.isdigit()):
            words.add(_stem(token))
    return words


@dataclass(frozen=True)
class Support:
    """How well a passage supports a sentence, 0..1; `checked` is False when nothing in them could be
    compared (different scripts, and the sentence has no number and no word in the passage's script)."""

    score: float
    checked: bool = True


def support(sentence: str, passage: str) -> Support:
    """In one script: the share of the sentence's content words that also occur in the passage. Across
    scripts (a Chinese sentence, an English passage) shared words mean nothing; the share of what can be
    compared is used instead: its numbers (in any script) and the words it keeps in another script."""
    claim = strip_cites(sentence)
    across = _comparable(claim, passage)
    if across is None:
        words = content_words(claim)
        return Support(len(words & content_words(passage)) / len(words) if words else 0.0)
    numbers, terms = across
    if not numbers and not terms:
        return Support(0.0, checked=False)
    found = comparable.values(passage)
    matched = sum(q.found_in(found) for q in numbers) + len(terms & content_words(passage))
    return Support(matched / (len(numbers) + len(terms)))


def _comparable(claim: str, passage: str) -> tuple[list[comparable.Quantity], set[str]] | None:
    """What a claim written in another script than its passage can be compared on: its numbers and its
    words in other scripts than its own; None when both are in one script (or either has no letters)."""
    own, theirs = comparable.script(claim), comparable.script(passage)
    if own is None or theirs is None or own == theirs:
        return None
    numbers = list({q.value: q for q in comparable.quantities(claim)}.values())
    return numbers, content_words(comparable.foreign_words(claim, own))


def support_score(sentence: str, passage: str) -> float:
    """`support(...).score`: 0 for a sentence that could not be checked."""
    return support(sentence, passage).score


# Chinese and Japanese put no space after a full stop: "。" ends a sentence by itself.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\n+")


def cited_sentences(text: str) -> list[tuple[str, list[str]]]:
    """(sentence, keys it cites) for each sentence with a citation. A citation that opens a sentence
    (`... end. \\cite{k} Next`) belongs to the sentence before it."""
    pieces = [p.strip() for p in _SENTENCE_END.split(text) if p.strip()]
    out: list[tuple[str, list[str]]] = []
    for piece in pieces:
        lead = re.match(r"^(?:\\cite\{[^{}]*\}\s*)+", piece)
        if lead and out:
            out[-1] = (out[-1][0], list(dict.fromkeys(out[-1][1] + cited_keys(lead.group(0)))))
            piece = piece[lead.end() :].strip()
        if piece:
            out.append((piece, cited_keys(piece)))
    return [(s, keys) for s, keys in out if keys]


@dataclass(frozen=True)
class CitationCheck:
    """One cited sentence against one passage. `unchecked`: nothing could be compared (support.checked is
    False), so it is neither weak nor verified. The store keeps no column for it; `rechecked` derives it."""

    key: str
    sentence: str
    score: float
    weak: bool
    unchecked: bool = False


def check_support(text: str, registry: Registry, threshold: float) -> list[CitationCheck]:
    checks = []
    for sentence, keys in cited_sentences(text):
        for key in keys:
            entry = registry.get(key)
            if entry is None:
                continue
            found = support(sentence, entry.text)
            weak = found.checked and found.score < threshold
            checks.append(CitationCheck(key, strip_cites(sentence), round(found.score, 3), weak, not found.checked))
    return checks


def rechecked(check: CitationCheck, registry: Registry) -> CitationCheck:
    """A stored check with its `unchecked` state, judged again from its sentence and passage (a pure
    function of the two, so it reads as it was when the section was written)."""
    entry = registry.get(check.key)
    if check.weak or entry is None:
        return check
    across = _comparable(strip_cites(check.sentence), entry.text)
    if across is None or any(across):
        return check
    return CitationCheck(check.key, check.sentence, check.score, False, True)


_SENTENCE_BREAK = re.compile(r"(?<=[.!?。！？])(\s+)")
_LEADING_CITES = re.compile(r"^(?:\\cite\{[^{}]*\}\s*)+")
_BULLET_ONLY = re.compile(r"^\s*(?:[-*+]|\d+[.)])?\s*$")


def drop_source_keys(text: str, keys: set[str]) -> tuple[str, int]:
    """Remove the citations of `keys`. A sentence that cited only them goes with them: kept without its
    marker it would read as supported by nothing (and evidence-mode sentences are verbatim quotes of that
    source). A sentence that also cites other keys keeps those. Returns (text, sentences dropped)."""
    if not keys or not any(k in keys for k in cited_keys(text)):
        return text, 0
    dropped = 0
    lines = []
    for line in text.split("\n"):
        kept, n = _clean_line(line, keys)
        dropped += n
        if n and _BULLET_ONLY.match(kept):  # the line was only dropped sentences: no empty bullet left behind
            continue
        lines.append(kept)
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return cleaned, dropped


def _clean_line(line: str, keys: set[str]) -> tuple[str, int]:
    parts = _SENTENCE_BREAK.split(line)  # sentence, space, sentence, ...
    units: list[str] = []  # each sentence with the space before it and the citations that trail it
    for i in range(0, len(parts), 2):
        piece = (parts[i - 1] if i else "") + parts[i]
        lead = _LEADING_CITES.match(parts[i])
        if lead and units:  # `... end. \cite{k} Next`: the citation belongs to the sentence before
            units[-1] += (parts[i - 1] if i else "") + lead.group(0).rstrip()
            piece = " " + parts[i][lead.end() :] if parts[i][lead.end() :] else ""
        if piece:
            units.append(piece)
    kept, dropped = [], 0
    for unit in units:
        cited = cited_keys(unit)
        if cited and all(k in keys for k in cited):
            dropped += 1
            continue
        kept.append(drop_unknown(unit, set(cited) - keys)[0] if cited else unit)
    return "".join(kept).strip() if dropped else "".join(kept), dropped
