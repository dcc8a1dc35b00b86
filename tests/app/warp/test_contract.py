"""The pure pieces: parsing the answer, validators, the citation registry and checks, prompt fitting,
and the report's Markdown."""

from __future__ import annotations

import pytest

from sala_report.app.warp.actions import ActionError, Nop, parse_response
from sala_report.app.warp.citations import (
    Registry,
    check_support,
    cited_keys,
    cited_sentences,
    drop_unknown,
    render_cites,
    support_score,
)
from sala_report.app.warp.prompts import PromptTooLong, draft_text, evidence_text, fit
from sala_report.app.warp.report import render_report
from sala_report.app.warp.state import Node, Outline
from sala_report.app.warp.validate import (
    Limits,
    check_language,
    clean_title,
    validate_extend,
    validate_init_plan,
    validate_search,
    validate_write,
)

EN = "How did solar power change electricity markets?"
ZH = "太阳能如何改变电力市场？"


def test_parse_response_takes_the_first_blocks_and_tolerates_think_and_no_thought():
    r = parse_response("<think>hidden</think><thought> a </thought>\n<action>{}</action><action>second</action>")
    assert (r.thought, r.action) == ("a", "{}")
    assert parse_response("<action>text only</action>").thought is None
    assert parse_response("<thought>x</thought><action>cut off by the limit").action == "cut off by the limit"
    with pytest.raises(ActionError, match="no <action>"):
        parse_response("<thought>only thinking</thought>")


def test_search_validator():
    assert validate_search(
        '```json\n{"name": "search", "keywords": [" solar  power ", "solar power"]}\n```', Limits()
    ).keywords == ("solar power",)
    soft = Limits(hard=False)
    assert len(validate_search('{"name": "search", "keywords": ["a","b","c","d","e","f"]}', soft).keywords) == 6
    for bad, message in [
        ('{"name": "search", "keywords": "solar"}', "non-empty list"),
        ('{"name": "search", "keywords": [""]}', "non-empty string"),
        ("[1]", "JSON object"),
        ('{"name": "search"', "not valid JSON"),
    ]:
        with pytest.raises(ActionError, match=message):
            validate_search(bad, Limits())


def test_init_plan_validator_cleans_numbering_and_checks_language():
    plan = validate_init_plan(
        '{"name": "init-plan", "title": "太阳能", "sections": [{"title": "Section-1: 成本", "plan": "价格"},'
        '{"title": "2. 政策", "plan": "补贴"}, {"title": "第三章 市场", "plan": "需求"}]}',
        Limits(),
        ZH,
    )
    assert [s.title for s in plan.sections] == ["成本", "政策", "市场"]
    with pytest.raises(ActionError, match="language of the question"):
        validate_init_plan(
            '{"name": "init-plan", "title": "T", "sections": [{"title": "成本", "plan": "价格"},'
            '{"title": "政策", "plan": "补贴"}, {"title": "市场", "plan": "需求"}]}',
            Limits(),
            EN,
        )
    with pytest.raises(ActionError, match="exactly the keys"):
        validate_init_plan(
            '{"name": "init-plan", "title": "T", "sections": [{"title": "a"}, {"title": "b"}, {"title": "c"}]}',
            Limits(),
            EN,
        )


def test_extend_validator():
    sub = '[{"title": "A", "plan": "a"}, {"title": "B", "plan": "b"}]'
    assert (
        validate_extend(
            f'{{"name": "extend-plan", "position": "Section-2", "subsections": {sub}}}', Limits(), EN, ["section-2"]
        ).position
        == "section-2"
    )
    assert validate_extend('{"name": "nop"}', Limits(), EN, []) == Nop()
    with pytest.raises(ActionError, match="asked for a section"):
        validate_extend('{"name": "nop"}', Limits(), EN, ["section-1"], allow_nop=False)
    with pytest.raises(ActionError, match="look like"):
        validate_extend(
            f'{{"name": "extend-plan", "position": "section-1.2.3", "subsections": {sub}}}', Limits(), EN, []
        )
    with pytest.raises(ActionError, match="2 to 7"):
        validate_extend(
            '{"name": "extend-plan", "position": "section-1", "subsections": [{"title": "A", "plan": "a"}]}',
            Limits(),
            EN,
            ["section-1"],
        )


def test_write_validator():
    known = {"textid1", "textid2"}
    body = "Module prices fell by about ninety percent over a decade of growth"
    assert validate_write(f"{body} \\cite{{textid1}}.", Limits(), EN, known).removed == ()
    assert validate_write(f"{body} \\cite{{textid1,textid9}}.", Limits(), EN, known).content.endswith(
        "\\cite{textid1}."
    )
    for text, message in [
        (f"# {body} \\cite{{textid1}}", "no headings"),
        (f"{body} bibkey:textid1", "bibkey"),
        ("Short \\cite{textid1}.", "too short"),
        (body + " \\cite{textid1}" * 13, "at most 12"),
        (body + ".", "cite the passages"),
        (f"{body} 太阳能电池板 \\cite{{textid1}}", "Chinese"),
    ]:
        with pytest.raises(ActionError, match=message):
            validate_write(text, Limits(), EN, known)
    assert validate_write(body + ".", Limits(), EN, known, require_citation=False).content == body + "."


