"""The MiniCPM-SALA family in one file: MiniCPM-SALA (sparse + lightning hybrid), MiniCPM4.1 and Llama.

Each layer's mixer comes from `config.mixer_types` (sala-model.md §1.3). Module names equal the
checkpoint's tensor names (`model.layers.{i}.self_attn.q_proj`, ...), so weights load by name.
Lightning and InfLLM-V2 sparse attention, and the row-wise norms and gates, go through `sala_report.kernels`,
which runs the pure-PyTorch reference on the CPU and Triton on CUDA; dense attention uses torch SDPA.
A one-token step reads its position from the inference state on the device, so `runtime.py` can replay it as
a CUDA graph; chunked prefill, graphs and memory planning live there and in `plan.py`.
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
        return kernels.rms_norm(x, self.weight, self.eps)


class Rotary:
    """cos/sin for rotate-half RoPE in fp32, computed for the positions of each call (no table to grow)."""

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
        self.on_device: dict[tuple, torch.Tensor] = {}

    def regime(self, end: int) -> str:
        """Which frequencies a sequence of `end` tokens uses: like the reference, LongRoPE's long factors apply
        once the sequence outgrows the original window."""
        s = self.scaling
        if s is not None and s.rope_type == "longrope" and end > s.original_max_position_embeddings:
            return "long"
        return "short"

    def __call__(self, positions: torch.Tensor, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, head_dim] fp32 for positions [T] (int, on the target device) of a sequence of `end` tokens."""
        key = (str(positions.device), self.regime(end))
        inv_freq = self.on_device.get(key)
        if inv_freq is None:
            inv_freq = self.inv_freq
            s = self.scaling
            if s is not None and s.rope_type == "longrope":
                factor = s.long_factor if key[1] == "long" else s.short_factor
                inv_freq = inv_freq / torch.tensor(factor, dtype=torch.float32, device="cpu")
            inv_freq = self.on_device[key] = inv_freq.to(positions.device)
        freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, D/2], as torch.outer
        emb = torch.cat((freqs, freqs), dim=-1)
        if self.mscale == 1.0:
            return emb.cos(), emb.sin()
        return emb.cos() * self.mscale, emb.sin() * self.mscale


def _llama3_inv_freq(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    old = s.original_max_position_embeddings or 8192
    low_wavelen, high_wavelen = old / s.low_freq_factor, old / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    out = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    return torch.where(mid, smoothed, out)


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
    if Hkv != H and not _SDPA_GQA:
        kt, vt = kt.repeat_interleave(H // Hkv, dim=1), vt.repeat_interleave(H // Hkv, dim=1)
    gqa = {"enable_gqa": True} if Hkv != H and _SDPA_GQA else {}
    qt = q.transpose(1, 2)  # [B, H, T, D]
    if q_start == 0:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, **gqa)
    else:
        mask = torch.arange(L, device=q.device) <= torch.arange(q_start, q_start + T, device=q.device)[:, None]
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, **gqa)
    return out.transpose(1, 2)


_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")  # torch >= 2.5


