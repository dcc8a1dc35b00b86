"""Quantized-weight kernels against their reference (naive.py), and the reference against hand-derived layouts.

Without a GPU the Triton kernels run under TRITON_INTERPRET=1 (tests/kernels/conftest.py) on small shapes with
awkward sizes: K not a multiple of the group, M not a multiple of the tile, N not a multiple of the block.
"""

from __future__ import annotations

import pytest
import torch

from sala_report.kernels import quant
from sala_report.kernels.quant import naive

pytest.importorskip("triton")


def _rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def test_int4_layout_is_the_documented_one():
    # one row, one group: codes 0..15 repeating; byte j = code[j] | code[64 + j] << 4
    codes = (torch.arange(128) % 16).to(torch.uint8).reshape(1, 1, 128)
    packed = naive.pack_int4(codes)
    assert packed.shape == (1, 64)
    assert packed[0, 0].item() == 0 | (0 << 4) and packed[0, 1].item() == 1 | (1 << 4)
    assert packed[0, 3].item() == 3 | ((64 + 3) % 16) << 4
    assert torch.equal(naive.unpack_int4(packed), codes)


def test_int4_weights_land_on_their_group_grid_within_half_a_step():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 300, generator=g)  # 3 groups, the last one padded
    for zero in (True, False):
        p = naive.quantize_int4(w, zero=zero)
        assert p.data.shape == (5, 192) and p.scale.shape == (5, 3)
        d = naive.dequantize(p)
        step = p.scale.float().repeat_interleave(128, dim=1)[:, :300]
        # rounding to the nearest of 16 levels spanning the group: never more than half a step off (+ fp16 grid slack)
        assert ((d - w).abs() <= step * 0.5 + 1e-3).all()
        if zero:  # min and max of a group are representable exactly up to fp16 rounding
            assert torch.allclose(d[:, :128].amin(1), w[:, :128].amin(1), atol=1e-2)


def test_int8_and_fp8_are_per_channel():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    p8 = naive.quantize_int8(w)
    assert torch.equal(p8.data.abs().amax(1), torch.full((4,), 127, dtype=torch.int8))
    assert _rel(naive.dequantize(p8), w) < 1e-2
    f8 = naive.quantize_fp8(w)
    assert torch.allclose(naive.dequantize(f8).abs().amax(1), w.abs().amax(1), rtol=1e-6)


# (format, zero points, group): the defaults, and GGUF's 32-wide blocks (Q4_1, Q4_0, Q8_0)
KINDS = [
    ("int8", True, None),
    ("int4", True, None),
    ("int4", False, None),
    ("fp8", True, None),
    ("int4", True, 32),
    ("int4", False, 32),
    ("int8", False, 32),
]


def test_int4_group_32_layout_is_ggml_q4_block():
    # G = 32: byte j holds code j low and code 16 + j high, as in a ggml Q4_0 / Q4_1 block's 16 bytes
    codes = torch.randint(0, 16, (2, 3, 32), generator=torch.Generator().manual_seed(9), dtype=torch.uint8)
    packed = naive.pack_int4(codes).reshape(2, 3, 16)
    assert torch.equal(packed & 0xF, codes[..., :16]) and torch.equal(packed >> 4, codes[..., 16:])
    assert torch.equal(naive.unpack_int4(packed.reshape(2, 48), 32), codes)


def test_group_sizes_are_checked():
    for fmt, group in (("int4", 16), ("int4", 48), ("int8", 8), ("fp8", 32)):
        with pytest.raises(ValueError, match="group size"):
            naive.quantize(torch.randn(4, 64), fmt, group=group)


