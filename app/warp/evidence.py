"""Evidence mode: a small model chooses from the documents instead of writing (issue 11).

A 135M model cannot write a report, but it can choose. WRITE offers whole sentences of the passages
shown, verbatim, each with the citation of its passage; INIT-PLAN and EXTEND offer the headings and
document titles found in the evidence; SEARCH offers phrases of the question and the outline. This
module finds those candidates and checks answers against them; choice_grammar.py builds the grammars.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sala_report.app.warp.actions import ActionError
from sala_report.app.warp.citations import Entry, content_words
from sala_report.app.warp.filler import filler_phrase
from sala_report.app.warp.validate import check_language, clean_title

WRITINGS = ("evidence", "generate")
LEAD_CHARS = 0  # the longest lead sentence of the model's own (0: none); see choice_grammar.sentences_constraint
MIN_SENTENCE_CHARS, MAX_SENTENCE_CHARS = 40, 320
# Characters a chosen sentence may not hold: Markdown and HTML markup, and what prompts.neutralize would change.
_MARKUP = re.compile(r"[#<>\\*_`|\[\]{}]|(?i:text\s*id\s*\d|bib\s*key)")
_END = re.compile(r"([.!?。！？]+[\"'”’)]*)$")
_LIST_MARK = re.compile(r"^(?:[-+•]|\d{1,2}[.)])\s+")
_HEADING = re.compile(r"(?m)^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_HTML_HEADING = re.compile(r"(?is)<h[1-6][^>]*>(.*?)</h[1-6]>")
_FILE_NAME = re.compile(r"(?i)^[\w.~-]+\.(?:md|markdown|txt|html?|pdf|rst|docx?)$|^[\w~]+(?:[-_][\w~]+)+$")


def folded(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def one_line(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def _punkt():
    """NLTK punkt through llama-index-core (its data ships with llama-index, so nothing is downloaded)."""
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

    return split_by_sentence_tokenizer()


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` on one line each, paragraph by paragraph (a heading or list item never runs
    into the next line's sentence); list marks are dropped, everything else is kept as written."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*(?:[-+*•]|\d{1,2}[.)]|#{1,6})\s)", text):
        block = one_line(block)
        if not block or block.startswith("#"):
            continue
        block = _LIST_MARK.sub("", block)
        pieces: list[str] = []
        for piece in (one_line(p) for p in _punkt()(block) if p.strip()):
            # punkt ends a sentence at some abbreviations ("e.g. a COP of 2"): no sentence opens in lower case
            if pieces and piece[0].islower():
                pieces[-1] = f"{pieces[-1]} {piece}"
            else:
                pieces.append(piece)
        out += pieces
    return out


def is_choosable(sentence: str, question: str) -> bool:
    """A whole sentence worth offering: a capital or digit first, an end mark last, plain text of a
    reasonable length, in the question's language, and no chatter."""
    if not MIN_SENTENCE_CHARS <= len(sentence) <= MAX_SENTENCE_CHARS or len(sentence.split()) < 6:
        return False
    if not (sentence[0].isupper() or sentence[0].isdigit() or not sentence[0].isascii()) or not _END.search(sentence):
        return False
    if _MARKUP.search(sentence) or sentence.endswith("…") or filler_phrase(sentence):
        return False
    try:
        check_language(question, sentence)
    except ActionError:
        return False
    return True


def cite(sentence: str, key: str) -> str:
    """`sentence` with `\\cite{key}` before its end mark: "Heat pumps move heat \\cite{textid3}." """
    m = _END.search(sentence)
    assert m is not None, "is_choosable keeps only sentences with an end mark"
    return f"{sentence[: m.start()].rstrip()} \\cite{{{key}}}{m.group(1)}"


@dataclass(frozen=True)
class Sentence:
    text: str  # verbatim, on one line
    key: str  # the passage it comes from

    @property
    def cited(self) -> str:
        return cite(self.text, self.key)


