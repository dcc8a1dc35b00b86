"""Validators for each action (warp.md §1.4, "hard mode" when `Limits.hard`), returning typed actions.

Every rejection raises ActionError with a message written for the model: it is fed back on the retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sala_report.app.warp.actions import (
    ActionError,
    ExtendPlan,
    InitPlan,
    Nop,
    PlanSection,
    SearchAction,
    WriteAction,
)
from sala_report.app.warp.citations import citation_count, drop_marks, drop_unknown, strip_cites
from sala_report.app.warp.filler import filler_phrase


@dataclass(frozen=True)
class Limits:
    """Counts and lengths the validators and the grammars share (warp.md §1.8)."""

    hard: bool = True
    max_keywords: int = 5
    min_sections: int = 3
    max_sections: int = 12
    min_subsections: int = 2
    max_subsections: int = 7
    min_chars: int = 50  # a written section is longer than this
    min_citations: int = 1
    max_citations: int = 12
    keyword_chars: int = 80
    title_chars: int = 120
    plan_chars: int = 300
    thought_chars: int = 600


def load_json(action: str) -> dict[str, Any]:
    text = action.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)
    if fenced:
        text = fenced.group(1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ActionError(f"the action is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise ActionError(f"the action must be a JSON object, got {type(value).__name__}")
    return value


def _keys(obj: dict[str, Any], expected: Iterable[str], name: str) -> None:
    expected = set(expected)
    if set(obj) != expected:
        missing, extra = sorted(expected - set(obj)), sorted(set(obj) - expected)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise ActionError(f'a "{name}" action has exactly the keys {", ".join(sorted(expected))}; ' + "; ".join(parts))


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"{what} must be a non-empty string")
    return " ".join(value.split())


# A number of four digits or more is a year or a quantity, not numbering ("2024 heat pump sales").
_NUMBERING = re.compile(
    r"^\s*(?:section[-\s]*)?(?:\d{1,3}(?:\.\d+)*[.):]?(?!\d)|[ivxlc]+[.)]|第[一二三四五六七八九十百\d]+[章节部分])\s*",
    re.I,
)


_KEY = re.compile(r"(?i)textid\d*")


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def without_keys(title: str) -> str:
    """`title` without citation keys ("textid3"), which small models copy from the evidence into headings
    (the grammar keeps out brackets, so never a whole citation); unchanged if nothing but keys is left."""
    kept = " ".join(_KEY.sub(" ", title).split())
    return kept if _has_word(kept) else title


def clean_title(title: str) -> str:
    """Drop citation keys, and numbering the model added ("Section-2", "1.2.", "II.", "第一章"); headings are
    numbered when rendered. Numbering stays if nothing else names the topic ("2 ,")."""
    keyless = without_keys(title)
    cleaned = _NUMBERING.sub("", keyless, count=1).strip(" :-–—")
    return cleaned if _has_word(cleaned) else keyless.strip()


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_IGNORED = re.compile(r"\\cite\{[^{}]*\}|[\s!-/:-@\[-`{-~]|\d")


# Languages written in CJK script, by code ("zh", "zh-TW", "ja_JP") or English name ("Simplified Chinese").
_CJK_CODES = frozenset({"zh", "ja", "ko"})
_CJK_NAMES = re.compile(r"(?i)\b(?:chinese|japanese|korean|mandarin|cantonese)\b")


def writes_cjk(language: str) -> bool:
    """Whether the report language the person asked for (Brief.language: a code, an English name, or the
    name in its own script such as "中文") is written in Chinese, Japanese or Korean script."""
    name = language.strip()
    code = re.split(r"[-_\s]", name.casefold(), maxsplit=1)[0]
    return code in _CJK_CODES or bool(_CJK_NAMES.search(name) or _CJK.search(name))


def check_language(question: str, text: str, language: str = "") -> None:
    """The released rule, applied to the report's language: a report in CJK wants > 60% CJK letters; any
    other, < 1%. `language` is the one the person asked for (Brief.language or its name); when empty, the
    question's script decides, as released (a question with CJK wants a CJK report)."""
    letters = _IGNORED.sub("", text)
    if not letters:
        return
    share = len(_CJK.findall(letters)) / len(letters)
    language = language.strip()
    if language:
        cjk, wanted = writes_cjk(language), f"write in {language}, the language the report was asked for"
    else:
        cjk, wanted = bool(_CJK.search(question)), "write in the language of the question"
    if cjk and share <= 0.6:
        raise ActionError(wanted)
    if not cjk and share >= 0.01:
        raise ActionError(f"{wanted}; do not switch to Chinese, Japanese or Korean")


