"""Every grammar and schema the app sends compiles, and means the same, in each engine a server may run:
llguidance (in-process, vLLM's guidance backend), xgrammar (vLLM's and SGLang's default), and GBNF as
llama.cpp parses it (the `gbnf` package, a port of llama.cpp's grammar parser, which like llama.cpp refuses
`\\s` and `\\p{…}`). A correct answer is accepted and a malformed one refused by all of them."""

from __future__ import annotations

import json

import llguidance
import pytest
import xgrammar
from gbnf import GBNF, GrammarParseError, InputParseError, RuleEnd
from test_grammar import sentencepiece_tokenizer
from xgrammar.testing import _is_grammar_accept_string

from sala_report.app.warp import gbnf as our_gbnf
from sala_report.app.warp.grammar import (
    OPEN,
    Style,
    extend_constraint,
    init_plan_constraint,
    search_constraint,
    write_constraint,
)
from sala_report.app.warp.validate import Limits

KEYS = ["textid1", "textid2", "textid12"]
# Small bounds: the `gbnf` parser unrolls every {m,n} (seconds for a 300-character field); the grammars'
# shape does not depend on the numbers.
SMALL = Limits(keyword_chars=24, title_chars=24, plan_chars=40, thought_chars=60)


@pytest.fixture(scope="module")
def ll_tok():
    tok = sentencepiece_tokenizer()
    return llguidance.LLTokenizer(tok.to_str(), n_vocab=tok.get_vocab_size(), eos_token=[2])


def ll_accepts(ll_tok, grammar: str, text: str) -> bool:
    matcher = llguidance.LLMatcher(ll_tok, grammar)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(ll_tok.tokenize_str(text)) and matcher.is_accepting()


_PARSED: dict[str, object] = {}


def gbnf_accepts(grammar: str, text: str) -> bool:
    if grammar not in _PARSED:
        _PARSED[grammar] = GBNF(grammar, "")
    try:
        return any(isinstance(rule, RuleEnd) for rule in _PARSED[grammar].add(text))
    except InputParseError:
        return False


def verdicts(ll_tok, constraint, text: str, *, with_gbnf: bool = True, llguidance_gbnf: bool = True) -> dict[str, bool]:
    """Whether each engine accepts `text` under the tag grammars (Lark and GBNF). `with_gbnf=False` for
    texts of thousands of characters: the `gbnf` parser recurses once per repeated character.
    `llguidance_gbnf=False` for open prose: llguidance's greedy lexer cannot read that GBNF (a text run
    swallows the backslash of a citation), so llguidance-backed servers get the Lark form ("lark" mode)."""
    out = {
        "llguidance lark": ll_accepts(ll_tok, llguidance.LLMatcher.grammar_from_lark(constraint.lark), text),
        "xgrammar ebnf": _is_grammar_accept_string(xgrammar.Grammar.from_ebnf(constraint.gbnf), text),
    }
    if llguidance_gbnf:
        out["llguidance gbnf"] = ll_accepts(ll_tok, llguidance.grammar_from("grammar", constraint.gbnf), text)
    if with_gbnf:
        out["llama.cpp gbnf"] = gbnf_accepts(constraint.gbnf, text)
    return out


def schema_verdicts(ll_tok, constraint, text: str) -> dict[str, bool]:
    """Whether each engine accepts the JSON-mode form of the tag answer `text` under the JSON schema."""
    schema = json.dumps(constraint.json_schema)
    return {
        "llguidance json": ll_accepts(ll_tok, llguidance.grammar_from("json_schema", schema), text),
        "xgrammar json": _is_grammar_accept_string(
            xgrammar.Grammar.from_json_schema(schema, any_whitespace=False), text
        ),
    }


def tags(thought: str, action) -> str:
    body = action if isinstance(action, str) else json.dumps(action, ensure_ascii=False)
    return f"<thought>{thought}</thought>\n<action>{body}</action>"


def as_json(thought: str, action, key: str = "action") -> str:
    return json.dumps({"thought": thought, key: action}, ensure_ascii=False)


SECTIONS = [
    {"title": "Costs of modules", "plan": "How prices fell"},
    {"title": "Grid", "plan": "Storage and lines"},
    {"title": "Über Politik", "plan": "Auctions, tariffs"},
]
PROSE = "Solar generation doubled between 2015 and 2020 in most markets, thanks to cheaper modules"

CASES = [
    (
        "search",
        search_constraint(SMALL),
        {"name": "search", "keywords": ["solar prices", "grid storage"]},
        [
            {"name": "search", "keywords": list("abcdef")},
            {"name": "search", "keywords": [" leading space"]},
            {"name": "search", "keywords": ["a <b"]},
        ],
    ),
    (
        "init-plan",
        init_plan_constraint(SMALL),
        {"name": "init-plan", "title": "Solar power", "sections": SECTIONS},
        [
            {"name": "init-plan", "title": "[1] Solar", "sections": SECTIONS},
            {"name": "init-plan", "title": "Solar", "sections": SECTIONS[:2]},
        ],
    ),
    (
        "extend",
        extend_constraint(SMALL, ["section-1", "section-2.1"]),
        {"name": "extend-plan", "position": "section-2.1", "subsections": SECTIONS[:2]},
        [{"name": "extend-plan", "position": "section-3", "subsections": SECTIONS[:2]}, {"name": "stop"}],
    ),
    ("nop", extend_constraint(SMALL, ["section-1"]), {"name": "nop"}, [{"name": "nop", "extra": 1}]),
]


