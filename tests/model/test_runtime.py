"""The GPU runtime's pieces on a CPU: chunked prefill, forked batches, the memory plan, the direct weight reader.

CUDA graphs themselves need a GPU (tests/model/test_gpu_runtime.py); here the runtime runs the same network
eagerly, so what it computes is checked against one full forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sala_report.model import ModelConfig, ModelError, load_model
from sala_report.model.plan import plan_memory
from sala_report.model.runtime import Runtime

REAL_CONFIG = Path(__file__).parents[1] / "data" / "model" / "minicpm-sala-config.json"
GiB = 2**30


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_chunked_prefill_and_decode_equal_one_forward(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (2, 2220), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = lm(ids)
    rt = Runtime.create(lm, 2, 2200, 20, chunk_tokens=1024)  # three chunks, all sparse like the one pass
    first = rt.prefill(ids[:, :2200])
    assert _rel(first, full[:, 2199]) < 1e-5
    steps = [rt.decode(ids[:, t]) for t in range(2200, 2220)]
    assert _rel(torch.stack(steps, 1), full[:, 2200:2220]) < 1e-4
    assert rt.length == 2220


def test_fork_decodes_each_copy_like_the_original(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (1, 1100), generator=torch.Generator().manual_seed(1))
    rt = Runtime.create(lm, 1, 1100, 8, chunk_tokens=1024)
    rt.prefill(ids)
    many = rt.fork(3)
    alone = [rt.decode(torch.tensor([5 + i])) for i in range(4)]
    together = [many.decode(torch.tensor([5 + i, 9, 5 + i])) for i in range(4)]
    for a, b in zip(alone, together):
        assert torch.allclose(b[0], a[0], atol=1e-5) and torch.allclose(b[2], a[0], atol=1e-5)
        assert not torch.allclose(b[1], a[0], atol=1e-3)  # a different continuation


def test_chunks_shorter_than_dense_len_are_refused(checkpoint):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="dense_len"):
        Runtime.create(lm, 1, 2000, 1, chunk_tokens=512)


def test_memory_plan_of_the_real_model_on_an_80_gb_card():
    config = ModelConfig.from_json(REAL_CONFIG)
    free = 78 * GiB
    one = plan_memory(config, 1, 2**20, 256, free_bytes=free)
    assert 17.5 * GiB < one.weights < 17.8 * GiB  # 9.48B bf16 parameters
    assert abs(one.kv_cache - 8 * GiB) < 0.01 * GiB  # 8 sparse layers x 2 x 2 heads x 128 x 2 B per token
    assert one.fits and one.total < 35 * GiB
    eight = plan_memory(config, 8, 2**20, 256, free_bytes=free, prefill_batch=1)  # prefill once, then replicate
    assert not eight.fits
    with pytest.raises(ModelError) as err:
        eight.check()
    text = str(err.value)
    assert "batch 8" in text and f"up to batch {eight.max_batch} fits" in text and eight.max_batch in (6, 7)
    assert plan_memory(config, 8, eight.max_context, 256, free_bytes=free, prefill_batch=1).fits
    assert not plan_memory(config, 8, eight.max_context + 4096, 256, free_bytes=free, prefill_batch=1).fits


def test_direct_reader_matches_safetensors(checkpoint, monkeypatch):
    """The reader the GPU path uses (plain reads through a small staging buffer) returns the same tensors."""
    from sala_report.model import weights

    monkeypatch.setattr(weights, "STAGING_BYTES", 1000)  # tensors span several staging rounds
    files = weights.safetensors_files(checkpoint("sala", shards=3))
    want = dict(weights.safetensors_tensors(files))
    got = dict(weights.safetensors_to_device(files, "cpu"))
    assert got.keys() == want.keys()
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
