"""GGUF files (llama.cpp): metadata -> ModelConfig, tensors -> checkpoint names, dequantised in torch or, for
the linear layers in Q4_0 / Q4_1 / Q8_0 / Q4_K, kept packed (`kernels/quant/ggml.py`).

Dequantised tensors are decoded by the `gguf` package (`gguf.quants`): every type it supports, K- and I-quants
included. llama.cpp stores q_proj/k_proj rows permuted for its RoPE layout; `_unpermute` undoes that.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sala_report.kernels.quant import PackedWeight, ggml

from .config import ModelConfig
from .errors import ConfigError, ModelError

ARCHS = ("llama", "minicpm")
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# tensors llama.cpp stores for its own RoPE code: config_from_gguf reads the LongRoPE factors from them
_IGNORED = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (ggml lists the row length first; this is reversed)
    type_name: str  # ggml type, e.g. "Q4_1"
    offset: int  # absolute byte offset in the file
    n_bytes: int


@dataclass
class GGUFFile:
    path: Path
    fields: dict[str, Any]
    tensors: list[TensorInfo]
    data: np.ndarray  # the whole file, memory-mapped uint8


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "<u1",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
STRING, ARRAY = 8, 9


class _Cursor:
    """Reads GGUF header values from a buffer; running off the end means the file is truncated."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def scalar(self, kind: int):
        fmt = _SCALARS[kind]
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar(10)
        if self.pos + n > len(self.buf):
            raise struct.error("string runs past the end of the file")
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, kind: int):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item, n = self.scalar(4), self.scalar(10)
            if item == STRING:
                return [self.string() for _ in range(n)]
            if item not in _NUMPY:
                return [self.value(item) for _ in range(n)]
            dt = np.dtype(_NUMPY[item])
            if self.pos + n * dt.itemsize > len(self.buf):
                raise struct.error("array runs past the end of the file")
            arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
            self.pos += n * dt.itemsize
            return (arr.astype(bool) if item == 7 else arr).tolist()
        if kind not in _SCALARS:
            raise ValueError(f"unknown metadata value type {kind}")
        return self.scalar(kind)


