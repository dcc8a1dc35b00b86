"""Read checkpoint tensors into a CausalLM built on the meta device, one tensor at a time.

Every tensor is checked by name and shape before any is read, and all problems are reported in one
error. Each tensor is converted to the target dtype and device as it is read. For a CPU target the
safetensors files are memory-mapped, so host memory peaks near one shard. For a GPU target the bytes go
from the file through a small pinned buffer straight into GPU memory: no shard is ever mapped or held in
host memory, so a 19 GB checkpoint loads with a few hundred MB of host memory.
"""

from __future__ import annotations

import json
import struct
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
    raise ModelError(
        "\n".join(lines),
        hint="Check that config.json belongs to these weights.",
        title="Weights do not match the config",
    )


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
            raise ModelError(
                f"{index} lists shards that are not in {folder}: {', '.join(absent)}",
                hint="The download is incomplete; fetch the missing shards.",
            )
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    others = sorted(folder.glob("*.safetensors"))
    if others:
        return others
    raise ModelError(
        f"no safetensors weights in {folder}", hint="Expected model.safetensors or model.safetensors.index.json."
    )


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(
            f"{path} is not a readable safetensors file: {e}",
            hint="The file may be truncated by an interrupted download; fetch it again.",
            title="Damaged weights file",
        ) from None


def safetensors_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in files:
        with _open(path) as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def safetensors_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in files:
        with _open(path) as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                try:
                    yield name, f.get_tensor(name)
                except (SafetensorError, RuntimeError) as e:
                    raise ModelError(
                        f"tensor {name} in {path} cannot be read: {e}", title="Damaged weights file"
                    ) from None


_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
STAGING_BYTES = 32 * 2**20  # each of the two pinned buffers


def _header(path: Path) -> tuple[int, dict]:
    """(offset of the data section, {name: info}) of one safetensors file."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(
            f"{path} is not a readable safetensors file: {e}",
            title="Damaged weights file",
            hint="The file may be truncated by an interrupted download; fetch it again.",
        ) from None
    header.pop("__metadata__", None)
    return 8 + n, header


def safetensors_to_device(files: list[Path], device) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor on `device`) for every tensor, in file order; bytes are read with plain file reads into two
    pinned buffers in turn, each copied to the GPU while the next one fills."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    stage = [torch.empty(STAGING_BYTES, dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    done = [None, None]  # the event after the copy out of each buffer
    turn = 0
    for path in files:
        data_start, header = _header(path)
        with open(path, "rb", buffering=0) as f:
            for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                dtype = _DTYPES.get(info.get("dtype"))
                if dtype is None:
                    raise ModelError(
                        f"tensor {name} in {path} has an unsupported dtype {info.get('dtype')}",
                        title="Damaged weights file",
                    )
                a, b = info["data_offsets"]
                out = torch.empty(info["shape"], dtype=dtype, device=device)
                flat = out.reshape(-1).view(torch.uint8)
                if flat.numel() != b - a:
                    raise ModelError(
                        f"tensor {name} in {path}: {b - a} bytes for shape {info['shape']}",
                        title="Damaged weights file",
                    )
                f.seek(data_start + a)
                for off in range(0, b - a, STAGING_BYTES):
                    n = min(STAGING_BYTES, b - a - off)
                    if done[turn] is not None:
                        done[turn].synchronize()  # the buffer's previous copy has left it
                    view = stage[turn][:n]
                    got = f.readinto(memoryview(view.numpy()))
                    if got != n:
                        raise ModelError(
                            f"tensor {name} in {path} is cut short",
                            title="Damaged weights file",
                            hint="The file may be truncated by an interrupted download; fetch it again.",
                        )
                    flat[off : off + n].copy_(view, non_blocking=cuda)
                    if cuda:
                        done[turn] = torch.cuda.Event()
                        done[turn].record()
                    turn ^= 1
                yield name, out
    if cuda:
        torch.cuda.synchronize(device)


def load_safetensors(model: torch.nn.Module, folder: Path, *, device, dtype) -> None:
    files = safetensors_files(folder)
    check_tensors(model, safetensors_shapes(files), str(folder))
    direct = torch.device(device).type == "cuda"
    tensors = safetensors_to_device(files, device) if direct else safetensors_tensors(files)
    assign_tensors(model, tensors, device=device, dtype=dtype)
