"""GPU checks of the Triton kernels at 4K-64K tokens, bf16, against fp32 references on fresh random inputs.

Every output is poisoned (NaN, or -7 for indices) before the kernel runs, so an unwritten element fails.
Run through the device tool: `pytest -m gpu tests/kernels`.
"""

import pytest
import torch

from sala_report.kernels import SparseParams, compress_keys, select_blocks, sparse_attention
from sala_report.kernels.lightning import naive as lightning_ref
from sala_report.kernels.sparse import naive as sparse_ref

pytestmark = pytest.mark.gpu
BF = torch.bfloat16
SALA = SparseParams()


def rel(a, b):
    a, b = a.double(), b.double()
    assert not torch.isnan(a).any(), "unwritten (NaN) or non-finite output"
    return ((a - b).norm() / b.norm()).item()


def slopes(H=32):
    return torch.tensor([-(2 ** (-(h + 1) * 8 / H)) for h in range(H)], device="cuda")


def randn(*shape, dtype=BF):
    return torch.randn(*shape, device="cuda", dtype=dtype)


@pytest.mark.parametrize("T", [4096, 65536 - 17])
def test_lightning_prefill_bf16(T):
    from sala_report.kernels.lightning.chunk import chunk_lightning

    H, D = 32, 128
    q, k, v = randn(1, T, H, D), randn(1, T, H, D) / 4, randn(1, T, H, D)
    h0 = torch.randn(1, H, D, D, device="cuda")
    o = torch.full_like(q, float("nan"))
    o, s = chunk_lightning(q, k, v, slopes(), scale=D**-0.5, initial_state=h0, out=o)
    o_r, s_r = lightning_ref.chunk_lightning(q.float(), k.float(), v.float(), slopes(), scale=D**-0.5, initial_state=h0)
    assert rel(o, o_r) <= 5e-3 and rel(s, s_r) <= 5e-3


def test_lightning_varlen_and_decode_bf16():
    from sala_report.kernels.lightning.fused_recurrent import fused_recurrent_decode

    H, D = 32, 128
    cu = torch.tensor([0, 1000, 1064, 5000], device="cuda")
    q, k, v = randn(1, 5000, H, D), randn(1, 5000, H, D) / 4, randn(1, 5000, H, D)
    from sala_report.kernels import lightning_prefill

    o, s = lightning_prefill(q, k, v, slopes(), scale=D**-0.5, cu_seqlens=cu)
    o_r, s_r = lightning_ref.chunk_lightning(q.float(), k.float(), v.float(), slopes(), scale=D**-0.5, cu_seqlens=cu)
    assert rel(o, o_r) <= 5e-3 and rel(s, s_r) <= 5e-3
    B = 16
    state = torch.randn(B, H, D, D, device="cuda")
    ref_state = state.clone()
    qd, kd, vd = randn(B, H, D), randn(B, H, D), randn(B, H, D)
    od = fused_recurrent_decode(qd, kd, vd, slopes(), state, scale=D**-0.5, out=torch.full_like(qd, float("nan")))
    od_r = lightning_ref.lightning_decode(qd.float(), kd.float(), vd.float(), slopes(), ref_state, scale=D**-0.5)
    assert rel(od, od_r) <= 5e-3 and rel(state, ref_state) <= 1e-5


def assert_same_selection(idx, idx_r, q, k1, k2, q_start, L, causal, tol=1e-4):
    """Rows may differ from the reference only by swapping blocks whose scores tie to within `tol` (relative):
    bf16 products summed in another order move scores by ~1e-6, and random inputs make near-ties common."""
    rows = (idx != idx_r).any(-1)  # [B, Hkv, Tq]
    assert rows.float().mean().item() <= 0.02, f"{rows.float().mean().item():.2%} of rows differ from the reference"
    for t in rows.any(0).any(0).nonzero().flatten()[:64].tolist():
        s = sparse_ref.block_scores(q[:, t : t + 1], k1, k2, q_start=q_start + t, kv_len=L, params=SALA, causal=causal)
        for g in range(idx.shape[1]):
            mine = s[0, g, 0, idx[0, g, t][idx[0, g, t] >= 0].long()]
            kth = s[0, g, 0].sort(descending=True).values[idx.shape[-1] - 1]
            assert (mine >= kth * (1 - tol)).all(), (
                f"row {t}: picked a block scoring {mine.min().item()} < k-th {kth.item()}"
            )


def _sparse_inputs(L, Hq=32, Hkv=2, D=128):
    q, k, v = randn(1, L, Hq, D), randn(1, L, Hkv, D), randn(1, L, Hkv, D)
    return q, k, v


