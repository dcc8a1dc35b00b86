"""Prompt-lookup speculative decoding: drafts from the sequence itself, greedy output identical to plain decoding
(also through the Lightning layers' rollback), and the sampled accept/resample rule distributed as the model."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import load_model
from sala_report.model.runtime import Runtime
from sala_report.model.speculate import NgramIndex, _accept, lookup_draft, speculative_generate
from sala_report.model.speculate_bench import COPY_PROMPT


def test_lookup_draft_takes_what_followed_the_latest_match():
    seq = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7]
    assert lookup_draft(seq, 3) == [2, 3, 6]  # "6 7" last seen at index 6, followed by 2, 3, 6 (no 3-gram match)
    assert lookup_draft([1, 2, 3, 4], 2) == []
    assert lookup_draft([4, 1, 2, 9, 1, 2], 5) == [9, 1, 2]


def test_the_index_drafts_what_a_scan_of_the_sequence_finds():
    g = torch.Generator().manual_seed(4)
    for trial in range(20):
        seq = torch.randint(0, 3 + trial % 5, (int(torch.randint(1, 60, (), generator=g)),), generator=g).tolist()
        index = NgramIndex(seq[:1])
        for t in seq[1:]:
            index.append(t)
            for m in (1, 4):
                assert index.draft(m) == lookup_draft(index.seq, m)


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


def test_greedy_is_identical_across_dense_len_and_with_stops(checkpoint):
    """The answer runs from dense to sparse attention (dense_len = 1024), so verify passes straddle the switch."""
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    body = torch.randint(3, 128, (50,), generator=g).tolist()
    prompt = (body * 21)[:1000]
    rt = Runtime.create(lm, 1, 1000, 60)
    plain = speculative_generate(lm, prompt, 60, speculate=False, runtime=rt)
    fast = speculative_generate(lm, prompt, 60, draft_tokens=15, runtime=rt)  # the runtime reused, reset each time
    assert fast.tokens == plain.tokens and fast.drafted > 0
    stop = frozenset({plain.tokens[37]})
    first = plain.tokens.index(plain.tokens[37])
    plain_stop = speculative_generate(lm, prompt, 60, speculate=False, stop_ids=stop, runtime=rt)
    fast_stop = speculative_generate(lm, prompt, 60, draft_tokens=15, stop_ids=stop)
    assert plain_stop.tokens == fast_stop.tokens == plain.tokens[: first + 1]


@pytest.mark.slow
def test_smollm2_copies_with_fewer_passes(smollm2, smollm2_tok):
    text = "The keeper trimmed the wicks, wound the clockwork and cleaned the lens every morning."
    ids = smollm2_tok.encode(COPY_PROMPT.format(text=text))
    plain = speculative_generate(smollm2, ids, 32, speculate=False)
    fast = speculative_generate(smollm2, ids, 32)
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


def _chi2_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square test of counts against probs; the p-value is the regularised upper incomplete gamma."""
    n = counts.sum()
    stat = ((counts - n * probs) ** 2 / (n * probs)).sum()
    dof = torch.tensor((probs.numel() - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(dof, stat.double() / 2))


def test_sampled_tokens_follow_the_model_position_by_position():
    """Two drafts over a vocabulary of 5: the first emitted token follows p0; after the first draft is kept, the
    second follows p1; after both are kept, the third follows p2 (chi-square, fixed seed)."""
    logits = torch.tensor([[1.0, 0.2, -0.5, 0.7, 0.0], [0.3, 1.2, 0.1, -1.0, 0.5], [0.0, -0.4, 0.9, 0.2, 0.6]])
    p = torch.softmax(logits, -1).double()
    drafts = [3, 1]
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3, 5, dtype=torch.float64)
    for _ in range(30000):
        kept, nxt = _accept(logits, drafts, 1.0, gen)
        emitted = [*kept, nxt]
        for i, t in enumerate(emitted):
            counts[i, t] += 1
    for i in range(3):
        assert counts[i].sum() > 1500  # enough draws reach each position
        assert _chi2_p_value(counts[i], p[i]) > 1e-3, (i, counts[i] / counts[i].sum(), p[i])


def test_the_bench_cli_names_a_missing_model_in_one_line(tmp_path, capsys):
    from sala_report.model.speculate_bench import main

    assert main(["--model", str(tmp_path / "missing.gguf"), "--tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no model at") and "Traceback" not in err
