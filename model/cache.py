"""The inference state of one batch of sequences: K/V and compressed keys per softmax layer, an fp32 state per lightning layer.

Buffers are preallocated to a capacity and grow by doubling when a forward pass needs more, so a decode step only
writes into them; the GPU runtime allocates the planned capacity up front, since a captured CUDA graph keeps the
buffers' addresses. The compressed keys K1/K2 (sala-model.md §3.4) always hold every window complete within
`length` keys; the keys after the last complete window are the "staging buffer" of the reference.
"""

from __future__ import annotations

import torch

from .config import LIGHTNING, ModelConfig, SparseConfig


def windows(length: int, size: int, stride: int) -> int:
    """Complete compression windows of `size` keys every `stride` over the first `length` keys."""
    return (length - size) // stride + 1 if length >= size else 0


def _grow(buf: torch.Tensor, used: int, need: int) -> torch.Tensor:
    """Return `buf` if it has room for `need` rows along dim 1, else a copy with doubled capacity."""
    cap = buf.shape[1]
    if need <= cap:
        return buf
    new_cap = max(need, 2 * cap, 16)
    out = buf.new_zeros((buf.shape[0], new_cap, *buf.shape[2:]))
    out[:, :used] = buf[:, :used]
    return out


class SoftmaxLayerState:
    """K/V of one softmax layer, [B, capacity, Hkv, D], plus the K1/K2 mean-pooled keys when InfLLM-V2 is on."""

    def __init__(
        self, batch: int, kv_heads: int, head_dim: int, capacity: int, device, dtype, sparse: SparseConfig | None
    ):
        # zeros, not empty: a masked decode step reads the whole buffer, and 0 * NaN garbage would be NaN
        self.k = torch.zeros(batch, capacity, kv_heads, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.sparse = sparse
        self.k1 = self.k2 = None
        if sparse is not None:
            self.k1 = self.k.new_empty(batch, windows(capacity, *self.k1_window), kv_heads, head_dim)
            self.k2 = self.k.new_empty(batch, windows(capacity, *self.k2_window), kv_heads, head_dim)

    @property
    def k1_window(self) -> tuple[int, int]:
        return self.sparse.kernel_size, self.sparse.kernel_stride

    @property
    def k2_window(self) -> tuple[int, int]:
        # K2 only feeds the approximate log-sum-exp of stage 1: 4x the window and stride of K1
        return 4 * self.sparse.kernel_size, 4 * self.sparse.kernel_stride

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def reserve(self, used: int, need: int) -> None:
        """Room for `need` keys, keeping the first `used`."""
        self.k, self.v = _grow(self.k, used, need), _grow(self.v, used, need)
        if self.sparse is not None:
            self.k1 = _grow(self.k1, windows(used, *self.k1_window), windows(self.capacity, *self.k1_window))
            self.k2 = _grow(self.k2, windows(used, *self.k2_window), windows(self.capacity, *self.k2_window))

    def append(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, T, Hkv, D] at `start`; return all keys and values so far, [B, start+T, Hkv, D]."""
        end = start + k.shape[1]
        self.k[:, start:end] = k
        self.v[:, start:end] = v
        return self.k[:, :end], self.v[:, :end]

    def write_token(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Decode: write k, v [B, 1, Hkv, D] at the position held in `pos` (int64 [1], on the device)."""
        self.k.index_copy_(1, pos, k)
        self.v.index_copy_(1, pos, v)

    def compress(self, start: int, end: int, compress) -> tuple[torch.Tensor, torch.Tensor]:
        """Bring K1/K2 up to the first `end` keys (the first `start` were done) -> (K1, K2) over those keys."""
        out = []
        for buf, (size, stride) in ((self.k1, self.k1_window), (self.k2, self.k2_window)):
            done, total = windows(start, size, stride), windows(end, size, stride)
            if total > done:
                # the new windows start at done*stride; everything before that was compressed already
                new = compress(self.k[:, done * stride : end], kernel_size=size, stride=stride)
                buf[:, done:total] = new[:, : total - done]
            out.append(buf[:, :total])
        return out[0], out[1]


class LightningLayerState:
    """The recurrent state S [B, H, D, D] of one lightning layer, always fp32 (bf16 loses quality)."""

    def __init__(self, batch: int, heads: int, head_dim: int, device):
        self.state = torch.zeros(batch, heads, head_dim, head_dim, device=device, dtype=torch.float32)
        # (k, v) [B, width, H, D] of the last multi-token pass of at most `width` tokens, when a runtime keeps them
        # (a speculative rollback re-advances the state over the kept tokens from here)
        self.trail: tuple[torch.Tensor, torch.Tensor] | None = None

    def keep_trail(self, width: int, dtype: torch.dtype) -> None:
        """From now on, record the k and v of every pass of 2 .. width tokens. A trail that fits is kept: a captured
        CUDA graph may write into it."""
        if self.trail is not None and self.trail[0].shape[1] >= width and self.trail[0].dtype == dtype:
            return
        B, H, D, _ = self.state.shape
        k = self.state.new_zeros(B, width, H, D, dtype=dtype)
        self.trail = (k, torch.zeros_like(k))

    def record(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v [B, T, H, D] of a pass, kept when a trail is on and they fit."""
        if self.trail is not None and k.shape[1] <= self.trail[0].shape[1]:
            self.trail[0][:, : k.shape[1]].copy_(k)
            self.trail[1][:, : k.shape[1]].copy_(v)


class InferenceState:
    """One object per batch: `length` tokens seen (the same for every sequence), and one state per layer in layer order.

    `position` mirrors, on the device, the position of the token a decode step is computing; the network reads it
    from there so that a CUDA graph of a decode step replays at any length.
    """

    def __init__(
        self, config: ModelConfig, batch_size: int = 1, *, device=None, dtype=torch.float32, capacity: int = 256
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.length = 0
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.layers: list[SoftmaxLayerState | LightningLayerState] = [
            LightningLayerState(batch_size, config.num_attention_heads, config.head_dim, device)
            if kind == LIGHTNING
            else SoftmaxLayerState(
                batch_size, config.num_key_value_heads, config.head_dim, capacity, device, dtype, config.sparse_config
            )
            for kind in config.mixer_types
        ]

    @property
    def capacity(self) -> int | None:
        """Tokens that fit without growing the buffers (None: only lightning layers, no limit)."""
        caps = [s.capacity for s in self.layers if isinstance(s, SoftmaxLayerState)]
        return min(caps) if caps else None

    def reserve(self, length: int) -> None:
        """Room for `length` tokens (buffers double when they must grow)."""
        for layer in self.layers:
            if isinstance(layer, SoftmaxLayerState):
                layer.reserve(self.length, length)

    def reset(self) -> None:
        """Forget every token: every buffer zeroed as a new state's, in place (a captured CUDA graph keeps them)."""
        self.length = 0
        with torch.inference_mode():  # buffers grown during inference are inference tensors
            self.position.zero_()
            for layer in self.layers:
                if isinstance(layer, LightningLayerState):
                    layer.state.zero_()
                    continue
                for buf in (layer.k, layer.v, layer.k1, layer.k2):
                    if buf is not None:
                        buf.zero_()

    def replicate(self, batch_size: int, capacity: int | None = None) -> InferenceState:
        """A state of `batch_size` sequences, each a copy of this batch-1 state (prefill once, decode many)."""
        if self.batch_size != 1:
            raise ValueError(f"only a batch-1 state can be replicated, this one has batch size {self.batch_size}")
        out = object.__new__(InferenceState)
        out.batch_size, out.length = batch_size, self.length
        out.position = self.position.clone()
        out.layers = []
        for layer in self.layers:
            if isinstance(layer, LightningLayerState):
                copy = object.__new__(LightningLayerState)
                copy.state = layer.state.repeat(batch_size, 1, 1, 1)
                copy.trail = None
            else:
                copy = object.__new__(SoftmaxLayerState)
                copy.sparse = layer.sparse
                cap = max(capacity or layer.capacity, self.length)
                copy.k = layer.k.new_zeros(batch_size, cap, *layer.k.shape[2:])
                copy.v = torch.zeros_like(copy.k)
                copy.k[:, : self.length] = layer.k[:, : self.length]
                copy.v[:, : self.length] = layer.v[:, : self.length]
                copy.k1 = copy.k2 = None
                if layer.sparse is not None:
                    for name, window in (("k1", layer.k1_window), ("k2", layer.k2_window)):
                        src = getattr(layer, name)
                        buf = src.new_empty(batch_size, windows(cap, *window), *src.shape[2:])
                        n = windows(self.length, *window)
                        buf[:, :n] = src[:, :n]
                        setattr(copy, name, buf)
            out.layers.append(copy)
        return out
