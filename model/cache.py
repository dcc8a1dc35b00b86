"""The inference state of one batch of sequences: K/V and compressed keys per softmax layer, an fp32 state per lightning layer.

Buffers are preallocated and grow by doubling, so a decode step only writes into them. The
compressed keys K1/K2 (sala-model.md §3.4) are brought up to date from the resident K when the sparse
path needs them; the keys after the last complete window are the "staging buffer" of the reference.
"""

from __future__ import annotations

import torch

from .config import LIGHTNING, ModelConfig


def _grow(buf: torch.Tensor, used: int, need: int) -> torch.Tensor:
    """Return `buf` if it has room for `need` rows along dim 1, else a copy with doubled capacity."""
    cap = buf.shape[1]
    if need <= cap:
        return buf
    new_cap = max(need, 2 * cap, 16)
    out = buf.new_empty((buf.shape[0], new_cap, *buf.shape[2:]))
    out[:, :used] = buf[:, :used]
    return out


class SoftmaxLayerState:
    """K/V of one softmax layer, [B, capacity, Hkv, D], plus the K1/K2 mean-pooled keys for InfLLM-V2."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, capacity: int, device, dtype):
        self.k = torch.empty(batch, capacity, kv_heads, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.k1 = self.k.new_empty(batch, 0, kv_heads, head_dim)
        self.k2 = self.k.new_empty(batch, 0, kv_heads, head_dim)
        self.n1 = 0  # complete K1 windows stored
        self.n2 = 0

    def append(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, T, Hkv, D] at `start`; return all keys and values so far, [B, start+T, Hkv, D]."""
        end = start + k.shape[1]
        self.k = _grow(self.k, start, end)
        self.v = _grow(self.v, start, end)
        self.k[:, start:end] = k
        self.v[:, start:end] = v
        return self.k[:, :end], self.v[:, :end]

    def compressed(self, length: int, kernel_size: int, kernel_stride: int, compress) -> tuple[torch.Tensor, torch.Tensor]:
        """K1 = compress(K, ks, stride) and K2 = compress(K, 4ks, 4stride) over the first `length` keys."""
        self.k1, self.n1 = self._extend(self.k1, self.n1, length, kernel_size, kernel_stride, compress)
        self.k2, self.n2 = self._extend(self.k2, self.n2, length, 4 * kernel_size, 4 * kernel_stride, compress)
        return self.k1[:, : self.n1], self.k2[:, : self.n2]

    def _extend(self, buf, n, length, size, stride, compress):
        total = (length - size) // stride + 1 if length >= size else 0
        if total > n:
            # the new windows start at n*stride; everything before that was compressed already
            new = compress(self.k[:, n * stride : length], kernel_size=size, stride=stride)
            buf = _grow(buf, n, total)
            buf[:, n:total] = new[:, : total - n]
        return buf, total


class LightningLayerState:
    """The recurrent state S [B, H, D, D] of one lightning layer, always fp32 (bf16 loses quality)."""

    def __init__(self, batch: int, heads: int, head_dim: int, device):
        self.state = torch.zeros(batch, heads, head_dim, head_dim, device=device, dtype=torch.float32)


class InferenceState:
    """One object per batch: `length` tokens seen, and one state per layer in layer order."""

    def __init__(self, config: ModelConfig, batch_size: int = 1, *, device=None, dtype=torch.float32, capacity: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.length = 0
        self.layers: list[SoftmaxLayerState | LightningLayerState] = [
            LightningLayerState(batch_size, config.num_attention_heads, config.head_dim, device)
            if kind == LIGHTNING
            else SoftmaxLayerState(batch_size, config.num_key_value_heads, config.head_dim, capacity, device, dtype)
            for kind in config.mixer_types
        ]

    def reset(self) -> None:
        """Forget every token; the buffers are kept for the next sequence."""
        self.length = 0
        for layer in self.layers:
            if isinstance(layer, LightningLayerState):
                layer.state.zero_()
            else:
                layer.n1 = layer.n2 = 0
