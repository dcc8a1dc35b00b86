"""The Lightning references against each other, in float64: chunked == recurrent, segments, decode, varlen."""

import math

import pytest
import torch

from sala_report.kernels import lightning_decode, lightning_prefill
from sala_report.kernels.lightning import naive


def slopes(H):
    return torch.tensor([-(2 ** (-(h + 1) * 8 / H)) for h in range(H)], dtype=torch.float32)


def rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("T", [1, 63, 130])
def test_chunk_matches_recurrent(T):
    B, H, Dk, Dv = 2, 3, 8, 12
    q, k, v = rand(B, T, H, Dk, seed=1), rand(B, T, H, Dk, seed=2), rand(B, T, H, Dv, seed=3)
    g = slopes(H)
    h0 = rand(B, H, Dk, Dv, seed=4)
    o_r, s_r = naive.recurrent_lightning(q, k, v, g, scale=Dk**-0.5, initial_state=h0)
    o_c, s_c = naive.chunk_lightning(q, k, v, g, scale=Dk**-0.5, initial_state=h0, chunk_size=16)
    assert rel(o_c, o_r) < 1e-12 and rel(s_c, s_r) < 1e-12


def test_segmented_equals_one_shot_and_decode_continues():
    B, T, H, D = 1, 150, 4, 16
    q, k, v = (rand(B, T, H, D, seed=s) for s in (5, 6, 7))
    g = slopes(H)
    o, s = lightning_prefill(q, k, v, g, scale=D**-0.5)
    o1, s1 = lightning_prefill(q[:, :70], k[:, :70], v[:, :70], g, scale=D**-0.5)
    o2, s2 = lightning_prefill(q[:, 70:100], k[:, 70:100], v[:, 70:100], g, scale=D**-0.5, initial_state=s1)
    state = s2.clone()
    steps = [lightning_decode(q[:, t], k[:, t], v[:, t], g, state, scale=D**-0.5) for t in range(100, T)]
    assert rel(torch.cat([o1, o2, torch.stack(steps, 1)], 1), o) < 1e-12
    assert rel(state, s) < 1e-12


def test_varlen_equals_separate_sequences():
    H, D = 2, 8
    lens = [5, 64, 70]
    cu = torch.tensor([0, 5, 69, 139])
    q, k, v = (rand(1, 139, H, D, seed=s) for s in (8, 9, 10))
    h0 = rand(3, H, D, D, seed=11)
    g = slopes(H)
    o, s = lightning_prefill(q, k, v, g, scale=0.3, initial_state=h0, cu_seqlens=cu)
    for n in range(len(lens)):
        a, b = int(cu[n]), int(cu[n + 1])
        o_n, s_n = naive.recurrent_lightning(q[:, a:b], k[:, a:b], v[:, a:b], g, scale=0.3, initial_state=h0[n : n + 1])
        assert rel(o[:, a:b], o_n) < 1e-12 and rel(s[n : n + 1], s_n) < 1e-12


def test_long_sequence_strong_decay_stays_finite():
    H, D, T = 2, 8, 2000
    g = torch.tensor([-0.8409, -0.0039])
    q, k, v = (rand(1, T, H, D, dtype=torch.float32, seed=s) for s in (12, 13, 14))
    o, s = lightning_prefill(q, k, v, g, scale=D**-0.5)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert s.dtype == torch.float32
    # head 0 forgets within a few tokens: its output depends on the last handful of tokens only
    o_tail, _ = lightning_prefill(q[:, -200:], k[:, -200:], v[:, -200:], g, scale=D**-0.5)
    assert torch.allclose(o_tail[:, -1, 0], o[:, -1, 0], atol=1e-5)
    assert not math.isclose(o_tail[0, -1, 1, 0].item(), o[0, -1, 1, 0].item(), rel_tol=1e-3)


def test_bf16_inputs_fp32_state_and_errors():
    q = torch.randn(1, 10, 2, 8, dtype=torch.bfloat16)
    o, s = lightning_prefill(q, q, q, slopes(2), scale=0.5)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    with pytest.raises(ValueError, match="log_decay"):
        lightning_prefill(q, q, q, slopes(3), scale=0.5)
    with pytest.raises(ValueError, match="state"):
        lightning_decode(q[:, 0], q[:, 0], q[:, 0], slopes(2), torch.zeros(1, 2, 8, 8, dtype=torch.bfloat16), scale=1.0)
    with pytest.raises(ValueError, match="backend"):
        lightning_prefill(q, q, q, slopes(2), scale=0.5, backend="cuda")
