"""The MiniCPM-SALA family in one file: MiniCPM-SALA (sparse + lightning hybrid), MiniCPM4.1 and Llama.

Each layer's mixer comes from `config.mixer_types` (sala-model.md §1.3). Module names equal the
checkpoint's tensor names (`model.layers.{i}.self_attn.q_proj`, ...), so weights load by name.
Lightning and InfLLM-V2 sparse attention go through `sala_report.kernels`, which runs the
pure-PyTorch reference on the CPU and Triton on CUDA; dense attention uses torch SDPA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sala_report import kernels

from .cache import InferenceState, LightningLayerState, SoftmaxLayerState
from .config import LIGHTNING, ModelConfig, RopeScaling


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # variance in fp32, cast back before the weight, as the reference does
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Rotary:
    """cos/sin tables for rotate-half RoPE in fp32, grown by doubling; positions index into them."""

    def __init__(self, config: ModelConfig):
        d = config.head_dim
        # built on the CPU explicitly: the model itself is constructed under torch.device("meta")
        self.inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device="cpu") / d))
        self.scaling: RopeScaling | None = config.rope_scaling
        self.mscale = 1.0
        s = self.scaling
        if s is not None and s.rope_type == "linear":
            self.inv_freq = self.inv_freq / s.factor
        elif s is not None and s.rope_type == "llama3":
            self.inv_freq = _llama3_inv_freq(self.inv_freq, s)
        elif s is not None and s.rope_type == "longrope":
            scale = config.max_position_embeddings / s.original_max_position_embeddings
            # MiniCPM's LongRoPE multiplies cos/sin by this attention factor (1.0 when scale == 1)
            self.mscale = math.sqrt(1 + math.log(scale) / math.log(s.original_max_position_embeddings))
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [length, head_dim] fp32 for positions start .. start+length-1."""
        end = start + length
        inv_freq, key = self.inv_freq, (str(device), "short")
        s = self.scaling
        if s is not None and s.rope_type == "longrope":
            # like the reference: the long factors apply once the sequence outgrows the original window
            long = end > s.original_max_position_embeddings
            key = (str(device), "long" if long else "short")
            inv_freq = inv_freq / torch.tensor(s.long_factor if long else s.short_factor, dtype=torch.float32, device="cpu")
        cos, sin = self.tables.get(key, (None, None))
        if cos is None or cos.shape[0] < end:
            n = max(end, 2 * (0 if cos is None else cos.shape[0]), 256)
            freqs = torch.outer(torch.arange(n, dtype=torch.float32, device="cpu"), inv_freq)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = (emb.cos() * self.mscale).to(device), (emb.sin() * self.mscale).to(device)
            self.tables[key] = (cos, sin)
        return cos[start:end], sin[start:end]


