"""ModelConfig: the architecture of one checkpoint, read from its config.json (or GGUF metadata) in one place.

Three families share the dataclass: MiniCPM-SALA (`minicpm_sala`, hybrid sparse + lightning layers),
MiniCPM4.1 / AgentCPM-Report (`minicpm`, softmax layers, muP scalars, LongRoPE) and Llama (SmolLM2).
A missing or wrong key raises ConfigError naming the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

SOFTMAX = "minicpm4"
LIGHTNING = "lightning"
MIXER_ALIASES = {"minicpm4": SOFTMAX, "lightning-attn": LIGHTNING, "lightning": LIGHTNING, "lightning_attn": LIGHTNING}
MODEL_TYPES = ("minicpm_sala", "minicpm", "llama")
ROPE_TYPES = ("default", "linear", "longrope", "llama3")


@dataclass(frozen=True)
class SparseConfig:
    """InfLLM-V2 settings (sala-model.md §3); the softmax layers turn block-sparse at kv_len >= dense_len."""

    kernel_size: int = 32
    kernel_stride: int = 16
    init_blocks: int = 1
    block_size: int = 64
    window_size: int = 2048
    topk: int = 64
    use_nope: bool = False
    dense_len: int = 8192

    @property
    def local_blocks(self) -> int:
        return self.window_size // self.block_size

    @property
    def blocks_per_query(self) -> int:
        # the reference adds the window blocks on top of `topk` (96 for SALA, not 64)
        return self.topk + self.local_blocks


@dataclass(frozen=True)
class RopeScaling:
    rope_type: str
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    mixer_types: tuple[str, ...] = ()  # canonical SOFTMAX / LIGHTNING, one per layer
    # muP scalars (MiniCPM); the Llama defaults make them no-ops
    scale_emb: float = 1.0
    scale_depth: float | None = None
    dim_model_base: float | None = None
    mup_denominator: float | None = None  # present in MiniCPM configs, unused by the forward pass
    # softmax layers
    attn_use_rope: bool = True
    attn_use_output_gate: bool = False
    sparse_config: SparseConfig | None = None
    # lightning layers
    lightning_use_rope: bool = True
    qk_norm: bool = True
    use_output_gate: bool = True
    use_output_norm: bool = True
    lightning_nh: int | None = None
    lightning_nkv: int | None = None
    lightning_head_dim: int | None = None
    lightning_scale: str = "1/sqrt(d)"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    torch_dtype: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def residual_scale(self) -> float:
        return 1.0 if self.scale_depth is None else self.scale_depth / math.sqrt(self.num_hidden_layers)

    @property
    def logit_scale(self) -> float:
        """The final hidden state is multiplied by this before lm_head (1 / (hidden / dim_model_base))."""
        return 1.0 if self.dim_model_base is None else self.dim_model_base / self.hidden_size

    @property
    def lightning_kv_heads(self) -> int:
        # the reference builds lightning q from num_attention_heads and k/v from lightning_nkv
        return self.lightning_nkv or self.num_attention_heads

    @property
    def lightning_query_scale(self) -> float:
        if self.lightning_scale == "1/sqrt(d)":
            return self.head_dim**-0.5
        if self.lightning_scale == "1/d":
            return 1.0 / self.head_dim
        return 1.0

    def with_sparse(self, **changes: Any) -> ModelConfig:
        """A copy with sparse_config fields changed (tests scale dense_len and window down)."""
        return replace(self, sparse_config=replace(self.sparse_config or SparseConfig(), **changes))

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config.json") -> ModelConfig:
        return _parse(d, source)

    def to_dict(self) -> dict:
        """The config.json an official checkpoint of this family would carry (used to write test checkpoints)."""
        return _to_dict(self)


class _Reader:
    """Typed access to one config dict, collecting the key name into every error."""

    def __init__(self, d: dict, source: str, prefix: str = ""):
        self.d, self.source, self.prefix = d, source, prefix

    def _fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{self.prefix}{key}' {why}")

    def get(self, key: str, kind: str, default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.d or (self.d[key] is None and default is not ... and not required):
            if required or default is ...:
                raise self._fail(key, "is missing")
            return default
        v = self.d[key]
        if kind == "int":
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise self._fail(key, f"must be an integer, got {v!r}")
        elif kind == "pos_int":
            v = self.get(key, "int")
            if v <= 0:
                raise self._fail(key, f"must be positive, got {v}")
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self._fail(key, f"must be a number, got {v!r}")
            v = float(v)
        elif kind == "bool":
            if not isinstance(v, bool):
                raise self._fail(key, f"must be true or false, got {v!r}")
        elif kind == "str":
            if not isinstance(v, str):
                raise self._fail(key, f"must be a string, got {v!r}")
        return v


def _parse(d: dict, source: str) -> ModelConfig:
    r = _Reader(d, source)
    model_type = r.get("model_type", "str", required=True)
    if model_type not in MODEL_TYPES:
        raise r._fail("model_type", f"is {model_type!r}; supported: {', '.join(MODEL_TYPES)}")
    minicpm = model_type in ("minicpm", "minicpm_sala")
    sala = model_type == "minicpm_sala"

    hidden = r.get("hidden_size", "pos_int")
    heads = r.get("num_attention_heads", "pos_int")
    layers = r.get("num_hidden_layers", "pos_int")
    kv_heads = (
        r.get("num_key_value_heads", "pos_int", required=sala)
        if sala
        else r.get("num_key_value_heads", "pos_int", heads)
    )
    if heads % kv_heads:
        raise r._fail("num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads})")
    if "head_dim" in d and d["head_dim"] is not None or sala:
        head_dim = r.get("head_dim", "pos_int")
    else:
        if hidden % heads:
            raise r._fail(
                "hidden_size", f"({hidden}) is not a multiple of num_attention_heads ({heads}) and head_dim is missing"
            )
        head_dim = hidden // heads
    if head_dim % 2:
        raise r._fail("head_dim", f"must be even for rotary embeddings, got {head_dim}")

    eos = d.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    if any(isinstance(e, bool) or not isinstance(e, int) for e in eos_ids):
        raise r._fail("eos_token_id", f"must be an integer or a list of integers, got {eos!r}")

    kw: dict[str, Any] = dict(
        model_type=model_type,
        vocab_size=r.get("vocab_size", "pos_int"),
        hidden_size=hidden,
        intermediate_size=r.get("intermediate_size", "pos_int"),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=r.get("max_position_embeddings", "pos_int"),
        rms_norm_eps=r.get("rms_norm_eps", "float", 1e-6),
        rope_theta=_rope_theta(r, d),
        rope_scaling=_rope_scaling(d, source),
        tie_word_embeddings=r.get("tie_word_embeddings", "bool", False),
        bos_token_id=r.get("bos_token_id", "int", None),
        eos_token_ids=eos_ids,
        pad_token_id=r.get("pad_token_id", "int", None),
        torch_dtype=d.get("dtype") or d.get("torch_dtype"),
    )
    rs = kw["rope_scaling"]
    if rs is not None and rs.rope_type == "longrope" and len(rs.short_factor) != head_dim // 2:
        raise r._fail(
            "rope_scaling.short_factor", f"has {len(rs.short_factor)} entries, expected head_dim / 2 = {head_dim // 2}"
        )
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise r._fail("hidden_act", f"is {act!r}; only 'silu' (SwiGLU) is supported")
    if d.get("attention_bias") or d.get("mlp_bias"):
        raise r._fail("attention_bias" if d.get("attention_bias") else "mlp_bias", "is true; biases are not supported")
    if minicpm:
        kw.update(
            scale_emb=r.get("scale_emb", "float"),
            scale_depth=r.get("scale_depth", "float"),
            dim_model_base=r.get("dim_model_base", "float"),
            mup_denominator=r.get("mup_denominator", "float", None),
        )
    if sala:
        kw.update(
            mixer_types=_mixer_types(r, d, layers),
            attn_use_rope=r.get("attn_use_rope", "bool"),
            attn_use_output_gate=r.get("attn_use_output_gate", "bool"),
            lightning_use_rope=r.get("lightning_use_rope", "bool"),
            qk_norm=r.get("qk_norm", "bool"),
            use_output_gate=r.get("use_output_gate", "bool"),
            use_output_norm=r.get("use_output_norm", "bool"),
            lightning_nh=r.get("lightning_nh", "pos_int", None),
            lightning_nkv=r.get("lightning_nkv", "pos_int", None),
            lightning_head_dim=r.get("lightning_head_dim", "pos_int", None),
            lightning_scale=r.get("lightning_scale", "str", "1/sqrt(d)"),
            sparse_config=_sparse(d, source, required=True),
        )
        if kw["lightning_nkv"] and heads % kw["lightning_nkv"]:
            raise r._fail("lightning_nkv", f"({kw['lightning_nkv']}) must divide num_attention_heads ({heads})")
    else:
        kw["mixer_types"] = (SOFTMAX,) * layers
        if model_type == "minicpm":
            kw["sparse_config"] = _sparse(d, source, required=False)
    return ModelConfig(**kw, extra={k: v for k, v in d.items() if k not in _KNOWN})


def _rope_theta(r: _Reader, d: dict) -> float:
    params = d.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        return _Reader(params, r.source, "rope_parameters.").get("rope_theta", "float")
    return r.get("rope_theta", "float", 10000.0)


def _rope_scaling(d: dict, source: str) -> RopeScaling | None:
    key = "rope_scaling"
    s = d.get("rope_scaling")
    if s is None and isinstance(d.get("rope_parameters"), dict):
        key, s = "rope_parameters", d["rope_parameters"]
    if s is None:
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"{source}: key '{key}' must be an object or null, got {s!r}")
    r = _Reader(s, source, key + ".")
    kind = s.get("rope_type", s.get("type"))
    if kind not in ROPE_TYPES:
        raise r._fail("rope_type", f"is {kind!r}; supported: {', '.join(ROPE_TYPES)}")
    if kind == "default":
        return None
    if kind == "longrope":
        out = RopeScaling(
            "longrope",
            original_max_position_embeddings=r.get("original_max_position_embeddings", "pos_int"),
            short_factor=_floats(r, s, "short_factor"),
            long_factor=_floats(r, s, "long_factor"),
        )
        half = len(out.short_factor)
        if len(out.long_factor) != half:
            raise r._fail("long_factor", f"has {len(out.long_factor)} entries but short_factor has {half}")
        return out
    return RopeScaling(
        kind,
        factor=r.get("factor", "float"),
        original_max_position_embeddings=r.get("original_max_position_embeddings", "pos_int", None),
        low_freq_factor=r.get("low_freq_factor", "float", 1.0),
        high_freq_factor=r.get("high_freq_factor", "float", 4.0),
    )


def _floats(r: _Reader, s: dict, key: str) -> tuple[float, ...]:
    v = s.get(key)
    if not isinstance(v, list) or not v or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
        raise r._fail(key, f"must be a non-empty list of numbers, got {v!r}" if key in s else "is missing")
    return tuple(float(x) for x in v)


def _mixer_types(r: _Reader, d: dict, layers: int) -> tuple[str, ...]:
    v = d.get("mixer_types")
    if not isinstance(v, list):
        raise r._fail("mixer_types", "is missing" if v is None else f"must be a list of strings, got {v!r}")
    if len(v) != layers:
        raise r._fail("mixer_types", f"has {len(v)} entries but num_hidden_layers is {layers}")
    out = []
    for i, m in enumerate(v):
        if m not in MIXER_ALIASES:
            raise r._fail(f"mixer_types[{i}]", f"is {m!r}; expected one of {', '.join(MIXER_ALIASES)}")
        out.append(MIXER_ALIASES[m])
    return tuple(out)


def _sparse(d: dict, source: str, *, required: bool) -> SparseConfig | None:
    s = d.get("sparse_config")
    if s is None:
        if required:
            raise ConfigError(f"{source}: key 'sparse_config' is missing")
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"{source}: key 'sparse_config' must be an object, got {s!r}")
    r = _Reader(s, source, "sparse_config.")
    out = SparseConfig(
        kernel_size=r.get("kernel_size", "pos_int"),
        kernel_stride=r.get("kernel_stride", "pos_int"),
        init_blocks=r.get("init_blocks", "int"),
        block_size=r.get("block_size", "pos_int"),
        window_size=r.get("window_size", "int"),
        topk=r.get("topk", "int"),
        use_nope=r.get("use_nope", "bool", False),
        dense_len=r.get("dense_len", "pos_int"),
    )
    if out.block_size % out.kernel_stride:
        raise r._fail("block_size", f"({out.block_size}) must be a multiple of kernel_stride ({out.kernel_stride})")
    if out.window_size % out.block_size:
        raise r._fail("window_size", f"({out.window_size}) must be a multiple of block_size ({out.block_size})")
    return out


_KNOWN = {
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "dtype",
    "torch_dtype",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "scale_emb",
    "scale_depth",
    "dim_model_base",
    "mup_denominator",
    "mixer_types",
    "attn_use_rope",
    "attn_use_output_gate",
    "lightning_use_rope",
    "qk_norm",
    "use_output_gate",
    "use_output_norm",
    "lightning_nh",
    "lightning_nkv",
    "lightning_head_dim",
    "lightning_scale",
    "sparse_config",
}


_ARCHITECTURES = {
    "minicpm_sala": "MiniCPMSALAForCausalLM",
    "minicpm": "MiniCPMForCausalLM",
    "llama": "LlamaForCausalLM",
}


def _to_dict(c: ModelConfig) -> dict:
    d: dict[str, Any] = {
        "architectures": [_ARCHITECTURES[c.model_type]],
        "model_type": c.model_type,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "intermediate_size": c.intermediate_size,
        "hidden_act": "silu",
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rope_theta": c.rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": False,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": list(c.eos_token_ids) if len(c.eos_token_ids) != 1 else c.eos_token_ids[0],
        "pad_token_id": c.pad_token_id,
        "dtype": c.torch_dtype,
    }
    if c.rope_scaling is not None:
        rs = c.rope_scaling
        d["rope_scaling"] = (
            {
                "rope_type": "longrope",
                "short_factor": list(rs.short_factor),
                "long_factor": list(rs.long_factor),
                "original_max_position_embeddings": rs.original_max_position_embeddings,
            }
            if rs.rope_type == "longrope"
            else {"rope_type": rs.rope_type, "factor": rs.factor}
        )
    if c.model_type != "llama":
        d.update(scale_emb=c.scale_emb, scale_depth=c.scale_depth, dim_model_base=c.dim_model_base)
        if c.mup_denominator is not None:
            d["mup_denominator"] = c.mup_denominator
    if c.model_type == "minicpm_sala":
        d.update(
            attn_use_rope=c.attn_use_rope,
            attn_use_output_gate=c.attn_use_output_gate,
            lightning_use_rope=c.lightning_use_rope,
            qk_norm=c.qk_norm,
            use_output_gate=c.use_output_gate,
            use_output_norm=c.use_output_norm,
            lightning_nh=c.lightning_nh or c.num_attention_heads,
            lightning_nkv=c.lightning_kv_heads,
            lightning_head_dim=c.lightning_head_dim or c.head_dim,
            lightning_scale=c.lightning_scale,
            mixer_types=["lightning-attn" if m == LIGHTNING else m for m in c.mixer_types],
        )
    if c.sparse_config is not None:
        s = c.sparse_config
        d["sparse_config"] = {k: getattr(s, k) for k in SparseConfig.__dataclass_fields__}
    return d
