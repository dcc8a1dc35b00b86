"""Quantized weights (int8, int4, fp8): the formats and reference in naive.py, the Triton matmuls in matmul.py
(gemv.py for int4 decode rows), fp8 activation rows in fp8_rows.py.

As in `sala_report.kernels`, CUDA tensors go to Triton and CPU tensors to the reference; `backend="triton"` forces
the kernels (on a CPU under TRITON_INTERPRET=1), `backend="reference"` the reference.
"""

from __future__ import annotations

import torch

from . import naive
from .naive import FORMATS, GROUP, PackedWeight, cat_rows, quantize

__all__ = ["FORMATS", "GROUP", "PackedWeight", "cat_rows", "dequantize", "linear", "quantize", "quantize_fp8_rows"]


def _triton(backend: str, t: torch.Tensor) -> bool:
    if backend not in ("auto", "reference", "triton"):
        raise ValueError(f"backend must be one of ('auto', 'reference', 'triton'), got {backend!r}")
    return backend == "triton" or (backend == "auto" and t.is_cuda)


def linear(x: torch.Tensor, p: PackedWeight, *, backend: str = "auto", config: tuple | None = None) -> torch.Tensor:
    """x [..., K] @ dequantize(p).T -> [..., N] in x.dtype (fp32 accumulation)."""
    if _triton(backend, x):
        from .matmul import quant_matmul

        return quant_matmul(x, p, config=config)
    return naive.linear(x, p)


def dequantize(p: PackedWeight, dtype: torch.dtype, *, backend: str = "auto") -> torch.Tensor:
    """-> w [N, K] in dtype."""
    if _triton(backend, p.data):
        from .matmul import dequantize_triton

        return dequantize_triton(p, dtype)
    return naive.dequantize(p, dtype)


def quantize_fp8_rows(x2: torch.Tensor, *, backend: str = "auto") -> PackedWeight:
    """x2 [M, K] -> its rows as fp8 e4m3 with one fp32 scale each (the per-token activations of fp8 GEMMs)."""
    if _triton(backend, x2):
        from .fp8_rows import quantize_fp8_rows as rows

        return rows(x2)
    return naive.quantize_fp8(x2)
