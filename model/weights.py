"""Read checkpoint tensors into a CausalLM built on the meta device, one tensor at a time.

Every tensor is checked by name and shape before any is read, and all problems are reported in one
error. Each tensor is converted to the target dtype and device as it is read, so host memory peaks
near one shard (safetensors files are memory-mapped), never the whole model twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ModelError

# A tensor source: (name, shape) for every tensor, then a reader yielding (name, tensor) one by one.
TensorReader = Callable[[], Iterator[tuple[str, torch.Tensor]]]


def expected_tensors(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Checkpoint name -> shape for every parameter; a tied lm_head is not expected on its own."""
    out = {}
    seen = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        out[name] = tuple(p.shape)
    return out


def check_tensors(model: torch.nn.Module, found: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise one ModelError listing every missing, unexpected and mis-shaped tensor.

    lm_head.weight may sit beside tied embeddings (some exports keep it); it is then ignored."""
    optional = ("lm_head.weight",)
    want = expected_tensors(model)
    missing = sorted(set(want) - set(found))
    unexpected = sorted(n for n in set(found) - set(want) if n not in optional)
    misshaped = sorted(n for n in set(want) & set(found) if tuple(found[n]) != want[n])
    if not (missing or unexpected or misshaped):
        return
    lines = [f"the weights in {source} do not match its config ({len(want)} tensors expected):"]
    lines += [f"  missing: {n} {list(want[n])}" for n in missing]
    lines += [f"  unexpected: {n} {list(found[n])}" for n in unexpected]
    lines += [f"  wrong shape: {n} is {list(found[n])}, config says {list(want[n])}" for n in misshaped]
    raise ModelError("\n".join(lines), hint="Check that config.json belongs to these weights.",
                     title="Weights do not match the config")  # fmt: skip


def assign_tensors(model: torch.nn.Module, tensors: Iterator[tuple[str, torch.Tensor]], *, device, dtype) -> None:
    """Replace each (meta) parameter by the checkpoint tensor, converted to dtype and device."""
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, t in tensors:
        if name not in params:
            continue  # an optional tensor, e.g. lm_head.weight stored beside tied embeddings
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        dt = dtype if t.is_floating_point() else t.dtype
        setattr(module, leaf, torch.nn.Parameter(t.to(device=device, dtype=dt), requires_grad=False))
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight


def safetensors_files(folder: Path) -> list[Path]:
    """The shard list from model.safetensors.index.json, or the single model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ModelError(f"{index} is not a valid safetensors index ({e})") from None
        files = [folder / f for f in dict.fromkeys(weight_map.values())]
        absent = [str(f.name) for f in files if not f.exists()]
        if absent:
            raise ModelError(f"{index} lists shards that are not in {folder}: {', '.join(absent)}",
                             hint="The download is incomplete; fetch the missing shards.")  # fmt: skip
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    others = sorted(folder.glob("*.safetensors"))
    if others:
        return others
    raise ModelError(f"no safetensors weights in {folder}", hint="Expected model.safetensors or model.safetensors.index.json.")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path} is not a readable safetensors file: {e}",
                         hint="The file may be truncated by an interrupted download; fetch it again.",
                         title="Damaged weights file") from None  # fmt: skip


def safetensors_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in files:
        with _open(path) as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def safetensors_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in files:
        with _open(path) as f:
            for name in f.keys():
                try:
                    yield name, f.get_tensor(name)
                except (SafetensorError, RuntimeError) as e:
                    raise ModelError(f"tensor {name} in {path} cannot be read: {e}", title="Damaged weights file") from None


def load_safetensors(model: torch.nn.Module, folder: Path, *, device, dtype) -> None:
    files = safetensors_files(folder)
    check_tensors(model, safetensors_shapes(files), str(folder))
    assign_tensors(model, safetensors_tensors(files), device=device, dtype=dtype)
