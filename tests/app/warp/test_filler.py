"""Chatter about the task never reaches a report: one test per phrase family, each through the real
validators (WRITE in both writing modes' paths, and outline titles and plans)."""

from __future__ import annotations

import pytest

from sala_report.app.warp.actions import ActionError
from sala_report.app.warp.evidence import is_choosable
from sala_report.app.warp.filler import FAMILIES, filler_phrase
from sala_report.app.warp.validate import Limits, validate_init_plan, validate_write

QUESTION = "How do heat pumps work in cold climates?"
FACT = "Cold-climate heat pumps keep a COP above 2 at minus fifteen degrees with vapour injection"

# (family, chatter as small models wrote it in the runs of issue 11, or its close kin)
CHATTER = [
    ("rewrite", "Rewrite text above as a short paragraph about heat pumps."),
    ("rewrite", "Here the passage is rephrased for the reader."),
    ("pleasantry", "I hope this helps you understand heat pumps."),
    ("pleasantry", "Let me know if you need more detail about heat pumps."),
    ("ai", "As an AI language model, I cannot visit homes with heat pumps."),
    ("ai", "As a language model I know that heat pumps move heat."),
    ("postscript", "Heat pumps move heat. P.S. They also cool in summer."),
    ("postscript", "Heat pumps move heat. PS: they also cool in summer."),
    ("presenting", "Here is the summary of the heat pump passages."),
    ("presenting", "Below is the section about heat pumps in the cold."),
    ("instructions", "To quote the paragraph, I will use the following sentences about heat pumps."),
    ("instructions", "Based on the text above, heat pumps work in the cold."),
]


@pytest.mark.parametrize("family, text", CHATTER)
def test_each_family_is_found_by_its_own_pattern(family, text):
    assert FAMILIES[family].search(text), (family, text)
    assert filler_phrase(text) is not None


@pytest.mark.parametrize("family, text", CHATTER)
def test_a_write_with_chatter_is_rejected(family, text):
    content = f"{FACT} \\cite{{textid1}}. {text}"
    with pytest.raises(ActionError, match="no talk about the task"):
        validate_write(content, Limits(), QUESTION, {"textid1"})
    with pytest.raises(ActionError, match="no talk about the task"):  # soft mode too: every mode
        validate_write(content, Limits(hard=False), QUESTION, {"textid1"})


@pytest.mark.parametrize("family, text", CHATTER)
def test_an_outline_with_chatter_is_rejected(family, text):
    action = (
        '{"name": "init-plan", "title": "Heat pumps in the cold", "sections": ['
        '{"title": "Cold climates", "plan": "How they cope"}, {"title": "Defrosting", "plan": "' + text + '"}, '
        '{"title": "Costs", "plan": "What they cost"}]}'
    )
    with pytest.raises(ActionError, match="no talk about the task"):
        validate_init_plan(action, Limits(), QUESTION)


@pytest.mark.parametrize("family, text", CHATTER)
def test_evidence_mode_never_offers_a_sentence_with_chatter(family, text):
    assert not is_choosable(text, QUESTION)


def test_plain_facts_pass():
    validate_write(
        f"{FACT} \\cite{{textid1}}. Defrost cycles take a few minutes \\cite{{textid1}}.",
        Limits(),
        QUESTION,
        {"textid1"},
    )
    for fact in (FACT, "Passive houses need little heat, so a small unit is enough.", "The PS2 console sold well."):
        assert filler_phrase(fact) is None, fact