# First words that point back into the paragraph a sentence came from ("This keeps the compressor cool"):
# lifted out on its own, such a sentence reads as if about something else. English only; other
# languages keep their order.
_LEANS_BACK = frozenset(
    [
        "this",
        "these",
        "that",
        "those",
        "it",
        "its",
        "they",
        "their",
        "them",
        "he",
        "she",
        "his",
        "her",
        "such",
        "so",
        "thus",
        "therefore",
        "hence",
        "however",
        "but",
        "and",
        "also",
        "then",
        "there",
        "here",
    ]
)


def leans_back(sentence: str) -> bool:
    """Whether `sentence` opens with a word that refers to what came before it."""
    first = re.match(r"[\"'“‘(]*([A-Za-z]+)", sentence)
    return bool(first) and first.group(1).casefold() in _LEANS_BACK


def sentence_choices(
    entries: Iterable[Entry], *, question: str, topic: str, used: Iterable[str] = (), limit: int = 16
) -> list[Sentence]:
    """Up to `limit` sentences of `entries` for a section on `topic`: those sharing most words with the
    topic (then with the question), none already `used` in the report; the closest first, so that a
    small model's first choice is a good one."""
    taken = {folded(s) for s in used}
    topic_words, question_words = content_words(topic), content_words(question)
    heading = folded(topic.split(". ")[0])
    found: list[tuple[float, int, Sentence]] = []
    for rank, entry in enumerate(entries):
        # a passage under the section's own heading speaks to it first
        home = 3 if heading and (heading in folded(entry.text) or heading == folded(entry.title)) else 0
        for sentence in split_sentences(entry.text):
            if folded(sentence) in taken or not is_choosable(sentence, question):
                continue
            taken.add(folded(sentence))
            words = content_words(sentence)
            score = 2 * len(words & topic_words) + len(words & question_words) + home - 0.1 * rank
            if leans_back(sentence):  # still offered, after the sentences that stand on their own
                score -= 4
            found.append((score, len(found), Sentence(sentence, entry.key)))
    return [s for _, _, s in sorted(found, key=lambda t: (-t[0], t[1]))[:limit]]


_CITED_ITEM = re.compile(r"(.+?)\s*\\cite\{([^{}]*)\}([.!?。！？]+[\"'”’)]*)\s*")


def check_chosen(
    content: str, entries: dict[str, Entry], *, lead_chars: int = LEAD_CHARS, used: Iterable[str] = ()
) -> list[str]:
    """The sentences of an evidence-mode WRITE, each checked to be a sentence of the passage it cites,
    not used elsewhere in the report and not repeated; one uncited lead of `lead_chars` at most may open
    it. Returns the sentences (without citations); raises ActionError otherwise. Any backend's answer
    passes through here, so a server that ignored the grammar cannot slip free text in."""
    text = one_line(content)
    items = list(_CITED_ITEM.finditer(text))
    lead = text[: items[0].start()].strip() if items else text
    if lead and (len(lead) > lead_chars or len(items) == 0):
        raise ActionError("choose whole sentences from the passages, each followed by its citation")
    if "".join(m.group(0) for m in items).strip() != text[len(lead) :].strip():
        raise ActionError("after the sentences there must be nothing but their citations")
    seen = {folded(s) for s in used}
    out = []
    for m in items:
        sentence = f"{m.group(1).strip()}{m.group(3)}"
        keys = [k.strip() for k in m.group(2).split(",")]
        entry = entries.get(keys[0]) if len(keys) == 1 else None
        if entry is None or sentence not in split_sentences(entry.text):
            raise ActionError(f"not a sentence of the passage it cites: {sentence[:60]!r}")
        if folded(sentence) in seen:
            raise ActionError(f"the sentence {sentence[:60]!r} is already in the report")
        seen.add(folded(sentence))
        out.append(sentence)
    return out


def clean_heading(text: str, *, max_chars: int) -> str | None:
    """A heading as a title: markup and numbering gone; None for what is no title (a file name, no
    letters, too long, filler)."""
    text = one_line(re.sub(r"<[^>]+>|[*_`]|\[([^\]]*)\]\([^)]*\)", r"\1", text))
    text = clean_title(text).strip(" .:;-–—")
    if not text or _FILE_NAME.match(text) or not any(c.isalpha() for c in text):
        return None
    if len(text) > max_chars or any(c in text for c in '<>[]{}\\"') or filler_phrase(text):
        return None
    return text


