"""Triton InfLLM-V2 kernels against the references (on a CPU through TRITON_INTERPRET=1, float32/float16, tiny shapes)."""

import pytest
import torch

from sala_report.kernels import SparseParams, compress_keys, dense_attention, select_blocks, sparse_attention
from sala_report.kernels.sparse import select as select_mod
from sala_report.kernels.sparse.attention import sparse_attention_triton

DEV = "cuda" if torch.cuda.is_available() else "cpu"
P = SparseParams(kernel_size=8, kernel_stride=4, block_size=16, init_blocks=1, window_size=32, topk=3)


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device=DEV, dtype=dtype)


def setup(L, Hq=8, Hkv=2, D=16, seed=0, dtype=torch.float32):
    q, k, v = (
        rand(1, L, Hq, D, seed=seed, dtype=dtype),
        rand(1, L, Hkv, D, seed=seed + 1, dtype=dtype),
        rand(1, L, Hkv, D, seed=seed + 2, dtype=dtype),
    )
    k1 = compress_keys(k, kernel_size=P.kernel_size, stride=P.kernel_stride, backend="reference")
    k2 = compress_keys(k, kernel_size=P.lse_kernel_size, stride=P.lse_stride, backend="reference")
    return q, k, v, k1, k2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_compress_matches_reference(dtype):
    k = rand(2, 77, 2, 16, dtype=dtype)
    for ks, st in ((8, 4), (32, 16)):
        got = compress_keys(k, kernel_size=ks, stride=st, backend="triton")
        assert torch.allclose(
            got.float(), compress_keys(k, kernel_size=ks, stride=st, backend="reference").float(), atol=1e-3
        )
    assert compress_keys(k[:, :7], kernel_size=8, stride=4, backend="triton").shape == (2, 0, 2, 16)
    assert torch.equal(
        compress_keys(k[:, 60:68], kernel_size=8, stride=4, backend="triton")[:, 0],
        compress_keys(k, kernel_size=8, stride=4, backend="triton")[:, 15],
    )


def test_select_prefill_chunks_and_decode_equal_reference(monkeypatch):
    L = 190  # 12 blocks, the last partial; forced init + local band, causal -1 for early rows
    q, k, v, k1, k2 = setup(L)
    want = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True, backend="reference")
    monkeypatch.setattr(select_mod, "SCORE_BUFFER_ELEMS", 2 * 12 * 64)  # 64-query chunks: three of them
    got = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True, backend="triton")
    assert torch.equal(got, want)
    assert (got[0, :, :16] == -1).any() and (got[0, :, :, 0] == 0).all()
    tail = select_blocks(q[:, 150:], k1, k2, q_start=150, kv_len=L, params=P, causal=True, backend="triton")
    assert torch.equal(tail, want[:, :, 150:])
    last = select_blocks(q[:, -1:], k1, k2, q_start=L - 1, kv_len=L, params=P, causal=False, backend="triton")
    assert torch.equal(last, want[:, :, -1:])


def test_select_decode_quartering_top_k():
    L = 200  # few rows: the decode top-k (quartering rounds) runs
    q, k, v, k1, k2 = setup(L, seed=9)
    want = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True, backend="reference")
    got = select_blocks(q[:, -1:], k1, k2, q_start=L - 1, kv_len=L, params=P, causal=False, backend="triton")
    assert torch.equal(got, want[:, :, -1:])
    got = select_blocks(
        q[:, 30:34], k1, k2, q_start=30, kv_len=L, params=P, causal=True, backend="triton"
    )  # -1 entries
    assert torch.equal(got, want[:, :, 30:34])


def test_select_ties_deterministic():
    L = 160
    q = rand(1, L, 8, 16)
    k = torch.ones(1, L, 2, 16, device=DEV)
    k1 = compress_keys(k, kernel_size=8, stride=4)
    k2 = compress_keys(k, kernel_size=32, stride=16)
    got = select_blocks(q[:, -4:], k1, k2, q_start=L - 4, kv_len=L, params=P, causal=True, backend="triton")
    assert got[0, 0, -1].tolist() == [0, 1, 7, 8, 9]
    assert torch.equal(
        got, select_blocks(q[:, -4:], k1, k2, q_start=L - 4, kv_len=L, params=P, causal=True, backend="reference")
    )


