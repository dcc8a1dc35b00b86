"""GPTQ-style int4 quantization (Frantar et al., 2022), written from the paper's description: each linear's columns
are rounded in order and the rounding error of each is spread over the columns not yet rounded, weighted by the
inverse Hessian of the layer's inputs (H = XᵀX over calibration text), so the layer's outputs move less than with
round-to-nearest. Groups of 128 take their scale and zero point from the weights as updated when the group starts."""

from __future__ import annotations

import torch
from torch import nn

from sala_report.kernels.quant import naive

from .quant import QuantLinear, format_for, quantize_weight, set_module, target_linears


def input_hessians(lm, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{linear name: XᵀX [K, K] fp64 / tokens} of every target nn.Linear's input over the calibration batches."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for name, _ in target_linears(lm):
        module = lm.get_submodule(name)
        if not isinstance(module, nn.Linear):
            continue

        def hook(mod, args, _out, name=name):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for ids in batches:
                lm(ids)
    finally:
        for h in hooks:
            h.remove()
    return {n: sums[n] / counts[n] for n in sums}


def gptq_int4(w: torch.Tensor, hessian: torch.Tensor, *, damp: float = 0.01, zero: bool = True) -> naive.PackedWeight:
    """Quantize w [N, K] to int4 (group 128) compensating each column's error through the inverse of `hessian`."""
    W = w.double().clone()
    N, K = W.shape
    H = hessian.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.diag(H).mean() * torch.eye(K, dtype=H.dtype)
    # the upper Cholesky factor of H⁻¹: row i holds how column i's error moves the later columns
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    G = naive.GROUP
    groups = -(-K // G)
    scales = torch.empty(N, groups, dtype=torch.float16)
    zeros = torch.empty(N, groups, dtype=torch.float16) if zero else None
    Q = torch.zeros_like(W)
    for g in range(groups):
        a, b = g * G, min(K, (g + 1) * G)
        _, s, z = naive.int4_grid(W[:, a:b].float(), zero=zero)
        scales[:, g], s = s[:, 0], s[:, 0].double()
        if zero:
            zeros[:, g] = z[:, 0]
            z = z[:, 0].double()
        block_err = torch.zeros(N, b - a, dtype=W.dtype)
        for i in range(a, b):
            col = W[:, i]
            if zero:
                q = torch.round((col - z) / s).clamp(0, 15) * s + z
            else:
                q = (torch.round(col / s).clamp(-8, 7)) * s
            Q[:, i] = q
            err = (col - q) / U[i, i]
            W[:, i:b] -= err[:, None] * U[i, i:b][None, :]
            block_err[:, i - a] = err
        W[:, b:] -= block_err @ U[a:b, b:]
    return naive.quantize_int4(Q.float(), zero=zero, scale=scales, zero_point=zeros)


def quantize_gptq(lm, batches: list[torch.Tensor], *, head_format: str | None = None) -> None:
    """Quantize lm in place to int4 with GPTQ for the decoder's linears (the head as `format_for("int4", "head")`, by
    round-to-nearest). Hessians come from one pass of the full-precision model over the calibration batches."""
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
        from .quant import ZERO_POINT

        packed = gptq_int4(module.weight.detach().cpu(), hessians[name].cpu(), zero=ZERO_POINT)
        set_module(lm, name, QuantLinear(packed.to(module.weight.device)))
    lm.quantize = "int4"
