"""Pure-PyTorch InfLLM-V2 ops (sala-model.md §3.4–3.6): the specification the Triton kernels are tested against.

Queries are processed in chunks so no [heads, Tq, kv_len] tensor larger than a fixed budget is ever built;
the same code therefore serves 1–2K-token CPU tests and 64K-token GPU references.
"""

from __future__ import annotations

import torch

from .params import SparseParams


def _chunk_rows(device: torch.device, per_row: int) -> int:
    budget = 2**28 if device.type == "cuda" else 2**25  # elements of the largest temporary
    return max(1, budget // max(1, per_row))


def compress_keys(k: torch.Tensor, *, kernel_size: int, stride: int) -> torch.Tensor:
    """k: [B, L, Hkv, D] -> [B, n, Hkv, D]; entry c = mean(k[:, c*stride : c*stride + kernel_size]) in fp32."""
    B, L, H, D = k.shape
    n = 0 if kernel_size > L else (L - kernel_size) // stride + 1
    if n == 0:
        return k.new_zeros(B, 0, H, D)
    windows = k[:, : (n - 1) * stride + kernel_size].float().unfold(1, kernel_size, stride)  # [B, n, H, D, ks]
    return windows.mean(-1).to(k.dtype)


def _block_scores(q, k1, k2, pos, *, params: SparseParams, causal: bool, scale: float, nb: int):
    """Pooled block scores [B, Hkv, Tc, nb] before forcing; -inf where a block has no visible K1 entry."""
    B, Tc, Hq, D = q.shape
    Hkv = k1.shape[2]
    qg = q.float().view(B, Tc, Hkv, Hq // Hkv, D)
    n1, n2 = k1.shape[1], k2.shape[1]
    dev = q.device

    s2 = torch.einsum("btgjd,bcgd->bgjtc", qg, k2.float()) * scale  # [B, Hkv, G, Tc, n2]
    if causal:
        end2 = torch.arange(n2, device=dev) * params.lse_stride + params.lse_kernel_size - 1
        s2 = s2.masked_fill(end2[None, :] > pos[:, None], float("-inf"))
    lse2 = torch.logsumexp(s2, dim=-1)  # [B, Hkv, G, Tc]
    # A query that sees no K2 entry yet lies inside the forced init/local blocks, so its scores are never read;
    # 0 keeps them finite.
    lse2 = torch.where(torch.isfinite(lse2), lse2, torch.zeros((), device=dev))

    s1 = torch.einsum("btgjd,bcgd->bgjtc", qg, k1.float()) * scale  # [B, Hkv, G, Tc, n1]
    shared = torch.exp(s1 - lse2[..., None]).sum(2)  # [B, Hkv, Tc, n1]
    if causal:
        end1 = torch.arange(n1, device=dev) * params.kernel_stride + params.kernel_size - 1
        shared = shared.masked_fill(end1[None, :] > pos[:, None], float("-inf"))

    ps = params.pool_stride  # block j pools K1 entries j*ps - 1 .. j*ps + ps (max-pool, window ps+1, padding 1)
    idx = torch.arange(nb, device=dev)[:, None] * ps - 1 + torch.arange(ps + 1, device=dev)[None, :]  # [nb, ps+1]
    valid = (idx >= 0) & (idx < n1)
    padded = torch.cat([shared, shared.new_full((*shared.shape[:-1], 1), float("-inf"))], -1)
    gathered = padded[..., torch.where(valid, idx, n1)]  # [B, Hkv, Tc, nb, ps+1]
    return gathered.amax(-1)


def block_scores(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    *,
    q_start: int,
    kv_len: int,
    params: SparseParams,
    causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """The scores top-k ranks -> fp32 [B, Hkv, Tq, num_blocks]: pooled scores, +inf for the forced init/local blocks,
    -inf for blocks after the query's own and for blocks with no visible K1 entry. Builds the whole score tensor:
    for tests and small inputs only."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    nb = params.num_blocks(kv_len)
    j = torch.arange(nb, device=q.device)
    pos = torch.arange(q_start, q_start + q.shape[1], device=q.device)
    score = _block_scores(q, k1, k2, pos, params=params, causal=causal, scale=scale, nb=nb)
    bt = (pos // params.block_size)[:, None]  # [Tq, 1]
    forced = (j[None, :] < params.init_blocks) | ((j[None, :] >= bt - params.local_blocks) & (j[None, :] <= bt))
    return score.masked_fill(forced, float("inf")).masked_fill(j[None, :] > bt, float("-inf"))


def select_blocks(
    q: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    *,
    q_start: int,
    kv_len: int,
    params: SparseParams,
    causal: bool,
    scale: float | None = None,
) -> torch.Tensor:
    """-> int32 [B, Hkv, Tq, k_eff]: the selected block indices, ascending, -1 where invalid (sala-model.md §3.5).

    Ties are broken towards the lower block index, so the result is deterministic.
    """
    B, Tq, Hq, D = q.shape
    Hkv = k1.shape[2]
    nb = params.num_blocks(kv_len)
    k_eff = params.k_eff(kv_len)
    out = torch.empty(B, Hkv, Tq, k_eff, dtype=torch.int32, device=q.device)
    rows = _chunk_rows(q.device, Hq * max(k1.shape[1], k2.shape[1], nb))
    for i0 in range(0, Tq, rows):
        i1 = min(Tq, i0 + rows)
        score = block_scores(
            q[:, i0:i1], k1, k2, q_start=q_start + i0, kv_len=kv_len, params=params, causal=causal, scale=scale
        )
        bt = (torch.arange(q_start + i0, q_start + i1, device=q.device) // params.block_size)[:, None]
        top = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., :k_eff]
        top = torch.sort(top, dim=-1).values
        out[:, :, i0:i1] = torch.where(top > bt, -1, top).to(torch.int32)
    return out


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_idx: torch.Tensor,
    *,
    q_start: int,
    block_size: int,
    scale: float,
) -> torch.Tensor:
    """Exact softmax attention of each query over the union of its selected blocks, causal (keys <= its position).

    q: [B, Tq, Hq, D]; k, v: [B, L, Hkv, D]; block_idx: int [B, Hkv, Tq, K] (-1 = none) -> [B, Tq, Hq, D] in q.dtype.
    A query with no visible key gets zeros.
    """
    B, Tq, Hq, D = q.shape
    L, Hkv = k.shape[1], k.shape[2]
    G = Hq // Hkv
    nb = -(-L // block_size)
    dev = q.device
    kf, vf = k.float(), v.float()
    key_block = torch.arange(L, device=dev) // block_size
    out = torch.empty(B, Tq, Hq, v.shape[-1], dtype=q.dtype, device=dev)
    rows = _chunk_rows(dev, Hq * L)
    for i0 in range(0, Tq, rows):
        i1 = min(Tq, i0 + rows)
        pos = torch.arange(q_start + i0, q_start + i1, device=dev)
        idx = block_idx[:, :, i0:i1].long()
        chosen = torch.zeros(B, Hkv, i1 - i0, nb + 1, dtype=torch.bool, device=dev)
        chosen.scatter_(-1, torch.where(idx < 0, nb, idx), True)
        allowed = chosen[..., key_block] & (torch.arange(L, device=dev)[None, :] <= pos[:, None])  # [B, Hkv, Tc, L]
        qg = q[:, i0:i1].float().view(B, i1 - i0, Hkv, G, D)
        s = torch.einsum("btgjd,blgd->bgjtl", qg, kf) * scale
        s = s.masked_fill(~allowed[:, :, None], float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)
        o = torch.einsum("bgjtl,blgd->btgjd", p, vf)
        out[:, i0:i1] = o.reshape(B, i1 - i0, Hq, -1).to(q.dtype)
    return out


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int, scale: float) -> torch.Tensor:
    """Causal GQA attention over all keys: query i (absolute position q_start + i) sees keys 0 .. q_start + i."""
    B, Tq, Hq, D = q.shape
    L, Hkv = k.shape[1], k.shape[2]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
    sdpa = _gqa_sdpa(Hq != Hkv)
    if q_start == 0 and Tq == L and q.is_cuda:
        return sdpa(qt, kt, vt, is_causal=True, scale=scale).transpose(1, 2).contiguous()
    out = torch.empty(B, Hq, Tq, v.shape[-1], dtype=q.dtype, device=q.device)
    rows = _chunk_rows(q.device, Hq * L)
    keys = torch.arange(L, device=q.device)
    for i0 in range(0, Tq, rows):
        i1 = min(Tq, i0 + rows)
        pos = torch.arange(q_start + i0, q_start + i1, device=q.device)
        mask = keys[None, :] <= pos[:, None]
        out[:, :, i0:i1] = sdpa(qt[:, :, i0:i1], kt, vt, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).contiguous()


def _gqa_sdpa(grouped: bool):
    """SDPA with grouped KV heads: native `enable_gqa` (torch >= 2.5), else an explicit repeat."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if not grouped:
        return sdpa
    try:
        x = torch.zeros(1, 2, 1, 1)
        sdpa(x, x[:, :1], x[:, :1], enable_gqa=True)

        def native(q, k, v, **kw):
            return sdpa(q, k, v, enable_gqa=True, **kw)

        return native
    except TypeError:

        def repeated(q, k, v, **kw):
            r = q.shape[1] // k.shape[1]
            return sdpa(q, k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1), **kw)

        return repeated
