"""Evidence mode (issue 11): what is offered to choose from, the choice grammars per action (random
walks through llguidance's masks with SmolLM2's tokenizer must always end in an answer the validators
accept, made only of offered pieces), and a whole run through the engine with a scripted model."""

from __future__ import annotations

import itertools
import random
import re

import llguidance
import pytest
from warp_fakes import ScriptedGenerator

from sala_report.app.warp import events as ev
from sala_report.app.warp.actions import ActionError, ExtendPlan, parse_response
from sala_report.app.warp.choice_grammar import (
    extend_choice_constraint,
    keywords_constraint,
    ordered_choice,
    outline_constraint,
    sentences_constraint,
)
from sala_report.app.warp.citations import Entry
from sala_report.app.warp.decoding import GrammarHook, ll_tokenizer
from sala_report.app.warp.evidence import (
    check_chosen,
    cite,
    clean_heading,
    heading_choices,
    keyword_choices,
    leans_back,
    sentence_choices,
    split_sentences,
    used_sentences,
)
from sala_report.app.warp.validate import Limits, validate_extend, validate_init_plan, validate_search, validate_write

QUESTION = "How do heat pumps keep heating in cold climates?"
PASSAGE = """# 2. Heat pumps in cold climates

Cold-climate heat pumps use vapour injection to keep the compressor efficient. At minus fifteen degrees a
good unit still delivers about twice the heat of the electricity it uses, e.g. a COP of 2.

## Defrosting the outdoor coil

- Frost forms on the outdoor coil when the air is near freezing and humid.
- The unit reverses its cycle for a few minutes so that warm refrigerant melts the ice.

I hope this helps you choose a heat pump for your home.
| table | row |
"""
OTHER = "# cold-climate-notes.md\n\n## Sizing\n\nA heat pump sized for the coldest week runs in short bursts the rest of the year, which wastes energy."


def entry(key: str, text: str, title: str = "Heat pumps in the cold") -> Entry:
    return Entry(key, f"c{key}", int(key.removeprefix("textid")), title, f"/docs/{key}.md", "file", text)


ENTRIES = {"textid1": entry("textid1", PASSAGE), "textid2": entry("textid2", OTHER, title="cold-climate-notes.md")}


def test_sentences_are_whole_verbatim_and_plain():
    sentences = split_sentences(PASSAGE)
    assert "Cold-climate heat pumps use vapour injection to keep the compressor efficient." in sentences
    # a sentence wrapped over two lines is one sentence, with the abbreviation "e.g." left inside it
    assert (
        "At minus fifteen degrees a good unit still delivers about twice the heat of the electricity it uses, "
        "e.g. a COP of 2."
    ) in sentences
    assert "The unit reverses its cycle for a few minutes so that warm refrigerant melts the ice." in sentences
    choices = sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting the outdoor coil")
    texts = [c.text for c in choices]
    assert all(not t.startswith(("#", "-", "|")) for t in texts)
    assert not any("hope this helps" in t for t in texts)  # chatter in a document is never offered
    flat = " ".join(" ".join(e.text.split()) for e in ENTRIES.values())
    assert all(t in flat for t in texts)  # verbatim: each is a stretch of its passage's own words
    assert all(re.search(r"[.!?]$", t) and t[0].isupper() for t in texts)  # never cut mid-sentence


def test_sentences_already_in_the_report_are_not_offered_again():
    first = sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting")
    written = " ".join(c.cited for c in first[:2])
    used = used_sentences([written])
    assert used == [c.text for c in first[:2]]
    again = sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting", used=used)
    assert {c.text for c in again}.isdisjoint(used) and len(again) == len(first) - 2


def test_a_sentence_that_points_back_into_its_paragraph_comes_after_one_that_stands_alone():
    """ "This keeps the compressor cool" read in a report means nothing: of two sentences that match the
    section equally, the one that opens with a word pointing back is offered last (still offered)."""
    text = (
        "Vapour injection cools the compressor of a cold-climate heat pump. "
        "This keeps the compressor of a cold-climate heat pump efficient. "
        "Cold-climate heat pumps keep the compressor efficient with vapour injection."
    )
    choices = sentence_choices([entry("textid7", text)], question=QUESTION, topic="The compressor of a heat pump")
    texts = [c.text for c in choices]
    assert texts[-1] == "This keeps the compressor of a cold-climate heat pump efficient.", texts
    assert len(texts) == 3
    assert leans_back("It moves heat.") and leans_back('"So it works."') and not leans_back("Italy builds them.")


def test_a_cited_sentence_keeps_its_end_mark_after_the_citation():
    assert cite("Heat pumps move heat.", "textid3") == "Heat pumps move heat \\cite{textid3}."
    assert cite('He said "it works!"', "textid3") == 'He said "it works \\cite{textid3}!"'


