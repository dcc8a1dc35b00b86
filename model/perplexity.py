"""Perplexity of a CausalLM over a text: how the weight formats are compared on real weights (SmolLM2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def perplexity(lm, ids: list[int] | torch.Tensor, *, window: int = 1024) -> float:
    """exp(mean next-token negative log-likelihood) over ids, in non-overlapping windows of `window` tokens."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    if ids.numel() < 2:
        raise ValueError(f"expected at least 2 tokens, got {ids.numel()}")
    device = lm.model.embed_tokens.weight.device
    total, count = 0.0, 0
    with torch.inference_mode():
        for a in range(0, ids.numel() - 1, window):
            chunk = ids[a : a + window + 1].to(device)
            if chunk.numel() < 2:
                break
            logits = lm(chunk[None, :-1])[0].float()
            total += F.cross_entropy(logits, chunk[1:], reduction="sum").item()
            count += chunk.numel() - 1
    return math.exp(total / count)
