"""Quantized models on CUDA (device tool only): the Triton decode kernels and the dequantised prefill give the same
network as the CPU reference on the same packed weights, and CUDA-graph decode equals eager decode."""

from __future__ import annotations

import pytest
import torch

from sala_report.model import load_model
from sala_report.model.runtime import Runtime

pytestmark = pytest.mark.gpu


def _rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8"])
def test_cuda_quantized_matches_cpu_quantized(fmt, checkpoint):
    folder = checkpoint("sala")
    cpu = load_model(folder, device="cpu", dtype=torch.float32, quantize=fmt)
    gpu = load_model(folder, device="cuda", dtype=torch.bfloat16, quantize=fmt)
    ids = torch.randint(0, 128, (1, 1100), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = cpu(ids)
        cache = gpu.new_cache(1)
        parts = [gpu(ids[:, :1090].cuda(), cache=cache)]  # prefill: more than 16 rows
        parts += [gpu(ids[:, t : t + 1].cuda(), cache=cache) for t in range(1090, 1100)]  # decode kernels
        got = torch.cat(parts, dim=1)
    assert torch.isfinite(got).all()
    # bf16 activations against the fp32 reference (fp8 prefill also rounds activations to e4m3 per token)
    assert _rel(got, expected) < (6e-2 if fmt == "fp8" else 3e-2)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_graph_decode_equals_eager_with_fused_quantized_projections(fmt, checkpoint):
    lm = load_model(checkpoint("sala"), device="cuda", quantize=fmt)
    ids = torch.randint(0, 128, (1, 1030), device="cuda")
    graph = Runtime.create(lm, 1, 1030, 8)
    assert graph.lm.model.layers[0].mlp.fused is not None
    tok = graph.prefill(ids).argmax(-1)
    eager = Runtime(lm, graph.cache.replicate(1), cuda_graphs=False)
    a = [graph.decode(tok + i).clone() for i in range(6)]
    b = [eager.decode(tok + i) for i in range(6)]
    assert max(_rel(x, y) for x, y in zip(a, b)) < 1e-3


def test_smollm2_gguf_stays_packed_on_cuda(smollm2_path, smollm2):
    """quantize="auto" on a GPU keeps the Q4_1 GGUF's own blocks (int4, groups of 32, and the Q8_0 head); prefill
    (dequantise + cuBLAS), the decode kernels and graph-replayed decode all match the fp32 CPU model."""
    from sala_report.model import quant

    lm = load_model(smollm2_path, device="cuda", quantize="auto")
    assert lm.quantize == "gguf"
    assert lm.model.layers[0].mlp.up_proj.group == 32 and lm.lm_head.fmt == "int8" and lm.lm_head.group == 32
    packed = sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if "layers" in n and "norm" not in n)
    linears = [m for n, m in lm.named_modules() if isinstance(m, quant.QuantLinear) and "layers" in n]
    dense = sum(m.in_features * m.out_features for m in linears)
    assert packed < 0.7 * dense  # Q4_1 body: 0.625 bytes a weight (bf16 would be 2)
    ids = torch.randint(0, 49152, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = smollm2(ids)
        cache = lm.new_cache(1)
        parts = [lm(ids[:, :290].cuda(), cache=cache)]
        parts += [lm(ids[:, t : t + 1].cuda(), cache=cache) for t in range(290, 300)]
        got = torch.cat(parts, dim=1)
    assert torch.isfinite(got).all() and _rel(got, expected) < 3e-2  # bf16 activations against fp32
    graph = Runtime.create(lm, 1, 300, 8)
    tok = graph.prefill(ids[:, :290].cuda()).argmax(-1)
    eager = Runtime(lm, graph.cache.replicate(1), cuda_graphs=False)
    a = [graph.decode(tok + i).clone() for i in range(6)]
    b = [eager.decode(tok + i) for i in range(6)]
    assert max(_rel(x, y) for x, y in zip(a, b)) < 1e-3


def test_offline_int4_with_block_tuning_runs_on_cuda(checkpoint):
    # `python -m sala_report.model.quantize ... --device cuda` as a SALA user would run it (bf16 on the GPU, where the
    # Triton attention kernels have no backward: their projections keep GPTQ's grids, the rest tunes); every weight
    # int4, and the result as close to the bf16 model as the CPU path's is to fp32
    from sala_report.model.quantize import quantize_offline

    folder = checkpoint("sala")
    ref = load_model(folder, device="cuda", dtype=torch.bfloat16)
    lm = load_model(folder, device="cuda", dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 128, (1, 256), generator=g).cuda() for _ in range(4)]
    quantize_offline(lm, batches, "gptq")
    ids = torch.randint(0, 128, (1, 300), generator=g).cuda()
    with torch.inference_mode():
        got, want = lm(ids), ref(ids)
    assert torch.isfinite(got).all() and lm.quantize == "int4"
    assert _rel(got, want) < 5e-2  # fp32 on the CPU: 4.8e-3 (bf16 activations add ~1e-2)
