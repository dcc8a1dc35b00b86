"""The runtime's speculative pieces on a CPU: `extend` (every position's logits, each as a decode step computes it),
`snapshot` / `rollback` (the state of a run over the kept tokens only) and `reset` (a runtime reused as new).

The tiny SALA checkpoint has both mixer kinds and turns sparse at 1024 tokens, so passes below, across and above
dense_len are all exercised; each result is checked against a separate path (one full forward pass, or one-token
decode steps, or a fresh runtime fed only the kept tokens).
"""

from __future__ import annotations

import pytest
import torch

from sala_report.model import load_model
from sala_report.model.cache import LightningLayerState
from sala_report.model.runtime import Runtime


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture
def sala(checkpoint):
    return load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)


def _ids(n, seed=0):
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed))


def _states(rt):
    return [s.state.clone() for s in rt.cache.layers if isinstance(s, LightningLayerState)]


def test_extend_below_dense_len_equals_one_forward(sala):
    ids = _ids(620)
    with torch.inference_mode():
        full = sala(ids[None])[0]
    rt = Runtime.create(sala, 1, 600, 40)
    rt.prefill(ids[None, :600])
    got = torch.cat([rt.extend(ids[600:608]), rt.extend(ids[608:609]), rt.extend(ids[609:620])])
    assert got.shape == (20, 128) and rt.length == 620
    assert _rel(got, full[600:620]) < 1e-5


