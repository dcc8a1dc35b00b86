"""Prompt-lookup speculative decoding: drafts from the sequence itself, greedy output identical to plain decoding
(also through the Lightning layers' rollback), and the sampled accept/resample rule distributed as the model."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import load_model
from sala_report.model.speculate import COPY_PROMPT, _accept, lookup_draft, speculative_generate


def test_lookup_draft_takes_what_followed_the_latest_match():
    seq = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7]
    assert lookup_draft(seq, 3) == [2, 3, 6]  # "6 7" last seen at index 6, followed by 2, 3, 6 (no 3-gram match)
    assert lookup_draft([1, 2, 3, 4], 2) == []
    assert lookup_draft([4, 1, 2, 9, 1, 2], 5) == [9, 1, 2]


def test_greedy_is_identical_with_drafts_through_lightning_rollback(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    body = torch.randint(3, 128, (12,), generator=g).tolist()
    prompt = body * 3 + body[:4]  # repeats give the lookup something to propose
    plain = speculative_generate(lm, prompt, 40, speculate=False)
    fast = speculative_generate(lm, prompt, 40, draft_tokens=6)
    assert fast.tokens == plain.tokens
    assert fast.drafted > 0 and fast.accepted < fast.drafted  # some drafts were rejected, so rollback ran
    # the state left behind is the plain run's: the recurrent states were rewound, not advanced past rejected drafts
    assert fast.cache.length == plain.cache.length
    for a, b in zip(fast.cache.layers, plain.cache.layers, strict=True):
        if hasattr(a, "state"):
            assert torch.allclose(a.state, b.state, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_copies_with_fewer_passes(smollm2, smollm2_tok):
    text = "The keeper trimmed the wicks, wound the clockwork and cleaned the lens every morning."
    ids = smollm2_tok.encode(COPY_PROMPT.format(text=text))
    plain = speculative_generate(smollm2, ids, 12, speculate=False)
    fast = speculative_generate(smollm2, ids, 12)
    assert fast.tokens == plain.tokens
    assert fast.accepted > 0 and fast.forwards < plain.forwards


def test_sampled_accept_rule_matches_the_model_distribution():
    logits = torch.tensor([[1.0, 0.2, -0.5, 0.7, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    p = torch.softmax(logits[0], -1)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    counts = torch.zeros(5)
    for _ in range(n):
        kept, nxt = _accept(logits, [3], 1.0, gen)
        counts[kept[0] if kept else nxt] += 1  # the first emitted token
    # each frequency within 4 standard errors of the model's probability
    assert ((counts / n - p).abs() < 4 * (p * (1 - p) / n).sqrt()).all()
