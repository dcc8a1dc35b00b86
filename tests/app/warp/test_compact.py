"""The compact prompt style for small models: the logits hooks that keep them from copying and looping
(RepeatBlocker, TopicEcho), how the style is chosen, its templates, and a whole run with them."""

from __future__ import annotations

import pytest
import torch
from warp_fakes import Policy, ScriptedGenerator, answer, check_report

from sala_report.app.errors import ConfigError
from sala_report.app.warp import events as ev
from sala_report.app.warp.actions import ActionError
from sala_report.app.warp.citations import Entry
from sala_report.app.warp.decoding import RepeatBlocker, TokenClasses, TopicEcho, chain
from sala_report.app.warp.generator import LocalGenerator
from sala_report.app.warp.prompts import Prompt, evidence_text, fit, instruction_text, render, system_prompt, template
from sala_report.app.warp.state import Outline
from sala_report.app.warp.validate import Limits, check_repeats, check_title, clean_title, validate_write

PIECES = [
    "<thought>",
    "</thought>",
    "<action>",
    "</action>",
    '"',
    " ",
    "the",
    " cat",
    " sat",
    " on",
    " mat",
    ".",
    "1",
    "{",
    "}",
    '":',
    ' "',
    "Solar",
    " power",
    " costs",
    "title",
    "Wind",
    "- Solar power costs\n- Wind\n",
    ", ",
]
ID = {p: i for i, p in enumerate(PIECES)}
CLASSES = TokenClasses.of(PIECES)


def ids(*pieces: str) -> list[int]:
    return [ID[p] for p in pieces]


def banned(hook, generated: list[int], open_ids: list[int] | None = None) -> set[int]:
    logits = torch.zeros(len(PIECES))
    if open_ids is not None:
        logits = torch.full((len(PIECES),), float("-inf"))
        logits[open_ids] = 0.0
    out = hook(generated, logits)
    return {i for i in range(len(PIECES)) if out[i] == float("-inf") and logits[i] != float("-inf")}


def test_token_classes_sort_markup_free_tags_and_quotes():
    assert {ID['"'], ID["{"], ID["<action>"], ID['":']} <= CLASSES.markup
    assert ID[" "] in CLASSES.free and ID["1"] in CLASSES.free and ID[" cat"] not in CLASSES.free
    assert CLASSES.tags == {ID["<thought>"], ID["</thought>"], ID["<action>"], ID["</action>"]}
    assert set(CLASSES.quotes) == {ID['"'], ID['":'], ID[' "']}


def test_repeat_blocker_forbids_copying_the_instructions():
    blocker = RepeatBlocker(3, CLASSES, avoid=[ids("the", " cat", " sat")])
    assert banned(blocker, ids("the", " cat")) == {ID[" sat"]}


def test_repeat_blocker_lets_markup_end_a_run_and_never_masks_digits():
    assert banned(RepeatBlocker(3, CLASSES, avoid=[ids("the", " cat", " sat")]), ids("the", '"', " cat")) == set()
    assert banned(RepeatBlocker(3, CLASSES, avoid=[ids("the", " cat", "1")]), ids("the", " cat")) == set()


def test_repeat_blocker_stops_prose_repeating_itself_but_not_across_tags():
    assert banned(RepeatBlocker(3, CLASSES), ids("the", " cat", " sat", " on", "the", " cat")) == {ID[" sat"]}
    fresh = ids("the", " cat", " sat", "</thought>", "<action>", "the", " cat")
    assert banned(RepeatBlocker(3, CLASSES), fresh) == set()


def test_repeat_blocker_skips_a_mask_that_would_leave_nothing():
    blocker = RepeatBlocker(3, CLASSES, avoid=[ids("the", " cat", " sat")])
    assert banned(blocker, ids("the", " cat"), open_ids=[ID[" sat"]]) == set()
    assert blocker.blocked == 0
    assert banned(blocker, ids("the", " cat"), open_ids=[ID[" sat"], ID[" on"]]) == {ID[" sat"]}
    assert blocker.blocked == 1


def test_repeat_blocker_keeps_json_fields_apart():
    start = ids("<thought>", "the", "</thought>", "<action>", "{", '"', "Solar", " power", " costs", '"', ", ", '"')
    # the third token of a string that starts like an earlier one
    assert banned(RepeatBlocker(3, CLASSES, within="fields"), start + ids("Solar", " power")) == {ID[" costs"]}
    # a string may not end as an exact copy of an earlier one: no quote closes it
    wind = ids("<thought>", "the", "</thought>", "<action>", "{", '"', "Wind", '"', ", ", '"', "Wind")
    assert banned(RepeatBlocker(3, CLASSES, within="fields"), wind) == set(CLASSES.quotes)
    # in prose, the same words after markup are a new run
    assert banned(RepeatBlocker(3, CLASSES, within="prose"), wind) == set()