def test_sparse_attention_prefill_split_and_dense():
    L = 80
    q, k, v, k1, k2 = setup(L, seed=4)
    idx = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True, backend="reference")
    qs = q[:, 70:]  # the last ten queries
    want = sparse_attention(qs, k, v, idx[:, :, 70:], q_start=70, block_size=16, scale=0.3, backend="reference")
    got = sparse_attention(qs, k, v, idx[:, :, 70:], q_start=70, block_size=16, scale=0.3, backend="triton")
    assert torch.allclose(got, want, atol=1e-5)
    split = sparse_attention_triton(qs[:, -2:], k, v, idx[:, :, -2:], q_start=78, block_size=16, scale=0.3, n_split=3)
    assert torch.allclose(split, want[:, -2:], atol=1e-5)
    # early queries have -1 entries; every block selected equals dense causal attention
    early = sparse_attention(q[:, :6], k, v, idx[:, :, :6], q_start=0, block_size=16, scale=0.3, backend="triton")
    assert torch.allclose(early, dense_attention(q[:, :6], k[:, :6], v[:, :6], q_start=0, scale=0.3), atol=1e-5)


def test_sparse_attention_band_split_matches_reference():
    L = 100  # 7 blocks of 16; queries 40..99 start mid-block
    q, k, v, k1, k2 = setup(L, seed=6)
    idx = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P, causal=True, backend="reference")
    want = sparse_attention(q[:, 40:], k, v, idx[:, :, 40:], q_start=40, block_size=16, scale=0.3, backend="reference")
    got = sparse_attention_triton(
        q[:, 40:],
        k,
        v,
        idx[:, :, 40:],
        q_start=40,
        block_size=16,
        scale=0.3,
        n_split=1,
        forced_blocks=(P.init_blocks, P.local_blocks),
    )
    assert torch.allclose(got, want, atol=1e-5)


def test_sparse_attention_ranged_passes_match_reference(monkeypatch):
    """The scored blocks visited in passes over key ranges (fp32 partial carried between passes, queries in
    sub-chunks) give the one-pass result, whatever the range size."""
    from sala_report.kernels.sparse import attention

    L = 200  # 13 blocks of 16; scored blocks spread over several ranges
    P2 = SparseParams(kernel_size=8, kernel_stride=4, block_size=16, init_blocks=1, window_size=32, topk=5)
    q, k, v = rand(1, L, 8, 16, seed=7), rand(1, L, 2, 16, seed=8), rand(1, L, 2, 16, seed=9)
    k1 = compress_keys(k, kernel_size=8, stride=4, backend="reference")
    k2 = compress_keys(k, kernel_size=32, stride=16, backend="reference")
    idx = select_blocks(q, k1, k2, q_start=0, kv_len=L, params=P2, causal=True, backend="reference")
    a = 160
    want = sparse_attention(q[:, a:], k, v, idx[:, :, a:], q_start=a, block_size=16, scale=0.3, backend="reference")
    monkeypatch.setattr(attention, "RANGE_QUERIES", 24)  # two query sub-chunks, the last partial
    for rb, nblk in ((2, 1), (5, 2)):  # nblk: blocks a step in both kernels (the last step may run past the end)
        monkeypatch.setattr(attention, "BAND_GATHER", (4, 3, nblk))
        monkeypatch.setattr(attention, "BAND_TILE", (4, 3, nblk))
        got = sparse_attention_triton(
            q[:, a:],
            k,
            v,
            idx[:, :, a:],
            q_start=a,
            block_size=16,
            scale=0.3,
            forced_blocks=(P2.init_blocks, P2.local_blocks),
            range_blocks=rb,
            out=torch.full_like(q[:, a:], float("nan")),
        )
        assert torch.allclose(got, want, atol=1e-5), rb
