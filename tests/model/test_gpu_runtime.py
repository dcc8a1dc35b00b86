"""The GPU runtime (bf16, Triton kernels, chunked prefill, CUDA-graph decode) against the pure-PyTorch path, and
checkpoint loading straight to the GPU (device tool only: `pytest -m gpu tests/model`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sala_report.model import GenerationConfig, ModelConfig, ModelError, generate, load_model
from sala_report.model.model import LightningAttention
from sala_report.model.runtime import Runtime

pytestmark = pytest.mark.gpu
REAL_CONFIG = Path(__file__).parents[1] / "data" / "model" / "minicpm-sala-config.json"


def _rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def bf16_checkpoint(tmp_path, tiny_config, make_state):
    """The tiny SALA checkpoint in bf16, the official dtype: both paths then start from the same weights. 16 query
    heads over 2 KV heads (SALA's group of 16 is 32 over 2), so the selection tiles have the shapes they have at scale."""
    config = tiny_config("sala")
    config.update(num_attention_heads=16, lightning_nh=16, lightning_nkv=16)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in make_state(config).items()}
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize("precision", ["fp32", "fp32-copies", "bf16"])
@pytest.mark.parametrize("prompt", [600, 1000, 1500])  # below dense_len = 1024 throughout, crossing it in decode, above
def test_runtime_matches_the_pure_pytorch_path(bf16_checkpoint, prompt, precision, monkeypatch):
    monkeypatch.setattr(LightningAttention, "prefill_precision", precision)
    ref = load_model(bf16_checkpoint, device="cpu", dtype=torch.float32)  # the reference ops, in fp32
    gpu = load_model(bf16_checkpoint, device="cuda")  # bf16 through the kernels
    ids = torch.randint(0, 128, (2, prompt + 64), generator=torch.Generator().manual_seed(prompt))
    with torch.inference_mode():
        want = ref(ids)[:, prompt - 1 : prompt + 63]
    results = {}
    for graphs in (True, False):
        rt = Runtime.create(gpu, 2, prompt, 64, chunk_tokens=1024, cuda_graphs=graphs)
        got = [rt.prefill(ids[:, :prompt].cuda())]
        got += [rt.decode(ids[:, t].cuda()).clone() for t in range(prompt, prompt + 63)]
        results[graphs] = torch.stack(got, 1)
    err = _rel(results[True], want)
    per_step = max(_rel(results[True][:, i], want[:, i]) for i in range(64))
    print(f"prompt {prompt} lightning prefill precision {precision}: logits rel {err:.2e}, worst step {per_step:.2e}")
    assert torch.isfinite(results[True]).all()
    assert err <= 1e-2
    assert _rel(results[True], results[False]) < 1e-3  # graph replay computes what the eager steps compute


def test_decode_top_k_in_two_stages_at_a_million_tokens(monkeypatch):
    """At SALA's sizes the decode top-k ranks segments of a row in parallel, then merges: the same blocks as the
    reference selection and as one pass over the row."""
    from sala_report import kernels
    from sala_report.kernels.sparse import naive, select

    L, p = 2**20 - 5, kernels.SparseParams()
    q = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, L, 2, 128, device="cuda", dtype=torch.bfloat16)
    k1 = kernels.compress_keys(k, kernel_size=32, stride=16)
    k2 = kernels.compress_keys(k, kernel_size=128, stride=64)
    pos = torch.tensor([L - 1], device="cuda")
    two = select.select_blocks_decode_triton(q, k1, k2, pos, params=p, max_kv_len=L)
    monkeypatch.setattr(select, "TOPK_SEGMENT", 2**15)
    one = select.select_blocks_decode_triton(q, k1, k2, pos, params=p, max_kv_len=L)
    ref = naive.select_blocks(q, k1, k2, q_start=L - 1, kv_len=L, params=p, causal=False)
    assert torch.equal(two, one)
    assert torch.equal(two, ref)


class LetterTokenizer:
    """A fake with the Tokenizer calls generate() makes: id i is one letter."""

    eos_token_ids = [2]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(65 + i % 26) for i in ids)


def test_generate_on_gpu_plans_memory_and_streams(bf16_checkpoint):
    gpu = load_model(bf16_checkpoint, device="cuda")
    gen = generate(
        gpu,
        LetterTokenizer(),
        [3 + i % 120 for i in range(1200)],
        GenerationConfig(max_new_tokens=40, temperature=0, stop_token_ids=[]),
    )
    text = "".join(gen)
    assert gen.completion_tokens == 40 and gen.finish_reason == "length" and text == gen.text
    with pytest.raises(ModelError, match="fit"):
        Runtime.create(gpu, 64, 10**9, 256)  # far beyond the card: refused up front, nothing allocated


_RSS_SCRIPT = """
import json, sys, torch
from pathlib import Path
def status(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
torch.zeros(1, device='cuda')
from sala_report.model import load_model
import safetensors
base = status('VmRSS:')
try:
    Path('/proc/self/clear_refs').write_text('5')  # reset the peak (VmHWM) to the current RSS
except OSError:
    pass
lm = load_model(sys.argv[1], device='cuda')
torch.cuda.synchronize()
print(json.dumps({'base': base, 'peak': status('VmHWM:'), 'gpu': torch.cuda.memory_allocated(),
                  'checksum': float(lm.model.layers[1].mlp.down_proj.weight.float().sum())}))
"""


def test_sharded_checkpoint_loads_to_the_gpu_without_a_host_copy(tmp_path):
    """4 layers of the real model (both mixer kinds, real widths) in 4 bf16 shards, as the official checkpoint is
    laid out: host memory while loading must stay far below one shard."""
    config = json.loads(REAL_CONFIG.read_text())
    config["num_hidden_layers"] = 4
    config["mixer_types"] = config["mixer_types"][:2] * 2
    from sala_report.model.weights import expected_tensors

    with torch.device("meta"):
        from sala_report.model.model import CausalLM

        shapes = expected_tensors(CausalLM(ModelConfig.from_dict(config)))
    names = list(shapes)
    g = torch.Generator().manual_seed(0)
    weight_map, down = {}, None
    for i in range(4):
        fname = f"model-{i + 1:05d}-of-00004.safetensors"
        part = {n: (torch.randn(shapes[n], generator=g) * 0.02).to(torch.bfloat16) for n in names[i::4]}
        if "model.layers.1.mlp.down_proj.weight" in part:
            down = float(part["model.layers.1.mlp.down_proj.weight"].float().sum())
        save_file(part, str(tmp_path / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
        del part
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(config))
    largest = max(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    run = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    grew = got["peak"] - got["base"]
    print(
        f"checkpoint {total / 1e9:.2f} GB in 4 shards (largest {largest / 1e9:.2f} GB): host RSS grew by {grew / 1e9:.3f} GB "
        f"while loading (base {got['base'] / 1e9:.2f} GB); GPU {got['gpu'] / 1e9:.2f} GB"
    )
    assert got["gpu"] >= total * 0.99
    assert abs(got["checksum"] - down) <= 1e-3 * max(1.0, abs(down))
    assert grew < 0.25 * largest