@pytest.mark.parametrize("fmt,zero,group", KINDS)
@pytest.mark.parametrize("M,N,K", [(1, 48, 200), (5, 33, 256), (16, 64, 128), (40, 20, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_matmul_matches_reference(fmt, zero, group, M, N, K, dtype):
    g = torch.Generator().manual_seed(M * 1000 + N + K)
    p = naive.quantize(torch.randn(N, K, generator=g), fmt, zero=zero, group=group)
    x = torch.randn(M, K, generator=g).to(dtype)
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    got = quant.linear(x, p, backend="triton")
    assert got.dtype == dtype and got.shape == (M, N)
    assert _rel(got, ref) < (1e-5 if dtype == torch.float32 else 2e-3)


@pytest.mark.parametrize("config", [(32, 3, 4, 2), (16, 2, 4, 2), (64, 1, 4, 2)])
@pytest.mark.parametrize("group", [128, 32])
def test_split_k_decode_tilings_agree(config, group):
    g = torch.Generator().manual_seed(7)
    p = naive.quantize(torch.randn(40, 520, generator=g), "int4", group=group)  # 5 (or 17) groups, split unevenly
    x = torch.randn(3, 2, 520, generator=g)  # leading dims are flattened and restored
    ref = x.double() @ naive.dequantize(p, torch.float64).T
    got = quant.linear(x, p, backend="triton", config=config)
    assert got.shape == (3, 2, 40) and _rel(got, ref) < 1e-5
    from sala_report.kernels.quant import matmul

    assert not matmul._COUNTERS[x.device].any()  # the split-K arrival counters are re-armed for the next launch


@pytest.mark.parametrize("fmt,zero,group", KINDS)
def test_triton_dequantize_matches_reference(fmt, zero, group):
    p = naive.quantize(torch.randn(37, 300, generator=torch.Generator().manual_seed(3)), fmt, zero=zero, group=group)
    got = quant.dequantize(p, torch.float32, backend="triton")
    assert got.shape == (37, 300) and torch.equal(got, naive.dequantize(p, torch.float32))


def test_rows_and_cat_rows_are_inverse():
    p = naive.quantize(torch.randn(10, 256, generator=torch.Generator().manual_seed(4)), "int4")
    parts = [p.rows(0, 3), p.rows(3, 10)]
    back = quant.cat_rows(parts)
    assert torch.equal(back.data, p.data) and torch.equal(back.scale, p.scale) and torch.equal(back.zero, p.zero)
    with pytest.raises(ValueError, match="one format"):
        quant.cat_rows([p, naive.quantize(torch.randn(2, 256), "int8")])


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="format"):
        naive.quantize(torch.randn(4, 4), "int3")
    with pytest.raises(ValueError, match="input of size 256"):
        quant.linear(torch.randn(2, 100), naive.quantize(torch.randn(4, 256), "int8"))


def _fp8_rows_cases():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 300, generator=g) * torch.logspace(-3, 3, 6)[:, None]  # rows of very different sizes
    x[1] = 0.0  # an all-zero row takes the smallest scale, its codes stay 0
    x[2, :5] = torch.tensor([448.0, -448.0, 224.0, 1.0, -0.5])  # a row whose maximum is already FP8_MAX
    x[2, 5:9] = torch.tensor([-0.0, 124.0, -7.75, 2**-9 * 1.5])  # -0, ties to even (128, -8) across a power of two
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp8_rows_kernel_equals_the_reference_bit_for_bit(dtype):
    x = _fp8_rows_cases().to(dtype)
    got = quant.quantize_fp8_rows(x, backend="triton")
    ref = naive.quantize_fp8(x)
    assert torch.equal(got.scale, ref.scale)
    assert torch.equal(got.data, ref.data)


def test_fp8_rows_hand_derived_codes_and_error_bound():
    x = _fp8_rows_cases()
    p = quant.quantize_fp8_rows(x, backend="triton")
    # row 2's maximum is 448: scale 1, and each of the first five values is an e4m3 number, kept exactly
    assert p.scale[2].item() == 1.0
    codes = p.data.view(torch.float8_e4m3fn).float()
    assert codes[2, :9].tolist() == [448.0, -448.0, 224.0, 1.0, -0.5, -0.0, 128.0, -8.0, 2**-8]
    assert p.data[2, 5].item() == 0x80  # the sign of -0 kept
    assert p.scale[1].item() == torch.tensor(1e-12).item() and (codes[1] == 0).all()
    # e4m3 keeps 3 mantissa bits: every normal value within 2^-4 of itself; below 2^-6 of the row's
    # maximum the step is the subnormal one, 2^-9 of the scale
    d = codes * p.scale[:, None]
    assert ((d - x).abs() <= x.abs() * 2**-4 + p.scale[:, None] * 2**-9 + 1e-30).all()


def test_fp8_rows_rejects_a_strided_or_integer_input():
    with pytest.raises(ValueError, match="unit stride"):
        quant.quantize_fp8_rows(torch.randn(8, 4).t(), backend="triton")
    with pytest.raises(ValueError, match="float"):
        quant.quantize_fp8_rows(torch.ones(2, 4, dtype=torch.int32), backend="triton")
