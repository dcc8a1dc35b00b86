"""The clarify constraints compile, and mean the same, in every engine a server or this process may run
(llguidance, xgrammar, llama.cpp's GBNF through the `gbnf` package): 1-3 questions that open with a capital
and end with one question mark; evidence mode's only the questions offered, in order."""

from __future__ import annotations

import llguidance
import pytest
from test_served_grammars import (  # noqa: F401
    as_json,
    gbnf_accepts,
    ll_accepts,
    ll_tok,
    schema_verdicts,
    tags,
    verdicts,
)

from sala_report.app.warp.clarify import STOCK_QUESTIONS, choice_constraint, questions_constraint

GOOD = ["Which countries should the report cover?", "Ёмкость: какую брать для отчёта?", "报告应涵盖哪个时期？"]
BAD = [
    ["which countries should it cover?"],  # no capital
    ["Which countries should it cover"],  # no question mark
    ["Which one? And when?"],  # two questions in one
    ['Which "countries" matter?'],  # a quote: its JSON would need an escape
    ["Who is it for?"] * 4,  # more than three
    [],  # none
    ["Why?"],  # too short to say anything
]


@pytest.mark.parametrize("fixed", [False, True], ids=["thought", "fixed thought"])
def test_written_questions_mean_the_same_everywhere(ll_tok, fixed):  # noqa: F811
    constraint = questions_constraint(30, fixed_thought=fixed)
    thought = "-" if fixed else "scope is open"
    good = {"name": "clarify", "questions": GOOD}
    assert set(verdicts(ll_tok, constraint, tags(thought, good)).values()) == {True}
    assert set(schema_verdicts(ll_tok, constraint, as_json(thought, good)).values()) == {True}
    for questions in BAD:
        bad = {"name": "clarify", "questions": questions}
        assert set(verdicts(ll_tok, constraint, tags(thought, bad)).values()) == {False}, questions
        assert set(schema_verdicts(ll_tok, constraint, as_json(thought, bad)).values()) == {False}, questions
    if fixed:  # a small model is given no room to think aloud
        assert set(verdicts(ll_tok, constraint, tags("thinking", good)).values()) == {False}


def test_evidence_mode_chooses_only_offered_questions_in_order(ll_tok):  # noqa: F811
    constraint = choice_constraint(list(STOCK_QUESTIONS))
    grammar = llguidance.LLMatcher.grammar_from_lark(constraint.lark)
    chosen = [STOCK_QUESTIONS[1], STOCK_QUESTIONS[4]]
    good = tags("-", {"name": "clarify", "questions": chosen})
    assert ll_accepts(ll_tok, grammar, good)
    assert gbnf_accepts(constraint.gbnf, good)  # what a GBNF server (llama.cpp, SGLang, vLLM) gets
    assert not gbnf_accepts(constraint.gbnf, tags("-", {"name": "clarify", "questions": ["Is this new?"]}))
    for questions in (chosen[::-1], ["Who is the report for? Really?"], list(STOCK_QUESTIONS[:4]), []):
        text = tags("-", {"name": "clarify", "questions": questions})
        assert not ll_accepts(ll_tok, grammar, text), questions
    # a server in evidence mode gets the same choice as a schema (any order; the validator drops repeats)
    json_answer = as_json("-", {"name": "clarify", "questions": chosen})
    assert set(schema_verdicts(ll_tok, constraint, json_answer).values()) == {True}
    off_list = as_json("-", {"name": "clarify", "questions": ["Is this a new question?"]})
    assert set(schema_verdicts(ll_tok, constraint, off_list).values()) == {False}


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="thought_chars >= 1"):
        questions_constraint(0)
    with pytest.raises(ValueError, match="at least one question"):
        choice_constraint([])
