"""The report's own words in its language: the questions appendix follows the References heading it finds
(Chinese and Japanese share 参考文献; kana tell them apart), and a report in a language not in the table
keeps English."""

from __future__ import annotations

from sala_report.app.export.questions import with_appendix
from sala_report.app.report_wording import WORDS, words_for
from sala_report.app.warp.citations import Registry
from sala_report.app.warp.report import render_report
from sala_report.app.warp.state import Outline

APPENDIX = (
    "## Questions and answers\n\n**Q1. Why?**\n\nBecause [2].\n\nSources cited only in these answers:\n\n[2] B — /b"
)


def test_the_appendix_heading_follows_a_chinese_report():
    report = "# 报告\n\n## 1 太阳能\n\n价格下降了 [1]。\n\n## 参考文献\n\n[1] A — /a\n"
    out = with_appendix(report, APPENDIX)
    assert "## 问题与解答" in out and "仅在这些解答中引用的资料：" in out and "Questions and answers" not in out
    assert out.index("## 问题与解答") < out.index("## 参考文献")


def test_a_japanese_report_is_told_from_a_chinese_one_by_its_kana():
    report = "# 報告\n\n## 1 太陽光\n\n価格は下がった [1]。\n\n## 参考文献\n\n[1] A — /a\n"
    assert "## 質問と回答" in with_appendix(report, APPENDIX)


def test_an_english_report_and_one_without_references_keep_english():
    english = "# R\n\n## 1 S\n\nText [1].\n\n## References\n\n[1] A — /a\n"
    assert "## Questions and answers" in with_appendix(english, APPENDIX)
    assert with_appendix("# R\n\n## 1 S\n\nText.\n", APPENDIX).endswith(APPENDIX + "\n")


def test_the_report_words_follow_the_language_by_code_or_name():
    assert words_for("zh") is words_for("Chinese") is words_for("zh-TW") is WORDS["zh"]
    assert words_for("Portuguese (Brazil)") is WORDS["pt"] and words_for("Deutsch") is WORDS["de"]
    assert words_for("") is words_for("Klingon") is words_for("ru") is WORDS["en"]
    outline = Outline("T")
    outline.sections.append(outline.new_node("S", "plan"))
    outline.sections[0].content = "Text \\cite{textid1}."
    registry = Registry()
    registry.add("c1", 1, "A", "/a", "file", "Text.")
    for code, words in WORDS.items():
        assert "{count}" in words.unchecked_note, code
        report = render_report(outline, registry, unchecked=1, language=code)
        assert f"\n## {words.references}\n" in report and words.unchecked_note.format(count=1) in report