def _llama3_inv_freq(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    old = s.original_max_position_embeddings or 8192
    low_wavelen, high_wavelen = old / s.low_freq_factor, old / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    out = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(mid, smoothed, out)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos/sin [T, D]; rotate-half (NeoX) layout, computed in fp32."""
    x32 = x.float()
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x32 * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_start: int, scale: float) -> torch.Tensor:
    """Dense causal GQA through torch SDPA; q [B, T, H, D] at positions q_start.., k/v [B, L, Hkv, D] -> [B, T, H, D].

    A thin call rather than kernels.dense_attention: a decode step folds the query heads of each group
    into the query axis, so no mask and no K/V repeat are needed on the hot path.
    """
    B, T, H, D = q.shape
    L, Hkv = k.shape[1], k.shape[2]
    kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # [B, Hkv, L, D]
    if T == 1:
        out = F.scaled_dot_product_attention(q.view(B, Hkv, H // Hkv, D), kt, vt, scale=scale)
        return out.reshape(B, 1, H, D)
    if H != Hkv and not _SDPA_GQA:
        kt, vt = kt.repeat_interleave(H // Hkv, dim=1), vt.repeat_interleave(H // Hkv, dim=1)
    gqa = {"enable_gqa": True} if H != Hkv and _SDPA_GQA else {}
    qt = q.transpose(1, 2)  # [B, H, T, D]
    if q_start == 0:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, **gqa)
    else:
        mask = torch.arange(L, device=q.device) <= torch.arange(q_start, q_start + T, device=q.device)[:, None]
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, **gqa)
    return out.transpose(1, 2)


_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")  # torch >= 2.5


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Softmax attention (`minicpm4`, Llama): GQA, RoPE or NoPE, optional sigmoid `o_gate`,
    dense below `sparse_config.dense_len` and InfLLM-V2 block-sparse at or above it (§3.3)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        width = self.heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.o_gate = nn.Linear(config.hidden_size, width, bias=False) if config.attn_use_output_gate else None
        self.use_rope = config.attn_use_rope
        self.sparse = config.sparse_config
        self.scale = self.head_dim**-0.5

    def forward(self, x: torch.Tensor, rope, state: SoftmaxLayerState, start: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim)
        if self.use_rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        keys, values = state.append(start, k, v)  # [B, start+T, Hkv, D]
        kv_len = start + T
        if self.sparse is not None and kv_len >= self.sparse.dense_len:
            out = self._sparse(q, keys, values, state, start, kv_len)
        else:
            out = causal_sdpa(q, keys, values, start, self.scale)
        out = out.reshape(B, T, self.heads * self.head_dim)
        if self.o_gate is not None:
            out = out * torch.sigmoid(self.o_gate(x))
        return self.o_proj(out)

    def _sparse(self, q, keys, values, state: SoftmaxLayerState, start: int, kv_len: int) -> torch.Tensor:
        s = self.sparse
        k1, k2 = state.compressed(kv_len, s.kernel_size, s.kernel_stride, kernels.compress_keys)
        params = kernels.SparseParams(
            kernel_size=s.kernel_size, kernel_stride=s.kernel_stride, block_size=s.block_size,
            init_blocks=s.init_blocks, window_size=s.window_size, topk=s.topk,
        )  # fmt: skip
        # stage 1 is causal in prefill and sees every complete window in decode (§3.7)
        idx = kernels.select_blocks(q, k1, k2, q_start=start, kv_len=kv_len, params=params, causal=q.shape[1] > 1)
        return kernels.sparse_attention(q, keys, values, idx, q_start=start, block_size=s.block_size, scale=self.scale)


def alibi_slopes(n: int) -> list[float]:
    """ALiBi slopes; for a power of two n, slope[h] = 2^(-8(h+1)/n). No per-layer factor in SALA (§2.3)."""

    def power_of_two(m: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start ** (i + 1) for i in range(m)]

    if math.log2(n).is_integer():
        return power_of_two(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n - closest]


class LightningAttention(nn.Module):
    """Simple-GLA linear attention with a fixed per-head decay (sala-model.md §2): q/k RMSNorm before
    RoPE, fp32 recurrent state, `o_norm` over the whole width, sigmoid `z_proj` gate on the layer input."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = config.num_attention_heads, config.lightning_kv_heads, config.head_dim
        width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.z_proj = nn.Linear(config.hidden_size, width, bias=False) if config.use_output_gate else None
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.o_norm = RMSNorm(width, config.rms_norm_eps) if config.use_output_norm else None
        self.use_rope = config.lightning_use_rope
        self.scale = config.lightning_query_scale
        self.slopes = alibi_slopes(self.heads)
        self._log_decay: torch.Tensor | None = None  # [H] fp32, built on the first call's device

    def forward(self, x: torch.Tensor, rope, state: LightningLayerState, start: int) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=2)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=2)
        if self._log_decay is None or self._log_decay.device != x.device:
            self._log_decay = -torch.tensor(self.slopes, dtype=torch.float32, device=x.device)
        q, k, v = q.float(), k.float(), v.float()  # the recurrence runs in fp32
        if T == 1:
            o = kernels.lightning_decode(q[:, 0], k[:, 0], v[:, 0], self._log_decay, state.state, scale=self.scale)
            o = o[:, None]
        else:
            o, final = kernels.lightning_prefill(q, k, v, self._log_decay, scale=self.scale, initial_state=state.state)
            state.state.copy_(final)
        o = o.to(x.dtype).reshape(B, T, self.heads * self.head_dim)
        if self.o_norm is not None:
            o = self.o_norm(o)
        if self.z_proj is not None:
            o = o * torch.sigmoid(self.z_proj(x))
        return self.o_proj(o)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, kind: str):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LightningAttention(config) if kind == LIGHTNING else Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        # muP: both residual branches are scaled by scale_depth / sqrt(L) (1 for Llama)
        self.residual_scale = config.residual_scale

    def forward(self, h: torch.Tensor, rope, state, start: int) -> torch.Tensor:
        a = self.self_attn(self.input_layernorm(h), rope, state, start)
        h = h + (a if self.residual_scale == 1.0 else a * self.residual_scale)
        m = self.mlp(self.post_attention_layernorm(h))
        return h + (m if self.residual_scale == 1.0 else m * self.residual_scale)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        # weights always come from a checkpoint: skip Embedding's random init, whose meta-device
        # path costs seconds of lazy imports on first use
        embed = torch.empty(config.vocab_size, config.hidden_size)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=embed)
        self.layers = nn.ModuleList(DecoderLayer(config, kind) for kind in config.mixer_types)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class CausalLM(nn.Module):
    """`lm(input_ids, cache=...)` -> fp32 logits [B, T, vocab]; with a cache, positions continue after it."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Transformer(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = Rotary(config)
        self.needs_rope = any(
            config.lightning_use_rope if kind == LIGHTNING else config.attn_use_rope for kind in config.mixer_types
        )
        # muP: logits read the final hidden state divided by hidden_size / dim_model_base
        self.logit_divisor = None if config.dim_model_base is None else config.hidden_size / config.dim_model_base

    def new_cache(self, batch_size: int = 1, *, capacity: int = 256) -> InferenceState:
        p = self.lm_head.weight
        return InferenceState(self.config, batch_size, device=p.device, dtype=p.dtype, capacity=capacity)

    def forward(self, input_ids: torch.Tensor, cache: InferenceState | None = None, *, last_only: bool = False) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V] fp32 (only the last position's, [B, 1, V], with last_only)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if cache is None:
            cache = self.new_cache(B, capacity=T)
        elif cache.batch_size != B:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, input has {B}")
        start = cache.length
        h = self.model.embed_tokens(input_ids)
        if self.config.scale_emb != 1.0:
            h = h * self.config.scale_emb
        rope = self.rotary(start, T, h.device) if self.needs_rope else None
        for layer, state in zip(self.model.layers, cache.layers, strict=True):
            h = layer(h, rope, state, start)
        cache.length = start + T
        if last_only:
            h = h[:, -1:]
        h = self.model.norm(h)
        if self.logit_divisor is not None:
            h = h / self.logit_divisor
        return self.lm_head(h).float()
