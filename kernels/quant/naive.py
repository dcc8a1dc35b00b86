"""The quantized weight formats and their specification in plain PyTorch: quantize, dequantize, and the linear
layer each Triton kernel in `matmul.py` must equal (see README.md for the math and the byte layouts)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP = 128  # int4 group along the input dimension (our own quantizer's; GGUF blocks give 32)
FP8_MAX = 448.0  # largest finite float8 e4m3fn
FORMATS = ("int8", "int4", "fp8")


@dataclass
class PackedWeight:
    """A [out_features, in_features] weight in one of FORMATS; `group` G runs along the input dimension.

    int8: data int8 [N, K]; G = 0: scale fp32 [N], w = data * scale; G > 0 (GGUF Q8_0): scale fp16
          [N, ceil(K / G)], w[n, k] = data[n, k] * scale[n, k // G].
    int4: data uint8 [N, Kp / 2] (Kp = K rounded up to G, default GROUP), scale fp16 [N, Kp / G], zero fp16
          [N, groups] or None; within group g, byte j holds q[g*G + j] in its low nibble and q[g*G + G/2 + j] in
          its high nibble (for G = 32 ggml's Q4_0/Q4_1 blocks); w = q * scale + zero (zero None: (q - 8) * scale).
    fp8: data uint8 [N, K] holding float8 e4m3fn bits, scale fp32 [N]; w = data * scale (G = 0).
    """

    fmt: str
    data: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    in_features: int
    group: int | None = None  # None: the format's default (int4 GROUP, else per channel)

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = GROUP if self.fmt == "int4" else 0
        check_group(self.fmt, self.group)

    @property
    def out_features(self) -> int:
        return self.data.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scale, self.zero) if t is not None)

    def rows(self, start: int, stop: int) -> PackedWeight:
        """Output rows start..stop as views (every format packs along the input dimension only)."""
        return self.index_rows(slice(start, stop))

    def index_rows(self, rows) -> PackedWeight:
        """The output rows `rows` (a slice gives views, an index tensor copies): every format packs along K only."""
        z = None if self.zero is None else self.zero[rows]
        return PackedWeight(self.fmt, self.data[rows], self.scale[rows], z, self.in_features, self.group)

    def to(self, device) -> PackedWeight:
        z = None if self.zero is None else self.zero.to(device)
        return PackedWeight(self.fmt, self.data.to(device), self.scale.to(device), z, self.in_features, self.group)

    @property
    def kind(self) -> tuple:
        """What must agree for two weights to share one kernel launch: format, group, zero points, scale dtype."""
        return (self.fmt, self.group, self.zero is None, self.scale.dtype)


def check_group(fmt: str, group: int) -> None:
    """int4: a power of two >= 32 (the kernels dot half-groups of at least 16); int8: 0 (per channel) or a power of
    two >= 16; fp8: 0."""
    pow2 = group > 0 and group & (group - 1) == 0
    ok = {"int4": pow2 and group >= 32, "int8": group == 0 or (pow2 and group >= 16), "fp8": group == 0}
    if not ok.get(fmt, True):
        raise ValueError(
            f"expected a group size valid for {fmt} (int4: power of two >= 32; int8: 0 or a power of two >= 16; fp8: 0), got {group}"
        )


def cat_rows(parts: list[PackedWeight]) -> PackedWeight:
    """Stack weights of the same format and input size along the output dimension."""
    kinds = {(p.kind, p.in_features) for p in parts}
    if len(kinds) != 1:
        raise ValueError(
            f"expected weights of one format, group, zero-point use, scale dtype and input size, got {sorted(map(str, kinds))}"
        )
    z = None if parts[0].zero is None else torch.cat([p.zero for p in parts])
    first = parts[0]
    return PackedWeight(
        first.fmt,
        torch.cat([p.data for p in parts]),
        torch.cat([p.scale for p in parts]),
        z,
        first.in_features,
        first.group,
    )


def quantize(w: torch.Tensor, fmt: str, *, zero: bool = True, group: int | None = None) -> PackedWeight:
    """Round-to-nearest quantization of w [N, K] (any float dtype; the arithmetic is fp32); `group` as in
    PackedWeight (None: the format's default)."""
    if w.dim() != 2:
        raise ValueError(f"expected a [out, in] weight, got shape {tuple(w.shape)}")
    if fmt == "int8":
        return quantize_int8(w, group=group or 0)
    if fmt == "int4":
        return quantize_int4(w, zero=zero, group=group or GROUP)
    if fmt == "fp8":
        check_group("fp8", group or 0)
        return quantize_fp8(w)
    raise ValueError(f"expected a format in {FORMATS}, got {fmt!r}")


def quantize_int8(w: torch.Tensor, *, group: int = 0) -> PackedWeight:
    """Symmetric int8: one fp32 scale per row (group 0), or one fp16 scale per `group` inputs (GGUF Q8_0's grid)."""
    w = w.float()
    check_group("int8", group)
    if group == 0:
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return PackedWeight("int8", q, scale, None, w.shape[1])
    scale = (_groups(w, group).abs().amax(dim=2) / 127).half()
    s = _expand(scale, group, w.shape[1])
    q = torch.where(s > 0, torch.round(w / s), 0).clamp(-127, 127).to(torch.int8)
    return PackedWeight("int8", q, scale, None, w.shape[1], group)


def quantize_fp8(w: torch.Tensor) -> PackedWeight:
    w = w.float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return PackedWeight("fp8", q.view(torch.uint8), scale, None, w.shape[1])


def int4_grid(
    w: torch.Tensor, *, zero: bool = True, group: int = GROUP
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """w [N, K] -> (w padded to [N, groups, group], per-group scale, zero or None: fp16, as stored)."""
    g = _groups(w.float(), group)
    if zero:
        lo, hi = g.amin(dim=2), g.amax(dim=2)
        scale = ((hi - lo) / 15).clamp(min=1e-8).half()
        return g, scale, lo.half()
    scale = (g.abs().amax(dim=2) / 7).clamp(min=1e-8).half()
    return g, scale, None


def quantize_int4(
    w: torch.Tensor, *, zero: bool = True, scale=None, zero_point=None, group: int = GROUP
) -> PackedWeight:
    """Group-wise int4; `scale`/`zero_point` [N, groups] fix the grid (the offline methods choose it)."""
    check_group("int4", group)
    g, s, z = int4_grid(w, zero=zero, group=group)
    if scale is not None:
        s, z = scale.half(), None if zero_point is None else zero_point.half()
    q = int4_codes(g, s, z)
    return PackedWeight("int4", pack_int4(q), s, z, w.shape[1], group)


def int4_codes(g: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None) -> torch.Tensor:
    """Nearest codes 0..15 of grouped weights g [N, groups, G] on the stored (fp16) grid."""
    s = scale.float()[..., None]
    if zero is None:
        return (torch.round(g / s) + 8).clamp(0, 15).to(torch.uint8)
    return torch.round((g - zero.float()[..., None]) / s).clamp(0, 15).to(torch.uint8)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """codes [N, groups, G] uint8 -> [N, groups * G / 2]: first half of a group low, second half high."""
    half = q.shape[-1] // 2
    return (q[..., :half] | (q[..., half:] << 4)).reshape(q.shape[0], -1)


def unpack_int4(data: torch.Tensor, group: int = GROUP) -> torch.Tensor:
    """[N, Kp / 2] uint8 -> codes [N, groups, group]."""
    p = data.reshape(data.shape[0], -1, group // 2)
    return torch.cat([p & 0xF, p >> 4], dim=2)


def dequantize(p: PackedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> w [N, K] in dtype (computed in fp32, rounded once)."""
    if p.fmt == "int8" and p.group:
        return (p.data.float() * _expand(p.scale, p.group, p.in_features)).to(dtype)
    if p.fmt == "int8":
        return (p.data.float() * p.scale[:, None]).to(dtype)
    if p.fmt == "fp8":
        return (p.data.view(torch.float8_e4m3fn).float() * p.scale[:, None]).to(dtype)
    if p.fmt != "int4":
        raise ValueError(f"expected a format in {FORMATS}, got {p.fmt!r}")
    q = unpack_int4(p.data, p.group).float()
    s = p.scale.float()[..., None]
    w = (q - 8) * s if p.zero is None else q * s + p.zero.float()[..., None]
    return w.reshape(w.shape[0], -1)[:, : p.in_features].to(dtype)


def linear(x: torch.Tensor, p: PackedWeight) -> torch.Tensor:
    """x [..., K] @ dequantize(p).T in fp32 -> [..., N] in x.dtype."""
    if x.shape[-1] != p.in_features:
        raise ValueError(f"expected input of size {p.in_features} in the last dim, got {tuple(x.shape)}")
    return (x.float() @ dequantize(p).T).to(x.dtype)


def _groups(w: torch.Tensor, group: int = GROUP) -> torch.Tensor:
    """w [N, K] -> [N, groups, group], zero-padded at the end of K."""
    N, K = w.shape
    pad = -K % group
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(N, -1, group)


def _expand(scale: torch.Tensor, group: int, K: int) -> torch.Tensor:
    """Per-group scales [N, groups] -> fp32 [N, K]."""
    return scale.float().repeat_interleave(group, dim=1)[:, :K]
