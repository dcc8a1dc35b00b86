"""Running a CausalLM over one preallocated inference state: chunked prefill and CUDA-graph decode.

Prefill goes through the network in chunks of `chunk_tokens`, so its working memory is bounded whatever the
prompt length; only the last position's logits are computed. A decode step is captured once per regime
(`CausalLM.decode_regime`: dense or sparse attention, RoPE factors) as a CUDA graph and then replayed: the
network reads the position from the state on the device, and the state never moves, so one graph serves every
length of its regime. The first step of a regime runs eagerly (it compiles and tunes the kernels) and is the
real step, so capturing costs no token.
"""

from __future__ import annotations

import torch
from torch import nn

from .cache import InferenceState
from .errors import ModelError
from .plan import DEFAULT_CHUNK, MemoryPlan, free_cuda_bytes, plan_memory, smallest_chunk
from .quant import QuantLinear
from .quant import fuse as quant_fuse


def fuse_projections(lm) -> None:
    """Stack the weights that read the same input (q, k, v and the gate of each mixer; gate and up of each MLP) into
    one matrix per group, so a decode step streams them in one GEMV (fewer launches, better bandwidth: measured on
    an H100). The Linear modules keep their names and now hold views into the stacked matrix: no memory is added.
    Idempotent."""
    for layer in lm.model.layers:
        for module, linears in (
            (layer.self_attn, layer.self_attn.inputs),
            (layer.mlp, [layer.mlp.gate_proj, layer.mlp.up_proj]),
        ):
            if module.fused is not None:
                continue
            if all(isinstance(lin, QuantLinear) for lin in linears):
                module.fused = quant_fuse(linears)
                continue
            fused = torch.cat([lin.weight for lin in linears])
            row = 0
            for lin in linears:
                n = lin.weight.shape[0]
                lin.weight = nn.Parameter(fused[row : row + n], requires_grad=False)
                row += n
            module.fused = fused


class Runtime:
    """One batch of sequences of equal length on one model: `prefill(ids)`, then `decode(tokens)` per step."""

    def __init__(
        self,
        lm,
        cache: InferenceState,
        *,
        chunk_tokens: int = DEFAULT_CHUNK,
        cuda_graphs: bool = True,
        plan: MemoryPlan | None = None,
    ):
        s = lm.config.sparse_config
        if s is not None and chunk_tokens < s.dense_len:
            # a prompt at or above dense_len must be sparse from its first chunk, as it is in one pass
            raise ValueError(f"chunk_tokens must be at least dense_len = {s.dense_len}, got {chunk_tokens}")
        self.lm, self.cache, self.chunk_tokens, self.plan = lm, cache, chunk_tokens, plan
        self.device = lm.model.embed_tokens.weight.device
        if self.device.type == "cuda":
            fuse_projections(lm)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._ids = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=self.device)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    @classmethod
    def create(
        cls,
        lm,
        batch_size: int,
        context: int,
        max_new_tokens: int,
        *,
        chunk_tokens: int = DEFAULT_CHUNK,
        cuda_graphs: bool = True,
        prefill_batch: int | None = None,
    ) -> Runtime:
        """A runtime with room for `context + max_new_tokens` tokens per sequence; on a GPU the memory plan is
        checked first and a ModelError says what fits when this does not."""
        embed = lm.model.embed_tokens.weight
        plan = None
        if embed.device.type == "cuda":
            free = free_cuda_bytes(embed.device)
            # shorter prefill chunks when the default ones do not fit (a small card at a long context)
            for chunk in dict.fromkeys((chunk_tokens, min(chunk_tokens, smallest_chunk(lm.config)))):
                plan = plan_memory(
                    lm.config,
                    batch_size,
                    context,
                    max_new_tokens,
                    embed.dtype,
                    free,
                    chunk_tokens=chunk,
                    prefill_batch=prefill_batch,
                    weights_loaded=True,
                    quantize=getattr(lm, "quantize", None),
                )
                if plan.fits:
                    chunk_tokens = chunk
                    break
            plan.check()
        cache = lm.new_cache(batch_size, capacity=max(1, context + max_new_tokens))
        return cls(lm, cache, chunk_tokens=chunk_tokens, cuda_graphs=cuda_graphs, plan=plan)

    @property
    def batch_size(self) -> int:
        return self.cache.batch_size

    @property
    def length(self) -> int:
        return self.cache.length

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] after what the state holds -> fp32 logits [B, V] of the last position."""
        if input_ids.dim() != 2 or input_ids.shape[0] != self.batch_size or input_ids.shape[1] == 0:
            raise ValueError(f"expected input_ids of shape [{self.batch_size}, T >= 1], got {tuple(input_ids.shape)}")
        self._check_room(input_ids.shape[1])
        ids = input_ids.to(self.device)
        logits = None
        with torch.inference_mode():
            for a in range(0, ids.shape[1], self.chunk_tokens):
                logits = self.lm(ids[:, a : a + self.chunk_tokens], cache=self.cache, last_only=True)
        return logits[:, -1]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B] (one per sequence) -> fp32 logits [B, V] for the next position.

        With CUDA graphs the result lives in the graph's output buffer: use it before the next call.
        """
        B = self.batch_size
        if tokens.numel() != B:
            raise ValueError(f"expected {B} tokens, one per sequence, got shape {tuple(tokens.shape)}")
        self._check_room(1)
        ids = tokens.reshape(B, 1).to(self.device)
        with torch.inference_mode():
            if not self.cuda_graphs:
                return self.lm(ids, cache=self.cache)[:, -1]
            start = self.cache.length
            self._ids.copy_(ids)
            self.cache.position.fill_(start)
            key = self.lm.decode_regime(start)
            if key in self._graphs:
                graph, logits = self._graphs[key]
                graph.replay()
            else:
                logits = self._first_step(key, start)
            self.cache.length = start + 1
        return logits[:, -1]

    def _first_step(self, key: tuple, start: int) -> torch.Tensor:
        """Run this step eagerly on a side stream (compiling and tuning every kernel it launches), then capture it."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            logits = self.lm.step(self._ids, self.cache, start)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # capturing records the launches without running them, so the state is not touched twice
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.lm.step(self._ids, self.cache, start)
        self._graphs[key] = (graph, out)
        return logits

    def fork(self, batch_size: int, *, extra_tokens: int | None = None) -> Runtime:
        """A runtime of `batch_size` copies of this batch-1 state (prefill once, decode several continuations).

        The new state has the same capacity (or room for `extra_tokens` more); the memory plan is checked first."""
        capacity = self.cache.capacity if extra_tokens is None else self.cache.length + extra_tokens
        plan = None
        if self.device.type == "cuda":
            plan = plan_memory(
                self.lm.config,
                batch_size,
                self.cache.length,
                (capacity or self.cache.length) - self.cache.length,
                self.lm.model.embed_tokens.weight.dtype,
                free_cuda_bytes(self.device),
                prefill_batch=0,
                weights_loaded=True,
                quantize=getattr(self.lm, "quantize", None),
            )
            plan.check()
        cache = self.cache.replicate(batch_size, capacity)
        return Runtime(self.lm, cache, chunk_tokens=self.chunk_tokens, cuda_graphs=self.cuda_graphs, plan=plan)

    def _check_room(self, n: int) -> None:
        cap = self.cache.capacity
        if self.cuda_graphs and cap is not None and self.cache.length + n > cap:
            # a graph holds the buffers' addresses: they must not grow under it
            raise ModelError(
                f"the inference state holds {cap:,} tokens; {self.cache.length:,} are used and {n:,} more were given",
                title="Context full",
                hint="Plan a larger context when creating the runtime.",
            )
