"""The same network on CUDA, where Lightning and InfLLM-V2 run through the Triton kernels (device tool only)."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import load_model

pytestmark = pytest.mark.gpu


def _rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().cpu().abs().max()).item()


@pytest.mark.parametrize("kind", ["sala", "minicpm"])
def test_cuda_matches_cpu_and_steps_match_full_forward(kind, checkpoint):
    folder = checkpoint(kind)
    cpu = load_model(folder, device="cpu", dtype=torch.float32)
    gpu = load_model(folder, device="cuda", dtype=torch.float32)
    ids = torch.randint(0, 128, (2, 1150), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = cpu(ids)
        full = gpu(ids.cuda())
        cache = gpu.new_cache(2)
        parts = [gpu(ids[:, :1000].cuda(), cache=cache)]
        parts += [gpu(ids[:, t : t + 1].cuda(), cache=cache) for t in range(1000, 1150)]
        stepped = torch.cat(parts, dim=1)
    assert full.is_cuda and full.dtype == torch.float32
    assert _rel(full, expected) < 2e-3  # Triton may use TF32 dot products
    assert _rel(stepped, full) < 2e-3


def test_bf16_weights_keep_an_fp32_lightning_state(checkpoint):
    lm = load_model(checkpoint("sala"), device="cuda")  # bf16 by default on CUDA
    assert lm.lm_head.weight.dtype == torch.bfloat16
    cache = lm.new_cache(1)
    ids = torch.randint(0, 128, (1, 1100), device="cuda")
    with torch.inference_mode():
        logits = torch.cat(
            [lm(ids[:, :1090], cache=cache)] + [lm(ids[:, t : t + 1], cache=cache) for t in range(1090, 1100)], 1
        )
    assert cache.layers[1].state.dtype == torch.float32 and torch.isfinite(logits).all()