@pytest.mark.parametrize("name, constraint, good, bads", CASES, ids=[c[0] for c in CASES])
def test_json_actions_mean_the_same_everywhere(ll_tok, name, constraint, good, bads):
    assert set(verdicts(ll_tok, constraint, tags("the plan", good)).values()) == {True}
    assert set(schema_verdicts(ll_tok, constraint, as_json("the plan", good)).values()) == {True}
    for bad in bads:
        assert set(verdicts(ll_tok, constraint, tags("the plan", bad)).values()) == {False}, bad
        assert set(schema_verdicts(ll_tok, constraint, as_json("the plan", bad)).values()) == {False}, bad


def test_compact_outline_grammar_means_the_same_everywhere(ll_tok):
    constraint = init_plan_constraint(Limits(title_chars=60, plan_chars=40, thought_chars=60), compact=True)
    good = tags("- Costs\n- Grid\n- Policy\n", {"name": "init-plan", "sections": SECTIONS, "title": "Solar power"})
    assert set(verdicts(ll_tok, constraint, good).values()) == {True}
    lower = good.replace('"title": "Grid"', '"title": "grid"')  # a short title starts in upper case
    assert set(verdicts(ll_tok, constraint, lower).values()) == {False}


def test_write_grammar_means_the_same_everywhere(ll_tok):
    strict = write_constraint(SMALL, KEYS, style=Style(span=200))
    good = tags("use textid1", f"{PROSE} \\cite{{textid1}}. Über alles \\cite{{textid2, textid12}}.")
    assert set(verdicts(ll_tok, strict, good).values()) == {True}
    for bad in (
        good.replace("textid12", "textid9"),
        good.replace("Solar", "## Solar"),
        tags("x", f"{PROSE}."),
        good.replace("markets", "markets (COP < 2)"),
    ):
        assert set(verdicts(ll_tok, strict, bad).values()) == {False}, bad
    assert set(
        verdicts(ll_tok, write_constraint(SMALL, [], style=Style(span=200)), tags("x", f"{PROSE}.")).values()
    ) == {True}


def test_open_prose_takes_what_the_released_validator_takes(ll_tok):
    """AgentCPM-Report's contract: comparisons and backslashes in prose, a space after <action>, no length
    between citations; still no tag, no heading and no citation of a passage not shown."""
    loose = write_constraint(SMALL, KEYS, style=OPEN)
    good = (
        f"<thought>use it</thought>\n<action> {PROSE}, with a COP < 2 and x <= 3 and a \\alpha term "
        f"\\cite{{textid1}}. More analysis.</action>"
    )
    assert set(verdicts(ll_tok, loose, good, llguidance_gbnf=False).values()) == {True}
    long_tail = good.replace("More analysis.", " More analysis follows here." * 80)  # 2,160 characters after a citation
    assert set(verdicts(ll_tok, loose, long_tail, with_gbnf=False, llguidance_gbnf=False).values()) == {True}
    for bad in (
        good.replace("COP < 2", "COP </evidence>"),
        good.replace("COP < 2", "<|im_start|>system"),
        good.replace("textid1}", "textid9}"),
        good.replace("with a", "## with a"),
    ):
        assert set(verdicts(ll_tok, loose, bad, llguidance_gbnf=False).values()) == {False}, bad
    assert set(verdicts(ll_tok, write_constraint(SMALL, KEYS, style=Style(span=200)), good).values()) == {False}


def test_write_schema_is_plain_text_in_every_engine(ll_tok):
    constraint = write_constraint(SMALL, KEYS)
    good = as_json("use textid1", f'{PROSE} \\cite{{textid1}}.\n\nA second paragraph with "quotes".', "text")
    assert set(schema_verdicts(ll_tok, constraint, good).values()) == {True}
    assert set(schema_verdicts(ll_tok, constraint, as_json("x", {"not": "text"}, "text")).values()) == {False}


def test_patterns_that_servers_misread_are_refused():
    """The converter refuses what llama.cpp refuses (\\s, \\p{…}, \\d), and the GBNF parser does too."""
    for pattern in (r"^[^\s<]+$", r"^[\p{L}]+$", r"^\d+$"):
        with pytest.raises(ValueError):
            our_gbnf.pattern_rule(pattern)
    for grammar in ("root ::= [^\\s<]+\n", "root ::= [\\p{L}]+\n"):
        with pytest.raises(GrammarParseError):
            GBNF(grammar, "")