@dataclass(frozen=True)
class Heading:
    title: str
    plan: str  # the first sentence under the heading, or the document's title


def heading_choices(
    entries: Iterable[Entry],
    *,
    question: str,
    taken: Iterable[str] = (),
    title_chars: int = 80,
    plan_chars: int = 200,
    documents: bool = True,
    topic: str = "",
) -> list[Heading]:
    """Distinct headings in `entries` (Markdown `#` lines and HTML `<hN>`), and with `documents` their
    documents' titles, cleaned, in the question's language, none of `taken`; those sharing most words
    with `topic` (the question when empty) first, then in the order found."""
    found = _headings(entries, question, taken, title_chars, plan_chars, documents)
    words = content_words(topic or question)
    return sorted(found, key=lambda h: -(2 * len(content_words(h.title) & words) + len(content_words(h.plan) & words)))


def _headings(
    entries: Iterable[Entry], question: str, taken: Iterable[str], title_chars: int, plan_chars: int, documents: bool
) -> list[Heading]:
    seen = {folded(t) for t in taken}
    out: list[Heading] = []

    def add(raw: str, plan: str) -> None:
        title = clean_heading(raw, max_chars=title_chars)
        if title is None or folded(title) in seen:
            return
        try:
            check_language(question, title)
        except ActionError:
            return
        seen.add(folded(title))
        out.append(Heading(title, plan))

    for entry in entries:
        document = clean_heading(entry.title, max_chars=title_chars) or ""
        if documents and document:
            add(document, _plan(entry.text, question, plan_chars) or document)
        for m in list(_HEADING.finditer(entry.text)) + list(_HTML_HEADING.finditer(entry.text)):
            plan = _plan(entry.text[m.end() :], question, plan_chars) or document or m.group(1)
            add(m.group(1), plan[:plan_chars])
    return out


def _plan(text: str, question: str, max_chars: int) -> str | None:
    """The first choosable sentence of `text` that fits, as a section's one-line plan."""
    for sentence in split_sentences(text[:1500])[:4]:
        if len(sentence) <= max_chars and is_choosable(sentence, question):
            return sentence
    return None


_CLAUSE = re.compile(r"\s*(?:[,;:?!.]|\band\b|\bor\b|\bwhat\b|\bwhich\b|\bhow\b|\bwhy\b|\bwhen\b)\s*", re.I)
_WEAK_START = re.compile(r"(?i)^(?:do|does|did|is|are|was|were|the|a|an|lets?|they|it|them|well|should|would|can)\b\s*")


def keyword_choices(
    question: str, title: str = "", plan: str = "", *, used: Iterable[str] = (), max_chars: int = 60, limit: int = 6
) -> list[str]:
    """Search phrases to choose from: the section's title, then the title with the question's subject,
    the plan, then the question's clauses; none searched before (`used`), none twice, none longer than
    `max_chars`."""
    clauses = []
    for piece in _CLAUSE.split(question):
        while piece and _WEAK_START.match(piece):
            piece = _WEAK_START.sub("", piece, count=1)
        if len(piece.split()) >= 2:
            clauses.append(piece)
    subject = clauses[0] if clauses else ""
    candidates = [title]
    if title and subject and folded(subject) not in folded(title):
        candidates.append(f"{title} {subject}")
    candidates += [plan.rstrip(".!?"), *clauses, question.rstrip("?")]
    if title:  # the title with each part of the question: fresh phrases when the plain ones were searched
        candidates += [f"{title} {c}" for c in clauses if folded(c) not in folded(title)]
    seen = {folded(u) for u in used}
    out = []
    for phrase in candidates:
        phrase = one_line(phrase)
        if not phrase or len(phrase) > max_chars or folded(phrase) in seen or '"' in phrase or "\\" in phrase:
            continue
        seen.add(folded(phrase))
        out.append(phrase)
    return out[:limit]


def used_sentences(contents: Iterable[str | None]) -> list[str]:
    """The sentences already in the report (from its sections' texts), without citations."""
    out = []
    for content in contents:
        if content:
            out += split_sentences(re.sub(r"\s*\\cite\{[^{}]*\}", "", content))
    return out