@pytest.mark.parametrize("n, within", [(2, "prose"), (4, "everything")])
def test_repeat_blocker_rejects_bad_settings(n, within):
    with pytest.raises(ValueError):
        RepeatBlocker(n, CLASSES, within=within)


def encode(text: str) -> list[int]:
    return {"Solar power costs": ids("Solar", " power", " costs"), "Wind": ids("Wind")}[text]


def boosted(echo, generated: list[int]) -> set[int]:
    out = echo(generated, torch.zeros(len(PIECES)))
    return {i for i in range(len(PIECES)) if out[i] > 0}


def test_topic_echo_steers_titles_to_the_listed_topics_once_each():
    head = ids("<thought>", "- Solar power costs\n- Wind\n", "</thought>", "<action>", "{", '"', "title", '":', ' "')
    echo = TopicEcho(encode, CLASSES)
    assert boosted(echo, head) == {ID["Solar"], ID["Wind"]}
    assert boosted(echo, head + ids("Solar")) == {ID[" power"]}
    second = head + ids("Solar", " power", " costs", '"', ", ", '"', "title", '":', ' "')
    assert boosted(echo, second) == {ID["Wind"]}  # Solar power costs is used
    assert boosted(TopicEcho(encode, CLASSES), second[:-3] + ids('"', "the", '":', ' "')) == set()  # not a title


def test_topic_echo_does_nothing_without_a_topic_list():
    plain = ids("<thought>", "the", "</thought>", "<action>", "{", '"', "title", '":', ' "')
    assert boosted(TopicEcho(encode, CLASSES), plain) == set()


def test_chain_applies_hooks_in_order_and_skips_none():
    assert chain(None, None) is None
    add = lambda generated, logits: logits + 1  # noqa: E731
    assert chain(None, add) is add
    assert torch.equal(chain(add, None, add)([], torch.zeros(2)), torch.full((2,), 2.0))


def test_a_local_model_under_a_billion_parameters_is_small():
    assert LocalGenerator(torch.nn.Linear(4, 4), None).small_model


ENTRY = Entry(
    key="textid1",
    chunk_id="c1",
    source_id=1,
    title="Solar report",
    location="https://example.org/solar",
    kind="web",
    text="Module prices fell by ninety percent between 2010 and 2020.",
)
QUESTION = "How did solar power change electricity markets?"


def test_template_names_and_styles():
    assert template("write.jinja") == "write.jinja" and template("write.jinja", "compact") == "compact/write.jinja"
    with pytest.raises(ValueError, match="compact"):
        template("write.jinja", "tiny")
    assert system_prompt("compact") != system_prompt("full") and len(system_prompt("compact")) < 200


def test_compact_templates_render_short_with_one_plain_instruction():
    evidence = evidence_text([ENTRY], 500, locations=False)
    assert 'source="Solar report"' in evidence and "example.org" not in evidence
    prompts = {
        "search": render(
            template("search.jinja", "compact"),
            question=QUESTION,
            draft="",
            target="",
            title="Costs",
            plan="",
            max_keywords=5,
            feedback="",
        ),
        "init-plan": render(
            template("init_plan.jinja", "compact"),
            question=QUESTION,
            evidence=evidence,
            min_sections=3,
            max_sections=4,
            feedback="",
        ),
        "write": render(
            template("write.jinja", "compact"),
            question=QUESTION,
            draft="",
            target="",
            title="Costs",
            plan="prices",
            evidence=evidence,
            keys=["textid1"],
            max_citations=12,
            feedback="",
        ),
        "write without evidence": render(
            template("write.jinja", "compact"),
            question=QUESTION,
            draft="",
            target="",
            title="Costs",
            plan="",
            evidence="",
            keys=[],
            max_citations=12,
            feedback="",
        ),
        "extend": render(
            template("extend_plan.jinja", "compact"),
            question=QUESTION,
            draft="",
            sections=[("section-1", "Costs"), ("section-2", "Policy")],
            positions=["section-1"],
            forced=[],
            min_subsections=2,
            max_subsections=4,
            feedback="",
        ),
    }
    for kind, text in prompts.items():
        assert len(text) < 700 and "<action>" not in text and "<thought>" not in text and "{{" not in text, kind
        assert "rejected" not in text, kind
    assert prompts["write"].startswith("<evidence") and "\\cite{textid1}" in prompts["write"]
    assert prompts["init-plan"].rstrip().endswith("one-line plan.")
    assert "section-2: Policy" in prompts["extend"] and "Costs" in prompts["search"]
    again = render(
        template("search.jinja", "compact"),
        question=QUESTION,
        draft="",
        target="",
        title="",
        plan="",
        max_keywords=5,
        feedback="use fewer keywords",
    )
    assert again.rstrip().endswith("Your last answer was rejected: use fewer keywords")


