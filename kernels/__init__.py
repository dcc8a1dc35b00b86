"""The attention ops MiniCPM-SALA's layers call: Lightning (linear) attention and InfLLM-V2 sparse attention.

Each op dispatches on the tensors' device: CPU runs the pure-PyTorch reference (`*/naive.py`), CUDA runs the
Triton kernels. `backend="reference"` forces the reference anywhere; `backend="triton"` forces the kernels
(on a CPU only under TRITON_INTERPRET=1, which is how the CPU tests exercise them). Triton is imported only
when a kernel runs, so a CPU-only install without Triton works.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import torch

from .lightning import naive as _lightning_ref
from .pointwise import naive as _pointwise_ref
from .sparse import naive as _sparse_ref
from .sparse.params import SparseParams

__all__ = [
    "SparseParams",
    "lightning_prefill",
    "lightning_decode",
    "compress_keys",
    "select_blocks",
    "sparse_attention",
    "dense_attention",
    "sparse_decode",
    "append_compressed",
    "rms_norm",
    "add_rms_norm",
    "head_norm_rope",
    "gated_rms_norm",
    "silu_mul",
]

Backend = Literal["auto", "reference", "triton"]
_BACKENDS = ("auto", "reference", "triton")


def _use_triton(backend: Backend, x: torch.Tensor) -> bool:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return backend == "triton" or (backend == "auto" and x.is_cuda)


def _expect(cond: bool, what: str, got: object) -> None:
    if not cond:
        raise ValueError(f"expected {what}, got {got}")


def lightning_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    fp32_products: bool = False,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked Lightning attention over a prompt; see lightning/README.md.

    q, k: [B, T, H, Dk]; v: [B, T, H, Dv]; log_decay: [H] fp32 (<= 0); initial_state: [N, H, Dk, Dv] fp32 or None,
    N = B, or the number of sequences when cu_seqlens (int, [N + 1], B == 1) packs them.
    fp32_products: the Triton kernel keeps every product after QKᵀ in fp32 (tf32 dots) for 16-bit inputs, so bf16
    q/k/v give the numbers of their fp32 copies; otherwise those operands are rounded to the input dtype (faster,
    fla's precision). The reference always computes in fp32.
    -> (o [B, T, H, Dv] in q.dtype, final_state [N, H, Dk, Dv] fp32)
    """
    _expect(
        q.dim() == 4 and k.shape == q.shape and v.shape[:3] == q.shape[:3],
        "q, k: [B, T, H, Dk] and v: [B, T, H, Dv]",
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
    )
    B, T, H, Dk = q.shape
    _expect(tuple(log_decay.shape) == (H,), f"log_decay of shape ({H},)", tuple(log_decay.shape))
    if cu_seqlens is not None:
        _expect(
            B == 1 and cu_seqlens.dim() == 1 and cu_seqlens.numel() >= 2,
            "B == 1 and cu_seqlens [N + 1] with cu_seqlens",
            (B, tuple(cu_seqlens.shape)),
        )
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None:
        _expect(
            tuple(initial_state.shape) == (N, H, Dk, v.shape[-1]),
            f"initial_state of shape {(N, H, Dk, v.shape[-1])}",
            tuple(initial_state.shape),
        )
    if _use_triton(backend, q):
        from .lightning.chunk import chunk_lightning

        return chunk_lightning(
            q,
            k,
            v,
            log_decay,
            scale=scale,
            initial_state=initial_state,
            cu_seqlens=cu_seqlens,
            fp32_products=fp32_products,
        )
    return _lightning_ref.chunk_lightning(
        q, k, v, log_decay, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens
    )


def lightning_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: torch.Tensor,
    *,
    scale: float,
    backend: Backend = "auto",
) -> torch.Tensor:
    """One token for each of B sequences. q, k: [B, H, Dk]; v: [B, H, Dv]; state [B, H, Dk, Dv] fp32 is updated IN PLACE.

    -> o [B, H, Dv] in q.dtype
    """
    _expect(
        q.dim() == 3 and k.shape == q.shape and v.shape[:2] == q.shape[:2],
        "q, k: [B, H, Dk] and v: [B, H, Dv]",
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
    )
    _expect(
        tuple(state.shape) == (*q.shape, v.shape[-1]), f"state of shape {(*q.shape, v.shape[-1])}", tuple(state.shape)
    )
    _expect(state.dtype in (torch.float32, torch.float64), "a float32 state", state.dtype)
    if _use_triton(backend, q):
        from .lightning.fused_recurrent import fused_recurrent_decode

        return fused_recurrent_decode(q, k, v, log_decay, state, scale=scale)
    return _lightning_ref.lightning_decode(q, k, v, log_decay, state, scale=scale)