def test_language_check_follows_the_question():
    check_language(ZH, "太阳能发电的成本在十年内下降了很多 \\cite{textid1}。")
    with pytest.raises(ActionError):
        check_language(ZH, "Solar costs fell a lot.")
    assert (
        clean_title("1.2. Costs") == "Costs"
        and clean_title("IV) Markets") == "Markets"
        and clean_title("2024") == "2024"
    )


def test_registry_keeps_one_key_per_passage():
    reg = Registry()
    a, new_a = reg.add("c1", 1, "T", "/a", "file", "Solar power grew.")
    b, new_b = reg.add("c2", 1, "T", "/a", "file", "Solar   power grew.")  # same text, other chunk id
    c, _ = reg.add("c3", 2, "U", "/b", "file", "Wind power grew.")
    assert (a.key, new_a, b.key, new_b, c.key) == ("textid1", True, "textid1", False, "textid2")
    assert Registry(list(reg.entries.values())).add("c4", 3, "V", "/c", "web", "x")[0].key == "textid3"


def test_citation_helpers():
    text = "Prices fell \\cite{textid2, textid1}. Demand rose.\n\\cite{textid3} Wind grew \\cite{textid3}."
    assert cited_keys(text) == ["textid2", "textid1", "textid3"]
    assert (
        render_cites(text, {"textid1": 1, "textid2": 1, "textid3": 2})
        == "Prices fell [1]. Demand rose.\n[2] Wind grew [2]."
    )
    assert drop_unknown("Prices fell \\cite{textid9} .", {"textid1"}) == ("Prices fell.", ["textid9"])
    sentences = cited_sentences("Prices fell. \\cite{textid1} Wind grew \\cite{textid2}.")
    assert sentences == [("Prices fell.", ["textid1"]), ("Wind grew \\cite{textid2}.", ["textid2"])]
    assert support_score("Module prices fell sharply", "Prices of modules fell by ninety percent") == pytest.approx(
        3 / 4
    )
    assert support_score("太阳能成本下降", "太阳能电池的成本下降了") > 0.5


def test_support_checks_flag_weak_sentences():
    reg = Registry()
    reg.add("c1", 1, "T", "/a", "file", "Battery costs dropped sharply as factories scaled up.")
    checks = check_support(
        "Battery costs dropped sharply \\cite{textid1}. Penguins migrate far \\cite{textid1}.", reg, 0.25
    )
    assert [(c.weak, c.sentence) for c in checks] == [
        (False, "Battery costs dropped sharply."),
        (True, "Penguins migrate far."),
    ]


def outline_with_text() -> Outline:
    a = Node(
        1,
        "Costs",
        "prices",
        "Cheaper modules \\cite{textid2}. Also \\cite{textid1, textid3}.",
        [Node(4, "Sub", "detail", None)],
    )
    b = Node(2, "Policy", "subsidies", "Auctions helped \\cite{textid3}.")
    return Outline("Solar", [a, b, Node(3, "Grids", "wires")], 5)


def registry() -> Registry:
    reg = Registry()
    reg.add("c1", 10, "Alpha", "https://a.example/x", "web", "one")
    reg.add("c2", 11, "Beta [draft]", "/docs/b.md", "file", "two")
    reg.add("c3", 10, "Alpha", "https://a.example/x", "web", "three")  # a second passage of source 10
    return reg


def test_report_numbers_sources_by_first_citation():
    markdown = render_report(outline_with_text(), registry())
    assert markdown == (
        "# Solar\n\n## 1 Costs\n\nCheaper modules [1]. Also [2].\n\n### 1.1 Sub\n\n*detail*\n\n"
        "## 2 Policy\n\nAuctions helped [2].\n\n## 3 Grids\n\n*wires*\n\n## References\n\n"
        "[1] Beta \\[draft\\] — /docs/b.md\n\n[2] Alpha — https://a.example/x\n"
    )


def test_draft_text_marks_and_abbreviates():
    o = outline_with_text()
    o.sections[1].content = " ".join(f"w{i}" for i in range(200))
    full = draft_text(o)
    assert "section-1 [Costs]: [OK] Cheaper modules. Also." in full and "  section-1.1 [Sub]: [PLAN] detail" in full
    assert "w199" in full and "w100" in full
    short = draft_text(o, (30, 10), keep_full=frozenset({1}))
    assert "w29 … w190" in short and "w100" not in short
    assert "section-2 [Policy]: [OK] (written)" in draft_text(o, (0, 0))
    assert draft_text(Outline()) == "There is no report yet."


def test_fit_drops_evidence_only_after_abbreviating():
    reg = Registry([])
    entries = [reg.add(f"c{i}", i, "T", "/x", "file", "evidence " * 60)[0] for i in range(6)]
    o = outline_with_text()
    o.sections[1].content = "long " * 400

    def build(draft, evidence, shown):
        return f"{draft}\n{evidence}"

    count = lambda text: len(text) // 4  # noqa: E731
    roomy = fit(build, o, entries, count=count, budget=10_000, passage_chars=1000)
    assert roomy.draft_level == 0 and len(roomy.evidence) == 6
    tight = fit(build, o, entries, count=count, budget=900, passage_chars=1000)
    assert tight.draft_level > 0 and len(tight.evidence) < 6
    assert count(tight.system) + count(tight.user) + 32 <= 900
    with pytest.raises(PromptTooLong):
        fit(build, o, entries, count=count, budget=50, passage_chars=1000)
    assert 'key="textid1"' in evidence_text(entries[:1], 100) and "…" in evidence_text(entries[:1], 100)
