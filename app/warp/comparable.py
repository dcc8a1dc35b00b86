"""What a cited sentence and its passage still share when they are written in different scripts (a Chinese
report over English sources): numbers, whatever their script, and words kept in the other script (names, terms,
units). Word overlap cannot judge such a citation; these can (citations.support uses them)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Set
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

# Han and Kana share characters (Japanese and Chinese text compare by character bigrams), so they are one.
_SCRIPT_ALIASES = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK"}


def char_script(char: str) -> str | None:
    """The script of a letter: its Unicode name's first word ("LATIN", "CJK", "HANGUL"...); None for a non-letter."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if not name:
        return None
    first = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(first, first)


@lru_cache(maxsize=4096)  # a passage is judged once per sentence that cites it
def script(text: str) -> str | None:
    """The script most of `text`'s letters are written in (after NFKC: full-width Latin is Latin); None
    when it has no letters."""
    counts = Counter(s for s in map(char_script, unicodedata.normalize("NFKC", text)) if s)
    return counts.most_common(1)[0][0] if counts else None


@dataclass(frozen=True)
class Quantity:
    """A number as written: `value` after its scale word ("3 million", "300万"), `mantissa` before it, and
    `quantum`, the step its written precision implies ("90" is 90 ± 0.5; "1.5 million" is ± 50,000)."""

    value: Decimal
    mantissa: Decimal
    quantum: Decimal

    def found_in(self, values: Set[Decimal]) -> bool:
        """Whether a number of the passage is this one, as written (rounded the way the claim is, or the bare
        figure: "3千瓦" is "3 kW")."""
        return any(abs(self.value - v) <= self.quantum / 2 or v == self.mantissa for v in values)


_SCALES = {
    "thousand": 10**3,
    "million": 10**6,
    "billion": 10**9,
    "trillion": 10**12,
    "bn": 10**9,
    "千": 10**3,
    "十万": 10**5,
    "百万": 10**6,
    "千万": 10**7,
    "十亿": 10**9,
    "百亿": 10**10,
    "千亿": 10**11,
    "万": 10**4,
    "萬": 10**4,
    "亿": 10**8,
    "億": 10**8,
    "兆": 10**12,
    "천": 10**3,
    "만": 10**4,
    "억": 10**8,
    "조": 10**12,
}
_DIGITS = re.compile(
    r"(?<![\d.])(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?"
    r"(?:\s*((?:thousand|million|billion|trillion|bn)\b|[十百千][万萬亿億]|[千万萬亿億兆천만억조]))?",
    re.I,
)
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")

_CJK_DIGIT = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7}
_CJK_DIGIT |= {"八": 8, "九": 9}
_CJK_UNIT = {"十": 10, "百": 100, "千": 1000}
_CJK_MYRIAD = {"万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}
_CJK_RUN = re.compile(r"(?<![\d.])(百分之)?([〇零一二两兩三四五六七八九十百千万萬亿億]+)")

_WORD_UNITS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_WORD_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70}
_WORD_TENS |= {"eighty": 80, "ninety": 90}
# "ninety", "twenty-five", "two hundred", "three million"; a lone "one" is mostly not a quantity ("one of")
_NUMBER_WORDS = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_WORD_TENS) + r")(?:[- ](?P<ones>" + "|".join(list(_WORD_UNITS)[:8]) + r"|one))?"
    r"|(?P<unit>" + "|".join(_WORD_UNITS) + r")|(?P<one>one|a)(?=\s+(?:hundred|thousand|million|billion)\b))"
    r"(?:\s+(?P<hundred>hundred))?(?:\s+(?P<scale>thousand|million|billion|trillion))?\b",
    re.I,
)