def test_fit_uses_the_compact_system_prompt_and_unlocated_evidence():
    def build(draft, evidence, shown):
        return f"{evidence}\n\nWrite about costs."

    prompt = fit(
        build, Outline(), [ENTRY], count=lambda t: len(t) // 4, budget=2000, passage_chars=500, style="compact"
    )
    assert prompt.system == system_prompt("compact") and "example.org" not in prompt.user


def test_instruction_text_keeps_the_wording_without_evidence_or_values():
    user = (
        '<evidence key="textid1" source="x">\nModule prices fell.\n</evidence>\n\n'
        "Question: How did solar change markets?\n\nRewrite the text above as a short paragraph about Costs."
    )
    values = ["How did solar change markets?", "Costs", ""]
    pieces = instruction_text(Prompt("You are an expert writer.", user, (), 0), values)
    assert pieces == [
        "You are an expert writer.",
        "Question:",
        "Rewrite the text above as a short paragraph about",
        ".",
    ]


def test_titles_lose_citation_keys_and_must_name_a_topic():
    assert clean_title("2. Solar textid3 costs") == "Solar costs"
    assert clean_title("2 ,") == "2 ,"  # numbering stays when nothing else is left
    assert (
        clean_title("2024 heat pump sales") == "2024 heat pump sales" and clean_title("1. Heat pumps") == "Heat pumps"
    )
    check_title("Solar costs", "the title")
    for bad in ("Section title here", "textid1", "Costs [1]", "—"):
        with pytest.raises(ActionError):
            check_title(clean_title(bad), "the title")


def test_a_section_may_not_say_the_same_sentence_twice():
    check_repeats("Prices fell. Prices fell fast. Solar power grew quickly in Spain. Wind grew too.")
    with pytest.raises(ActionError, match="say each thing once"):
        check_repeats("Solar power grew quickly \\cite{textid1}. Solar power grew quickly \\cite{textid2}.")
    with pytest.raises(ActionError, match="say each thing once"):
        validate_write(
            "Solar power grew quickly in Spain. Solar power grew quickly in Spain.",
            Limits(),
            QUESTION,
            {"textid1"},
            require_citation=False,
        )


def test_auto_style_gives_a_small_model_compact_prompts_through_a_whole_run(start, corpus):
    generator = ScriptedGenerator(policy=Policy(expands=1), small_model=True)
    engine, seen = start(generator, prompt_style="auto", writing="generate")  # evidence mode: test_evidence.py
    result = engine.run()
    assert result.status == "done"
    assert {k for k, _ in generator.requests} == {"search", "init-plan", "write", "extend"}
    for kind, request in generator.requests:
        assert request.system == system_prompt("compact"), kind
        assert (
            request.decoding.no_repeat_ngram == 4
            and request.decoding.avoid
            and request.decoding.avoid[0] == system_prompt("compact").strip()
        )
        assert request.decoding.repeats == ("prose" if kind == "write" else "fields"), kind
        assert request.decoding.close_early == (kind == "write") and request.decoding.echo_topics == (
            kind == "init-plan"
        ), kind
    assert "### 1.1 Costs" in check_report(corpus[0], result.session_id)


@pytest.mark.parametrize(
    "style, small, expected", [("auto", False, "full"), ("full", True, "full"), ("compact", False, "compact")]
)
def test_the_style_setting_overrides_the_model_size(start, style, small, expected):
    generator = ScriptedGenerator(policy=Policy(expands=0), small_model=small)
    engine, _ = start(generator, prompt_style=style, no_repeat_ngram=0)
    assert engine.run().status == "done"
    assert {r.system for _, r in generator.requests} == {system_prompt(expected)}
    assert all(
        r.decoding.no_repeat_ngram == 0 and not r.decoding.avoid for _, r in generator.requests
    )  # no_repeat_ngram = 0: off
    init_plan = next(r for k, r in generator.requests if k == "init-plan")
    assert init_plan.decoding.echo_topics == (expected == "compact")


@pytest.mark.parametrize("changes", [{"prompt_style": "tiny"}, {"no_repeat_ngram": 2}])
def test_bad_style_settings_fail_the_run_with_a_config_error(start, changes):
    engine, seen = start(ScriptedGenerator(), **changes)
    with pytest.raises(ConfigError):
        engine.run()
    assert isinstance(seen[-1], ev.Failed)


def test_a_compact_write_answer_with_repeats_is_retried(start):
    looping = answer("x", "Solar power grew quickly in Spain. Solar power grew quickly in Spain \\cite{textid1}.")
    generator = ScriptedGenerator({"write": [looping]}, policy=Policy(expands=0), small_model=True)
    engine, seen = start(generator, writing="generate")
    assert engine.run().status == "done"
    rejected = [e for e in seen if isinstance(e, ev.ActionRejected)]
    assert len(rejected) == 1 and "say each thing once" in rejected[0].error