def compress_keys(k: torch.Tensor, *, kernel_size: int, stride: int, backend: Backend = "auto") -> torch.Tensor:
    """k: [B, L, Hkv, D] -> [B, n, Hkv, D], n = (L - kernel_size) // stride + 1 (0 if L < kernel_size).

    Entry c = mean(k[:, c*stride : c*stride + kernel_size]) in fp32, cast to k.dtype. For decode, compress only
    the newest window (`k[:, L - kernel_size:]`) to get the one new entry.
    """
    _expect(k.dim() == 4, "k: [B, L, Hkv, D]", tuple(k.shape))
    if _use_triton(backend, k):
        from .sparse.compress import compress_keys_triton

        return compress_keys_triton(k, kernel_size=kernel_size, stride=stride)
    return _sparse_ref.compress_keys(k, kernel_size=kernel_size, stride=stride)


def select_blocks(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    *,
    q_start: int,
    kv_len: int,
    params: SparseParams,
    causal: bool,
    scale: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """InfLLM-V2 block selection (sala-model.md §3.5) -> int32 [B, Hkv, Tq, k_eff], ascending, -1 where invalid.

    q: [B, Tq, Hq, D] at absolute positions q_start .. q_start + Tq - 1; k1 = compress(k, 32, 16) and
    k2 = compress(k, 128, 64) over the first kv_len keys; scale defaults to D ** -0.5. Ties go to the lower block.
    """
    _expect(q.dim() == 4 and k1.dim() == 4 and k2.dim() == 4, "q, k1, k2 of rank 4", (q.dim(), k1.dim(), k2.dim()))
    _expect(
        k1.shape[2] == k2.shape[2] and q.shape[2] % k1.shape[2] == 0,
        "Hq a multiple of Hkv (k1 and k2 alike)",
        (q.shape[2], k1.shape[2], k2.shape[2]),
    )
    _expect(isinstance(params, SparseParams), "params: SparseParams", type(params).__name__)
    _expect(
        kv_len >= 1 and (not causal or q_start + q.shape[1] <= kv_len),
        "1 <= kv_len and q_start + Tq <= kv_len",
        (q_start, q.shape[1], kv_len),
    )
    if _use_triton(backend, q):
        from .sparse.select import select_blocks_triton

        return select_blocks_triton(
            q, k1, k2, q_start=q_start, kv_len=kv_len, params=params, causal=causal, scale=scale
        )
    return _sparse_ref.select_blocks(
        q, k1, k2, q_start=q_start, kv_len=kv_len, params=params, causal=causal, scale=scale
    )


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_idx: torch.Tensor,
    *,
    q_start: int,
    block_size: int,
    scale: float,
    forced_blocks: tuple[int, int] | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Exact softmax attention of each query over the union of its selected blocks, causal within its own block.

    q: [B, Tq, Hq, D]; k, v: [B, L, Hkv, D]; block_idx: int32 [B, Hkv, Tq, K] (unique per row, -1 = none)
    -> [B, Tq, Hq, D] in q.dtype.
    forced_blocks=(params.init_blocks, params.local_blocks) is an optional promise that block_idx came from
    select_blocks with those params (every row holds its init and local blocks); the Triton prefill then computes
    that shared part once per 64-query block, which is faster. The result is the same either way.
    """
    _expect(
        q.dim() == 4 and k.dim() == 4 and v.shape[:3] == k.shape[:3],
        "q: [B, Tq, Hq, D], k, v: [B, L, Hkv, D]",
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
    )
    _expect(
        block_idx.dim() == 4 and tuple(block_idx.shape[:3]) == (q.shape[0], k.shape[2], q.shape[1]),
        f"block_idx of shape {(q.shape[0], k.shape[2], q.shape[1])} + (K,)",
        tuple(block_idx.shape),
    )
    if _use_triton(backend, q):
        from .sparse.attention import sparse_attention_triton

        return sparse_attention_triton(
            q, k, v, block_idx, q_start=q_start, block_size=block_size, scale=scale, forced_blocks=forced_blocks
        )
    return _sparse_ref.sparse_attention(q, k, v, block_idx, q_start=q_start, block_size=block_size, scale=scale)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int, scale: float) -> torch.Tensor:
    """Causal GQA attention over all keys (torch SDPA): query i at position q_start + i sees keys 0 .. q_start + i."""
    _expect(
        q.dim() == 4 and k.dim() == 4 and v.shape[:3] == k.shape[:3],
        "q: [B, Tq, Hq, D], k, v: [B, L, Hkv, D]",
        (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
    )
    return _sparse_ref.dense_attention(q, k, v, q_start=q_start, scale=scale)


def sparse_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    pos: torch.Tensor,
    *,
    params: SparseParams,
    scale: float,
    max_kv_len: int,
    backend: Backend = "auto",
) -> torch.Tensor:
    """One decode step of InfLLM-V2 (selection, then attention) that a CUDA graph can replay at any length.

    q: [B, 1, Hq, D] at position pos (int64 [1] tensor on q's device; the same for the whole batch); k, v: key/value
    buffers [B, >= pos + 1, Hkv, D]; k1, k2: compressed-key buffers holding at least the windows complete at pos + 1
    keys (sizes up to max_kv_len, which bounds every launch). -> [B, 1, Hq, D] in q.dtype.
    The reference reads pos on the host; the Triton path reads it on the device.
    """
    _expect(q.dim() == 4 and q.shape[1] == 1, "q: [B, 1, Hq, D]", tuple(q.shape))
    _expect(pos.numel() == 1 and not pos.is_floating_point(), "pos: an integer tensor of one element", tuple(pos.shape))
    if _use_triton(backend, q):
        from .sparse.attention import sparse_attention_triton
        from .sparse.select import select_blocks_decode_triton

        idx = select_blocks_decode_triton(q, k1, k2, pos, params=params, max_kv_len=max_kv_len, scale=scale)
        return sparse_attention_triton(q, k, v, idx, q_start=0, block_size=params.block_size, scale=scale, pos=pos)
    length = int(pos) + 1
    n1 = _windows(length, params.kernel_size, params.kernel_stride)
    n2 = _windows(length, params.lse_kernel_size, params.lse_stride)
    idx = _sparse_ref.select_blocks(
        q, k1[:, :n1], k2[:, :n2], q_start=length - 1, kv_len=length, params=params, causal=False, scale=scale
    )
    return _sparse_ref.sparse_attention(
        q, k[:, :length], v[:, :length], idx, q_start=length - 1, block_size=params.block_size, scale=scale
    )


def _windows(length: int, kernel_size: int, stride: int) -> int:
    return (length - kernel_size) // stride + 1 if length >= kernel_size else 0


def append_compressed(
    k: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    pos: torch.Tensor,
    *,
    kernel_size: int,
    stride: int,
    backend: Backend = "auto",
) -> None:
    """After the key at position pos (int64 [1] tensor) was written into k [B, cap, Hkv, D]: write, in place, the
    K1 entry (kernel_size, stride) and the K2 entry (4 x both) that this key completes, if any."""
    _expect(k.dim() == 4 and k1.dim() == 4 and k2.dim() == 4, "k, k1, k2 of rank 4", (k.dim(), k1.dim(), k2.dim()))
    if _use_triton(backend, k):
        from .sparse.compress import append_windows_triton

        return append_windows_triton(k, k1, k2, pos, kernel_size=kernel_size, stride=stride)
    length = int(pos) + 1
    for buf, ks, st in ((k1, kernel_size, stride), (k2, 4 * kernel_size, 4 * stride)):
        c = _windows(length, ks, st) - 1
        if c >= 0 and (length - ks) % st == 0 and c < buf.shape[1]:
            buf[:, c] = _sparse_ref.compress_keys(k[:, length - ks : length], kernel_size=ks, stride=st)[:, 0]
    return None


def _pointwise(x: torch.Tensor) -> ModuleType:
    """The Triton module for CUDA tensors, the reference otherwise."""
    if x.is_cuda:
        from .pointwise import fused

        return fused
    return _pointwise_ref


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * (x / rms(x)) over the last dim (variance in fp32, cast to x.dtype before the weight)."""
    return _pointwise(x).rms_norm(x, weight, eps)


def add_rms_norm(
    h: torch.Tensor, a: torch.Tensor, scale: float, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual step: -> (h + scale * a, rms_norm(h + scale * a))."""
    return _pointwise(h).add_rms_norm(h, a, scale, weight, eps)


def head_norm_rope(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """x [B, T, H, D]: per-head RMSNorm (weight [D] or None), then rotate-half RoPE with cos/sin [T, D] (or None)."""
    return _pointwise(x).head_norm_rope(x, weight, eps, cos, sin, out_dtype)


def gated_rms_norm(o: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """rms_norm(o.to(gate.dtype)) * sigmoid(gate); with weight None, just the gate."""
    return _pointwise(gate).gated_rms_norm(o, gate, weight, eps)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up (SwiGLU)."""
    return _pointwise(gate).silu_mul(gate, up)
