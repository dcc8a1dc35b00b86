"""The quantized weight formats and their specification in plain PyTorch: quantize, dequantize, and the linear
layer each Triton kernel in `matmul.py` must equal (see README.md for the math and the byte layouts)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP = 128  # int4 group along the input dimension
FP8_MAX = 448.0  # largest finite float8 e4m3fn
FORMATS = ("int8", "int4", "fp8")


@dataclass
class PackedWeight:
    """A [out_features, in_features] weight in one of FORMATS.

    int8: data int8 [N, K], scale fp32 [N]; w = data * scale.
    int4: data uint8 [N, Kp / 2] (Kp = K rounded up to GROUP), scale fp16 [N, Kp / GROUP], zero fp16 [N, groups]
          or None; within group g, byte j holds q[g*128 + j] in its low nibble and q[g*128 + 64 + j] in its high
          nibble; w = q * scale + zero (zero None: w = (q - 8) * scale).
    fp8: data uint8 [N, K] holding float8 e4m3fn bits, scale fp32 [N]; w = data * scale.
    """

    fmt: str
    data: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    in_features: int

    @property
    def out_features(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.zero) if t is not None)

    def rows(self, start: int, stop: int) -> PackedWeight:
        """Output rows start..stop as views (every format packs along the input dimension only)."""
        z = None if self.zero is None else self.zero[start:stop]
        return PackedWeight(self.fmt, self.data[start:stop], self.scale[start:stop], z, self.in_features)

    def to(self, device) -> PackedWeight:
        z = None if self.zero is None else self.zero.to(device)
        return PackedWeight(self.fmt, self.data.to(device), self.scale.to(device), z, self.in_features)


def cat_rows(parts: list[PackedWeight]) -> PackedWeight:
    """Stack weights of the same format and input size along the output dimension."""
    fmts = {(p.fmt, p.in_features, p.zero is None) for p in parts}
    if len(fmts) != 1:
        raise ValueError(f"expected weights of one format, input size and zero-point use, got {sorted(fmts)}")
    z = None if parts[0].zero is None else torch.cat([p.zero for p in parts])
    return PackedWeight(
        parts[0].fmt, torch.cat([p.data for p in parts]), torch.cat([p.scale for p in parts]), z, parts[0].in_features
    )


def quantize(w: torch.Tensor, fmt: str, *, zero: bool = True) -> PackedWeight:
    """Round-to-nearest quantization of w [N, K] (any float dtype; the arithmetic is fp32)."""
    if w.dim() != 2:
        raise ValueError(f"expected a [out, in] weight, got shape {tuple(w.shape)}")
    if fmt == "int8":
        return quantize_int8(w)
    if fmt == "int4":
        return quantize_int4(w, zero=zero)
    if fmt == "fp8":
        return quantize_fp8(w)
    raise ValueError(f"expected a format in {FORMATS}, got {fmt!r}")


def quantize_int8(w: torch.Tensor) -> PackedWeight:
    w = w.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return PackedWeight("int8", q, scale, None, w.shape[1])


def quantize_fp8(w: torch.Tensor) -> PackedWeight:
    w = w.float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return PackedWeight("fp8", q.view(torch.uint8), scale, None, w.shape[1])


def int4_grid(w: torch.Tensor, *, zero: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-group scale and zero (fp16, as stored) of w [N, K] padded to [N, groups, GROUP] -> (scale, zero)."""
    g = _groups(w.float())
    if zero:
        lo, hi = g.amin(dim=2), g.amax(dim=2)
        scale = ((hi - lo) / 15).clamp(min=1e-8).half()
        return g, scale, lo.half()
    scale = (g.abs().amax(dim=2) / 7).clamp(min=1e-8).half()
    return g, scale, None


def quantize_int4(w: torch.Tensor, *, zero: bool = True, scale=None, zero_point=None) -> PackedWeight:
    """Group-wise int4; `scale`/`zero_point` [N, groups] fix the grid (the offline methods choose it)."""
    g, s, z = int4_grid(w, zero=zero)
    if scale is not None:
        s, z = scale.half(), None if zero_point is None else zero_point.half()
    q = int4_codes(g, s, z)
    return PackedWeight("int4", pack_int4(q), s, z, w.shape[1])


def int4_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """Nearest codes 0..15 of grouped weights g [N, groups, GROUP] on the stored (fp16) grid."""
    s = scale.float()[..., None]
    if zero is None:
        return (torch.round(g / s) + 8).clamp(0, 15).to(torch.uint8)
    return torch.round((g - zero.float()[..., None]) / s).clamp(0, 15).to(torch.uint8)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """codes [N, groups, GROUP] uint8 -> [N, groups * GROUP / 2]: first half of a group low, second half high."""
    half = GROUP // 2
    return (q[..., :half] | (q[..., half:] << 4)).reshape(q.shape[0], -1)


def unpack_int4(data: torch.Tensor) -> torch.Tensor:
    """[N, Kp / 2] uint8 -> codes [N, groups, GROUP]."""
    p = data.reshape(data.shape[0], -1, GROUP // 2)
    return torch.cat([p & 0xF, p >> 4], dim=2)


def dequantize(p: PackedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> w [N, K] in dtype (computed in fp32, rounded once)."""
    if p.fmt == "int8":
        return (p.data.float() * p.scale[:, None]).to(dtype)
    if p.fmt == "fp8":
        return (p.data.view(torch.float8_e4m3fn).float() * p.scale[:, None]).to(dtype)
    if p.fmt != "int4":
        raise ValueError(f"expected a format in {FORMATS}, got {p.fmt!r}")
    q = unpack_int4(p.data).float()
    s = p.scale.float()[..., None]
    w = (q - 8) * s if p.zero is None else q * s + p.zero.float()[..., None]
    return w.reshape(w.shape[0], -1)[:, : p.in_features].to(dtype)


def linear(x: torch.Tensor, p: PackedWeight) -> torch.Tensor:
    """x [..., K] @ dequantize(p).T in fp32 -> [..., N] in x.dtype."""
    if x.shape[-1] != p.in_features:
        raise ValueError(f"expected input of size {p.in_features} in the last dim, got {tuple(x.shape)}")
    return (x.float() @ dequantize(p).T).to(x.dtype)


def _groups(w: torch.Tensor) -> torch.Tensor:
    """w [N, K] -> [N, groups, GROUP], zero-padded at the end of K."""
    N, K = w.shape
    pad = -K % GROUP
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(N, -1, GROUP)
