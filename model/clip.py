"""Activation-aware clipping for int4 (an offline method): each group's range is shrunk by the factor, from a small
grid, that minimises the rounding error weighted by the mean square of the inputs each weight multiplies (the
diagonal of XᵀX over calibration text), so the channels that carry large activations are rounded most finely."""

from __future__ import annotations

import torch

from sala_report.kernels.quant import naive

RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)


def clip_int4(
    w: torch.Tensor, act_sq: torch.Tensor, *, zero: bool = True, group: int = naive.GROUP
) -> naive.PackedWeight:
    """w [N, K]; act_sq [K] = mean x² of the layer's inputs -> int4 weights on the best clipped grid per group."""
    g, _, _ = naive.int4_grid(w, zero=zero, group=group)  # [N, groups, group], fp32, zero-padded
    imp = torch.nn.functional.pad(act_sq.float(), (0, g.shape[1] * group - act_sq.numel()))
    imp = imp.reshape(1, g.shape[1], group)
    best_err = torch.full(g.shape[:2], float("inf"))
    best_s = torch.zeros(g.shape[:2], dtype=torch.float16)
    best_z = torch.zeros(g.shape[:2], dtype=torch.float16) if zero else None
    lo, hi = g.amin(dim=2), g.amax(dim=2)
    amax = g.abs().amax(dim=2)
    # zero points: each end of the range shrinks on its own (a group's min and max differ in size)
    pairs = [(a, b) for a in RATIOS for b in RATIOS] if zero else [(r, r) for r in RATIOS]
    for a, b in pairs:
        if zero:
            s = ((hi * b - lo * a) / 15).clamp(min=1e-8).half()
            z = (lo * a).half()
        else:
            s, z = (amax * a / 7).clamp(min=1e-8).half(), None
        q = naive.int4_codes(g, s, z).float()
        d = (q - 8) * s.float()[..., None] if z is None else q * s.float()[..., None] + z.float()[..., None]
        err = ((d - g) ** 2 * imp).sum(dim=2)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        if zero:
            best_z = torch.where(better, z, best_z)
    return naive.quantize_int4(w, zero=zero, scale=best_s, zero_point=best_z, group=group)
