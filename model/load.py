"""load_model / load_tokenizer: resolve a source, build the network on the meta device, read its weights."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from . import gguf as gguf_file
from .config import ModelConfig
from .model import CausalLM
from .sources import Progress, Resolved, resolve
from .tokenizer import Tokenizer, tokenizer_from_folder, tokenizer_from_gguf
from .weights import assign_tensors, check_tensors, load_safetensors


def _device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, dtype


def load_model(
    source: str | os.PathLike,
    device=None,
    dtype: torch.dtype | None = None,
    *,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
    hf_cache: str | os.PathLike | None = None,
    pip_args: Sequence[str] = (),
    config: ModelConfig | None = None,
) -> CausalLM:
    """A CausalLM in eval mode from a checkpoint folder, a .gguf file or a known name.

    device defaults to CUDA when present, else CPU; dtype to bf16 on CUDA, fp32 on CPU. `config`
    overrides the checkpoint's (tests use it to scale sparse_config down).
    """
    device, dtype = _device_dtype(device, dtype)
    where = resolve(source, cache_dir=cache_dir, hf_cache=hf_cache, progress=progress, pip_args=pip_args)
    if where.kind == "gguf":
        reader = gguf_file.open_gguf(where.path)
        config = config or gguf_file.config_from_gguf(reader, where.path)
        gguf_file.check_types(reader, where.path)
        model = _meta_model(config)
        check_tensors(model, gguf_file.tensor_shapes(reader), str(where.path))
        assign_tensors(model, gguf_file.read_tensors(reader, config), device=device, dtype=dtype)
    else:
        config = config or ModelConfig.from_json(where.path / "config.json")
        model = _meta_model(config)
        load_safetensors(model, where.path, device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def _meta_model(config: ModelConfig) -> CausalLM:
    with torch.device("meta"):
        return CausalLM(config)


def load_tokenizer(
    source: str | os.PathLike,
    *,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
    hf_cache: str | os.PathLike | None = None,
    pip_args: Sequence[str] = (),
) -> Tokenizer:
    where: Resolved = resolve(source, cache_dir=cache_dir, hf_cache=hf_cache, progress=progress, pip_args=pip_args)
    if where.kind == "gguf":
        return tokenizer_from_gguf(gguf_file.open_gguf(where.path), where.path)
    return tokenizer_from_folder(Path(where.path))
