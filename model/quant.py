"""Quantized linear layers: `quantize_model(lm, fmt)` swaps the decoder's and the head's nn.Linear modules for
QuantLinear modules holding packed int8 / int4 / fp8 weights (`sala_report.kernels.quant`), and
`choose_format` picks the best format that fits a card at a context length ("auto")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sala_report.kernels import quant
from sala_report.kernels.quant import PackedWeight

FORMATS = quant.FORMATS
# what settings accept; "bf16" (or None) keeps the checkpoint's weights, "gguf" a GGUF file's own quantized blocks
CHOICES = ("auto", "bf16", "gguf", *FORMATS)
# The head's format for each body format: logits are read straight off the head, and an int4 head alone moved the
# random 9B model's logits by ~1e-1, so int4 bodies keep an int8 head (300 MB instead of 150 MB).
HEAD_FORMAT = {"int8": "int8", "int4": "int8", "fp8": "fp8"}
# Prefill (more than 16 rows) on a GPU: "dequant" writes the 16-bit weight and calls cuBLAS (measured faster than the
# Triton dequantising GEMM at 16K-token chunks, model/BENCH.md); "triton" uses that kernel for every size.
PREFILL = {"int8": "dequant", "int4": "dequant", "fp8": "scaled_mm"}
# int4 at load (round-to-nearest) has no zero points: on SmolLM2 (perplexity, model/BENCH.md) symmetric groups beat
# min/max groups (55.3 against 66.7, fp32 35.8); the offline command's clipped grids do better with them
ZERO_POINT = False
_ROW_CHUNK = 4096  # rows quantized at once: bounds the fp32 temporaries while loading onto a small card


def check_format(fmt: str | None) -> str | None:
    """Normalise a quantize= argument: None / "bf16" / "none" -> None; raise ValueError for unknown names."""
    if fmt is None or fmt in ("bf16", "none", ""):
        return None
    if fmt not in CHOICES:
        raise ValueError(f"quantize must be one of {CHOICES} or None, got {fmt!r}")
    return fmt


class QuantLinear(nn.Module):
    """A bias-free linear layer over a PackedWeight; the packed tensors are (frozen) parameters, so `.to`, counting
    and state_dict see them under `<name>.qweight`, `.scales` and `.zeros`."""

    def __init__(self, p: PackedWeight):
        super().__init__()
        self.fmt, self.in_features, self.out_features = p.fmt, p.in_features, p.out_features
        self.group = p.group
        self.qweight = nn.Parameter(p.data, requires_grad=False)
        self.scales = nn.Parameter(p.scale, requires_grad=False)
        self.zeros = None if p.zero is None else nn.Parameter(p.zero, requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The packed codes: callers that only ask for the device (generation) keep working."""
        return self.qweight

    @property
    def packed(self) -> PackedWeight:
        return PackedWeight(self.fmt, self.qweight, self.scales, self.zeros, self.in_features, self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_linear(x, self.packed)

    def extra_repr(self) -> str:
        group = f", group={self.group}" if self.group else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, fmt={self.fmt}{group}"


def quantized_linear(x: torch.Tensor, p: PackedWeight) -> torch.Tensor:
    rows = x.numel() // max(1, x.shape[-1])
    if x.is_cuda and rows > 16:
        how = PREFILL[p.fmt]
        # cuBLAS fp8 needs both matrix sizes divisible by 16 (the 73,448-row head is not)
        if (
            how == "scaled_mm"
            and p.out_features % 16 == 0
            and p.in_features % 16 == 0
            and fp8_matmul_available(x.device)
        ):
            return fp8_linear(x, p)
        if how != "triton":
            return F.linear(x, quant.dequantize(p, x.dtype))
    return quant.linear(x, p)


def fp8_matmul_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9) and hasattr(torch, "_scaled_mm")


def fp8_linear(x: torch.Tensor, p: PackedWeight) -> torch.Tensor:
    """e4m3 activations with one scale per token times the e4m3 weight with one scale per channel (cuBLAS)."""
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, K)
    xp = quant.quantize_fp8_rows(x2 if x2.stride(1) == 1 else x2.contiguous())  # one launch (kernels/quant/fp8_rows.py)
    xq, w = xp.data.view(torch.float8_e4m3fn), p.data.view(torch.float8_e4m3fn)
    y = torch._scaled_mm(xq, w.t(), scale_a=xp.scale[:, None], scale_b=p.scale[None, :].float(), out_dtype=x.dtype)
    return y.view(*lead, p.out_features)


def quantize_weight(w: torch.Tensor, fmt: str) -> PackedWeight:
    """Round-to-nearest, a few thousand rows at a time (on w's device)."""
    parts = [quant.quantize(w[a : a + _ROW_CHUNK], fmt, zero=ZERO_POINT) for a in range(0, w.shape[0], _ROW_CHUNK)]
    return parts[0] if len(parts) == 1 else quant.cat_rows(parts)


