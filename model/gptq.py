"""GPTQ-style int4 quantization (Frantar et al., 2022), written from the paper's description: each linear's columns
are rounded one at a time and the rounding error of each is spread over the columns not yet rounded, weighted by the
inverse Hessian of the layer's inputs (H = XᵀX over calibration text), so the layer's outputs move less than with
round-to-nearest. Columns go in order of decreasing H diagonal ("act order"), each onto its group's grid, fixed
before any column moves ("static groups", so groups stay contiguous along K as our format needs); the grid may come
from activation-aware clipping (model/clip.py) instead of each group's min/max. After rounding, `refit_grid` moves
each group's scale and zero to the least-squares best for the chosen codes; `quantize_sequential` drives GPTQ layer
by layer on the quantized model's own activations (its `_Batch` stream also drives model/block_tune.py)."""

from __future__ import annotations

from collections.abc import Callable

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


class _Batch:
    """One calibration batch on its way through the decoder: the residual stream (h, m) at a layer's input, and the
    rotary tables and inference state the layers read (as `CausalLM.step` builds them for a prefill at 0)."""

    def __init__(self, lm, ids: torch.Tensor):
        B, T = ids.shape
        h = lm.model.embed_tokens(ids)
        self.h = h * lm.config.scale_emb if lm.config.scale_emb != 1.0 else h
        self.m = None
        self.rope = lm.rotary(torch.arange(T, device=ids.device), T) if lm.needs_rope else None
        self.new_cache = lambda: lm.new_cache(B, capacity=T)
        self.cache = self.new_cache()
        self.cache.reserve(T)

    def run(self, layer, index: int, *, fresh: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output (h, m); `fresh` runs it on a new state, for autograd (resetting one zeroes buffers in
        place, which a graph through their earlier writes cannot follow)."""
        if fresh:
            return layer(self.h, self.m, self.rope, self.new_cache().layers[index], 0, None)
        self.cache.reset()  # a prefill at 0 onto a clean state: Lightning layers add onto what a state holds
        return layer(self.h, self.m, self.rope, self.cache.layers[index], 0, None)


def quantize_sequential(
    lm,
    batches: list[torch.Tensor],
    quantize: Callable[[list[str], torch.Tensor], None],
    *,
    true_sequential: bool = True,
) -> None:
    """Quantize the decoder layer by layer, each linear's Hessian taken from its inputs in the model as quantized so
    far (GPTQ's sequential practice: a layer compensates the errors of the layers before it).

    `quantize(names, H)` replaces the linears `names` (those reading one input, e.g. q/k/v) given their XᵀX / tokens
    [K, K] fp64. With `true_sequential` the linears inside a layer go in forward order too (q/k/v, then o from
    quantized q/k/v, then gate/up, then down): one layer pass per distinct input, plus one to move on; without, the
    Hessians of a whole layer come from one pass. Linears outside the decoder layers (the head) are left alone."""
    with torch.no_grad():
        stream = [_Batch(lm, ids) for ids in batches]
        for index, layer in enumerate(lm.model.layers):
            prefix = f"model.layers.{index}."
            while True:
                left = [n for n, _ in target_linears(lm) if n.startswith(prefix)]
                left = [n for n in left if isinstance(lm.get_submodule(n), nn.Linear)]
                if not left:
                    break
                stages = _stage_hessians(lm, layer, index, stream, left, first_only=true_sequential)
                if not stages:
                    raise ValueError(f"expected the linears {left} to run in layer {index}'s forward, none did")
                for names, hessian in stages:
                    quantize(names, hessian)
            for b in stream:
                b.h, b.m = b.run(layer, index)


def _stage_hessians(lm, layer, index: int, stream: list[_Batch], names: list[str], *, first_only: bool):
    """[(linear names sharing one input, XᵀX / tokens)] over one pass of `layer`, in the order the inputs arise;
    with `first_only`, only the first input's (the later ones would still see unquantized linears)."""
    groups: list[list] = []  # [names, the input tensor of the current batch, sum, count]
    hooks = []

    def hook(mod, args, _out, name):
        x = args[0]
        for g in groups:
            if g[1] is x:
                if name not in g[0]:
                    g[0].append(name)
                return
        for g in groups:
            if name in g[0]:  # a later batch: the same group, a new tensor
                g[1] = x
                break
        else:
            g = [[name], x, 0, 0]
            groups.append(g)
        if first_only and g is not groups[0]:
            return
        x2 = x.reshape(-1, x.shape[-1]).float()
        g[2] = g[2] + (x2.T @ x2).double()  # fp32 products per batch, summed in fp64
        g[3] += x2.shape[0]

    for name in names:
        hooks.append(lm.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: hook(m, a, o, name)))
    try:
        for b in stream:
            b.run(layer, index)
            for g in groups:
                g[1] = None
    finally:
        for h in hooks:
            h.remove()
    return [(g[0], g[2] / g[3]) for g in (groups[:1] if first_only else groups)]


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


def refit_grid(
    w: torch.Tensor, p: naive.PackedWeight, hessian: torch.Tensor, *, damp: float = 0.0
) -> naive.PackedWeight:
    """The same int4 codes on the grid (scale, zero per group) that minimises trace(ΔW H ΔWᵀ), ΔW = dequant - w.

    Each row's dequantised weight is linear in its groups' scales and zeros, so the best grid solves one small
    least-squares system per row ([2 groups]², H's blocks between groups included). Rows whose fp16-rounded solution
    is not better than the grid they had keep it."""
    N, K = w.shape
    G, ng = p.group, p.scale.shape[1]
    Kp = ng * G
    H = torch.zeros(Kp, Kp, dtype=torch.float64)
    H[:K, :K] = hessian.double()
    H[:K, :K] += damp * torch.diag(H)[:K].mean() * torch.eye(K, dtype=H.dtype)
    W = torch.nn.functional.pad(w.double(), (0, Kp - K))
    q = naive.unpack_int4(p.data, G).double().reshape(N, ng, G)
    c = q if p.zero is not None else q - 8
    Hb = H.reshape(ng, G, ng, G)
    T = torch.einsum("nga,gahb->nghb", c, Hb)
    WH = (W @ H).reshape(N, ng, G)
    M = torch.einsum("nghb,nhb->ngh", T, c)
    rhs = torch.einsum("nga,nga->ng", c, WH)
    if p.zero is not None:
        SZ = T.sum(-1)
        ZZ = Hb.sum((1, 3)).expand(N, ng, ng)
        M = torch.cat([torch.cat([M, SZ], 2), torch.cat([SZ.transpose(1, 2), ZZ], 2)], 1)
        rhs = torch.cat([rhs, WH.sum(-1)], 1)
    # a ridge for groups whose codes are all equal (scale and zero then move the same way)
    eye = torch.eye(M.shape[1], dtype=M.dtype)
    M = M + 1e-9 * torch.diagonal(M, dim1=1, dim2=2).mean(1)[:, None, None] * eye
    theta = torch.linalg.solve(M, rhs[..., None])[..., 0]
    scale = theta[:, :ng].clamp(min=1e-8).half()
    zero = theta[:, ng:].half() if p.zero is not None else None
    new = naive.PackedWeight("int4", p.data, scale, zero, K, G)

    def row_err(x: naive.PackedWeight) -> torch.Tensor:
        d = naive.dequantize(x).double() - w.double()
        return ((d @ hessian.double()) * d).sum(1)

    better = row_err(new) < row_err(p)
    scale = torch.where(better[:, None], scale, p.scale)
    zero = None if zero is None else torch.where(better[:, None], zero, p.zero)
    return naive.PackedWeight("int4", p.data, scale, zero, K, G)


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