def open_gguf(path: Path) -> GGUFFile:
    """Parse the header of a GGUF file (v2/v3, little-endian) and memory-map its data.

    Our own parser rather than gguf.GGUFReader, which takes seconds over a 49k-token vocabulary; the
    type tables come from the gguf package.
    """
    import gguf

    path = Path(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    damaged = dict(
        hint="The file may be truncated by an interrupted download; fetch it again.", title="Damaged model file"
    )
    if bytes(data[:4]) != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF')", **damaged)
    c = _Cursor(memoryview(data))
    try:
        c.pos = 4
        version = c.scalar(4)
        if version not in (2, 3):
            raise ModelError(f"{path} is GGUF version {version}; versions 2 and 3 are supported")
        n_tensors, n_kv = c.scalar(10), c.scalar(10)
        fields = {}
        for _ in range(n_kv):
            key = c.string()
            fields[key] = c.value(c.scalar(4))
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            dims = [c.scalar(10) for _ in range(c.scalar(4))]
            kind, offset = c.scalar(4), c.scalar(10)
            infos.append((name, dims, kind, offset))
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise ModelError(
            f"{path} is not a readable GGUF file: its header is cut short or damaged ({e})", **damaged
        ) from None
    align = int(fields.get("general.alignment", 32))
    base = (c.pos + align - 1) // align * align
    tensors = []
    for name, dims, kind, offset in infos:
        try:
            type_name = gguf.GGMLQuantizationType(kind).name
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            type_name, block, size = f"type {kind}", 1, 0
        n = math.prod(dims)
        tensors.append(TensorInfo(name, tuple(reversed(dims)), type_name, base + offset, n // block * size))
    end = max((t.offset + t.n_bytes for t in tensors), default=base)
    if end > len(data):
        raise ModelError(f"{path} is truncated: its tensors need {end} bytes but the file has {len(data)}", **damaged)
    return GGUFFile(path, fields, tensors, data)


def field(reader: GGUFFile, key: str, default=...):
    if key not in reader.fields:
        if default is ...:
            raise ConfigError(f"GGUF metadata key '{key}' is missing")
        return default
    return reader.fields[key]


def config_from_gguf(reader: GGUFFile, path: Path) -> ModelConfig:
    arch = field(reader, "general.architecture")
    if arch not in ARCHS:
        raise ConfigError(
            f"{path}: GGUF architecture '{arch}' (general.architecture) is not supported; supported: {', '.join(ARCHS)}"
        )
    names = {t.name for t in reader.tensors}
    hidden = field(reader, f"{arch}.embedding_length")
    heads = field(reader, f"{arch}.attention.head_count")
    layers = field(reader, f"{arch}.block_count")
    tokens = field(reader, "tokenizer.ggml.tokens", None)
    d = {
        "model_type": "minicpm" if arch == "minicpm" else "llama",
        "vocab_size": field(reader, f"{arch}.vocab_size", len(tokens) if tokens else ...),
        "hidden_size": hidden,
        "intermediate_size": field(reader, f"{arch}.feed_forward_length"),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": field(reader, f"{arch}.attention.head_count_kv", heads),
        "head_dim": field(reader, f"{arch}.rope.dimension_count", hidden // heads),
        "max_position_embeddings": field(reader, f"{arch}.context_length"),
        "rms_norm_eps": field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(reader, f"{arch}.rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id", None),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id", None),
    }
    if arch == "minicpm":
        # llama.cpp stores the muP scalars already combined (convert_hf_to_gguf.py, MiniCPMModel)
        d["scale_emb"] = field(reader, "minicpm.embedding_scale")
        d["scale_depth"] = field(reader, "minicpm.residual_scale") * math.sqrt(layers)
        # logit_scale is hidden_size / dim_model_base: logits = lm_head(h / logit_scale)
        d["dim_model_base"] = hidden / field(reader, "minicpm.logit_scale")
    factors = {t.name: t for t in reader.tensors if t.name in ("rope_factors_long.weight", "rope_factors_short.weight")}
    if len(factors) == 2:
        # LongRoPE (MiniCPM4.1, AgentCPM-Report): llama.cpp keeps the per-frequency factors as two small tensors
        # and uses the short ones up to the training context, like the HF code up to original_max_position_embeddings
        read = {}
        for name, t in factors.items():
            read[name] = dequantize(reader.data[t.offset : t.offset + t.n_bytes], t.type_name, math.prod(t.shape))
        d["rope_scaling"] = {
            "rope_type": "longrope",
            "long_factor": read["rope_factors_long.weight"].tolist(),
            "short_factor": read["rope_factors_short.weight"].tolist(),
            "original_max_position_embeddings": field(
                reader, f"{arch}.rope.scaling.original_context_length", d["max_position_embeddings"]
            ),
        }
    return ModelConfig.from_dict(d, source=f"{path} (GGUF metadata)")


def checkpoint_name(gguf_name: str) -> str | None:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None for tensors we do not use."""
    if gguf_name in _IGNORED:
        return None
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    return gguf_name  # reported as unexpected by the loader


def tensor_shapes(reader: GGUFFile) -> dict[str, tuple[int, ...]]:
    return {name: t.shape for t in reader.tensors if (name := checkpoint_name(t.name)) is not None}


def check_types(reader: GGUFFile, path: Path) -> None:
    """Refuse, before any tensor is read, a file this runtime cannot use: a vocabulary that cannot become
    a tokenizer (load_tokenizer would fail only after the whole model had loaded), or tensor types that
    gguf.quants cannot decode."""
    from .tokenizer import check_gguf_vocab

    check_gguf_vocab(reader, path, required=False)
    known = supported_types()
    bad = [f"{t.name} ({t.type_name})" for t in reader.tensors if t.type_name not in known]
    if bad:
        raise ModelError(
            f"{path} uses quantization types this runtime cannot read: {', '.join(bad)}",
            hint=f"Supported types: {', '.join(known)}. Use a GGUF quantized to one of them.",
            title="Unsupported quantization",
        )


def read_tensors(reader: GGUFFile, config: ModelConfig, packed: Mapping[str, tuple[str, int, bool]] | None = None):
    """Yield (checkpoint name, fp32 tensor) in file order, q/k rows un-permuted; the linear layers named in
    `packed` (module names -> kinds, from `packed_layers`) come as PackedWeights in their own blocks instead."""
    packed = packed or {}
    for t in reader.tensors:
        name = checkpoint_name(t.name)
        if name is None:
            continue
        kind = packed.get(name.removesuffix(".weight"))
        if kind is not None:
            yield name, packed_tensor(reader, t, config, zero=kind[2])
            continue
        w = dequantize(reader.data[t.offset : t.offset + t.n_bytes], t.type_name, math.prod(t.shape)).reshape(t.shape)
        heads = _permuted_heads(name, config)
        yield name, w if heads is None else _unpermute(w, heads)


def _permuted_heads(name: str, config: ModelConfig) -> int | None:
    if name.endswith("self_attn.q_proj.weight"):
        return config.num_attention_heads
    if name.endswith("self_attn.k_proj.weight"):
        return config.num_key_value_heads
    return None


def packed_tensor(reader: GGUFFile, t: TensorInfo, config: ModelConfig, *, zero: bool = False) -> PackedWeight:
    """A Q4_0 / Q4_1 / Q8_0 / Q4_K weight as a PackedWeight holding exactly its values (Q4_K: up to fp16 scales),
    q/k rows un-permuted; `zero` gives Q4_0 zero points (-8·d, exact) so that it can share a launch with Q4_1."""
    raw = torch.from_numpy(np.array(reader.data[t.offset : t.offset + t.n_bytes]))
    p = ggml.from_ggml(raw, t.type_name, t.shape)
    if p is None:
        raise ValueError(f"expected a tensor in one of {ggml.PACKABLE}, got {t.name} in {t.type_name}")
    if zero and p.zero is None:
        p = ggml.with_zero(p)
    heads = _permuted_heads(checkpoint_name(t.name) or "", config)
    if heads is not None:
        rows = _unpermute(torch.arange(t.shape[0])[:, None], heads)[:, 0]
        p = p.index_rows(rows)
    return p


def packed_layers(reader: GGUFFile, lm) -> dict[str, tuple[str, int, bool]]:
    """{linear module name: (format, group, zero points)} of the target linears whose GGUF blocks stay packed;
    "lm_head" too when the head is tied to a packable embedding (it becomes a packed copy).

    The runtime stacks q/k/v(/gate) and gate/up into one matrix per layer (runtime.fuse_projections), which needs
    one kind per stack: int4 stacks mixing Q4_0 with zero-point blocks all get zero points (exact); a stack that
    still mixes kinds (e.g. Q4_K beside a Q6_K v_proj) is dequantised whole."""
    from .quant import target_linears

    by_name = {checkpoint_name(t.name): t for t in reader.tensors}
    kinds = {}
    for name, _ in target_linears(lm):
        t = by_name.get(f"{name}.weight")
        if name == "lm_head" and t is None and lm.config.tie_word_embeddings:
            t = by_name.get("model.embed_tokens.weight")
        kind = None if t is None else ggml.packed_format(t.type_name)
        if kind is not None:
            kinds[name] = kind
    modules = {id(m): n for n, m in lm.named_modules()}
    for layer in lm.model.layers:
        for stack in (layer.self_attn.inputs, [layer.mlp.gate_proj, layer.mlp.up_proj]):
            names = [modules[id(m)] for m in stack]
            found = {kinds.get(n) for n in names}
            if len(found) == 1:
                continue
            if None not in found and {(f, g) for f, g, _ in found} == {("int4", ggml.BLOCK)}:
                kinds.update({n: ("int4", ggml.BLOCK, True) for n in names})
            else:
                for n in names:
                    kinds.pop(n, None)
    return kinds


def packed_head(reader: GGUFFile, config: ModelConfig, kind: tuple[str, int, bool]) -> PackedWeight:
    """The tied head as a packed copy of the embedding's blocks."""
    t = next(t for t in reader.tensors if checkpoint_name(t.name) == "model.embed_tokens.weight")
    return packed_tensor(reader, t, config, zero=kind[2])


def _unpermute(w: torch.Tensor, heads: int) -> torch.Tensor:
    # llama.cpp: w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2); this is the inverse
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


_RUN = 1 << 20  # values per gguf.quants call: amortises numpy's per-call cost, keeps its temporaries in cache
_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def dequantize(raw: np.ndarray, type_name: str, n: int) -> torch.Tensor:
    """The `n` float32 values that `raw` (the tensor's bytes, uint8) holds in ggml type `type_name`.

    Quantized types go through `gguf.quants` in runs of whole blocks handed over as flat byte arrays:
    given a 2-D array it works in groups of 16 rows, several times slower on short rows. Runs go to a
    thread pool because numpy releases the GIL inside each array operation. Unquantized floats are a
    torch dtype view: one copy out of the memory map (gguf decodes BF16 by integer shifts, ~4x slower).
    """
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if n % block or raw.size != n // block * size:
        raise ModelError(
            f"tensor data has {raw.size} bytes, expected {n // block * size} for {n} values of {type_name}"
        )
    if type_name in _FLOATS:
        return torch.from_numpy(np.array(raw)).view(_FLOATS[type_name]).float()
    out = np.empty(n, dtype=np.float32)
    step = max(1, _RUN // block) * block
    runs = range(0, n, step)

    def run(start: int) -> None:
        stop = min(start + step, n)
        out[start:stop] = gguf.quants.dequantize(raw[start // block * size : stop // block * size], qtype).reshape(-1)

    if len(runs) == 1:
        run(0)
    else:
        with ThreadPoolExecutor(max_workers=min(len(runs), os.cpu_count() or 1)) as pool:
            list(pool.map(run, runs))
    return torch.from_numpy(out)


@cache
def supported_types() -> tuple[str, ...]:
    """The ggml types `gguf.quants` can decode, found by decoding one zero block of each."""
    import gguf

    names = []
    for qtype, (_block, size) in gguf.GGML_QUANT_SIZES.items():
        try:
            gguf.quants.dequantize(np.zeros(size, dtype=np.uint8), qtype)
        except NotImplementedError:
            continue
        names.append(qtype.name)
    return tuple(names)