def target_linears(lm) -> Iterator[tuple[str, str]]:
    """(module name, format role) of every linear layer that is quantized: the decoder's and the head."""
    for name, module in lm.named_modules():
        if isinstance(module, (nn.Linear, QuantLinear)) and (name.startswith("model.layers.") or name == "lm_head"):
            yield name, "head" if name == "lm_head" else "body"


def format_for(fmt: str, role: str) -> str:
    return HEAD_FORMAT[fmt] if role == "head" else fmt


def set_module(lm, name: str, module: nn.Module) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(lm.get_submodule(owner) if owner else lm, leaf, module)


def quantize_model(lm, fmt: str) -> None:
    """Quantize every target linear still in 16/32 bits, in place, freeing each original weight as it goes."""
    if fmt not in FORMATS:
        raise ValueError(f"expected a format in {FORMATS}, got {fmt!r}")
    for name, role in list(target_linears(lm)):
        module = lm.get_submodule(name)
        if isinstance(module, nn.Linear):
            set_module(lm, name, QuantLinear(quantize_weight(module.weight.detach(), format_for(fmt, role))))
    lm.quantize = fmt


def quantizing_stream(lm, tensors, fmt: str, *, device, dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass a checkpoint's (name, tensor) stream through, quantizing each target linear's weight on arrival, so a
    card never holds more than one 16-bit weight beyond the packed ones."""
    roles = {f"{name}.weight": (name, role) for name, role in target_linears(lm)}
    for name, t in tensors:
        hit = roles.get(name)
        if hit is None:
            yield name, t
            continue
        w = t.to(device=device, dtype=dtype).contiguous()
        set_module(lm, hit[0], QuantLinear(quantize_weight(w, format_for(fmt, hit[1]))))
        del w


def packed_stream(lm, tensors, *, device) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass a checkpoint's (name, tensor) stream through, turning each target linear that arrives as a PackedWeight
    (a GGUF's own blocks, model/gguf.py) into a QuantLinear on `device`."""
    for name, t in tensors:
        if isinstance(t, PackedWeight):
            set_module(lm, name.removesuffix(".weight"), QuantLinear(t.to(device)))
        else:
            yield name, t


def fuse(linears: list[QuantLinear]) -> QuantLinear:
    """One QuantLinear over the stacked rows of `linears`, whose parameters become row views of it (no memory)."""
    fused = QuantLinear(quant.cat_rows([lin.packed for lin in linears]))
    row = 0
    for lin in linears:
        p = fused.packed.rows(row, row + lin.out_features)
        lin.qweight = nn.Parameter(p.data, requires_grad=False)
        lin.scales = nn.Parameter(p.scale, requires_grad=False)
        if p.zero is not None:
            lin.zeros = nn.Parameter(p.zero, requires_grad=False)
        row += lin.out_features
    return fused


def weight_format(lm) -> str:
    """ "bf16" (or the dtype's name) for an unquantized model, else its body format."""
    fmt = getattr(lm, "quantize", None)
    return fmt if fmt else str(lm.model.embed_tokens.weight.dtype).removeprefix("torch.")


def describe_choice(quantize: str, device: torch.device, context: int | None = None, source: str | None = None) -> str:
    """One line for `doctor`: the format `quantize` gives `source` on this GPU, and what each format reaches
    (MiniCPM-SALA's when the source is not on this machine yet)."""
    from .plan import free_cuda_bytes

    return choice_line(quantize, free_cuda_bytes(device), context, source)


def choice_line(quantize: str, free: int, context: int | None = None, source: str | None = None) -> str:
    """describe_choice with the free bytes given: `source`'s own config and, for a GGUF, its packed blocks,
    which "auto" tries first as load_model does."""
    from .config import ModelConfig
    from .load import plan_inputs
    from .plan import choose_format, format_contexts
    from .sala_config import SALA_CONFIG

    found = plan_inputs(source) if source else None
    config, packed = found or (ModelConfig.from_dict(SALA_CONFIG), {})
    name = Path(source).name if found else "MiniCPM-SALA"
    n = context or config.max_position_embeddings
    reach = ", ".join(f"{f or 'bf16'} {c // 1024:,}K" for f, c in format_contexts(config, free, packed=packed).items())
    fmt = choose_format(config, free, n, packed=packed) if quantize == "auto" else check_format(quantize)
    how = "auto picks" if quantize == "auto" else "set to"
    return f"quantize={quantize}: {how} {fmt or 'bf16'} for {name} at {n // 1024:,}K tokens ({free / 2**30:.1f} GiB free; longest context: {reach})"