def decode_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, scale: float) -> torch.Tensor:
    """Queries q [B, T, H, D] at the positions in `pos` (int64 [T], on the device) over a key buffer k/v
    [B, span, Hkv, D] that may run past them: keys after each query's position are masked, so one CUDA graph serves
    every length."""
    B, T, H, D = q.shape
    span, Hkv = k.shape[1], k.shape[2]
    G = H // Hkv
    mask = torch.arange(span, device=q.device) <= pos[:, None]  # [T, span], broadcast over batch and groups
    if T > 1:
        mask = mask.repeat_interleave(G, dim=0)  # [T * G, span]: the query axis is token-major
    qf = q.view(B, T, Hkv, G, D).transpose(1, 2).reshape(B, Hkv, T * G, D)  # each group's heads on the query axis
    out = F.scaled_dot_product_attention(qf, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
    return out.view(B, Hkv, T, G, D).transpose(1, 2).reshape(B, T, H, D)


def project(x: torch.Tensor, fused: torch.Tensor | None, *linears: nn.Linear) -> list[torch.Tensor]:
    """x through each of `linears`: one matmul over their concatenated weights when `fused` holds them (the
    runtime fuses them for the GPU, `runtime.fuse_projections`), else one matmul each."""
    if fused is None:
        return [lin(x) for lin in linears]
    # a quantized model fuses into a module (model/quant.py) rather than a weight
    y = F.linear(x, fused) if isinstance(fused, torch.Tensor) else fused(x)
    return list(y.split([lin.out_features for lin in linears], dim=-1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.fused: torch.Tensor | None = None  # [gate; up] weights, when fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = project(x, self.fused, self.gate_proj, self.up_proj)
        return self.down_proj(kernels.silu_mul(gate, up))


class Attention(nn.Module):
    """Softmax attention (`minicpm4`, Llama): GQA, RoPE or NoPE, optional sigmoid `o_gate`,
    dense below `sparse_config.dense_len` and InfLLM-V2 block-sparse at or above it (§3.3)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        width = self.heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.o_gate = nn.Linear(config.hidden_size, width, bias=False) if config.attn_use_output_gate else None
        self.fused: torch.Tensor | None = None  # [q; k; v; o_gate] weights, when fused
        self.use_rope = config.attn_use_rope
        self.sparse = s = config.sparse_config
        self.params = None
        if s is not None:
            self.params = kernels.SparseParams(
                kernel_size=s.kernel_size,
                kernel_stride=s.kernel_stride,
                block_size=s.block_size,
                init_blocks=s.init_blocks,
                window_size=s.window_size,
                topk=s.topk,
            )
        self.scale = self.head_dim**-0.5

    def forward(
        self, x: torch.Tensor, rope, state: SoftmaxLayerState, start: int, pos: torch.Tensor | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v, *gate = project(x, self.fused, *self.inputs)
        q = q.view(B, T, self.heads, self.head_dim)
        k = k.view(B, T, self.kv_heads, self.head_dim)
        v = v.view(B, T, self.kv_heads, self.head_dim)
        if self.use_rope:
            q, k = kernels.head_norm_rope(q, None, 0.0, *rope), kernels.head_norm_rope(k, None, 0.0, *rope)
        if pos is not None:
            out = self._decode(q, k, v, state, start + 1, pos)
        else:
            out = self._prefill(q, k, v, state, start)
        out = out.reshape(B, T, self.heads * self.head_dim)
        if gate:
            out = kernels.gated_rms_norm(out, gate[0], None, 0.0)  # out * sigmoid(o_gate(x))
        return self.o_proj(out)

    @property
    def inputs(self) -> list[nn.Linear]:
        """The projections of the layer input, in the order a fused weight stacks them."""
        return [lin for lin in (self.q_proj, self.k_proj, self.v_proj, self.o_gate) if lin is not None]

    def _prefill(self, q, k, v, state: SoftmaxLayerState, start: int) -> torch.Tensor:
        keys, values = state.append(start, k, v)  # [B, start+T, Hkv, D]
        kv_len, s = start + q.shape[1], self.sparse
        if s is None:
            return causal_sdpa(q, keys, values, start, self.scale)
        k1, k2 = state.compress(start, kv_len, kernels.compress_keys)
        if kv_len < s.dense_len:
            return causal_sdpa(q, keys, values, start, self.scale)
        # stage 1 is causal in prefill (§3.7)
        idx = kernels.select_blocks(q, k1, k2, q_start=start, kv_len=kv_len, params=self.params, causal=True)
        return kernels.sparse_attention(
            q,
            keys,
            values,
            idx,
            q_start=start,
            block_size=s.block_size,
            scale=self.scale,
            forced_blocks=(s.init_blocks, self.params.local_blocks),
        )

    def _decode(self, q, k, v, state: SoftmaxLayerState, kv_len: int, pos: torch.Tensor) -> torch.Tensor:
        """The tokens at `pos` [T], each as a decode step would see it; `kv_len` (host, of the first token) only picks
        dense or sparse for all of them, everything else reads pos on the device."""
        state.write_token(pos, k, v)
        s = self.sparse
        T = q.shape[1]
        if s is not None:
            for i in range(T):  # in order: a window may complete at any of the new keys
                kernels.append_compressed(
                    state.k, state.k1, state.k2, pos[i : i + 1], kernel_size=s.kernel_size, stride=s.kernel_stride
                )
        if s is not None and kv_len >= s.dense_len:
            # stage 1 sees every complete window in decode (§3.7); the decode kernels take one query per sequence
            outs = [
                kernels.sparse_decode(
                    q[:, i : i + 1],
                    state.k,
                    state.v,
                    state.k1,
                    state.k2,
                    pos[i : i + 1],
                    params=self.params,
                    scale=self.scale,
                    max_kv_len=state.capacity,
                )
                for i in range(T)
            ]
            return outs[0] if T == 1 else torch.cat(outs, dim=1)
        span = state.capacity if s is None else min(state.capacity, s.dense_len)
        return decode_sdpa(q, state.k[:, :span], state.v[:, :span], pos, self.scale)


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

    # The reference runs the recurrence on fp32 q/k/v. How prefill gets those numbers on the GPU:
    #   "fp32": bf16 q/k/v into the kernel, which upcasts in registers and keeps the decay-masked scores, the decayed
    #           q/k and the state in fp32 (tf32 dots): the numbers of fp32 copies, without making the copies
    #   "fp32-copies": fp32 copies of q/k/v and an fp32 output (the first implementation; the bench checks the two agree)
    #   "bf16": bf16 q/k/v and 16-bit dot operands (fla's precision; moved the 32K logits by 4.4e-2)
    prefill_precision = "fp32"

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.lightning_kv_heads,
            config.head_dim,
        )
        width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.z_proj = nn.Linear(config.hidden_size, width, bias=False) if config.use_output_gate else None
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.o_norm = RMSNorm(width, config.rms_norm_eps) if config.use_output_norm else None
        self.fused: torch.Tensor | None = None  # [q; k; v; z] weights, when fused
        self.eps = config.rms_norm_eps
        self.use_rope = config.lightning_use_rope
        self.scale = config.lightning_query_scale
        self.slopes = alibi_slopes(self.heads)
        self._log_decay: torch.Tensor | None = None  # [H] fp32, built on the first call's device

    def forward(
        self, x: torch.Tensor, rope, state: LightningLayerState, start: int, pos: torch.Tensor | None
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v, *z = project(x, self.fused, *self.inputs)
        q = q.view(B, T, self.heads, self.head_dim)
        k = k.view(B, T, self.kv_heads, self.head_dim)
        v = v.view(B, T, self.kv_heads, self.head_dim)
        # the decode kernel reads bf16 into fp32 itself (the same values); so does prefill unless told to make copies
        precision = self.prefill_precision
        dtype = torch.float32 if precision == "fp32-copies" and T > 1 else x.dtype
        cos, sin = rope if self.use_rope else (None, None)
        # per-head q/k RMSNorm, then RoPE, in one pass each
        q = kernels.head_norm_rope(q, None if self.q_norm is None else self.q_norm.weight, self.eps, cos, sin, dtype)
        k = kernels.head_norm_rope(k, None if self.k_norm is None else self.k_norm.weight, self.eps, cos, sin, dtype)
        v = v.to(dtype)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=2)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=2)
        if self._log_decay is None or self._log_decay.device != x.device:
            self._log_decay = -torch.tensor(self.slopes, dtype=torch.float32, device=x.device)
        if T == 1:
            o = kernels.lightning_decode(q[:, 0], k[:, 0], v[:, 0], self._log_decay, state.state, scale=self.scale)
            o = o[:, None]
        else:
            o, final = kernels.lightning_prefill(
                q, k, v, self._log_decay, scale=self.scale, initial_state=state.state, fp32_products=precision == "fp32"
            )
            state.state.copy_(final)
            state.record(k, v)
        o = o.reshape(B, T, self.heads * self.head_dim)
        norm = None if self.o_norm is None else self.o_norm.weight
        if z:
            o = kernels.gated_rms_norm(o, z[0], norm, self.eps)  # o_norm(o) * sigmoid(z_proj(x))
        else:
            o = o.to(x.dtype) if norm is None else self.o_norm(o.to(x.dtype))
        return self.o_proj(o)

    @property
    def inputs(self) -> list[nn.Linear]:
        """The projections of the layer input, in the order a fused weight stacks them."""
        return [lin for lin in (self.q_proj, self.k_proj, self.v_proj, self.z_proj) if lin is not None]

    def advance(self, state: LightningLayerState, n: int) -> None:
        """Advance the recurrent state over the first n tokens of the last pass that `state.record`ed: after a rollback
        to fewer tokens than a verify pass fed, the state follows only the kept ones without a new pass."""
        k, v = state.trail[0][:, :n], state.trail[1][:, :n]  # [B, n, H, D]
        if n == 1:  # as a decode step does it
            kernels.lightning_decode(k[:, 0], k[:, 0], v[:, 0], self._log_decay, state.state, scale=self.scale)
            return
        _, final = kernels.lightning_prefill(
            k,
            k,
            v,
            self._log_decay,
            scale=self.scale,
            initial_state=state.state,
            fp32_products=self.prefill_precision == "fp32",
        )
        state.state.copy_(final)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, kind: str):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LightningAttention(config) if kind == LIGHTNING else Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)
        # muP: both residual branches are scaled by scale_depth / sqrt(L) (1 for Llama)
        self.residual_scale = config.residual_scale

    def forward(self, h: torch.Tensor, m: torch.Tensor | None, rope, state, start: int, pos: torch.Tensor | None):
        """(h, m) -> (h', m'): the residual stream is h + s * m, with the previous layer's MLP output m added here,
        in one pass with this layer's input norm (m is None for the first layer)."""
        s = self.residual_scale
        if m is None:
            x = self.input_layernorm(h)
        else:
            h, x = kernels.add_rms_norm(h, m, s, self.input_layernorm.weight, self.input_layernorm.eps)
        a = self.self_attn(x, rope, state, start, pos)
        h, x = kernels.add_rms_norm(h, a, s, self.post_attention_layernorm.weight, self.post_attention_layernorm.eps)
        return h, self.mlp(x)


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
        p = self.model.embed_tokens.weight  # the activations' dtype (the head may hold packed codes)
        return InferenceState(self.config, batch_size, device=p.device, dtype=p.dtype, capacity=capacity)

    def forward(
        self, input_ids: torch.Tensor, cache: InferenceState | None = None, *, last_only: bool = False
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V] fp32 (only the last position's, [B, 1, V], with last_only)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if cache is None:
            cache = self.new_cache(B, capacity=T)
        elif cache.batch_size != B:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, input has {B}")
        start = cache.length
        cache.reserve(start + T)
        if T == 1:
            cache.position.fill_(start)
        logits = self.step(input_ids, cache, start, last_only=last_only)
        cache.length = start + T
        return logits

    def step(
        self,
        input_ids: torch.Tensor,
        cache: InferenceState,
        start: int,
        *,
        last_only: bool = False,
        verify: bool = False,
    ) -> torch.Tensor:
        """The network over input_ids [B, T] at positions start.. -> fp32 logits; the cache is written, not advanced.

        With T == 1, or with `verify` (a few tokens, each computed as a decode step would: the drafts of speculative
        decoding), the positions come from `cache.position` on the device, and `start` only makes the choices of
        `decode_regime(start)`, which must hold for every token: a CUDA graph of this call replays at any position of
        the same regime.
        """
        B, T = input_ids.shape
        h = self.model.embed_tokens(input_ids)
        if self.config.scale_emb != 1.0:
            h = h * self.config.scale_emb
        pos = None
        if T == 1 or verify:
            pos = cache.position if T == 1 else cache.position + torch.arange(T, device=h.device)  # [T]
        rope = None
        if self.needs_rope:
            rope = self.rotary(pos if pos is not None else torch.arange(start, start + T, device=h.device), start + T)
        m = None
        for layer, state in zip(self.model.layers, cache.layers, strict=True):
            h, m = layer(h, m, rope, state, start, pos)
        if last_only:
            h, m = h[:, -1:], m[:, -1:]
        norm = self.model.norm
        h = norm(h) if m is None else kernels.add_rms_norm(h, m, self.config.residual_scale, norm.weight, norm.eps)[1]
        if self.logit_divisor is not None:
            h = h / self.logit_divisor
        return self.lm_head(h).float()

    def decode_regime(self, start: int) -> tuple:
        """The host-side choices of a one-token step at position `start`: dense or sparse attention, short or long
        RoPE factors. Steps with equal regimes differ only in what they read on the device."""
        s = self.config.sparse_config
        return (s is not None and start + 1 >= s.dense_len, self.rotary.regime(start + 1))
