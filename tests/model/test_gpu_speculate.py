"""Speculative decoding's runtime pieces on the GPU (device tool only: `pytest -m gpu tests/model`): graph-captured
`extend` against the same passes run eagerly and against the CPU reference, graph `rollback` against a run fed only
the kept tokens, and greedy speculation against plain greedy decoding on MiniCPM-SALA's real shape."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sala_report.model import ModelConfig, load_model
from sala_report.model.cache import LightningLayerState
from sala_report.model.runtime import Runtime
from sala_report.model.speculate import speculative_generate

pytestmark = pytest.mark.gpu
WIDTHS = [1, 2, 5, 16, 3]


def _rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def _states(rt):
    return [s.state.clone() for s in rt.cache.layers if isinstance(s, LightningLayerState)]


@pytest.fixture
def bf16_sala(tmp_path, tiny_config, make_state):
    """The tiny SALA checkpoint in bf16 with 16 query heads over 2 KV heads, as tests/model/test_gpu_runtime.py."""
    config = tiny_config("sala")
    config.update(num_attention_heads=16, lightning_nh=16, lightning_nkv=16)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in make_state(config).items()}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


def _passes(rt, ids, start, rounds=2):
    """Extend passes of WIDTHS, `rounds` times (the second round replays the graphs the first captured)."""
    out, t = [], start
    for _ in range(rounds):
        for w in WIDTHS:
            out.append(rt.extend(ids[t : t + w]).clone())
            t += w
    return torch.cat(out)


@pytest.mark.parametrize("prompt", [600, 1010, 1100])  # dense, crossing dense_len = 1024 within the passes, sparse
def test_graph_extend_equals_eager_extend_and_the_reference(bf16_sala, prompt):
    n = 2 * sum(WIDTHS)
    ids = torch.randint(0, 128, (prompt + n,), generator=torch.Generator().manual_seed(prompt))
    got = {}
    gpu = load_model(bf16_sala, device="cuda")
    for graphs in (True, False):
        rt = Runtime.create(gpu, 1, prompt, n, chunk_tokens=1024, cuda_graphs=graphs)
        rt.prefill(ids[None, :prompt].cuda())
        got[graphs] = _passes(rt, ids.cuda(), prompt)
    ref = load_model(bf16_sala, device="cpu", dtype=torch.float32)
    rt = Runtime.create(ref, 1, prompt, n)
    rt.prefill(ids[None, :prompt])
    want = torch.stack([rt.decode(ids[t : t + 1])[0] for t in range(prompt, prompt + n)])
    assert torch.isfinite(got[True]).all()
    assert _rel(got[True], got[False]) < 1e-3  # graph replay computes what the eager passes compute
    assert _rel(got[True], want) < 1e-2  # bf16 kernels against fp32 decode steps on the CPU


@pytest.mark.parametrize("prompt", [700, 1100])
def test_graph_rollback_equals_a_run_over_the_kept_tokens(bf16_sala, prompt):
    gpu = load_model(bf16_sala, device="cuda")
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 128, (prompt,), generator=g).cuda()
    spec = Runtime.create(gpu, 1, prompt, 200, chunk_tokens=1024)
    fresh = Runtime.create(gpu, 1, prompt, 200, chunk_tokens=1024)
    spec.prefill(ids[None])
    fresh.prefill(ids[None])
    last = 7
    # every kept count twice over, so the snapshot and rollback graphs are replayed, not only run on capture
    for kept in [0, 1, 3, 6, 2, 0, 1, 3, 6, 2, 5, 5]:
        drafts = torch.randint(0, 128, (6,), generator=g).tolist()
        snap = spec.snapshot()
        spec.extend([last, *drafts])
        spec.rollback(snap, kept)
        fresh.extend([last, *drafts[:kept]])
        assert spec.length == fresh.length
        last = drafts[kept] if kept < 6 else 9
    after = [11, 12, 13, 14]
    assert _rel(spec.extend(after), fresh.extend(after)) < 1e-2
    for a, b in zip(_states(spec), _states(fresh), strict=True):
        assert _rel(a, b) < 1e-2


def test_speculative_greedy_equals_plain_greedy_on_the_real_shape():
    """The real MiniCPM-SALA config, random bf16 weights, an 8,160-token prompt that repeats a passage, so the answer
    crosses dense_len = 8,192 (verify passes go from dense to sparse attention). Random weights leave near-ties between
    the top two logits; a different token is accepted only at a tie within what rounding (a width-w pass against
    one-token steps) moves the logits by there."""
    from sala_report.model.gpu_bench import BUNDLED_CONFIG, random_model

    lm = random_model(ModelConfig.from_json(BUNDLED_CONFIG))
    g = torch.Generator().manual_seed(0)
    prompt = (torch.randint(0, lm.config.vocab_size, (600,), generator=g).tolist() * 14)[:8160]
    rt = Runtime.create(lm, 1, len(prompt), 64)
    plain = speculative_generate(lm, prompt, 64, speculate=False, runtime=rt)
    fast = speculative_generate(lm, prompt, 64, draft_tokens=15, runtime=rt)
    print(f"drafted {fast.drafted}, accepted {fast.accepted}, passes {fast.forwards} against {plain.forwards}")
    diff = next((i for i, (a, b) in enumerate(zip(plain.tokens, fast.tokens)) if a != b), None)
    if diff is None:
        assert len(fast.tokens) == len(plain.tokens) == 64
        return
    # the logits at the first difference, from one-token steps and from one verify pass over the same tokens
    seq = [prompt[-1], *plain.tokens[:diff]]
    w = min(len(seq), 16)
    rt.reset()
    rt.prefill(torch.tensor([prompt[:-1] + seq[:-w]]))
    wide = rt.extend(seq[-w:]).clone()
    rt.reset()
    rt.prefill(torch.tensor([prompt[:-1] + seq[:-w]]))
    steps = torch.stack([rt.decode(torch.tensor([t]))[0].clone() for t in seq[-w:]])
    rounding = (wide - steps).abs().max().item()
    a, b = plain.tokens[diff], fast.tokens[diff]
    gap = abs((steps[-1, a] - steps[-1, b]).item())
    assert gap <= 2 * rounding, f"token {diff}: plain {a} vs speculative {b}, logit gap {gap} > 2 x {rounding}"