def test_headings_are_cleaned_distinct_and_named_in_words():
    titles = [h.title for h in heading_choices(ENTRIES.values(), question=QUESTION)]
    assert "Heat pumps in cold climates" in titles  # "2." numbering gone
    assert "Defrosting the outdoor coil" in titles and "Sizing" in titles
    assert not any(t.endswith(".md") or "notes" in t for t in titles)  # file names are no titles
    assert len({t.casefold() for t in titles}) == len(titles)
    assert all(any(c.isalpha() for c in t) for t in titles)
    assert clean_heading("1.2 **Costs** of [running](http://x)", max_chars=80) == "Costs of running"
    assert clean_heading("3.1", max_chars=80) is None and clean_heading("report_draft-v2", max_chars=80) is None
    taken = heading_choices(ENTRIES.values(), question=QUESTION, taken=["sizing"])
    assert "Sizing" not in [h.title for h in taken]


def test_headings_in_another_language_are_left_out():
    cjk = entry("textid3", "# 寒冷地のヒートポンプ\n\n## Cold start\n\nText.")
    assert [h.title for h in heading_choices([cjk], question=QUESTION, documents=False)] == ["Cold start"]


def test_keywords_are_distinct_and_never_searched_twice():
    phrases = keyword_choices(QUESTION, "Defrosting", "How frost is melted")
    assert phrases[0] == "Defrosting" and len({p.casefold() for p in phrases}) == len(phrases)
    later = keyword_choices(QUESTION, "Defrosting", "How frost is melted", used=phrases[:2])
    assert set(later).isdisjoint({p.casefold() for p in phrases[:2]}) and later


@pytest.fixture(scope="module")
def smollm2():
    from sala_report.model import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    return tok, ll_tokenizer(tok.hf, vocab_size=tok.vocab_size, eos_token_ids=tok.eos_token_ids)


def accepts(smollm2, lark: str, text: str) -> bool:
    tok, lt = smollm2
    matcher = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_lark(lark))
    assert not matcher.is_error(), matcher.get_error()
    ids = tok.hf.encode(text, add_special_tokens=False).ids
    return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()


def walk(smollm2, lark: str, seed: int, *, use_ff: bool = True) -> str:
    """Random choices among the allowed tokens; forced tokens taken as the grammar gives them."""
    tok, lt = smollm2
    hook = GrammarHook(lt, lark, vocab_size=tok.vocab_size, max_new_tokens=4000)
    rnd, out = random.Random(seed), []
    while len(out) < 4000:
        forced = hook.fast_forward(out) if use_ff else []
        if forced:
            out += forced
            continue
        import torch

        allowed = torch.nonzero(hook(out, torch.zeros(tok.vocab_size)) > float("-inf")).flatten().tolist()
        assert hook.error is None and allowed
        if set(allowed) & set(tok.eos_token_ids):
            if len(allowed) == len(set(allowed) & set(tok.eos_token_ids)) or rnd.random() < 0.3:
                return tok.decode(out)
            allowed = [a for a in allowed if a not in tok.eos_token_ids]
        out.append(rnd.choice(allowed))
    raise AssertionError("the walk did not end")


def test_ordered_choice_takes_exactly_the_ordered_subsequences(smollm2):
    items = ["alpha", "beta", "gamma", "delta"]
    lark = "\n".join(["start: chosen", *ordered_choice("chosen", [f'"{w}"' for w in items], 2, 3, " ")]) + "\n"
    for n in range(1, 5):
        for combo in itertools.permutations(items, n):
            ordered = list(combo) == sorted(combo, key=items.index)
            assert accepts(smollm2, lark, " ".join(combo)) == (ordered and 2 <= n <= 3), combo
    assert not accepts(smollm2, lark, "alpha alpha")


@pytest.mark.parametrize("seed", range(3))
def test_random_writes_are_cited_verbatim_sentences(smollm2, seed):
    choices = sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting")
    constraint = sentences_constraint([c.cited for c in choices], 2, 3)
    text = parse_response(walk(smollm2, constraint.lark, seed)).action
    action = validate_write(text, Limits(), QUESTION, set(ENTRIES))
    chosen = check_chosen(action.content, ENTRIES)
    assert 2 <= len(chosen) <= 3 and len(set(chosen)) == len(chosen)
    assert set(chosen) <= {c.text for c in choices}


def test_a_write_that_is_not_chosen_is_rejected():
    with pytest.raises(ActionError, match="not a sentence of the passage"):
        check_chosen("Heat pumps are great \\cite{textid1}.", ENTRIES)
    with pytest.raises(ActionError, match="choose whole sentences"):
        check_chosen("Heat pumps are great, I think.", ENTRIES)
    sentence = "Cold-climate heat pumps use vapour injection to keep the compressor efficient"
    with pytest.raises(ActionError, match="already in the report"):
        check_chosen(f"{sentence} \\cite{{textid1}}.", ENTRIES, used=[f"{sentence}."])
    with pytest.raises(ActionError, match="not a sentence of the passage"):  # the right words, the wrong passage
        check_chosen(f"{sentence} \\cite{{textid2}}.", ENTRIES)


