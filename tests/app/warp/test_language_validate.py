"""The validators hold the model to the report's language (issue 15): the one the person asked for with
--language when they gave one, otherwise the question's (the released rule)."""

from __future__ import annotations

import json

import pytest

from sala_report.app.warp.actions import ActionError
from sala_report.app.warp.brief import LANGUAGE_NAMES, Brief
from sala_report.app.warp.validate import (
    Limits,
    check_language,
    validate_extend,
    validate_init_plan,
    validate_write,
    writes_cjk,
)

EN_QUESTION = "How is renewable energy changing electricity?"
ZH_QUESTION = "可再生能源如何改变电力系统？"
ZH_TEXT = "太阳能组件的价格在十年间下降了大约九成，屋顶光伏让家庭可以把多余的电卖回电网 \\cite{textid1}。"
EN_TEXT = "Solar module prices fell by about ninety percent over a decade, so rooftop panels spread \\cite{textid1}."
DE_TEXT = "Die Preise für Solarmodule sind in zehn Jahren um etwa neunzig Prozent gefallen \\cite{textid1}."


@pytest.mark.parametrize(
    "language",
    ["zh", "ZH", "zh-CN", "zh_TW", "ja", "ko", "Chinese", "Simplified Chinese", "Japanese", "中文", "한국어"],
)
def test_cjk_languages_by_code_and_by_name(language):
    assert writes_cjk(language)


@pytest.mark.parametrize("language", ["", "en", "de", "German", "Portuguese (Brazil)", "Arabic", "Hindi", "zhuang"])
def test_other_languages_are_not_cjk(language):
    assert not writes_cjk(language)


def test_every_listed_code_and_its_name_agree():
    for code, name in LANGUAGE_NAMES.items():
        assert writes_cjk(code) == writes_cjk(name) == (name in ("Chinese", "Japanese", "Korean")), code


@pytest.mark.parametrize(
    ("question", "language", "text", "ok"),
    [
        (EN_QUESTION, "", EN_TEXT, True),  # the released rule, unchanged without a language
        (EN_QUESTION, "", ZH_TEXT, False),
        (ZH_QUESTION, "", ZH_TEXT, True),
        (ZH_QUESTION, "", EN_TEXT, False),
        (EN_QUESTION, "Chinese", ZH_TEXT, True),  # --language zh over an English question
        (EN_QUESTION, "Chinese", EN_TEXT, False),
        (EN_QUESTION, "zh-TW", ZH_TEXT, True),
        (ZH_QUESTION, "English", EN_TEXT, True),  # --language en over a Chinese question
        (ZH_QUESTION, "English", ZH_TEXT, False),
        (ZH_QUESTION, "German", DE_TEXT, True),
        (EN_QUESTION, "German", ZH_TEXT, False),
    ],
)
def test_the_report_language_decides(question, language, text, ok):
    if ok:
        check_language(question, text, language)
    else:
        with pytest.raises(ActionError, match="write in"):
            check_language(question, text, language)


def test_the_message_names_the_language_asked_for():
    with pytest.raises(ActionError, match="write in Chinese, the language the report was asked for"):
        check_language(EN_QUESTION, EN_TEXT, Brief(language="zh").language_name)


def test_a_write_in_the_language_asked_for_is_accepted_over_an_english_question():
    action = validate_write(ZH_TEXT, Limits(), EN_QUESTION, {"textid1"}, language="Chinese")
    assert action.content == ZH_TEXT.strip()
    with pytest.raises(ActionError):
        validate_write(EN_TEXT, Limits(), EN_QUESTION, {"textid1"}, language="Chinese")


ZH_SECTIONS = [{"title": "太阳能发电", "plan": "太阳能发电如何增长"}, {"title": "储能", "plan": "电池如何平衡供需"}]
EN_SECTIONS = [{"title": "Solar power", "plan": "How solar grew"}, {"title": "Storage", "plan": "How batteries help"}]
ZH_POLICY = {"title": "能源政策", "plan": "哪些政策起了作用"}
EN_POLICY = {"title": "Policy", "plan": "Which policies helped"}


def plan(sections: list[dict]) -> str:
    return json.dumps({"name": "init-plan", "title": "可再生能源", "sections": sections}, ensure_ascii=False)


def test_section_titles_are_held_to_the_report_language():
    chosen = validate_init_plan(plan([*ZH_SECTIONS, ZH_POLICY]), Limits(), EN_QUESTION, language="zh")
    assert [s.title for s in chosen.sections] == ["太阳能发电", "储能", "能源政策"]
    with pytest.raises(ActionError, match="write in zh"):
        validate_init_plan(plan([*EN_SECTIONS, EN_POLICY]), Limits(), EN_QUESTION, language="zh")
    with pytest.raises(ActionError, match="language of the question"):
        validate_init_plan(plan([*ZH_SECTIONS, ZH_POLICY]), Limits(), EN_QUESTION)


def test_subsection_titles_are_held_to_the_report_language():
    def extend(sections) -> str:
        return json.dumps({"name": "extend-plan", "position": "section-1", "subsections": sections}, ensure_ascii=False)

    chosen = validate_extend(extend(ZH_SECTIONS), Limits(), EN_QUESTION, ["section-1"], language="Chinese")
    assert [s.title for s in chosen.subsections] == ["太阳能发电", "储能"]
    with pytest.raises(ActionError, match="write in Chinese"):
        validate_extend(extend(EN_SECTIONS), Limits(), EN_QUESTION, ["section-1"], language="Chinese")
    validate_extend(extend(EN_SECTIONS), Limits(), ZH_QUESTION, ["section-1"], language="English")
