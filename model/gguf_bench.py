"""GGUF dequantisation speed: the hand-written torch decoders this project used to have vs `gguf.quants`.

Run `python -m sala_report.model.gguf_bench`; it checks that both give identical values before it
prints a table of milliseconds per tensor type. The torch decoders live on here only as that baseline
(tests compare against them too); loading uses `model.gguf.dequantize`.
"""

from __future__ import annotations

import argparse
import time
import warnings

import gguf
import numpy as np
import torch

from .gguf import dequantize, supported_types

Q = gguf.GGMLQuantizationType


def _blocks(raw: torch.Tensor, n: int, block_elems: int, block_bytes: int) -> torch.Tensor:
    if n % block_elems or raw.numel() != n // block_elems * block_bytes:
        raise ValueError(
            f"tensor data has {raw.numel()} bytes, expected {n // block_elems * block_bytes} for {n} values"
        )
    return raw.view(-1, block_bytes)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """[..., 2k] uint8 -> [..., k] float32 read as little-endian float16."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """qs [..., 16] uint8 -> out [..., 32] float: the 16 low nibbles, then the 16 high ones (ggml's order).
    Writing into a preallocated output avoids the temporaries a cat would make (4x faster)."""
    out[..., :16] = qs & 0x0F
    out[..., 16:] = qs >> 4
    return out


def _q8_0(raw, n):
    b = _blocks(raw, n, 32, 34)
    return b[:, 2:].contiguous().view(torch.int8).float().mul_(_f16(b[:, :2]))


def _q4_0(raw, n):
    b = _blocks(raw, n, 32, 18)
    q = _nibbles(b[:, 2:], torch.empty(b.shape[0], 32))
    return q.sub_(8).mul_(_f16(b[:, :2]))


def _q4_1(raw, n):
    b = _blocks(raw, n, 32, 20)
    q = _nibbles(b[:, 4:], torch.empty(b.shape[0], 32))
    return q.mul_(_f16(b[:, :2])).add_(_f16(b[:, 2:4]))


def _q4_k(raw, n):
    # 256 values in 8 groups of 32: d, dmin (f16), 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles
    b = _blocks(raw, n, 256, 144)
    nb = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    s = b[:, 4:16].reshape(nb, 3, 4)
    sd, sm, smd = s[:, 0], s[:, 1], s[:, 2]
    scale = torch.cat((sd & 0x3F, (smd & 0x0F) | ((sd >> 2) & 0x30)), dim=-1).float()  # ggml get_scale_min_k4
    mins = torch.cat((sm & 0x3F, (smd >> 4) | ((sm >> 2) & 0x30)), dim=-1).float()
    qs = b[:, 16:].reshape(nb, 4, 32)  # each 32-byte run holds group 2i (low nibbles) and 2i+1 (high)
    q = torch.empty(nb, 4, 2, 32)
    q[:, :, 0] = qs & 0x0F
    q[:, :, 1] = qs >> 4
    q = q.view(nb, 8, 32)
    return q.mul_((d * scale)[:, :, None]).sub_((dmin * mins)[:, :, None]).view(nb, 256)


def _q6_k(raw, n):
    # 256 values in 16 groups of 16: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales, d (f16)
    b = _blocks(raw, n, 256, 210)
    nb = b.shape[0]
    ql, qh = b[:, :128].reshape(nb, 2, 1, 64), b[:, 128:192].reshape(nb, 2, 1, 32)
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(b[:, 208:210])
    lo = torch.cat((ql & 0x0F, ql >> 4), dim=2).reshape(nb, 8, 32)
    hi = torch.cat((qh & 3, (qh >> 2) & 3, (qh >> 4) & 3, (qh >> 6) & 3), dim=2).reshape(nb, 8, 32)
    q = (lo | (hi << 4)).float().sub_(32).view(nb, 16, 16)
    return q.mul_((d * scales)[:, :, None]).view(nb, 256)


def _plain(dtype):
    def read(raw, n):
        size = torch.finfo(dtype).bits // 8
        if raw.numel() != n * size:
            raise ValueError(f"tensor data has {raw.numel()} bytes, expected {n * size}")
        return raw.view(dtype).float()

    return read


TORCH_DECODERS = {
    "F32": _plain(torch.float32),
    "F16": _plain(torch.float16),
    "BF16": _plain(torch.bfloat16),
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q4_K": _q4_k,
    "Q6_K": _q6_k,
}


def sample_bytes(qtype: Q, n: int, rng: np.random.Generator) -> np.ndarray:
    """Valid bytes for `n` values: gguf's own quantizer where it has one, else random bytes with small
    finite float16 scales at the offsets ggml keeps them (K- and I-quants have no numpy quantizer)."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    x = rng.standard_normal(n).astype(np.float32)
    if qtype == Q.F32:
        return x.view(np.uint8)
    try:
        return np.ascontiguousarray(gguf.quants.quantize(x.reshape(-1, block), qtype)).view(np.uint8).reshape(-1)
    except NotImplementedError:
        pass
    raw = rng.integers(0, 256, (n // block, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.1, (n // block, 2)).astype(np.float16).view(np.uint8)
    at = SCALE_OFFSETS.get(qtype.name, (0,))
    for i, off in enumerate(at):
        raw[:, off : off + 2] = scales[:, 2 * (i % 2) : 2 * (i % 2) + 2]
    return raw.reshape(-1)


# where each block keeps its float16 scale(s) (ggml-common.h); the rest of a block is free bits, and
# types not listed (IQ1_M, MXFP4, NVFP4) get random bytes at offset 0, which only the timing needs
SCALE_OFFSETS = {
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ4_XS": (0,),
    "IQ2_XXS": (0,),
    "IQ2_XS": (0,),
    "IQ2_S": (0,),
    "IQ3_XXS": (0,),
    "IQ3_S": (0,),
    "IQ1_S": (0,),
    "TQ1_0": (52,),
    "TQ2_0": (64,),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "IQ4_NL": (0,),
}


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=4096 * 4096, help="values per tensor (default 4096x4096)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.values // 256 * 256
    print(f"{n:,} values per tensor, best of {args.repeat}, torch threads {torch.get_num_threads()}")
    print(f"{'type':8} {'torch (old) ms':>15} {'gguf.quants ms':>15} {'speed-up':>9}  identical")
    warnings.simplefilter("ignore", RuntimeWarning)  # random bytes hold NaN scales; np.errstate is per thread
    for name in supported_types():
        raw = sample_bytes(Q[name], n, rng)
        new = best_ms(lambda: dequantize(raw, name, n), args.repeat)
        if name not in TORCH_DECODERS:
            print(f"{name:8} {'-':>15} {new:15.1f} {'':>9}  (new type)")
            continue
        # as the old loader did: copy the bytes out of the memory map, then decode in torch
        old = best_ms(lambda: TORCH_DECODERS[name](torch.from_numpy(np.array(raw)), n), args.repeat)
        same = torch.equal(TORCH_DECODERS[name](torch.from_numpy(np.array(raw)), n).view(-1), dequantize(raw, name, n))
        print(f"{name:8} {old:15.1f} {new:15.1f} {old / new:8.1f}x  {same}")


if __name__ == "__main__":
    main()
