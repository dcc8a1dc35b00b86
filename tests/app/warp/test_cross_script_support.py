"""Citation support across scripts (a report written in Chinese, Japanese or Korean over English sources):
shared words mean nothing there, so numbers (any script) and names kept in Latin letters are compared; a
citation with nothing comparable is "unchecked", neither weak nor verified. Values below are worked out by
hand from the numerals, not read back from the code."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sala_report.app.warp.citations import CitationCheck, Registry, check_support, rechecked, support
from sala_report.app.warp.comparable import quantities, script
from sala_report.app.warp.report import WEAK_MARK, render_report, weak_pairs, weak_sections
from sala_report.app.warp.state import Outline

SOLAR = "Solar module prices fell by about ninety percent between 2010 and 2020, to 0.2 dollars per watt."
IEA = "The IEA expects lithium-ion battery storage to reach 1.5 million tonnes a year."


def registry(*texts: str) -> Registry:
    reg = Registry()
    for i, text in enumerate(texts, 1):
        reg.add(f"c{i}", i, f"Source {i}", f"/docs/{i}.md", "file", text)
    return reg


def one(sentence: str, passage: str, threshold: float = 0.25) -> CitationCheck:
    (check,) = check_support(sentence + " \\cite{textid1}", registry(passage), threshold)
    return check


@pytest.mark.parametrize(
    "sentence",
    [
        "太阳能组件价格在2010年至2020年间下降了约90%。",  # digits
        "太阳能组件价格在２０１０年至２０２０年间下降了约９０％。",  # full-width digits
        "太阳能组件价格在二〇一〇年至二〇二〇年间下降了百分之九十。",  # Chinese numerals
        "太陽光モジュールの価格は2010年から2020年にかけて約90%下落した。",  # Japanese
        "태양광 모듈 가격은 2010년부터 2020년까지 약 90% 하락했다.",  # Korean
    ],
)
def test_a_sentence_in_another_script_with_the_passages_numbers_is_supported(sentence):
    check = one(sentence, SOLAR)
    assert (check.weak, check.unchecked, check.score) == (False, False, 1.0)


@pytest.mark.parametrize(
    ("sentence", "passage", "score"),
    [
        ("太阳能组件价格在2010年至2020年间下降了约50%。", SOLAR, 2 / 3),  # the years are the passage's, 50 not
        ("太阳能组件价格下降了约50%。", SOLAR, 0.0),
        ("太阳能组件价格在1990年下降了百分之五十。", SOLAR, 0.0),
        ("到2030年，储能规模将达到300万吨。", IEA, 0.0),  # 3 million is not 1.5 million
    ],
)
def test_a_number_the_passage_does_not_have_weakens_the_citation(sentence, passage, score):
    check = one(sentence, passage)
    assert check.score == pytest.approx(score, abs=1e-3) and check.unchecked is False
    assert check.weak is (score < 0.25)


def test_names_and_units_kept_in_latin_letters_are_compared():
    assert one("IEA预计储能将增长。", IEA).score == 1.0  # "IEA" is in the passage
    assert one("IRENA预计储能将增长。", IEA).weak  # a name the passage does not have
    check = one("据IEA预测，Lithium-ion电池储能每年将达到150万吨。", IEA)  # 150万 = 1.5 million
    assert (check.weak, check.unchecked, check.score) == (False, False, 1.0)


def test_a_sentence_with_nothing_comparable_is_unchecked_not_weak():
    check = one("这一领域近年来发展迅速，成本和规模都发生了明显的变化。", SOLAR)
    assert (check.weak, check.unchecked) == (False, True)
    # an English sentence citing a Chinese passage: the same, the other way round
    check = one("The field has changed quickly.", "这一领域近年来发展迅速。")
    assert (check.weak, check.unchecked) == (False, True)


def test_the_same_script_is_judged_by_shared_words_as_before():
    assert support("Module prices fell sharply", "Prices of modules fell by ninety percent").score == 0.75
    assert support("太阳能成本下降", "太阳能电池的成本下降了").checked
    check = one("Penguins migrate far.", SOLAR)  # no shared word: weak, never unchecked
    assert (check.weak, check.unchecked) == (True, False)
    assert script("Prix du module: 90 %") == "LATIN" and script("價格") == "CJK" and script("2020") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("二〇二〇年", [2020]),
        ("三千万人", [30_000_000]),
        ("一百零五", [105]),
        ("两亿五千万", [250_000_000]),
        ("百分之九十", [90]),
        ("3千万", [30_000_000]),
        ("１２．５％", [Decimal("12.5")]),
        ("3만 명", [30_000]),
        ("1,500,000 or 1.5 million", [1_500_000, 1_500_000]),
        ("twenty-five and two hundred", [25, 200]),
        # words, not quantities: 一些 (some), 统一 (unify), 万一 (in case), 第一 (first), 十一五 (a plan's name)
        ("一些统一的标准，万一失败，第一，十一五", []),
        ("one of the largest", []),
        ("1. 第一点", []),  # a list item's own number
    ],
)
def test_numbers_in_every_script_read_as_written(text, expected):
    assert sorted(q.value for q in quantities(text)) == sorted(Decimal(v) for v in expected)


def test_a_figure_matches_the_passages_at_the_precision_it_is_written_with():
    (ninety,) = quantities("90%")
    assert ninety.found_in({Decimal("89.7")}) and not ninety.found_in({Decimal("89.4")})
    (year,) = quantities("2020年")
    assert not year.found_in({Decimal(2019)})  # a year is exact
    (tonnes,) = quantities("150万吨")  # to the nearest 10,000
    assert tonnes.found_in({Decimal(1_496_000)}) and not tonnes.found_in({Decimal(1_482_000)})
    (million,) = quantities("1.5 million")  # to the nearest 100,000
    assert million.found_in({Decimal(1_482_000)}) and not million.found_in({Decimal(1_420_000)})


def test_a_stored_check_gets_its_unchecked_state_back():
    """The store keeps key, sentence, score and weak; the unchecked state is judged again from the sentence
    and the passage, and only for checks that were not weak."""
    reg = registry(SOLAR)
    stored = CitationCheck("textid1", "这一领域发展迅速。", 0.0, False)
    assert rechecked(stored, reg).unchecked
    weak = CitationCheck("textid1", "价格下降了约50%。", 0.0, True)
    assert rechecked(weak, reg) == weak
    same_script = CitationCheck("textid1", "Prices fell.", 0.5, False)
    assert rechecked(same_script, reg) == same_script


def outline_with(content: str) -> Outline:
    outline = Outline("报告")
    outline.sections.append(outline.new_node("太阳能", "plan"))
    outline.sections[0].content = content
    return outline


def test_unchecked_citations_are_neither_flagged_nor_a_weak_section_and_the_report_says_so():
    reg = registry(SOLAR)
    content = "这一领域发展迅速 \\cite{textid1}。规模也扩大了 \\cite{textid1}。价格下降了约50% \\cite{textid1}。"
    outline = outline_with(content)
    checks = [(outline.sections[0].id, c) for c in check_support(content, reg, 0.25)]
    assert [(c.weak, c.unchecked) for _, c in checks] == [(False, True), (False, True), (True, False)]
    # one checked citation, and it is weak: the section is weak ("1 of 1"), the unchecked count neither way
    assert weak_sections(outline, checks, {outline.sections[0].id: "1"})[0]["reasons"] == [
        "1 of 1 citations weakly supported"
    ]
    markdown = render_report(outline, reg, weak=weak_pairs(checks), unchecked=2, language="zh")
    assert markdown.count(WEAK_MARK) == 2  # the weak sentence's mark and the note's, nothing on the others
    assert "*未能与所引段落核对的引用：2 处（" in markdown and "\n## 参考文献\n" in markdown
    only_unchecked = outline_with(content.rsplit("价格", 1)[0])
    checks = [(only_unchecked.sections[0].id, c) for c in check_support(only_unchecked.sections[0].content, reg, 0.25)]
    assert weak_sections(only_unchecked, checks, {only_unchecked.sections[0].id: "1"}) == []