def quantities(text: str) -> list[Quantity]:
    """Every number in `text`: digits (full-width ones too), Chinese and Japanese numerals, English number
    words. Numbers in running text only: a list item's own marker is not one."""
    text = _LIST_MARK.sub("", unicodedata.normalize("NFKC", text))
    found = [_digits(m) for m in _DIGITS.finditer(text)]
    found += [q for m in _CJK_RUN.finditer(text) if (q := _cjk(m.group(2), percent=bool(m.group(1))))]
    found += [q for m in _NUMBER_WORDS.finditer(text) if (q := _words(m))]
    return found


def _digits(m: re.Match) -> Quantity:
    whole, fraction, scale = m.group(1).replace(",", ""), m.group(2) or "", (m.group(3) or "").lower()
    mantissa = Decimal(whole + fraction)
    factor = Decimal(_SCALES.get(scale, 1))
    step = Decimal(1).scaleb(-len(fraction[1:])) if fraction else Decimal(1)
    return Quantity(mantissa * factor, mantissa, step * factor)


def _cjk(run: str, *, percent: bool) -> Quantity | None:
    """二〇二〇 → 2020, 九十 → 90, 三千万 → 30,000,000. Single numerals (一 in 一些, 统一) are words, not
    quantities, except after 百分之 (percent); so is a run that opens with 万 or 亿 (万一: 'in case')."""
    if (len(run) < 2 and not percent) or run[0] in _CJK_MYRIAD:
        return None
    if all(c in _CJK_DIGIT for c in run):  # digit by digit: a year
        if len(run) < 3 and not percent:
            return None
        value = int("".join(str(_CJK_DIGIT[c]) for c in run))
    else:
        value = _cjk_positional(run)
        if value is None:
            return None
    return Quantity(Decimal(value), Decimal(value), Decimal(1))


def _cjk_positional(run: str) -> int | None:
    total, section, digit = 0, 0, None
    for c in run:
        if c in ("零", "〇"):  # 一百零五: a gap, not a digit
            continue
        if c in _CJK_DIGIT:
            if digit is not None:
                return None  # two digits in a row in a positional numeral: not a number (十一五)
            digit = _CJK_DIGIT[c]
        elif c in _CJK_UNIT:
            section += (1 if digit is None else digit) * _CJK_UNIT[c]
            digit = None
        else:
            section += digit or 0
            if section == 0:
                return None
            total, section, digit = total + section * _CJK_MYRIAD[c], 0, None
    return total + section + (digit or 0)


def _words(m: re.Match) -> Quantity | None:
    lower = {k: (v or "").lower() for k, v in m.groupdict().items()}
    if lower["tens"]:
        value = _WORD_TENS[lower["tens"]] + (1 if lower["ones"] == "one" else _WORD_UNITS.get(lower["ones"], 0))
    elif lower["unit"]:
        value = _WORD_UNITS[lower["unit"]]
    else:
        value = 1
    if lower["hundred"]:
        value *= 100
    if lower["one"] and not (lower["hundred"] or lower["scale"]):
        return None
    mantissa = Decimal(value)
    factor = Decimal(_SCALES.get(lower["scale"], 1))
    return Quantity(mantissa * factor, mantissa, factor)


@lru_cache(maxsize=4096)  # a passage's, once per sentence that cites it
def values(text: str) -> frozenset[Decimal]:
    """The values of every number in `text`, as scaled ("3 million") and as written ("3")."""
    return frozenset(v for q in quantities(text) for v in (q.value, q.mantissa))


def foreign_words(text: str, own: str) -> str:
    """The words of `text` not written in its own script `own`: the names and terms a Chinese sentence keeps
    in Latin letters ("Lithium-ion", "IEA"), which its English source then spells the same way. Split by
    script, since no space need separate them ("采用Lithium-ion电池")."""
    words, run, run_script = [], [], None
    for char in unicodedata.normalize("NFKC", text) + " ":
        this = char_script(char)
        if this != run_script or this is None:
            if run and run_script not in (own, None):
                words.append("".join(run))
            run, run_script = [], this
        if this is not None:
            run.append(char)
    return " ".join(words)