def test_a_lead_sentence_is_bounded(smollm2):
    choices = [c.cited for c in sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting")]
    lark = sentences_constraint(choices, 1, 2, lead_chars=60).lark

    def body(lead: str) -> str:
        return f"<thought>-</thought>\n<action>{lead} {choices[0]}</action>"

    assert accepts(smollm2, lark, body("Frost matters in the cold."))
    assert not accepts(smollm2, lark, body("Frost matters " + "a lot " * 20 + "in the cold."))
    assert not accepts(smollm2, lark, body("Frost matters. Twice."))


@pytest.mark.parametrize("seed", range(3))
def test_random_outlines_choose_distinct_headings(smollm2, seed):
    headings = heading_choices(ENTRIES.values(), question=QUESTION)
    pairs = [(h.title, h.plan) for h in headings]
    constraint = outline_constraint([QUESTION, "Heat pumps"], pairs, 3, 4)
    plan = validate_init_plan(parse_response(walk(smollm2, constraint.lark, seed)).action, Limits(), QUESTION)
    assert 3 <= len(plan.sections) <= 4 and {s.title for s in plan.sections} <= {t for t, _ in pairs}
    assert plan.title in (QUESTION, "Heat pumps")


@pytest.mark.parametrize("seed", range(3))
def test_random_expansions_choose_subtopics_of_their_section(smollm2, seed):
    options = {
        "section-1": [("Vapour injection", "How it works."), ("Defrosting", "How ice is melted.")],
        "section-2": [("Sizing", "Big or small."), ("Buffer tanks", "Storage."), ("Controls", "Curves.")],
    }
    constraint = extend_choice_constraint(options, 2, 3, allow_nop=seed != 0)
    action = validate_extend(
        parse_response(walk(smollm2, constraint.lark, seed)).action,
        Limits(),
        QUESTION,
        list(options),
        allow_nop=seed != 0,
    )
    if seed == 0:
        assert isinstance(action, ExtendPlan)
    if isinstance(action, ExtendPlan):
        assert {s.title for s in action.subsections} <= {t for t, _ in options[action.position]}


@pytest.mark.parametrize("seed", range(3))
def test_random_searches_choose_distinct_phrases(smollm2, seed):
    phrases = keyword_choices(QUESTION, "Defrosting", "How frost is melted")
    action = validate_search(parse_response(walk(smollm2, keywords_constraint(phrases, 2).lark, seed)).action, Limits())
    assert 1 <= len(action.keywords) <= 2 and set(action.keywords) <= set(phrases)


def test_fast_forward_gives_the_same_answer_in_fewer_choices(smollm2):
    choices = [c.cited for c in sentence_choices(ENTRIES.values(), question=QUESTION, topic="Defrosting")]
    lark = sentences_constraint(choices, 2, 2).lark
    tok, lt = smollm2
    hook = GrammarHook(lt, lark, vocab_size=tok.vocab_size, max_new_tokens=400)
    forced = hook.fast_forward([])
    assert tok.decode(forced) == "<thought>-</thought>\n<action>"  # nothing to choose before the first sentence
    frost = next(c for c in choices if c.startswith("Frost"))
    first = tok.hf.encode(frost, add_special_tokens=False).ids[0]  # "Frost": only one sentence starts so
    rest = hook.fast_forward([*forced, first])
    assert (tok.decode([first, *rest])).startswith(frost)  # the whole sentence, citation included, is forced


class Chooser(ScriptedGenerator):
    """Answers every evidence-mode step with the first thing its grammar offers (a real llguidance
    matcher decides what that is), like a greedy model would."""

    def __init__(self, smollm2):
        super().__init__(small_model=True)
        self.tok, self.lt = smollm2

    def generate(self, request, *, on_delta=None, cancel=None, on_restart=None):
        from sala_report.app.warp.generator import GenResult

        hook = GrammarHook(self.lt, request.constraint.lark, vocab_size=self.tok.vocab_size, max_new_tokens=2000)
        text = walk((self.tok, self.lt), request.constraint.lark, 0)
        self.requests.append((request.constraint.kind, request))
        assert hook.error is None
        return GenResult(text, "stop", 100, len(text) // 4, 0.01)


def test_a_small_model_chooses_through_a_whole_run(start, corpus, smollm2):
    generator = Chooser(smollm2)
    engine, seen = start(generator, max_expands=1)
    result = engine.run()
    assert result.status == "done", [e for e in seen if isinstance(e, ev.ActionRejected)]
    kinds = {k for k, _ in generator.requests}
    assert {"init-plan", "write"} <= kinds
    assert all(r.decoding.fast_forward and r.constraint is not None for _, r in generator.requests)
    written = [e for e in seen if isinstance(e, ev.SectionWritten)]
    assert len(written) >= 3
    body = " ".join(e.markdown for e in written)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s*\[\d+\]", "", body)) if s.strip()]
    assert len(sentences) == len(set(sentences))  # no sentence twice in the report
    searched = [k.casefold() for e in seen if isinstance(e, ev.SearchFinished) for k in e.keywords]
    assert len(searched) == len(set(searched)) and len(searched) >= 4  # no phrase searched twice in the run
