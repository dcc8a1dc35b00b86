"""Block-wise tuning of int4 grids (the idea of OmniQuant's and EfficientQAT's block-wise reconstruction, written
from their description): with GPTQ's codes fixed, each decoder layer's group scales and zero points are trained by
Adam so that the layer's output on calibration text moves towards the full-precision layer's, which per-linear GPTQ
and `refit_grid` cannot see (errors meeting inside attention, the MLP's product and the residual). A layer keeps its
tuned grid only if its output error on held-out calibration batches falls."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sala_report.kernels.quant import naive

from .gptq import _Batch
from .model import LightningAttention
from .quant import set_module

STREAMS = ("fp", "quant")


@dataclass(frozen=True)
class TuneOptions:
    """`epochs` passes over the training batches at Adam step `lr` (relative to each group's scale); `stream` is the
    layer's input while tuning: the full-precision model's ("fp") or the quantized model's so far ("quant"), the
    target always the full-precision layer on full-precision input; the last `held_out` batches only judge. The
    defaults won on validation text on SmolLM2 (model/BENCH.md)."""

    epochs: int = 2
    lr: float = 1e-3
    stream: str = "quant"
    held_out: int = 1


class GridLinear(nn.Module):
    """A linear over fixed int4 codes on a trainable grid: scale = s0 * exp(a), zero = z0 + s0 * b, with a and b
    starting at 0, so Adam's steps are fractions of each group's own scale (scales span orders of magnitude)."""

    def __init__(self, p: naive.PackedWeight):
        super().__init__()
        if p.fmt != "int4":
            raise ValueError(f"expected an int4 weight, got {p.fmt!r}")
        q = naive.unpack_int4(p.data, p.group).float()
        self.data, self.in_features, self.group = p.data, p.in_features, p.group
        self.register_buffer("codes", q if p.zero is not None else q - 8)
        self.register_buffer("s0", p.scale.float())
        self.register_buffer("z0", None if p.zero is None else p.zero.float())
        self.a = nn.Parameter(torch.zeros_like(self.s0))
        self.b = None if p.zero is None else nn.Parameter(torch.zeros_like(self.s0))

    def grid(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        scale = self.s0 * torch.exp(self.a)
        return scale, None if self.b is None else self.z0 + self.s0 * self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self.grid()
        w = self.codes * scale[..., None]
        if zero is not None:
            w = w + zero[..., None]
        w = w.reshape(w.shape[0], -1)[:, : self.in_features]
        return F.linear(x.float(), w).to(x.dtype)

    def packed(self) -> naive.PackedWeight:
        """The grid as stored (fp16), on the same codes."""
        with torch.no_grad():
            scale, zero = self.grid()
            zero = None if zero is None else zero.half()
            return naive.PackedWeight(
                "int4", self.data, scale.clamp(min=1e-8).half(), zero, self.in_features, self.group
            )


def tune_grids(
    lm, batches: list[torch.Tensor], packed: dict[str, naive.PackedWeight], options: TuneOptions | None = None
) -> dict[str, naive.PackedWeight]:
    """`packed` with the grids of each decoder layer's int4 linears tuned block-wise; lm is full precision and is
    left as it was. Linears outside the decoder layers, and non-int4 ones, pass through unchanged."""
    o = options or TuneOptions()
    if o.stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {o.stream!r}")
    if not 0 < o.held_out < len(batches):
        raise ValueError(f"expected 1..{len(batches) - 1} held-out batches of {len(batches)}, got {o.held_out}")
    out = dict(packed)
    train = range(len(batches) - o.held_out)
    held = range(len(batches) - o.held_out, len(batches))
    with torch.no_grad():
        fp = [_Batch(lm, ids) for ids in batches]
        qs = [_Batch(lm, ids) for ids in batches] if o.stream == "quant" else fp
    for index, layer in enumerate(lm.model.layers):
        prefix = f"model.layers.{index}."
        names = [n for n, p in packed.items() if n.startswith(prefix) and p.fmt == "int4"]
        originals = {n: lm.get_submodule(n) for n in names}
        with torch.no_grad():
            targets = [b.run(layer, index) for b in fp]
        try:
            chosen = _tune_layer(layer, index, names, lm, packed, qs, targets, train, held, o)
            out.update(chosen)
            if o.stream == "quant":
                with torch.no_grad():
                    for b in qs:
                        b.h, b.m = b.run(layer, index)
        finally:
            for n, m in originals.items():
                set_module(lm, n, m)
        for b, (h, m) in zip(fp, targets, strict=True):
            b.h, b.m = h, m
    return out


def _tune_layer(layer, index, names, lm, packed, stream, targets, train, held, o) -> dict[str, naive.PackedWeight]:
    """Train one layer's grids; -> the packed weights it keeps (tuned, or as given when held-out error rose).
    Leaves the kept grids installed in the layer (GridLinear) for the quantized stream to move on."""
    tuned = {n: GridLinear(packed[n]) for n in names}
    for n, m in tuned.items():
        set_module(lm, n, m)
        # a Lightning mixer writes its recurrent state in place after reading it, which autograd cannot follow:
        # its projections keep their grids (the MLP after it still tunes, on its quantized output)
        if isinstance(layer.self_attn, LightningAttention) and n.startswith(f"model.layers.{index}.self_attn."):
            m.requires_grad_(False)
    scale = layer.residual_scale
    before = _error(layer, index, stream, targets, held, scale)
    opt = torch.optim.Adam([p for m in tuned.values() for p in m.parameters() if p.requires_grad], lr=o.lr)
    for _ in range(o.epochs):
        for i in train:
            h, m = stream[i].run(layer, index, fresh=True)
            loss = F.mse_loss(h + scale * m, targets[i][0] + scale * targets[i][1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    kept = {n: m.packed() for n, m in tuned.items()}
    for n, p in kept.items():
        set_module(lm, n, GridLinear(p))
    if _error(layer, index, stream, targets, held, scale) < before:
        return kept
    for n in names:
        set_module(lm, n, GridLinear(packed[n]))
    return {n: packed[n] for n in names}


def _error(layer, index, stream, targets, rows, scale) -> float:
    """Mean square of the layer's residual-stream output minus the full-precision layer's, over batches `rows`."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in rows:
            h, m = stream[i].run(layer, index)
            d = (h + scale * m) - (targets[i][0] + scale * targets[i][1])
            total += float((d.double() ** 2).sum())
            count += d.numel()
    return total / count
