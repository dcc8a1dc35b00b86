"""The Triton ops added for the GPU runtime, against their references (on a CPU through TRITON_INTERPRET=1).

Row-wise fused ops of the decoder layers, and the decode-step sparse ops that read the query position from a
device tensor so a CUDA graph can replay them at any length.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module imports Triton

pytest.importorskip("triton")

from sala_report import kernels  # noqa: E402
from sala_report.kernels import SparseParams  # noqa: E402
from sala_report.kernels.pointwise import naive as ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BF = torch.bfloat16


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device=DEV, dtype=dtype)


def fused():
    from sala_report.kernels.pointwise import fused as f

    return f


@pytest.mark.parametrize("dtype", [torch.float32, BF])
def test_norms_and_gates_match_reference(dtype):
    f = fused()
    x, a, w = rand(3, 5, 96, dtype=dtype), rand(3, 5, 96, seed=1, dtype=dtype), 1 + rand(96, seed=2, dtype=dtype) / 4
    # bf16: a few ulps (Triton's interpreter truncates fp32 -> bf16 where the GPU rounds to nearest)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    torch.testing.assert_close(f.rms_norm(x, w, 1e-6), ref.rms_norm(x, w, 1e-6), **tol)
    for scale in (1.0, 0.25):
        h1, y1 = f.add_rms_norm(x, a, scale, w, 1e-6)
        h2, y2 = ref.add_rms_norm(x, a, scale, w, 1e-6)
        torch.testing.assert_close(h1, h2, **tol)
        torch.testing.assert_close(y1, y2, **tol)
    z = rand(3, 5, 96, seed=3, dtype=dtype)
    o32 = rand(3, 5, 96, seed=4)
    for weight in (w, None):
        torch.testing.assert_close(
            f.gated_rms_norm(o32, z, weight, 1e-6), ref.gated_rms_norm(o32, z, weight, 1e-6), **tol
        )
    big = rand(2, 3000, seed=5, dtype=dtype)  # several column tiles
    up = rand(2, 3000, seed=6, dtype=dtype)
    torch.testing.assert_close(f.silu_mul(big, up), ref.silu_mul(big, up), **tol)


@pytest.mark.parametrize("norm,rope", [(True, True), (False, True), (True, False)])
def test_head_norm_rope_on_a_strided_view(norm, rope):
    f = fused()
    B, T, H, D = 2, 7, 3, 16
    fused_proj = rand(B, T, 2 * H * D, seed=7)  # q as the first half of a fused projection: token stride 2HD
    x = fused_proj[..., : H * D].view(B, T, H, D)
    w = 1 + rand(D, seed=8) / 4 if norm else None
    ang = torch.arange(5, 5 + T, device=DEV).float()[:, None] * rand(D // 2, seed=9).abs()
    cos, sin = (torch.cat((ang.cos(), ang.cos()), -1), torch.cat((ang.sin(), ang.sin()), -1)) if rope else (None, None)
    got = f.head_norm_rope(x, w, 1e-6, cos, sin, torch.float32)
    want = ref.head_norm_rope(x, w, 1e-6, cos, sin, torch.float32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


P = SparseParams(kernel_size=8, kernel_stride=4, block_size=16, init_blocks=1, window_size=32, topk=3)


@pytest.mark.parametrize("L", [1, 7, 8, 12, 31, 32, 77, 200])
def test_append_compressed_matches_full_compression(L):
    cap = 256
    k = rand(2, cap, 2, 16, seed=L)
    n1, n2 = (cap - 8) // 4 + 1, (cap - 32) // 16 + 1
    k1t, k2t = torch.full((2, n1, 2, 16), 7.0, device=DEV), torch.full((2, n2, 2, 16), 7.0, device=DEV)
    k1r, k2r = k1t.clone(), k2t.clone()
    pos = torch.tensor([L - 1], device=DEV)
    kernels.append_compressed(k, k1t, k2t, pos, kernel_size=8, stride=4, backend="triton")
    kernels.append_compressed(k, k1r, k2r, pos, kernel_size=8, stride=4, backend="reference")
    torch.testing.assert_close(k1t, k1r, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k2t, k2r, atol=1e-6, rtol=1e-6)
    full1 = kernels.compress_keys(k[:, :L], kernel_size=8, stride=4, backend="reference")
    if L >= 8 and (L - 8) % 4 == 0:  # this key completed a window: the entry equals the full compression's last
        torch.testing.assert_close(k1t[:, full1.shape[1] - 1], full1[:, -1], atol=1e-6, rtol=1e-6)
    else:
        assert (k1t == 7.0).all()


@pytest.mark.parametrize("segment", [1024, 8])  # one top-k pass per row, or segments ranked first, then merged
@pytest.mark.parametrize("L", [40, 130, 200, 333])
def test_sparse_decode_reads_the_position_on_the_device(L, segment, monkeypatch):
    from sala_report.kernels.sparse import select

    monkeypatch.setattr(select, "TOPK_SEGMENT", segment)
    cap, Hq, Hkv, D = 400, 8, 2, 16  # buffers longer than the keys: garbage after L must never be read
    q = rand(2, 1, Hq, D, seed=L)
    k, v = rand(2, cap, Hkv, D, seed=L + 1), rand(2, cap, Hkv, D, seed=L + 2)
    k[:, L:] = float("nan")
    v[:, L:] = float("nan")
    k1 = kernels.compress_keys(k[:, :cap], kernel_size=8, stride=4, backend="reference")
    k2 = kernels.compress_keys(k[:, :cap], kernel_size=32, stride=16, backend="reference")
    pos = torch.tensor([L - 1], device=DEV)
    want = kernels.sparse_decode(q, k, v, k1, k2, pos, params=P, scale=D**-0.5, max_kv_len=cap, backend="reference")
    got = kernels.sparse_decode(q, k, v, k1, k2, pos, params=P, scale=D**-0.5, max_kv_len=cap, backend="triton")
    assert not torch.isnan(want).any()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    from sala_report.kernels.sparse.select import select_blocks_decode_triton

    idx = select_blocks_decode_triton(q, k1, k2, pos, params=P, max_kv_len=cap)
    n1, n2 = (L - 8) // 4 + 1, max(0, (L - 32) // 16 + 1)
    exact = kernels.select_blocks(
        q, k1[:, :n1], k2[:, :n2], q_start=L - 1, kv_len=L, params=P, causal=False, backend="reference"
    )
    assert idx.shape[-1] == P.k_eff(cap)
    for row_got, row_want in zip(idx.reshape(-1, idx.shape[-1]), exact.reshape(-1, exact.shape[-1])):
        assert row_got[row_got >= 0].tolist() == row_want[row_want >= 0].tolist()
