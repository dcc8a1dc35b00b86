"""Triton Lightning kernels against the float64 reference (on a CPU through TRITON_INTERPRET=1, float32/float16)."""

import pytest
import torch

from sala_report.kernels import lightning_decode, lightning_prefill
from sala_report.kernels.lightning import naive

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def rand(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device=DEV, dtype=dtype)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


G = torch.tensor([-0.8409, -0.0039], device=DEV)


def _chunk(*args, **kw):
    from sala_report.kernels.lightning.chunk import chunk_lightning

    return chunk_lightning(*args, **kw)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 5e-3)])
def test_chunk_across_segments_with_states(dtype, tol):
    B, T, H, D = 2, 150, 2, 16  # T not a multiple of 64; segments of 64 -> 3 per sequence
    q, k, v = (rand(B, T, H, D, dtype=dtype, seed=s) for s in (1, 2, 3))
    h0 = rand(B, H, D, D, seed=4)
    o, s = _chunk(q, k, v, G, scale=D**-0.5, initial_state=h0, segment_len=64)
    o_r, s_r = naive.recurrent_lightning(
        q.double(), k.double(), v.double(), G, scale=D**-0.5, initial_state=h0.double()
    )
    assert o.dtype == dtype and s.dtype == torch.float32
    assert rel(o, o_r) < tol and rel(s, s_r) < tol


def test_varlen_and_segmented_prefill_then_decode():
    H, D = 2, 16
    cu = torch.tensor([0, 5, 69, 200], device=DEV)
    q, k, v = (rand(1, 200, H, D, seed=s) for s in (5, 6, 7))
    h0 = rand(3, H, D, D, seed=8)
    o, s = _chunk(q, k, v, G, scale=0.25, initial_state=h0, cu_seqlens=cu, segment_len=64)
    o_r, s_r = naive.chunk_lightning(
        q.double(), k.double(), v.double(), G, scale=0.25, initial_state=h0.double(), cu_seqlens=cu
    )
    assert rel(o, o_r) < 1e-4 and rel(s, s_r) < 1e-4
    # the last sequence again: prefill 70 tokens in two calls, then decode the rest one token at a time
    a = 69
    o1, s1 = lightning_prefill(
        q[:, a : a + 40], k[:, a : a + 40], v[:, a : a + 40], G, scale=0.25, initial_state=h0[2:], backend="triton"
    )
    o2, s2 = lightning_prefill(
        q[:, a + 40 : a + 70],
        k[:, a + 40 : a + 70],
        v[:, a + 40 : a + 70],
        G,
        scale=0.25,
        initial_state=s1,
        backend="triton",
    )
    state = s2.clone()
    steps = [
        lightning_decode(q[:, t], k[:, t], v[:, t], G, state, scale=0.25, backend="triton") for t in range(a + 70, 200)
    ]
    assert rel(torch.cat([o1, o2, torch.stack(steps, 1)], 1), o_r[:, a:]) < 1e-4
    assert rel(state, s_r[2:]) < 1e-4


def test_decode_batch_in_place():
    B, H, D = 3, 2, 32
    q, k, v = (rand(B, H, D, seed=s) for s in (9, 10, 11))
    state = rand(B, H, D, D, seed=12)
    ref_state = state.double().clone()
    o = lightning_decode(q, k, v, G, state, scale=0.2, backend="triton")
    o_r = naive.lightning_decode(q.double(), k.double(), v.double(), G, ref_state, scale=0.2)
    assert rel(o, o_r) < 1e-5 and rel(state, ref_state) < 1e-5


def test_fp32_products_of_16bit_inputs_equal_their_fp32_copies_and_strided_views():
    """16-bit q/k/v read as strided views of one projection output (no copies) with fp32 products give the numbers
    of their fp32 copies (up to one rounding of o); rounding the products' operands to 16 bits instead moves them.
    fp16 here (tf32 dots); bf16 (operands split into two bf16 parts) runs in the GPU tests: the interpreter's bf16
    dots are not usable."""
    dtype = torch.float16
    B, T, H, D = 2, 130, 2, 16
    qkv = rand(B, T, 3 * H * D, seed=13).to(dtype).view(B, T, 3 * H, D)
    q, k, v = qkv[:, :, :H], qkv[:, :, H : 2 * H], qkv[:, :, 2 * H :]
    h0 = rand(B, H, D, D, seed=14)
    o, s = _chunk(q, k, v, G, scale=D**-0.5, initial_state=h0, segment_len=64, fp32_products=True)
    o32, s32 = _chunk(q.float(), k.float(), v.float(), G, scale=D**-0.5, initial_state=h0, segment_len=64)
    o16, s16 = _chunk(q, k, v, G, scale=D**-0.5, initial_state=h0, segment_len=64)
    assert o.dtype == dtype
    assert rel(o, o32.to(dtype)) < 2e-3 and rel(s, s32) < 1e-4
    assert rel(s16, s32) > 10 * rel(s, s32)
    _, s_r = naive.recurrent_lightning(q.double(), k.double(), v.double(), G, scale=D**-0.5, initial_state=h0.double())
    assert rel(s, s_r) < 1e-4
