"""Pure-PyTorch row-wise ops of the decoder layers: the specification of `pointwise/fused.py`.

Each op rounds where the unfused network rounds (the norm is cast to the activation dtype before the weight,
the sigmoid and SiLU results before the product), so the fused kernels can match it to the last bit in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * (x / rms(x)) over the last dim; the variance in fp32, cast back before the weight."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm(
    h: torch.Tensor, a: torch.Tensor, scale: float, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual step h + scale * a, and its RMSNorm -> (new h, normed)."""
    h = h + (a if scale == 1.0 else a * scale)
    return h, rms_norm(h, weight, eps)


def head_norm_rope(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """x [B, T, H, D]: RMSNorm over each head (when weight is given), then rotate-half RoPE with cos/sin [T, D] fp32
    (when given), computed in fp32 and rounded to x.dtype -> [B, T, H, D] in out_dtype (default x.dtype)."""
    if weight is not None:
        x = rms_norm(x, weight, eps)
    if cos is not None:
        x32 = x.float()
        x1, x2 = x32.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)
        x = (x32 * cos[:, None] + rotated * sin[:, None]).to(x.dtype)
    return x if out_dtype is None else x.to(out_dtype)


def gated_rms_norm(o: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """rms_norm(o) * sigmoid(gate) (the norm only when weight is given); o is first cast to gate.dtype."""
    o = o.to(gate.dtype)
    if weight is not None:
        o = rms_norm(o, weight, eps)
    return o * torch.sigmoid(gate)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up
