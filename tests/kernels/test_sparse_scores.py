"""InfLLM-V2 block scores, not only the indices they rank: the Triton score pass (LSE over K2, the group's
head sum, the 5-wide max-pool) against the reference's `block_scores`, value by value, at MiniCPM-SALA's
real kernel sizes and head layout (16 query heads per KV head, D = 128) with top-k large enough that the
choice matters. On a CPU through TRITON_INTERPRET=1 (fp32, fp16); at 64K tokens on a GPU (`gpu` marker).

A wrong score that happens to keep the same top-k (a dropped head, a pool window one entry short, an
LSE off by a constant factor) passes every index comparison; these tests read the scores themselves,
as the top-k kernel receives them."""

from __future__ import annotations

import pytest
import torch

from sala_report.kernels import SparseParams, compress_keys
from sala_report.kernels.sparse import naive as reference
from sala_report.kernels.sparse import select as select_mod

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
SALA = SparseParams()  # 32/16 K1, 128/64 K2, 64-token blocks, 1 init block, 2048-token window, top 64


class ScoreCapture:
    """Wraps the top-k kernel: keeps a copy of each chunk's score buffer (rows x blocks) it is launched on."""

    def __init__(self, kernel) -> None:
        self.kernel = kernel
        self.chunks: list[tuple[int, int, torch.Tensor]] = []  # (first position, rows, scores [B*Hkv, rows, nb])

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(scores, out, chunk_start, chunk_len, nb, *args, **kwargs):
            # rows are packed at the chunk's own length (a last, shorter chunk uses the buffer's front)
            rows = scores.reshape(-1)[: scores.shape[0] * chunk_len * nb].view(scores.shape[0], chunk_len, nb)
            self.chunks.append((int(chunk_start), int(chunk_len), rows.clone()))
            return launch(scores, out, chunk_start, chunk_len, nb, *args, **kwargs)

        return run


def triton_scores(monkeypatch, q, k1, k2, *, q_start, kv_len, params):
    """(scores [B*Hkv, Tq, nb] as the top-k kernel reads them, the selected indices)."""
    capture = ScoreCapture(select_mod._topk_kernel)
    monkeypatch.setattr(select_mod, "_topk_kernel", capture)
    idx = select_mod.select_blocks_triton(q, k1, k2, q_start=q_start, kv_len=kv_len, params=params, causal=True)
    monkeypatch.undo()
    rows = torch.cat([s for _, _, s in sorted(capture.chunks, key=lambda c: c[0])], dim=1)
    return rows, idx


def scored_mask(q_start: int, n_q: int, nb: int, params: SparseParams) -> torch.Tensor:
    """[Tq, nb]: the blocks whose scores are computed (and ranked): after the init blocks, before the local band."""
    band = torch.arange(q_start, q_start + n_q)[:, None] // params.block_size - params.local_blocks
    j = torch.arange(nb)[None, :]
    return (j >= params.init_blocks) & (j < band)


def check_scores(monkeypatch, L: int, n_q: int, params: SparseParams, dtype, *, rtol: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n_q, 32, 128, generator=g).to(DEV, dtype)
    k = torch.randn(1, L, 2, 128, generator=g).to(DEV, dtype)
    k1 = compress_keys(k, kernel_size=params.kernel_size, stride=params.kernel_stride, backend="reference")
    k2 = compress_keys(k, kernel_size=params.lse_kernel_size, stride=params.lse_stride, backend="reference")
    q0 = L - n_q
    got, idx = triton_scores(monkeypatch, q, k1, k2, q_start=q0, kv_len=L, params=params)
    want = reference.block_scores(q, k1, k2, q_start=q0, kv_len=L, params=params, causal=True)[0]  # [Hkv, Tq, nb]
    mask = scored_mask(q0, n_q, want.shape[-1], params).to(DEV)
    assert mask.sum(-1).min() > params.topk, "the top-k must have a choice to make"
    got = got.float().where(got >= 0, float("-inf"))  # the kernel writes -1 for "no visible entry"
    for h in range(want.shape[0]):
        w, s = want[h][mask], got[h][mask]
        assert torch.equal(torch.isinf(w), torch.isinf(s)), "the same blocks have no visible entry"
        finite = torch.isfinite(w)
        assert torch.allclose(s[finite], w[finite], rtol=rtol, atol=1e-6), (s[finite] - w[finite]).abs().max()
    # Scores are sums of 16 softmax-like probabilities: a head dropped from the sum shows up in the values.
    assert 0 < want[mask & torch.isfinite(want)].max() <= 16
    want_idx = reference.select_blocks(q, k1, k2, q_start=q0, kv_len=L, params=params, causal=True)
    return idx, want_idx


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
def test_block_scores_match_the_reference_at_sala_kernel_sizes(monkeypatch, dtype, rtol):
    """SALA's kernel sizes and heads; the window and top-k scaled to 1K tokens (2 local blocks, top 8 of
    12 scored blocks), so the interpreter finishes in seconds."""
    params = SparseParams(window_size=128, topk=8)
    idx, want = check_scores(monkeypatch, 1024, 64, params, dtype, rtol=rtol)
    if dtype == torch.float32:
        assert torch.equal(idx, want)


def test_block_scores_at_the_checkpoint_top_k(monkeypatch):
    """The checkpoint's own sparse_config (top 64 + 32 local blocks = 96 of 128): the last queries of 8K tokens."""
    idx, want = check_scores(monkeypatch, 8192, 8, SALA, torch.float32, rtol=1e-4, seed=3)
    assert idx.shape[-1] == 96 and torch.equal(idx, want)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("L, n_q", [(65536 - 5, 1024), (16384, 4096)])
def test_block_scores_on_the_gpu(monkeypatch, L, n_q):
    """bf16 inputs as the model runs them; the reference computes in fp32 from the same bf16 values."""
    check_scores(monkeypatch, L, n_q, SALA, torch.bfloat16, rtol=2e-2, seed=5)
