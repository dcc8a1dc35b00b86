"""InfLLM-V2 selection parameters (MiniCPM-SALA's `sparse_config`) and the sizes derived from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SparseParams:
    kernel_size: int = 32  # K1 window (tokens)
    kernel_stride: int = 16  # K1 stride (tokens)
    block_size: int = 64  # attention block (tokens)
    init_blocks: int = 1  # always-selected leading blocks
    window_size: int = 2048  # local window (tokens) -> window_size // block_size extra local blocks
    topk: int = 64  # scored blocks; k_eff = topk + local_blocks

    def __post_init__(self):
        if self.block_size % self.kernel_stride:
            raise ValueError(
                f"block_size must be a multiple of kernel_stride, got {self.block_size} and {self.kernel_stride}"
            )
        if self.kernel_size < self.kernel_stride or min(self.kernel_stride, self.block_size, self.topk) <= 0:
            raise ValueError(f"invalid sparse params {self}")

    @classmethod
    def from_config(cls, sparse_config: Mapping[str, int | float | bool | str | None]) -> SparseParams:
        """Build from the checkpoint's `sparse_config` dict; keys this op does not use (dense_len, use_nope) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in sparse_config.items() if k in names})

    @property
    def local_blocks(self) -> int:
        return self.window_size // self.block_size

    @property
    def pool_stride(self) -> int:
        """K1 entries per block; the block max-pool reads pool_stride + 1 entries starting one before the block."""
        return self.block_size // self.kernel_stride

    @property
    def lse_kernel_size(self) -> int:
        """K2 (used only for the approximate LSE) = compress(k, 4 * kernel_size, 4 * kernel_stride)."""
        return 4 * self.kernel_size

    @property
    def lse_stride(self) -> int:
        return 4 * self.kernel_stride

    def num_blocks(self, kv_len: int) -> int:
        return -(-kv_len // self.block_size)

    def k_eff(self, kv_len: int) -> int:
        """Blocks selected per query: topk + local_blocks, capped at the number of blocks."""
        return min(self.topk + self.local_blocks, self.num_blocks(kv_len))
