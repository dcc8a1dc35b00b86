"""Forced tokens fed in one chunk (generate's `fast_forward`): on the real SmolLM2 the greedy answer is
the one token-by-token decoding gives, in fewer forward calls, and a forced stop token ends it."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import GenerationConfig, generate

PROMPT = "Pick a sentence about heat pumps:"
SENTENCES = [" Heat pumps move heat from outdoors into a building.", " Frost forms on the outdoor coil in winter."]


class Calls:
    """Counts the model's forward calls (prefill, steps and chunks alike)."""

    def __init__(self, lm):
        self.lm, self.n = lm, 0

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def __call__(self, *args, **kwargs):
        self.n += 1
        return self.lm(*args, **kwargs)


def choose_one(tok):
    """(logits hook, fast_forward): the answer is one of SENTENCES; once its first token is chosen, the
    rest is forced. A hand-written prefix rule, independent of any grammar library."""
    options = [tok.encode(s) for s in SENTENCES]
    eos = tok.eos_token_ids[0]

    def live(generated: list[int]) -> list[list[int]]:
        return [o for o in options if o[: len(generated)] == generated]

    def hook(generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        allowed = {o[len(generated)] for o in live(generated) if len(o) > len(generated)}
        allowed |= {eos} if any(len(o) == len(generated) for o in live(generated)) else set()
        mask = torch.full_like(logits, float("-inf"))
        mask[sorted(allowed)] = 0.0
        return logits + mask

    def forced(generated: list[int]) -> list[int]:
        matches = live(generated)
        if len(matches) != 1 or not generated:
            return []
        return matches[0][len(generated) :] + [eos]

    return hook, forced


@pytest.mark.parametrize("seed", [0, 1])
def test_forced_tokens_in_one_chunk_give_the_same_answer(smollm2, smollm2_tok, seed):
    hook, forced = choose_one(smollm2_tok)
    ids = smollm2_tok.encode(PROMPT)
    config = GenerationConfig(max_new_tokens=40, temperature=0.0 if seed == 0 else 0.7, seed=seed)
    plain_lm, chunked_lm = Calls(smollm2), Calls(smollm2)
    plain = generate(plain_lm, smollm2_tok, ids, config, logits_hook=hook)
    chunked = generate(chunked_lm, smollm2_tok, ids, config, logits_hook=hook, fast_forward=forced)
    deltas = list(chunked)
    list(plain)
    assert chunked.text == plain.text and chunked.text in [s for s in SENTENCES]
    assert chunked.token_ids == plain.token_ids and chunked.finish_reason == plain.finish_reason == "stop"
    assert chunked.forced_tokens == len(chunked.token_ids) - 1
    assert "".join(deltas) == chunked.text and len(deltas) >= len(chunked.token_ids) - 2  # streamed token by token
    assert chunked_lm.n == 2 and plain_lm.n == len(plain.token_ids) + 1  # prefill + one chunk vs one call each


def test_forced_tokens_respect_the_token_limit(smollm2, smollm2_tok):
    hook, forced = choose_one(smollm2_tok)
    gen = generate(
        smollm2,
        smollm2_tok,
        smollm2_tok.encode(PROMPT),
        GenerationConfig(max_new_tokens=4, temperature=0),
        logits_hook=hook,
        fast_forward=forced,
    )
    list(gen)
    assert len(gen.token_ids) == 4 and gen.finish_reason == "length"
