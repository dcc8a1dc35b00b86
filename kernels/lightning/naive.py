"""Pure-PyTorch Lightning attention (simple GLA with a fixed per-head decay): the specification.

S_t = exp(g_h) S_{t-1} + k_tᵀ v_t ;  o_t = scale · q_t S_t   (the current token is included).
Everything is computed in float32 (float64 when the inputs are float64); outputs come back in q.dtype.
"""

from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def recurrent_lightning(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token recurrence. q, k: [B, T, H, Dk]; v: [B, T, H, Dv] -> (o, final_state [B, H, Dk, Dv])."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    dt = _compute_dtype(q)
    decay = log_decay.to(dt).exp()[None, :, None, None]  # [1, H, 1, 1]
    S = q.new_zeros(B, H, Dk, Dv, dtype=dt) if initial_state is None else initial_state.to(dt).clone()
    qf, kf, vf = q.to(dt), k.to(dt), v.to(dt)
    o = torch.empty(B, T, H, Dv, dtype=dt, device=q.device)
    for t in range(T):
        S = decay * S + kf[:, t, :, :, None] * vf[:, t, :, None, :]
        o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", qf[:, t], S)
    return o.to(q.dtype), S


def _chunk_one(q, k, v, log_decay, scale, S, chunk_size):
    """One sequence batch, chunked form. q, k, v already in the compute dtype; S: [B, H, Dk, Dv]."""
    B, T, H, _ = q.shape
    g = log_decay.to(q.dtype)
    o = torch.empty(B, T, H, v.shape[-1], dtype=q.dtype, device=q.device)
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        C = e - s
        qc, kc, vc = (x[:, s:e].transpose(1, 2) for x in (q, k, v))  # [B, H, C, D]
        i = torch.arange(C, device=q.device, dtype=q.dtype)
        diff = i[:, None] - i[None, :]  # i - j
        # Only non-positive exponents are ever formed, so nothing overflows whatever the chunk length.
        mask = torch.where(
            diff >= 0, torch.exp(g[:, None, None] * diff.clamp(min=0)), torch.zeros((), dtype=q.dtype, device=q.device)
        )
        intra = (qc @ kc.transpose(-1, -2)) * mask  # [B, H, C, C]
        q_decay = torch.exp(g[:, None] * (i + 1))[..., None]  # [H, C, 1]
        k_decay = torch.exp(g[:, None] * (C - 1 - i))[..., None]
        oc = intra @ vc + (qc * q_decay) @ S
        o[:, s:e] = (scale * oc).transpose(1, 2)
        S = torch.exp(g * C)[:, None, None] * S + (kc * k_decay).transpose(-1, -2) @ vc
    return o, S


def chunk_lightning(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked form of the same recurrence; with cu_seqlens (B == 1) each sequence starts from its own state.

    -> (o [B, T, H, Dv] in q.dtype, final_state [N, H, Dk, Dv] in float32, or float64 for float64 inputs)
    """
    dt = _compute_dtype(q)
    qf, kf, vf = q.to(dt), k.to(dt), v.to(dt)
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    if cu_seqlens is None:
        S = q.new_zeros(B, H, Dk, Dv, dtype=dt) if initial_state is None else initial_state.to(dt)
        o, S = _chunk_one(qf, kf, vf, log_decay, scale, S, chunk_size)
        return o.to(q.dtype), S
    bounds = [int(x) for x in cu_seqlens.tolist()]
    N = len(bounds) - 1
    o = torch.empty(1, T, H, Dv, dtype=dt, device=q.device)
    finals = []
    for n in range(N):
        s, e = bounds[n], bounds[n + 1]
        S = q.new_zeros(1, H, Dk, Dv, dtype=dt) if initial_state is None else initial_state[n : n + 1].to(dt)
        o_n, S = _chunk_one(qf[:, s:e], kf[:, s:e], vf[:, s:e], log_decay, scale, S, chunk_size)
        o[:, s:e] = o_n
        finals.append(S)
    return o.to(q.dtype), torch.cat(finals, 0) if finals else q.new_zeros(0, H, Dk, Dv, dtype=dt)


def lightning_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, state: torch.Tensor, *, scale: float
) -> torch.Tensor:
    """One token per sequence. q, k: [B, H, Dk]; v: [B, H, Dv]; state [B, H, Dk, Dv] updated in place."""
    dt = state.dtype
    decay = log_decay.to(dt).exp()[None, :, None, None]
    state.mul_(decay).add_(k.to(dt)[..., :, None] * v.to(dt)[..., None, :])
    return (scale * torch.einsum("bhk,bhkv->bhv", q.to(dt), state)).to(q.dtype)
