"""GPU memory planning: what a batch of sequences at a context length needs, checked before anything is allocated.

The estimate counts the weights, the inference state at full capacity (K/V and compressed keys of the softmax
layers, the fp32 states of the lightning layers) and the working memory of one prefill chunk or one decode step,
so a run that cannot fit stops at once with what would fit instead of running out of memory halfway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .cache import windows
from .config import LIGHTNING, ModelConfig
from .errors import ModelError

GiB = 2**30
DEFAULT_CHUNK = 16384
# Prefill working memory per token of a chunk: the widest layer's live activations (bf16 hidden states, the
# stacked SwiGLU pair [T, 2 x 16384] and its product: 112 KB a token at hidden 4096), with room for allocator
# rounding. Was 160 KB; the H200's 1M-token bf16 run peaked 2.6 GB above weights and state with 16K-token chunks,
# which 120 KB (plus PREFILL_FIXED) still covers.
PREFILL_BYTES_PER_TOKEN = 120 * 1024
SMALLEST_CHUNK = 8192  # the shortest prefill chunk the runtime falls back to when memory is tight (>= dense_len)
# Fixed prefill buffers: the InfLLM-V2 block-score chunk (512 MiB), lightning segment states, temporaries.
PREFILL_FIXED = 768 * 2**20
RESERVE = 512 * 2**20  # allocator fragmentation and library workspaces (cuBLAS)


def count_parameters(config: ModelConfig) -> int:
    from .model import CausalLM

    with torch.device("meta"):
        lm = CausalLM(config)
    return sum(p.numel() for p in lm.parameters())


def weight_bytes(
    config: ModelConfig,
    dtype: torch.dtype = torch.bfloat16,
    quantize: str | None = None,
    packed: Mapping[str, tuple[str, int, bool]] | None = None,
) -> tuple[int, int]:
    """(bytes of the weights on the GPU, bytes of the largest 16-bit weight a quantized prefill dequantises at once).

    Packed linears count their codes, scales and zero points (`kernels/quant/README.md`); the embedding and the
    norms stay in `dtype`; a quantized head tied to the embedding is a second, packed copy. quantize="gguf": the
    linears named in `packed` (module name -> (format, group, zero points), model/gguf.py) are packed, the rest
    stay in `dtype`."""
    from .model import CausalLM
    from .quant import ZERO_POINT, format_for, target_linears

    esize = torch.empty((), dtype=dtype).element_size()
    with torch.device("meta"):
        lm = CausalLM(config)
    if quantize is None:
        return sum(p.numel() for p in lm.parameters()) * esize, 0
    linears = dict(target_linears(lm))
    total = scratch = 0
    seen = set()
    for name, module in lm.named_modules():
        if quantize == "gguf":
            kind = (packed or {}).get(name)
        else:
            kind = (format_for(quantize, linears[name]), None, ZERO_POINT) if name in linears else None
        if kind is not None:
            N, K = module.weight.shape
            total += packed_bytes(N, K, kind[0], kind[2], group=kind[1])
            if name != "lm_head":
                seen.add(id(module.weight))
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * esize
    for layer in lm.model.layers:  # the stacked projections (runtime.fuse_projections) are dequantised together
        for group in (layer.self_attn.inputs, [layer.mlp.gate_proj, layer.mlp.up_proj], [layer.mlp.down_proj]):
            scratch = max(scratch, sum(lin.weight.numel() for lin in group) * esize)
    return total, scratch


def packed_bytes(N: int, K: int, fmt: str, zero_point: bool = True, *, group: int | None = None) -> int:
    """Bytes of an [N, K] weight packed in `fmt` (group None: the format's default, kernels/quant/naive.py)."""
    if fmt in ("int8", "fp8"):
        return N * K + (2 * N * -(-K // group) if group else 4 * N)
    G = group or 128
    groups = -(-K // G)
    return N * groups * G // 2 + N * groups * 2 * (2 if zero_point else 1)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes needed on the GPU; `total` is the peak (state plus the larger of prefill and decode working memory)."""

    batch: int
    context: int
    max_new_tokens: int
    chunk_tokens: int
    weights: int
    kv_cache: int
    compressed_keys: int
    lightning_state: int
    prefill_workspace: int
    decode_workspace: int
    reserve: int
    free: int | None
    per_token: int  # state bytes per token of capacity, per sequence
    weights_loaded: bool
    quantize: str | None = None

    @property
    def state(self) -> int:
        return self.kv_cache + self.compressed_keys + self.lightning_state

    @property
    def total(self) -> int:
        """Bytes still to allocate (the weights only when they are not loaded yet)."""
        weights = 0 if self.weights_loaded else self.weights
        return weights + self.state + max(self.prefill_workspace, self.decode_workspace) + self.reserve

    @property
    def fits(self) -> bool:
        return self.free is None or self.total <= self.free

    def _fixed(self) -> int:
        weights = 0 if self.weights_loaded else self.weights
        return weights + self.lightning_state + max(self.prefill_workspace, self.decode_workspace) + self.reserve

    @property
    def max_context(self) -> int:
        """The longest prompt (plus max_new_tokens) that fits at this batch size; 0 if none."""
        if self.free is None or self.per_token == 0:
            return self.context
        room = self.free - self._fixed()
        return max(0, room // (self.per_token * self.batch) - self.max_new_tokens)

    @property
    def max_batch(self) -> int:
        """The most sequences that fit at this context length (the prefill workspace does not grow with it here)."""
        if self.free is None:
            return self.batch
        per_seq = self.per_token * (self.context + self.max_new_tokens) + self.lightning_state // self.batch
        room = self.free - (self._fixed() - self.lightning_state)
        return max(0, room // max(1, per_seq))

    def describe(self) -> str:
        g = lambda n: f"{n / GiB:.1f} GiB"  # noqa: E731
        parts = [
            f"weights {g(self.weights)}{' (loaded)' if self.weights_loaded else ''}",
            f"KV cache {g(self.kv_cache)}",
            f"compressed keys {g(self.compressed_keys)}",
            f"lightning state {g(self.lightning_state)}",
            f"prefill workspace {g(self.prefill_workspace)}",
            f"decode workspace {g(self.decode_workspace)}",
            f"reserve {g(self.reserve)}",
        ]
        free = "unknown" if self.free is None else g(self.free)
        fmt = f" with {self.quantize} weights" if self.quantize else ""
        return (
            f"batch {self.batch} x {self.context:,} + {self.max_new_tokens:,} tokens{fmt} needs {g(self.total)} "
            f"({', '.join(parts)}); {free} free"
        )

    def check(self) -> None:
        """Raise ModelError saying what fits instead, when this plan does not."""
        if self.fits:
            return
        lines = [f"Not enough GPU memory: {self.describe()}."]
        if self.max_context > 0:
            lines.append(
                f"At batch {self.batch}, up to {self.max_context:,} prompt tokens fit with {self.max_new_tokens:,} new tokens."
            )
        else:
            lines.append(f"At batch {self.batch}, not even a short prompt fits.")
        if self.max_batch >= 1 and self.batch > 1:
            lines.append(f"At {self.context:,} tokens, up to batch {self.max_batch} fits.")
        raise ModelError(
            "\n".join(lines),
            title="The model does not fit on this GPU",
            hint="Use a shorter context, a smaller batch, fewer new tokens, or a GPU with more free memory.",
        )


def plan_memory(
    config: ModelConfig,
    batch: int,
    context: int,
    max_new_tokens: int,
    dtype: torch.dtype = torch.bfloat16,
    free_bytes: int | None = None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK,
    prefill_batch: int | None = None,
    weights_loaded: bool = False,
    quantize: str | None = None,
    packed: Mapping[str, tuple[str, int, bool]] | None = None,
) -> MemoryPlan:
    """Plan `batch` sequences of `context` prompt tokens plus `max_new_tokens` (prefill `prefill_batch` of them at a
    time, default all; 0 when the state is filled by replicating a finished prefill), with weights in `dtype` or
    packed in the `quantize` format (activations and state stay in `dtype`)."""
    if batch < 1 or context < 0 or max_new_tokens < 0:
        raise ValueError(f"expected batch >= 1 and non-negative lengths, got {batch}, {context}, {max_new_tokens}")
    esize = torch.empty((), dtype=dtype).element_size()
    capacity = context + max_new_tokens
    kv = compressed = lightning = 0
    per_token = 0
    for kind in config.mixer_types:
        if kind == LIGHTNING:
            lightning += batch * config.num_attention_heads * config.head_dim**2 * 4
            continue
        row = config.num_key_value_heads * config.head_dim * esize
        kv += 2 * batch * capacity * row
        per_token += 2 * row
        s = config.sparse_config
        if s is not None:
            n = windows(capacity, s.kernel_size, s.kernel_stride) + windows(
                capacity, 4 * s.kernel_size, 4 * s.kernel_stride
            )
            compressed += batch * n * row
            per_token += row * (1 / s.kernel_stride + 1 / (4 * s.kernel_stride))
    pb = batch if prefill_batch is None else prefill_batch
    chunk = min(chunk_tokens, max(1, context))
    weights, scratch = weight_bytes(config, dtype, quantize, packed)
    prefill = (
        0 if pb == 0 else pb * chunk * PREFILL_BYTES_PER_TOKEN * config.hidden_size // 4096 + PREFILL_FIXED + scratch
    )
    decode = batch * (config.vocab_size * 12 + 2**20) + 64 * 2**20  # fp32 logits and sampling, split-K partials
    return MemoryPlan(
        batch=batch,
        context=context,
        max_new_tokens=max_new_tokens,
        chunk_tokens=chunk,
        weights=weights,
        kv_cache=kv,
        compressed_keys=compressed,
        lightning_state=lightning,
        prefill_workspace=prefill,
        decode_workspace=decode,
        reserve=RESERVE,
        free=free_bytes,
        per_token=int(per_token),
        weights_loaded=weights_loaded,
        quantize=quantize,
    )


def loaded_plan(
    lm,
    batch: int,
    context: int,
    max_new_tokens: int,
    free_bytes: int | None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK,
    prefill_batch: int | None = None,
) -> MemoryPlan:
    """plan_memory for a model already loaded (the runtime's): its config, dtype and weight format, and a GGUF's
    packed linears at the bytes they hold rather than at the dtype's size."""
    fmt = getattr(lm, "quantize", None)
    return plan_memory(
        lm.config,
        batch,
        context,
        max_new_tokens,
        lm.model.embed_tokens.weight.dtype,
        free_bytes,
        chunk_tokens=chunk_tokens,
        prefill_batch=prefill_batch,
        weights_loaded=True,
        quantize=fmt,
        packed=packed_layout(lm) if fmt == "gguf" else None,
    )


def packed_layout(lm) -> dict[str, tuple[str, int | None, bool]]:
    """{module name: (format, group, zero points)} of a loaded model's packed linears: the `packed` argument of
    weight_bytes, as model/gguf.py's packed_layers gives it before loading."""
    from .quant import QuantLinear

    return {name: (m.fmt, m.group, m.zeros is not None) for name, m in lm.named_modules() if isinstance(m, QuantLinear)}


# From the most faithful to the smallest: "auto" takes the first that fits (fp8 only when asked: it serves prefill
# speed on cards that have fp8 matrix units, at int8's size).
AUTO_ORDER = (None, "int8", "int4")


def format_contexts(
    config: ModelConfig,
    free_bytes: int,
    *,
    batch: int = 1,
    max_new_tokens: int = 256,
    dtype: torch.dtype = torch.bfloat16,
    formats=None,
    packed: Mapping[str, tuple[str, int, bool]] | None = None,
) -> dict[str | None, int]:
    """The longest prompt each weight format allows in `free_bytes` (weights not loaded yet); 0 = does not load.
    Default formats: AUTO_ORDER, after "gguf" for a GGUF whose linears stay packed (`packed`, model/gguf.py)."""
    if formats is None:
        formats = ("gguf", *AUTO_ORDER) if packed else AUTO_ORDER
    chunk = smallest_chunk(config)
    out = {}
    for fmt in formats:
        plan = plan_memory(
            config, batch, chunk, max_new_tokens, dtype, free_bytes, chunk_tokens=chunk, quantize=fmt, packed=packed
        )
        out[fmt] = plan.max_context if plan.fits else 0
    return out


def smallest_chunk(config: ModelConfig) -> int:
    s = config.sparse_config
    return max(SMALLEST_CHUNK, s.dense_len) if s is not None else SMALLEST_CHUNK


def choose_format(
    config: ModelConfig,
    free_bytes: int | None,
    context: int,
    *,
    max_new_tokens: int = 256,
    dtype: torch.dtype = torch.bfloat16,
    packed: Mapping[str, tuple[str, int, bool]] | None = None,
) -> str | None:
    """quantize="auto": the first of AUTO_ORDER whose plan fits `context + max_new_tokens` tokens (unknown free
    memory: the checkpoint's own weights); the smallest format when none fits, so the plan's error names it. A GGUF
    whose linears stay packed (`packed`, model/gguf.py) tries "gguf", its own blocks, first."""
    if free_bytes is None:
        return None
    chunk = smallest_chunk(config)
    order = ("gguf", *AUTO_ORDER) if packed else AUTO_ORDER
    for fmt in order:
        plan = plan_memory(
            config, 1, context, max_new_tokens, dtype, free_bytes, chunk_tokens=chunk, quantize=fmt, packed=packed
        )
        if plan.fits:
            return fmt
    return AUTO_ORDER[-1]


def free_cuda_bytes(device) -> int:
    """What this process can still allocate: the driver's free memory plus what PyTorch holds unused."""
    device = torch.device(device)
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