@pytest.mark.parametrize("L,n_q", [(16384, 16384), (65536 - 5, 2048)])
def test_sparse_prefill_bf16(L, n_q):
    from sala_report.kernels.sparse.attention import sparse_attention_triton
    from sala_report.kernels.sparse.compress import compress_keys_triton
    from sala_report.kernels.sparse.select import select_blocks_triton

    q, k, v = _sparse_inputs(L)
    k1 = compress_keys_triton(
        k,
        kernel_size=32,
        stride=16,
        out=torch.full((1, (L - 32) // 16 + 1, 2, 128), float("nan"), device="cuda", dtype=BF),
    )
    k2 = compress_keys(k, kernel_size=128, stride=64)
    assert rel(k1, sparse_ref.compress_keys(k, kernel_size=32, stride=16).float()) < 1e-2
    assert rel(k2, sparse_ref.compress_keys(k, kernel_size=128, stride=64).float()) < 1e-2
    q0 = L - n_q
    qs = q[:, q0:]
    K = SALA.k_eff(L)
    idx_r = sparse_ref.select_blocks(qs, k1, k2, q_start=q0, kv_len=L, params=SALA, causal=True)
    idx = select_blocks_triton(
        qs,
        k1,
        k2,
        q_start=q0,
        kv_len=L,
        params=SALA,
        causal=True,
        out=torch.full((1, 2, n_q, K), -7, dtype=torch.int32, device="cuda"),
    )
    assert (idx != -7).all()
    assert_same_selection(idx, idx_r, qs, k1, k2, q0, L, causal=True)
    o_r = sparse_ref.sparse_attention(
        qs.float(), k.float(), v.float(), idx_r, q_start=q0, block_size=64, scale=128**-0.5
    )
    band = (SALA.init_blocks, SALA.local_blocks)
    for forced, rb in ((None, 0), (band, 0), (band, 96)):  # one pass, band + one pass, band + ranged passes
        o = sparse_attention_triton(
            qs,
            k,
            v,
            idx_r,
            q_start=q0,
            block_size=64,
            scale=128**-0.5,
            forced_blocks=forced,
            range_blocks=rb,
            out=torch.full_like(qs, float("nan")),
        )
        assert rel(o, o_r) <= 5e-3


def test_sparse_decode_bf16():
    L = 65536 + 100
    q, k, v = _sparse_inputs(L)
    k1 = compress_keys(k, kernel_size=32, stride=16)
    k2 = compress_keys(k, kernel_size=128, stride=64)
    qd = randn(1, 1, 32, 128)
    idx = select_blocks(qd, k1, k2, q_start=L - 1, kv_len=L, params=SALA, causal=False)
    idx_r = sparse_ref.select_blocks(qd, k1, k2, q_start=L - 1, kv_len=L, params=SALA, causal=False)
    assert_same_selection(idx, idx_r, qd, k1, k2, L - 1, L, causal=False)
    o = sparse_attention(qd, k, v, idx, q_start=L - 1, block_size=64, scale=128**-0.5)
    o_r = sparse_ref.sparse_attention(
        qd.float(), k.float(), v.float(), idx_r, q_start=L - 1, block_size=64, scale=128**-0.5
    )
    assert rel(o, o_r) <= 5e-3


def test_lightning_fp32_products_match_fp32_copies():
    """bf16 inputs with fp32 products (what the model runs) give the numbers of fp32 copies of the same inputs: the
    state to fp32 accuracy (the copies' tf32 dots are the less accurate ones), o up to its bf16 rounding."""
    from sala_report.kernels.lightning.chunk import chunk_lightning

    T, H, D = 16384 + 37, 32, 128
    qkvz = randn(1, T, 4 * H * D).view(1, T, 4 * H, D)  # as the fused projection: v is a strided view
    q, k, v = qkvz[:, :, :H], qkvz[:, :, H : 2 * H] / 4, qkvz[:, :, 2 * H : 3 * H]
    h0 = torch.randn(1, H, D, D, device="cuda")
    o = torch.full((1, T, H, D), float("nan"), device="cuda", dtype=BF)
    o, s = chunk_lightning(q, k, v, slopes(), scale=D**-0.5, initial_state=h0, fp32_products=True, out=o)
    o32, s32 = chunk_lightning(q.float(), k.float(), v.float(), slopes(), scale=D**-0.5, initial_state=h0)
    o_r, s_r = lightning_ref.chunk_lightning(q.float(), k.float(), v.float(), slopes(), scale=D**-0.5, initial_state=h0)
    assert rel(o, o32.to(BF)) <= 5e-3 and rel(s, s32) <= 2e-3
    assert rel(o, o_r) <= 5e-3 and rel(s, s_r) <= 1e-4
