"""Running a CausalLM over one preallocated inference state: chunked prefill, CUDA-graph decode, and the verify
passes and rollbacks of speculative decoding.

Prefill goes through the network in chunks of `chunk_tokens`, so its working memory is bounded whatever the
prompt length; only the last position's logits are computed. A decode step is captured once per regime
(`CausalLM.decode_regime`: dense or sparse attention, RoPE factors) as a CUDA graph and then replayed: the
network reads the position from the state on the device, and the state never moves, so one graph serves every
length of its regime. The first step of a regime runs eagerly (it compiles and tunes the kernels) and is the
real step, so capturing costs no token. `extend` does the same for passes of 2 .. MAX_GRAPH_WIDTH tokens (one graph
per regime and width), each token computed as a decode step would; `snapshot` and `rollback` undo the tokens of
such a pass that speculation rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .cache import InferenceState, LightningLayerState
from .errors import ModelError
from .model import LightningAttention
from .plan import DEFAULT_CHUNK, MemoryPlan, free_cuda_bytes, loaded_plan, smallest_chunk
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


MAX_GRAPH_WIDTH = 16  # extend passes up to this many tokens run as CUDA graphs; longer ones as chunked prefill


@dataclass(frozen=True)
class Snapshot:
    """What `Runtime.snapshot` saved: the length then (the Lightning states are copied into the runtime's buffers)."""

    length: int
    serial: int


class Runtime:
    """One batch of sequences of equal length on one model: `prefill(ids)`, then `decode(tokens)` per step; on a
    batch of one, `extend(ids)` feeds several tokens and `snapshot()` / `rollback()` take back the rejected ones."""

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
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor | None]] = {}
        self._pool = None
        self._wide_ids: dict[int, torch.Tensor] = {}  # the input buffer of each extend width's graph
        self._lightning = [
            (layer.self_attn, state)
            for layer, state in zip(lm.model.layers, cache.layers, strict=True)
            if isinstance(state, LightningLayerState)
        ]
        if cache.batch_size == 1:
            # k/v in the dtype the pass computes them in, so re-advancing runs the kernel the pass ran
            copies = LightningAttention.prefill_precision == "fp32-copies"
            dtype = torch.float32 if copies else lm.model.embed_tokens.weight.dtype
            for _, state in self._lightning:
                state.keep_trail(MAX_GRAPH_WIDTH, dtype)
        self._saved: list[torch.Tensor] | None = None  # the Lightning states at the snapshot
        self._snap: Snapshot | None = None
        self._serial = 0
        self._fed: list[torch.Tensor] = []  # ids fed since the snapshot, on the device
        self._trail_width = 0  # width of the single extend since the snapshot whose k/v the trails hold (0: none)

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
                plan = loaded_plan(
                    lm, batch_size, context, max_new_tokens, free, chunk_tokens=chunk, prefill_batch=prefill_batch
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
        self._snap = None  # a prefill is not taken back
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
        if self._snap is not None:
            self._fed.append(ids.reshape(-1).clone())
            self._trail_width = 0
        with torch.inference_mode():
            return self._decode(ids)

    def _decode(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.cuda_graphs:
            return self.lm(ids, cache=self.cache)[:, -1]
        start = self.cache.length
        self._ids.copy_(ids)
        self.cache.position.fill_(start)
        key = self.lm.decode_regime(start)
        logits = self._graphed(key, lambda: self.lm.step(self._ids, self.cache, start))
        self.cache.length = start + 1
        return logits[:, -1]

    def _graphed(self, key: tuple, fn: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        """fn() through the CUDA graph captured for `key`. The first call of a key runs fn eagerly on a side stream
        (compiling and tuning every kernel it launches; this is the real call), then captures it."""
        if key in self._graphs:
            graph, out = self._graphs[key]
            graph.replay()
            return out
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            result = fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # capturing records the launches without running them, so the state is not touched twice
        with torch.cuda.graph(graph, pool=self._pool):
            out = fn()
        self._graphs[key] = (graph, out)
        return result

    def reset(self) -> None:
        """Back to an empty state, every buffer zeroed as a new one's; buffers and captured graphs are kept, so one
        runtime serves many generations."""
        self.cache.reset()
        self._snap, self._fed, self._trail_width = None, [], 0

    def extend(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """ids [T >= 1] after what the state holds (batch 1) -> fp32 logits [T, V] of every position.

        Up to MAX_GRAPH_WIDTH tokens, each position is computed as a decode step would compute it (the verify pass of
        speculative decoding), through a CUDA graph per regime and width; then the result may live in the graph's
        output buffer: use it before the next call. Longer passes go through chunked prefill.
        """
        if self.batch_size != 1:
            raise ValueError(f"extend runs on a batch of one sequence, this runtime has batch size {self.batch_size}")
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"expected ids of shape [T >= 1], got {tuple(ids.shape)}")
        self._check_room(ids.numel())
        ids = ids.to(self.device)
        if self._snap is not None:
            first = not self._fed
            self._fed.append(ids.clone())
        with torch.inference_mode():
            logits, traced = self._extend(ids)
        if self._snap is not None:
            self._trail_width = ids.numel() if first and traced else 0
        return logits

    def _extend(self, ids: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """-> (logits [T, V], whether the Lightning trails hold this pass's k/v)."""
        T = ids.numel()
        if T > MAX_GRAPH_WIDTH:
            self.cache.reserve(self.cache.length + T)
            outs = [
                self.lm(ids[None, a : a + self.chunk_tokens], cache=self.cache)[0]
                for a in range(0, T, self.chunk_tokens)
            ]
            return torch.cat(outs), False
        pieces = self._split_by_regime(T)
        outs = [self._verify(ids[a:b]) for a, b in pieces]
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), len(pieces) == 1

    def _split_by_regime(self, T: int) -> list[tuple[int, int]]:
        """[a, b) spans of the next T tokens within one decode regime each (a graph holds one regime's choices)."""
        start, pieces, a = self.cache.length, [], 0
        for i in range(1, T + 1):
            if i == T or self.lm.decode_regime(start + i) != self.lm.decode_regime(start + a):
                pieces.append((a, i))
                a = i
        return pieces

    def _verify(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [w] within one regime, each computed as a decode step would -> logits [w, V]."""
        w, start = ids.numel(), self.cache.length
        if w == 1:
            return self._decode(ids.reshape(1, 1))
        self.cache.reserve(start + w)
        self.cache.position.fill_(start)
        if not self.cuda_graphs:
            logits = self.lm.step(ids[None], self.cache, start, verify=True)
        else:
            buf = self._wide_ids.get(w)
            if buf is None:
                buf = self._wide_ids[w] = torch.zeros(1, w, dtype=torch.long, device=self.device)
            buf[0].copy_(ids)
            key = ("extend", w, self.lm.decode_regime(start))
            logits = self._graphed(key, lambda: self.lm.step(buf, self.cache, start, verify=True))
        self.cache.length = start + w
        return logits[0]

    def snapshot(self) -> Snapshot:
        """Remember the state now (batch 1), to `rollback` to after the next `extend`. One snapshot lives at a time:
        its Lightning states are copied into buffers the runtime allocates once."""
        if self.batch_size != 1:
            raise ValueError(f"snapshots are taken of a batch of one sequence, this one has {self.batch_size}")
        with torch.inference_mode():
            if self._saved is None:
                self._saved = [state.state.clone() for _, state in self._lightning]
            elif self._lightning:
                if self.cuda_graphs:
                    self._graphed(("snapshot",), self._save)
                else:
                    self._save()
        self._serial += 1
        self._snap = Snapshot(self.cache.length, self._serial)
        self._fed, self._trail_width = [], 0
        return self._snap

    def _save(self) -> None:
        torch._foreach_copy_(self._saved, [state.state for _, state in self._lightning])

    def rollback(self, snapshot: Snapshot, kept: int) -> None:
        """After `extend([last, d1 .. dk])` from `snapshot`, keep `last` and the first `kept` drafts: the state becomes
        what feeding [last, d1 .. d_kept] would have made it. Keys past that are overwritten later and compressed keys
        are recomputed when their window completes again; the Lightning states are restored from the snapshot and
        re-advanced over the kept tokens from the k/v the pass recorded (no new pass). Keeping every token changes
        nothing. The snapshot is used up."""
        if snapshot is not self._snap:
            raise ValueError("expected the runtime's latest snapshot, got an older or used one")
        fed = self.length - snapshot.length
        if not 0 <= kept < fed:
            raise ValueError(f"expected 0 <= kept < {fed} (the tokens fed since the snapshot), got {kept}")
        n, trail = 1 + kept, self._trail_width
        self._snap, self._trail_width = None, 0
        fed_ids, self._fed = self._fed, []
        if n == fed:
            return
        with torch.inference_mode():
            self.cache.length = snapshot.length + n
            if not self._lightning:
                return
            if trail:
                if self.cuda_graphs:
                    self._graphed(("rollback", n), lambda: self._restore(n))
                else:
                    self._restore(n)
                return
            # the fed tokens came in several passes: restore, then feed the kept ones again
            self._restore(0)
            self.cache.length = snapshot.length
            self._extend(torch.cat(fed_ids)[:n])

    def _restore(self, n: int) -> None:
        """Lightning states back to the snapshot, then advanced over the first n recorded tokens."""
        torch._foreach_copy_([state.state for _, state in self._lightning], self._saved)
        if n:
            for attn, state in self._lightning:
                attn.advance(state, n)

    def fork(self, batch_size: int, *, extra_tokens: int | None = None) -> Runtime:
        """A runtime of `batch_size` copies of this batch-1 state (prefill once, decode several continuations).

        The new state has the same capacity (or room for `extra_tokens` more); the memory plan is checked first."""
        capacity = self.cache.capacity if extra_tokens is None else self.cache.length + extra_tokens
        plan = None
        if self.device.type == "cuda":
            new_tokens = (capacity or self.cache.length) - self.cache.length
            plan = loaded_plan(
                self.lm, batch_size, self.cache.length, new_tokens, free_cuda_bytes(self.device), prefill_batch=0
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
