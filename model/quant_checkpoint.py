"""Quantized checkpoints: a folder with config.json, quantization.json and model.safetensors holding each packed
linear as `<name>.qweight`, `.scales` (and `.zeros`), written by `python -m sala_report.model.quantize` and read
back by `load_model` in their own format."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sala_report.kernels.quant import PackedWeight

from .errors import ModelError
from .quant import FORMATS, QuantLinear, set_module, target_linears
from .weights import check_tensors, safetensors_files, safetensors_shapes, safetensors_tensors

QUANT_FILE = "quantization.json"


def is_quantized(folder: Path) -> bool:
    return (Path(folder) / QUANT_FILE).exists()


def save(lm, folder: str | Path, *, method: str) -> Path:
    """Write lm (already quantized) as a checkpoint folder; returns the folder."""
    fmt = getattr(lm, "quantize", None)
    if fmt not in FORMATS:
        raise ValueError(f"expected a quantized model (quantize in {FORMATS}), got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state, seen = {}, set()
    for name, p in lm.named_parameters(remove_duplicate=False):
        if name == "lm_head.weight" and lm.config.tie_word_embeddings:
            continue
        if id(p) in seen and not name.startswith("lm_head."):
            continue
        seen.add(id(p))
        state[name] = p.detach().cpu().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(lm.config.to_dict(), indent=2))
    formats = {name: lm.get_submodule(name).fmt for name, _ in target_linears(lm)}
    groups = {name: lm.get_submodule(name).group for name, _ in target_linears(lm)}
    meta = {"format": fmt, "method": method, "layers": formats, "groups": groups}  # groups: 0 = per channel
    (folder / QUANT_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load(model, folder: Path, *, device, dtype) -> None:
    """Fill a meta-device model from a quantized folder; packed tensors keep their stored dtypes."""
    try:
        meta = json.loads((folder / QUANT_FILE).read_text(encoding="utf-8"))
        fmt, layers, groups = meta["format"], meta["layers"], meta.get("groups", {})
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(
            f"{folder / QUANT_FILE} is not a valid quantization file ({e})", title="Damaged weights file"
        ) from None
    files = safetensors_files(folder)
    shapes = safetensors_shapes(files)
    for name, _ in list(target_linears(model)):
        lin = model.get_submodule(name)
        f = layers.get(name)
        if f not in FORMATS or f"{name}.qweight" not in shapes:
            raise ModelError(
                f"{folder}: layer {name} has no packed weight of a known format (found {f!r})",
                title="Weights do not match the config",
            )
        zeros = f"{name}.zeros" in shapes
        try:  # folders written before groups were recorded hold the defaults (int4: 128)
            p = PackedWeight(
                f,
                torch.empty(shapes[f"{name}.qweight"], dtype=torch.uint8, device="meta"),
                torch.empty(shapes[f"{name}.scales"], device="meta"),
                torch.empty(shapes[f"{name}.zeros"], device="meta") if zeros else None,
                lin.in_features,
                groups.get(name),
            )
        except ValueError as e:
            raise ModelError(f"{folder}: layer {name}: {e}", title="Damaged weights file") from None
        set_module(model, name, QuantLinear(p))
    check_tensors(model, shapes, str(folder))
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, t in safetensors_tensors(files):
        if name not in params:
            continue
        owner, _, leaf = name.rpartition(".")
        packed = leaf in ("qweight", "scales", "zeros")
        dt = t.dtype if packed or not t.is_floating_point() else dtype
        setattr(
            model.get_submodule(owner), leaf, torch.nn.Parameter(t.to(device=device, dtype=dt), requires_grad=False)
        )
    if model.config.tie_word_embeddings and not isinstance(model.lm_head, QuantLinear):
        model.lm_head.weight = model.model.embed_tokens.weight
    model.quantize = fmt