@pytest.mark.parametrize("prompt", [1018, 1100])  # a pass crossing dense_len = 1024, and one above it
def test_extend_equals_decode_steps(sala, prompt):
    ids = _ids(prompt + 12, seed=prompt)
    steps = Runtime.create(sala, 1, prompt, 12)
    steps.prefill(ids[None, :prompt])
    want = torch.stack([steps.decode(ids[t : t + 1]) for t in range(prompt, prompt + 12)], 1)[0]
    rt = Runtime.create(sala, 1, prompt, 12)
    rt.prefill(ids[None, :prompt])
    got = rt.extend(ids[prompt:])
    assert _rel(got, want) < 1e-5
    for a, b in zip(_states(rt), _states(steps), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_extend_across_the_long_rope_switch_equals_decode_steps(checkpoint):
    """MiniCPM's LongRoPE changes factors once the sequence outgrows 2,048 tokens: a pass across that is split."""
    lm = load_model(checkpoint("minicpm"), device="cpu", dtype=torch.float32)
    ids = _ids(2056, seed=4)
    steps = Runtime.create(lm, 1, 2040, 16)
    steps.prefill(ids[None, :2040])
    want = torch.stack([steps.decode(ids[t : t + 1])[0] for t in range(2040, 2056)])
    rt = Runtime.create(lm, 1, 2040, 16)
    rt.prefill(ids[None, :2040])
    assert _rel(rt.extend(ids[2040:]), want) < 1e-5


def test_long_extend_runs_as_chunked_prefill(sala):
    ids = _ids(1300, seed=3)
    with torch.inference_mode():
        full = sala(ids[None])[0]
    rt = Runtime.create(sala, 1, 1300, 0, chunk_tokens=1024)
    rt.prefill(ids[None, :100])
    got = rt.extend(ids[100:])  # 1200 tokens in two chunks, the second sparse like the one pass
    assert got.shape == (1200, 128)
    assert _rel(got, full[100:]) < 1e-5


@pytest.mark.parametrize("prompt", [700, 1100])
@pytest.mark.parametrize("kept", [0, 2, 5])
def test_rollback_equals_a_run_over_the_kept_tokens(sala, prompt, kept):
    ids = _ids(prompt + 1, seed=7)
    drafts = [5, 9, 11, 40, 41]
    after = [17, 18, 19]  # tokens decoded after the rollback: they read the KV, compressed keys and states it left
    spec = Runtime.create(sala, 1, prompt, 16)
    spec.prefill(ids[None, :prompt])
    snap = spec.snapshot()
    spec.extend(torch.tensor([int(ids[prompt]), *drafts]))
    spec.rollback(snap, kept)
    assert spec.length == prompt + 1 + kept
    got = spec.extend(after)
    fresh = Runtime.create(sala, 1, prompt, 16)
    fresh.prefill(ids[None, :prompt])
    fresh.extend(torch.tensor([int(ids[prompt]), *drafts[:kept]]))
    want = fresh.extend(after)
    assert _rel(got, want) < 1e-5
    for a, b in zip(_states(spec), _states(fresh), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_rollback_after_several_passes_feeds_the_kept_tokens_again(sala):
    ids = _ids(705, seed=8)
    spec = Runtime.create(sala, 1, 700, 16)
    spec.prefill(ids[None, :700])
    snap = spec.snapshot()
    spec.extend(ids[700:702])
    spec.decode(ids[702:703])
    spec.extend(ids[703:705])
    spec.rollback(snap, 2)  # keeps ids[700:703], which came in two passes: the trails do not hold them
    fresh = Runtime.create(sala, 1, 700, 16)
    fresh.prefill(ids[None, :703])
    assert _rel(spec.decode(torch.tensor([3])), fresh.decode(torch.tensor([3]))) < 1e-5


def test_keeping_every_token_changes_nothing(sala):
    ids = _ids(706, seed=9)
    rt = Runtime.create(sala, 1, 700, 16)
    rt.prefill(ids[None, :700])
    snap = rt.snapshot()
    rt.extend(ids[700:706])
    before = _states(rt)
    rt.rollback(snap, 5)
    assert rt.length == 706
    assert all(torch.equal(a, b) for a, b in zip(before, _states(rt), strict=True))


def test_reset_serves_a_new_sequence_as_a_new_runtime(sala):
    a, b = _ids(1100, seed=1), _ids(300, seed=2)
    rt = Runtime.create(sala, 1, 1100, 8)
    rt.prefill(a[None])
    rt.snapshot()
    rt.extend([4, 5, 6])
    rt.reset()
    assert rt.length == 0
    new = Runtime.create(sala, 1, 1100, 8)
    for mine, theirs in zip(rt.cache.layers, new.cache.layers, strict=True):
        for name in ("state", "k", "v", "k1", "k2"):
            x, y = getattr(mine, name, None), getattr(theirs, name, None)
            assert (x is None) == (y is None) and (x is None or torch.equal(x, torch.zeros_like(x)))
    got = torch.stack([rt.prefill(b[None, :290])[0], *rt.extend(b[290:300])])
    want = torch.stack([new.prefill(b[None, :290])[0], *new.extend(b[290:300])])
    assert torch.equal(got, want)


def test_misuse_is_refused_with_what_was_expected(sala):
    rt = Runtime.create(sala, 1, 10, 10)
    rt.prefill(_ids(10)[None])
    with pytest.raises(ValueError, match=r"shape \[T >= 1\]"):
        rt.extend([])
    snap = rt.snapshot()
    rt.extend([3, 4, 5])
    with pytest.raises(ValueError, match="0 <= kept < 3"):
        rt.rollback(snap, 3)
    rt.rollback(snap, 1)
    with pytest.raises(ValueError, match="latest snapshot"):
        rt.rollback(snap, 0)
    two = Runtime.create(sala, 2, 10, 10)
    with pytest.raises(ValueError, match="batch of one"):
        two.extend([1, 2])


def _replaying_graphs(self, key, fn):
    """Runtime._graphed as a CUDA graph behaves, on a CPU: the first call of a key runs fn; later calls re-run that
    first fn, with the host values it was built with (position, width, regime), writing into the first output."""
    if key in self._graphs:
        first, out = self._graphs[key]
        result = first()
        return None if out is None else out.copy_(result)
    result = fn()
    self._graphs[key] = (fn, None if result is None else result.clone())
    return result


def test_captured_passes_read_everything_that_changes_from_the_device(sala, monkeypatch):
    """What a graph replays must read the position, the ids and the recorded k/v from buffers the runtime refills:
    replaying the first call of each key at later positions gives what fresh eager calls give."""
    from sala_report.model.speculate import speculative_generate

    g = torch.Generator().manual_seed(6)
    body = torch.randint(3, 128, (40,), generator=g).tolist()
    prompt = (body * 26)[:1000]
    eager = speculative_generate(sala, prompt, 60, draft_tokens=15)
    monkeypatch.setattr(Runtime, "_graphed", _replaying_graphs)
    rt = Runtime.create(sala, 1, 1000, 60)
    rt.cuda_graphs = True
    replayed = speculative_generate(sala, prompt, 60, draft_tokens=15, runtime=rt)
    assert replayed.tokens == eager.tokens
    assert replayed.accepted < replayed.drafted  # rollbacks ran, and were replayed
    assert {k[0] for k in rt._graphs if isinstance(k[0], str)} >= {"extend", "snapshot", "rollback"}
    mine = [s.state for s in rt.cache.layers if isinstance(s, LightningLayerState)]
    theirs = [s.state for s in eager.cache.layers if isinstance(s, LightningLayerState)]
    for a, b in zip(mine, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert speculative_generate(sala, prompt, 60, speculate=False, runtime=rt).tokens == eager.tokens


def test_replayed_passes_and_rollbacks_equal_eager_ones(sala, monkeypatch):
    """Verify passes of one width, rolled back to varying lengths across dense_len: every key is replayed."""
    prompt, g = 1000, torch.Generator().manual_seed(5)
    ids = _ids(prompt, seed=11)
    eager = Runtime.create(sala, 1, prompt, 200)
    eager.prefill(ids[None])
    monkeypatch.setattr(Runtime, "_graphed", _replaying_graphs)
    rt = Runtime.create(sala, 1, prompt, 200)
    rt.cuda_graphs = True
    rt.prefill(ids[None])
    last = 7
    for kept in [0, 1, 3, 6, 2] * 3:
        drafts = torch.randint(3, 128, (6,), generator=g).tolist()
        snap = rt.snapshot()
        got = rt.extend([last, *drafts]).clone()
        rt.rollback(snap, kept)
        want = eager.extend([last, *drafts[:kept]])
        assert rt.length == eager.length and _rel(got[: 1 + kept], want) < 1e-5
        last = drafts[kept] if kept < 6 else 9
    assert rt.length > 1024  # the passes went on into the sparse regime
    assert _rel(rt.extend([11, 12, 13]), eager.extend([11, 12, 13])) < 1e-5
    for a, b in zip(_states(rt), _states(eager), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
