"""Small helpers shared by the Triton launchers (imported only when a kernel runs)."""

from __future__ import annotations

import functools
import os

import torch
import triton


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def configs(full: list[triton.Config]) -> list[triton.Config]:
    """Autotune over `full` on a GPU; the interpreter gets the first config only (it is slow and times nothing)."""
    return full[:1] if interpreting() else full


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def tl_dtype_ok(x: torch.Tensor) -> None:
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"expected a float16, bfloat16 or float32 tensor for the Triton kernels, got {x.dtype}")
