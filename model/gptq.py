"""GPTQ-style int4 quantization (Frantar et al., 2022), written from the paper's description: each linear's columns
are rounded one at a time and the rounding error of each is spread over the columns not yet rounded, weighted by the
inverse Hessian of the layer's inputs (H = XᵀX over calibration text), so the layer's outputs move less than with
round-to-nearest. Columns go in order of decreasing H diagonal ("act order"), each onto its group's grid, fixed
before any column moves ("static groups", so groups stay contiguous along K as our format needs); the grid may come
from activation-aware clipping (model/clip.py) instead of each group's min/max."""

from __future__ import annotations

import torch
from torch import nn

from sala_report.kernels.quant import naive

from .quant import QuantLinear, format_for, quantize_weight, set_module, target_linears


def input_hessians(lm, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{linear name: XᵀX [K, K] fp64 / tokens} of every target nn.Linear's input over the calibration batches.
    Linears that read the same tensor (q/k/v, gate/up) share one matrix: it is computed once per forward."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    last: list = [None, None]  # (input tensor, linear name) of the latest hook: q/k/v and gate/up run in a row
    alias: dict[str, str] = {}
    hooks = []
    for name, _ in target_linears(lm):
        module = lm.get_submodule(name)
        if not isinstance(module, nn.Linear):
            continue

        def hook(mod, args, _out, name=name):
            x = args[0]
            if x is last[0]:
                alias[name] = last[1]
                return
            last[:] = [x, name]
            x = x.reshape(-1, x.shape[-1]).float()
            # fp32 products per batch (fast), summed across batches in fp64
            sums[name] = sums.get(name, 0) + (x.T @ x).double()
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for ids in batches:
                lm(ids)
    finally:
        for h in hooks:
            h.remove()
        last[:] = [None, None]
    out = {n: sums[n] / counts[n] for n in sums}
    out.update({n: out[o] for n, o in alias.items()})
    return out


def gptq_int4(
    w: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damp: float = 0.01,
    zero: bool = True,
    act_order: bool = True,
    grid: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    group: int = naive.GROUP,
) -> naive.PackedWeight:
    """Quantize w [N, K] to int4 compensating each column's error through the inverse of `hessian` [K, K].

    `damp` adds that fraction of the mean diagonal to H (numerical stability, and less trust in a Hessian from few
    tokens); `grid` = (scale, zero or None) [N, groups] fixes each group's grid, else it is each group's min/max
    (or symmetric max) of the weights before any column moves."""
    W = w.double().clone()
    N, K = W.shape
    H = hessian.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if grid is None:
        _, scales, zeros = naive.int4_grid(w.float(), zero=zero, group=group)
    else:
        scales, zeros = grid[0].half(), None if grid[1] is None else grid[1].half()
    zero = zeros is not None
    order = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, order], H[order][:, order]
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=H.dtype)
    # the upper Cholesky factor of H⁻¹: row i holds how column i's error moves the later columns
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    s_col = scales.double()[:, order // group]  # [N, K]: each (permuted) column's group grid
    z_col = zeros.double()[:, order // group] if zero else None
    Q = torch.zeros_like(W)
    B = 128  # columns updated lazily in blocks: the rest of W moves once per block
    for a in range(0, K, B):
        b = min(K, a + B)
        err = torch.zeros(N, b - a, dtype=W.dtype)
        for i in range(a, b):
            col, s = W[:, i], s_col[:, i]
            if zero:
                z = z_col[:, i]
                q = torch.round((col - z) / s).clamp(0, 15) * s + z
            else:
                q = torch.round(col / s).clamp(-8, 7) * s
            Q[:, i] = q
            e = (col - q) / U[i, i]
            W[:, i:b] -= e[:, None] * U[i, i:b][None, :]
            err[:, i - a] = e
        W[:, b:] -= err @ U[a:b, b:]
    Q = Q[:, torch.argsort(order)]
    return naive.quantize_int4(Q.float(), zero=zero, scale=scales, zero_point=zeros, group=group)


def quantize_gptq(lm, batches: list[torch.Tensor], *, head_format: str | None = None) -> None:
    """Quantize lm in place to int4 with GPTQ for the decoder's linears (the head as `format_for("int4", "head")`, by
    round-to-nearest). Hessians come from one pass of the full-precision model over the calibration batches."""
    from .quant import ZERO_POINT

    hessians = input_hessians(lm, batches)
    for name, role in list(target_linears(lm)):
        module = lm.get_submodule(name)
        if not isinstance(module, nn.Linear):
            continue
        if role == "head":
            set_module(
                lm, name, QuantLinear(quantize_weight(module.weight.detach(), head_format or format_for("int4", role)))
            )
            continue
        packed = gptq_int4(module.weight.detach().cpu(), hessians[name].cpu(), zero=ZERO_POINT)
        set_module(lm, name, QuantLinear(packed.to(module.weight.device)))
    lm.quantize = "int4"