# Titles a model copied from a prompt's answer format or filled with citation marks, rather than wrote.
_TEMPLATE_TITLE = re.compile(r"(?i)(?:(?:the|report|section|subsection|your)\s+)*(?:title|heading)(?:\s+here)?")


def check_title(title: str, what: str) -> None:
    """A heading: words naming a topic, not citation marks or the answer format's wording. The grammar
    keeps out brackets and braces and makes titles start with a letter or digit; `clean_title` drops
    citation keys, so one is left only in a title made of nothing else."""
    if any(c in title for c in "[]{}\\<>") or _KEY.search(title):
        raise ActionError(f"{what} must be plain words, without brackets, braces, backslashes or citations: {title!r}")
    if _TEMPLATE_TITLE.fullmatch(title.strip(" .:…")) or not _has_word(title):
        raise ActionError(f"{what} must name its topic in words of your own, got {title!r}")


def _distinct(titles: Iterable[str], what: str, taken: Iterable[str] = ()) -> None:
    seen = {_folded(t) for t in taken}
    for title in titles:
        if _folded(title) in seen:
            raise ActionError(
                f"every title in {what} must be different from the others and from existing sections; "
                f"{title!r} repeats one"
            )
        seen.add(_folded(title))


def _folded(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def _sections(
    value: Any,
    what: str,
    low: int,
    high: int,
    limits: Limits,
    question: str,
    taken: Iterable[str] = (),
    language: str = "",
) -> tuple[PlanSection, ...]:
    if not isinstance(value, list) or not value:
        raise ActionError(f"{what} must be a non-empty list of {{title, plan}} objects")
    if limits.hard and not low <= len(value) <= high:
        raise ActionError(f"{what} must have {low} to {high} entries, got {len(value)}")
    out = []
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise ActionError(f"entry {i} of {what} must be an object with title and plan")
        _keys(item, ("title", "plan"), f"{what} entry")
        out.append(
            PlanSection(
                clean_title(_text(item["title"], f"the title of entry {i}")),
                _text(item["plan"], f"the plan of entry {i}"),
            )
        )
    for i, section in enumerate(out, 1):
        check_filler(f"{section.title}. {section.plan}", f"entry {i} of {what}")
    if limits.hard:
        for i, section in enumerate(out, 1):
            check_title(section.title, f"the title of entry {i} of {what}")
        _distinct((s.title for s in out), what, taken)
        check_language(question, " ".join(f"{s.title} {s.plan}" for s in out), language)
    return tuple(out)


def validate_search(action: str, limits: Limits) -> SearchAction:
    obj = load_json(action)
    if obj.get("name") != "search":
        raise ActionError(f'expected name "search", got {obj.get("name")!r}')
    _keys(obj, ("name", "keywords"), "search")
    words = obj["keywords"]
    if not isinstance(words, list) or not words:
        raise ActionError("keywords must be a non-empty list of strings")
    keywords = tuple(dict.fromkeys(_text(w, "every keyword") for w in words))
    if limits.hard and len(keywords) > limits.max_keywords:
        raise ActionError(f"give at most {limits.max_keywords} keywords, got {len(keywords)}")
    return SearchAction(keywords)


def validate_init_plan(action: str, limits: Limits, question: str, *, language: str = "") -> InitPlan:
    """`language`: the report language the person asked for (check_language); "" for the question's."""
    obj = load_json(action)
    if obj.get("name") != "init-plan":
        raise ActionError(f'expected name "init-plan", got {obj.get("name")!r}')
    _keys(obj, ("name", "title", "sections"), "init-plan")
    title = clean_title(_text(obj["title"], "title"))
    check_filler(title, "the report's title")
    if limits.hard:
        check_title(title, "the report's title")
    sections = _sections(
        obj["sections"], "sections", limits.min_sections, limits.max_sections, limits, question, language=language
    )
    return InitPlan(title, sections)


def validate_extend(
    action: str,
    limits: Limits,
    question: str,
    positions: Iterable[str],
    *,
    allow_nop: bool = True,
    taken: Iterable[str] = (),
    language: str = "",
) -> ExtendPlan | Nop:
    """`positions` are the nodes that may be expanded now (depth below the cap, no children, not locked);
    `taken`: the titles of the sections already in the outline, which new subsections must not repeat;
    `language`: the report language the person asked for (check_language), "" for the question's."""
    obj = load_json(action)
    name = obj.get("name")
    if name == "nop":
        _keys(obj, ("name",), "nop")
        if not allow_nop:
            raise ActionError("the person asked for a section to be expanded; answer with extend-plan")
        return Nop()
    if name != "extend-plan":
        raise ActionError(f'expected name "extend-plan" or "nop", got {name!r}')
    _keys(obj, ("name", "position", "subsections"), "extend-plan")
    position = _text(obj["position"], "position").lower()
    if not re.fullmatch(r"section-\d+(\.\d+)?", position):
        raise ActionError(f'position must look like "section-2" or "section-2.1", got {obj["position"]!r}')
    allowed = list(positions)
    if position not in allowed:
        raise ActionError(
            f"{position} cannot be expanded (it has subsections, is locked, is too deep or does "
            f"not exist); choose one of: {', '.join(allowed) or 'none'}"
        )
    subsections = _sections(
        obj["subsections"],
        "subsections",
        limits.min_subsections,
        limits.max_subsections,
        limits,
        question,
        taken,
        language,
    )
    return ExtendPlan(position, subsections)


def validate_write(
    action: str, limits: Limits, question: str, known_keys, *, require_citation: bool = True, language: str = ""
) -> WriteAction:
    """The action block is the section's Markdown. Citations to keys not in `known_keys` (the passages in
    this prompt) and bare `[n]` marks are removed first (and counted); the counts below apply to what remains.
    `language`: the report language the person asked for (check_language), "" for the question's."""
    text, removed = drop_unknown(action.strip(), known_keys)
    text, marks = drop_marks(text)
    removed += marks
    text = text.strip()
    check_filler(text, "the section")
    if limits.hard:
        if "#" in text:
            raise ActionError("write the section's text only: no headings and no '#' characters")
        if "bibkey" in text.lower():
            raise ActionError("cite with \\cite{textidN}, not with 'bibkey'")
        if len(text) <= limits.min_chars:
            raise ActionError(f"the section is too short ({len(text)} characters); write more than {limits.min_chars}")
        check_language(question, text, language)
        check_repeats(text)
        count = citation_count(text)
        if count > limits.max_citations:
            raise ActionError(f"use at most {limits.max_citations} citations, got {count}")
        if require_citation and count < limits.min_citations:
            extra = f" (removed {', '.join(removed)}: not among the passages)" if removed else ""
            raise ActionError(f"cite the passages you use with \\cite{{textidN}}{extra}")
    elif not text:
        raise ActionError("the section is empty")
    return WriteAction(text, tuple(removed))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")


def check_repeats(text: str) -> None:
    """The same sentence (of four words or more, or twelve characters of CJK) may not appear twice."""
    seen: set[str] = set()
    for sentence in _SENTENCE_END.split(strip_cites(text)):
        folded = _folded(sentence)
        if len(folded.split()) < 4 and not (_CJK.search(folded) and len(folded) >= 12):
            continue
        if folded in seen:
            words = sentence.split()
            start = " ".join(words[:8]) + (" …" if len(words) > 8 else "")
            raise ActionError(f'say each thing once: the sentence "{start}" appears more than once')
        seen.add(folded)


def check_filler(text: str, what: str) -> None:
    """No chatter about the task (filler.py), whatever the mode: it would reach the report."""
    phrase = filler_phrase(strip_cites(text))
    if phrase is not None:
        raise ActionError(f"{what} must hold only content, no talk about the task such as {phrase!r}")
