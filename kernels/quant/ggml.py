"""GGUF (ggml) quantized blocks as PackedWeights, without rounding anything again: Q4_0 and Q4_1 are int4 with
groups of 32 in the same nibble layout (their bytes are the codes), Q8_0 is int8 with a scale per 32, and Q4_K is
int4 with groups of 32 and zero points after moving its nibbles and multiplying out its 6-bit sub-block scales
(README.md, "GGUF blocks"). Other types return None: the loader dequantises them."""

from __future__ import annotations

import torch

from .naive import PackedWeight

BLOCK = 32  # values per Q4_0 / Q4_1 / Q8_0 block, and per Q4_K sub-block
SUPER = 256  # values per Q4_K super-block
# bytes per block (per super-block for Q4_K); names as ggml's type names
SIZES = {"Q4_0": 2 + 16, "Q4_1": 2 + 2 + 16, "Q8_0": 2 + 32, "Q4_K": 2 + 2 + 12 + 128}
PACKABLE = tuple(SIZES)


def packed_format(type_name: str) -> tuple[str, int, bool] | None:
    """(format, group, has zero points) a ggml type becomes, or None when it is dequantised instead."""
    return {
        "Q4_0": ("int4", BLOCK, False),
        "Q4_1": ("int4", BLOCK, True),
        "Q8_0": ("int8", BLOCK, False),
        "Q4_K": ("int4", BLOCK, True),
    }.get(type_name)


def from_ggml(raw: torch.Tensor, type_name: str, shape: tuple[int, int]) -> PackedWeight | None:
    """The tensor of `shape` [N, K] whose bytes (uint8, row after row, as in the file) are in ggml type
    `type_name` -> a PackedWeight holding the same values, or None for a type that does not map."""
    if type_name not in SIZES:
        return None
    N, K = shape
    per = SUPER if type_name == "Q4_K" else BLOCK
    if K % per or raw.numel() != N * K // per * SIZES[type_name]:
        raise ValueError(
            f"expected {N * K // per * SIZES[type_name]} bytes of {type_name} for a [{N}, {K}] weight (rows a "
            f"multiple of {per}), got {raw.numel()} bytes"
        )
    blocks = raw.reshape(N, K // per, SIZES[type_name])
    if type_name == "Q4_K":
        return _q4_k(blocks, K)
    d = _fp16(blocks[..., 0:2])  # [N, K / 32]
    if type_name == "Q8_0":
        q = blocks[..., 2:].contiguous().view(torch.int8).reshape(N, K)
        return PackedWeight("int8", q, d, None, K, BLOCK)
    if type_name == "Q4_0":  # (c - 8) * d: our int4 without zero points
        return PackedWeight("int4", blocks[..., 2:].reshape(N, K // 2).contiguous(), d, None, K, BLOCK)
    m = _fp16(blocks[..., 2:4])  # Q4_1: c * d + m
    return PackedWeight("int4", blocks[..., 4:].reshape(N, K // 2).contiguous(), d, m, K, BLOCK)


def _fp16(b: torch.Tensor) -> torch.Tensor:
    """[..., 2] little-endian bytes -> fp16 [...]."""
    return b.contiguous().view(torch.float16).squeeze(-1)


def _q4_k(blocks: torch.Tensor, K: int) -> PackedWeight:
    """Q4_K super-block: fp16 d and dmin, 12 bytes of eight 6-bit scales and mins, 128 bytes of codes; value
    = d·sc[j]·c − dmin·m[j] in sub-block j of 32. Its codes run in chunks of 64 (32 bytes: the low nibbles are
    sub-block 2i, the high nibbles 2i + 1), so they are moved into our 32-wide groups. The scale d·sc and the
    zero −dmin·m are exact in fp32 but stored as fp16 (rounded once: the error this costs is in README.md)."""
    N, S, _ = blocks.shape
    d, dmin = _fp16(blocks[..., 0:2]).float(), _fp16(blocks[..., 2:4]).float()  # [N, S]
    sc, mn = _scales_mins(blocks[..., 4:16])  # [N, S, 8]
    scale = (d[..., None] * sc.float()).reshape(N, S * 8).half()
    zero = (-(dmin[..., None] * mn.float())).reshape(N, S * 8).half()
    qs = blocks[..., 16:].reshape(N, S, 4, 32)  # 4 chunks of 64 values
    lo, hi = qs & 0xF, qs >> 4  # [N, S, 4, 32]: codes of sub-blocks 2i and 2i + 1
    groups = torch.stack([lo, hi], dim=3).reshape(N, S * 8, 32)  # [N, groups, 32] codes in order
    data = groups[..., :16] | (groups[..., 16:] << 4)  # our layout: second half of a group in the high nibbles
    return PackedWeight("int4", data.reshape(N, K // 2).contiguous(), scale, zero, K, BLOCK)


def _scales_mins(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 scale bytes of a Q4_K super-block -> (scales, mins) [..., 8], 6 bits each. Bytes 0-3 hold the low
    6 bits of scales 0-3, bytes 4-7 those of mins 0-3; for sub-blocks 4-7 the low 4 bits sit in bytes 8-11
    (scale low nibble, min high nibble) and the top 2 bits in the spare top bits of bytes 0-3 (scales) and
    4-7 (mins)."""
    b = b.to(torch.int32)
    s_lo, m_lo, extra = b[..., 0:4], b[..., 4:8], b[..., 8:12]
    sc = torch.cat([s_lo & 63, (extra & 0xF) | ((s_lo >> 6) << 4)], dim=-1)
    mn = torch.cat([m_lo & 63, (extra >> 4) | ((m_lo >> 6) << 4)], dim=-1)
    return sc, mn


def with_zero(p: PackedWeight) -> PackedWeight:
    """An int4 weight without zero points (Q4_0: (c - 8)·d) in the zero-point form c·d + z, z = -8·d: the same
    values exactly (c·d and 8·d are exact in fp32, and so is their difference), so that it stacks with Q4_1."""
    if p.fmt != "int4" or p.zero is not None:
        raise ValueError(
            f"expected int4 weights without zero points, got {p.fmt} with zero points {p.zero is not None}"
        )
    z = -8 * p.scale.float()
    if not torch.isfinite(z.half()).all():
        raise ValueError("expected scales below 8188 (their -8x zero point must fit in fp16)")
    return PackedWeight("int4", p.data, p.scale, z.half(), p.in_features, p.group)
