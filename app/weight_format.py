"""Which weight format `model.quantize` gives a model source, told from the settings and the source's path alone:
the start screen shows it at first paint, before torch is loaded, and `doctor` adds the GPU's own pick to it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

SourceKind = Literal["gguf", "checkpoint"]
# a Hugging Face repo id, which model/sources.py resolves to a checkpoint folder in the Hugging Face cache
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_QUANTIZED = {
    "int8": "int8 weights (per output channel), quantized as the model loads",
    "int4": "int4 weights (groups of 128, int8 head), quantized as the model loads",
    "fp8": "fp8 e4m3 weights (per channel), quantized as the model loads",
}
GGUF_BLOCKS = "the GGUF file's own Q4_0 / Q4_1 / Q8_0 / Q4_K blocks (other types dequantised)"


def source_kind(source: str) -> SourceKind | None:
    """What model/sources.py's `resolve` will find at `source`, as far as the path tells without loading
    anything: None for a known name (`smollm2-135m`) or a path where nothing is yet (the loader says so)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        return "checkpoint" if path.name == "config.json" else None
    if path.is_dir():
        if (path / "config.json").exists():
            return "checkpoint"
        return "gguf" if len(list(path.glob("*.gguf"))) == 1 else None
    if path.suffix.lower() == ".gguf":
        return "gguf"
    if _REPO_ID.fullmatch(source) and not source.startswith((".", "/", "~")):
        return "checkpoint"
    return None


def quantize_problem(quantize: str, source: str) -> str | None:
    """Why `quantize` cannot load `source`, or None: "gguf" keeps a GGUF file's own blocks, so a checkpoint
    folder (or a Hugging Face repo id) cannot have it."""
    if quantize != "gguf" or source_kind(source) != "checkpoint":
        return None
    return (
        f"model.quantize = 'gguf' keeps a GGUF file's own quantized blocks, but the model {source!r} is a "
        "checkpoint folder or Hugging Face id, not a .gguf file"
    )


QUANTIZE_HINT = "Set model.quantize to 'auto' (or int8, int4, fp8), or choose a .gguf model."


def describe_weights(quantize: str, source: str, device: str, dtype: str = "auto") -> str:
    """One line: the weight format `quantize` gives `source` on `device` ("cpu", "cuda", "cuda:N", "mps", or
    "auto" when it is not known yet), as load_model decides it (model/load.py)."""
    problem = quantize_problem(quantize, source)
    if problem is not None:
        return problem
    kind = source_kind(source)
    if kind == "checkpoint" and (Path(source).expanduser() / "quantization.json").exists():
        return "the quantized checkpoint's own format (its quantization.json), whatever model.quantize says"
    if quantize == "gguf":
        return GGUF_BLOCKS
    if quantize in _QUANTIZED:
        return _QUANTIZED[quantize]
    if quantize == "bf16" or device in ("cpu", "mps"):  # "auto" quantizes only on a GPU
        return _unquantized(kind, dtype, device)
    first = "" if kind == "checkpoint" else f"{'the' if kind == 'gguf' else 'a'} GGUF's own blocks if they fit, else "
    gpu = f"{first}the most faithful of bf16 / int8 / int4 that fits the GPU at the model's context"
    return gpu if device.startswith("cuda") else f"on a GPU {gpu}; on the CPU {_unquantized(kind, dtype, 'cpu')}"


def _unquantized(kind: SourceKind | None, dtype: str, device: str) -> str:
    if dtype == "auto":  # load_model's default: bf16 on CUDA, fp32 elsewhere
        dtype = {"cpu": "float32", "mps": "float32", "auto": "bf16 on a GPU, fp32 on the CPU"}.get(device, "bfloat16")
    return f"unquantized, in {dtype}" + (" (the GGUF dequantised)" if kind == "gguf" else "")
