"""load_model / load_tokenizer: resolve a source, build the network on the meta device, read its weights."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from . import gguf as gguf_file
from . import quant, quant_checkpoint
from .config import ModelConfig
from .model import CausalLM
from .plan import choose_format, free_cuda_bytes
from .sources import Progress, Resolved, resolve
from .tokenizer import Tokenizer, tokenizer_from_folder, tokenizer_from_gguf
from .weights import (
    assign_tensors,
    check_tensors,
    safetensors_files,
    safetensors_shapes,
    safetensors_tensors,
    safetensors_to_device,
)


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
    quantize: str | None = None,
    context: int | None = None,
) -> CausalLM:
    """A CausalLM in eval mode from a checkpoint folder, a .gguf file or a known name.

    device defaults to CUDA when present, else CPU; dtype to bf16 on CUDA, fp32 on CPU. `config`
    overrides the checkpoint's (tests use it to scale sparse_config down). `quantize` packs the linear layers as
    they load: None / "bf16" keeps them in dtype, "int8" / "int4" / "fp8" (model/quant.py), "gguf" a GGUF file's
    own Q4_0 / Q4_1 / Q8_0 / Q4_K blocks (the other types dequantised), "auto" the best format whose memory plan
    fits `context` tokens (default: the config's longest) on this GPU, trying a GGUF's own blocks first, none on a
    CPU. A folder written by `python -m sala_report.model.quantize` loads in its own format whatever `quantize`
    says. The format ends up in `model.quantize`.
    """
    fmt = quant.check_format(quantize)
    device, dtype = _device_dtype(device, dtype)
    where = resolve(source, cache_dir=cache_dir, hf_cache=hf_cache, progress=progress, pip_args=pip_args)
    if where.kind == "gguf":
        reader = gguf_file.open_gguf(where.path)
        config = config or gguf_file.config_from_gguf(reader, where.path)
        gguf_file.check_types(reader, where.path)
        model = _meta_model(config)
        packed = gguf_file.packed_layers(reader, model) if fmt in ("auto", "gguf") else {}
        fmt = _resolve_format(fmt, config, device, dtype, context, packed)
        check_tensors(model, gguf_file.tensor_shapes(reader), str(where.path))
        if fmt != "gguf" or not packed:
            fmt, packed = (None if fmt == "gguf" else fmt), {}
        tensors = quant.packed_stream(model, gguf_file.read_tensors(reader, config, packed), device=device)
    else:
        if fmt == "gguf":
            raise ValueError(f'quantize="gguf" keeps a GGUF file\'s own blocks; expected a .gguf source, got {source}')
        config = config or ModelConfig.from_json(where.path / "config.json")
        model = _meta_model(config)
        if quant_checkpoint.is_quantized(where.path):
            quant_checkpoint.load(model, where.path, device=device, dtype=dtype)
            return model.eval().requires_grad_(False)
        fmt = _resolve_format(fmt, config, device, dtype, context)
        files = safetensors_files(where.path)
        check_tensors(model, safetensors_shapes(files), str(where.path))
        direct = device.type == "cuda"
        tensors = safetensors_to_device(files, device) if direct else safetensors_tensors(files)
    if fmt not in (None, "gguf"):
        tensors = quant.quantizing_stream(model, tensors, fmt, device=device, dtype=dtype)
    assign_tensors(model, tensors, device=device, dtype=dtype)
    model.quantize = None
    if fmt == "gguf":
        if "lm_head" in packed and config.tie_word_embeddings:  # a packed copy of the embedding's blocks
            head = gguf_file.packed_head(reader, config, packed["lm_head"])
            quant.set_module(model, "lm_head", quant.QuantLinear(head.to(device)))
        model.quantize = "gguf"
    elif fmt is not None:
        quant.quantize_model(model, fmt)  # what the stream did not see: a head tied to the embedding
    return model.eval().requires_grad_(False)


def plan_inputs(
    source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, hf_cache: str | os.PathLike | None = None
) -> tuple[ModelConfig, dict[str, tuple[str, int, bool]]] | None:
    """(config, packed layout) of `source` from its files alone, as load_model plans "auto" with them: no weights
    read, nothing fetched (None for the embedded default before its first download)."""
    from .sources import ALIASES, KNOWN, default_cache_dir

    text = os.fspath(source)
    key = ALIASES.get(text.lower(), text.lower())
    if key in KNOWN and not Path(text).exists():
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if not (folder / KNOWN[key].filename).exists():
            return None
    where = resolve(source, cache_dir=cache_dir, hf_cache=hf_cache)
    if where.kind != "gguf":
        return ModelConfig.from_json(where.path / "config.json"), {}
    reader = gguf_file.open_gguf(where.path)
    config = gguf_file.config_from_gguf(reader, where.path)
    return config, gguf_file.packed_layers(reader, _meta_model(config))


def _resolve_format(
    fmt: str | None, config: ModelConfig, device: torch.device, dtype, context: int | None, packed=None
) -> str | None:
    if fmt != "auto":
        return fmt
    if device.type != "cuda":
        return None
    n = context if context is not None else config.max_position_embeddings
    return choose_format(config, free_cuda_bytes(device), n, dtype=dtype, packed=packed)


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
