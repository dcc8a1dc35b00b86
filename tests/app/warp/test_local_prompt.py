"""What actually reaches the in-process model: the system and user messages through SmolLM2's own chat
template and tokenizer (the cached GGUF), checked against the ChatML layout written out by hand, and the
token ids the real model's first forward pass receives."""

from __future__ import annotations

import pytest
import torch

from sala_report.app.warp.generator import GenRequest, LocalGenerator
from sala_report.app.warp.prompts import system_prompt
from sala_report.model import load_tokenizer

IM_START, IM_END = 1, 2  # SmolLM2's <|im_start|> and <|im_end|>: single special tokens
USER = "Task: write one section about solar power.\nEvidence: module prices fell by ninety percent."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def chatml_ids(tok, system: str, user: str) -> list[int]:
    """ChatML as SmolLM2 was trained on it, assembled by hand: each message is <|im_start|>role\\ntext<|im_end|>\\n,
    then <|im_start|>assistant\\n opens the answer. Special tokens split the text, so each piece encodes alone."""
    ids: list[int] = []
    for role, text in (("system", system), ("user", user)):
        ids += [IM_START, *tok.encode(f"{role}\n{text}"), IM_END, *tok.encode("\n")]
    return ids + [IM_START, *tok.encode("assistant\n")]


@pytest.mark.parametrize("style", ["full", "compact"])
def test_the_system_and_user_messages_reach_the_model_as_chatml(tok, style):
    system = system_prompt(style)
    assert system.strip(), "the prompts have a system message to send"
    ids = LocalGenerator(None, tok).prompt_ids(GenRequest(system, USER, None, 16))
    assert ids == chatml_ids(tok, system, USER)
    text = tok.decode(ids)
    assert text.count(system) == 1 and text.count(USER) == 1
    # SmolLM2's template puts its own system line in when none is sent: it must not be there.
    assert "named SmolLM" not in text
    assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2


def test_no_system_prompt_sends_no_system_turn(tok):
    """The agentcpm style has no system prompt, as AgentCPM-Report's pipeline sends only the user message:
    the chat template then gets the user turn alone (SmolLM2's own template fills in its default line),
    never an empty system turn."""
    assert system_prompt("agentcpm") == ""
    ids = LocalGenerator(None, tok).prompt_ids(GenRequest("", USER, None, 16))
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # from SmolLM2's template
    assert ids == chatml_ids(tok, default, USER)
    assert "system\n<|im_end|>" not in tok.decode(ids)


@pytest.mark.slow
def test_the_real_model_is_fed_exactly_those_tokens(tok):
    generator = LocalGenerator.load("smollm2-135m", device="cpu", dtype="float32", constrained=False)
    fed: list[torch.Tensor] = []

    def record(module, args, kwargs):
        fed.append((args[0] if args else kwargs["input_ids"]).detach().reshape(-1).clone())

    handle = generator.lm.register_forward_pre_hook(record, with_kwargs=True)
    try:
        request = GenRequest(system_prompt("compact"), USER, None, max_tokens=1, temperature=0.0)
        result = generator.generate(request)
    finally:
        handle.remove()
    expected = chatml_ids(tok, system_prompt("compact"), USER)
    assert torch.cat(fed).tolist()[: len(expected)] == expected
    assert result.prompt_tokens == len(expected)
