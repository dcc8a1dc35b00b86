"""Quantized weights through the model: loading in each format, the quantized checkpoint round trip, the memory
plan's packed sizes and per-format contexts, GPTQ against round-to-nearest, and the settings' quantize field."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sala_report.kernels.quant import naive
from sala_report.model import load_model, quant, quant_checkpoint
from sala_report.model.config import ModelConfig
from sala_report.model.gptq import gptq_int4
from sala_report.model.plan import GiB, choose_format, format_contexts, packed_bytes, plan_memory, weight_bytes


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("fmt,limit", [("int8", 2e-2), ("int4", 2e-1), ("fp8", 8e-2)])
def test_quantized_sala_stays_close_to_its_weights(fmt, limit, checkpoint):
    folder = checkpoint("sala")
    ref = load_model(folder, device="cpu", dtype=torch.float32)
    lm = load_model(folder, device="cpu", dtype=torch.float32, quantize=fmt)
    assert lm.quantize == fmt and ref.quantize is None
    layer = lm.model.layers[1]
    assert isinstance(layer.self_attn.q_proj, quant.QuantLinear) and isinstance(layer.mlp.down_proj, quant.QuantLinear)
    assert lm.lm_head.fmt == quant.HEAD_FORMAT[fmt] and isinstance(lm.model.embed_tokens, nn.Embedding)
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = lm(ids), ref(ids)
    assert 0 < _rel(a, b) < limit


def test_tied_head_is_quantized_after_the_stream(checkpoint):
    lm = load_model(checkpoint("llama"), device="cpu", dtype=torch.float32, quantize="int4")
    assert isinstance(lm.lm_head, quant.QuantLinear) and lm.lm_head.fmt == "int8"
    assert lm.model.embed_tokens.weight.dtype == torch.float32


def test_quantized_checkpoint_round_trip(checkpoint, tmp_path):
    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32, quantize="int4")
    out = quant_checkpoint.save(lm, tmp_path / "q", method="rtn")
    back = load_model(out, device="cpu", dtype=torch.float32, quantize="int8")  # the folder's own format wins
    assert back.quantize == "int4" and back.model.layers[0].mlp.up_proj.scales.dtype == torch.float16
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(back(ids), lm(ids))


def test_bad_quantize_value_is_one_clear_error(checkpoint):
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_model(checkpoint("llama"), device="cpu", quantize="int3")
    assert load_model(checkpoint("llama"), device="cpu", quantize="auto").quantize is None  # no GPU: nothing to fit


def test_plan_counts_packed_weights(tiny_config):
    sala = ModelConfig.from_json(
        __import__("pathlib").Path(__file__).parents[1] / "data" / "model" / "minicpm-sala-config.json"
    )
    # hand-derived: a 4096 x 4096 int4 weight is 32 groups of 64 bytes per row plus an fp16 scale and zero per group
    assert packed_bytes(4096, 4096, "int4") == 4096 * 32 * 64 + 4096 * 32 * 4
    assert packed_bytes(4096, 4096, "int8") == 4096 * 4096 + 4096 * 4
    bf16, _ = weight_bytes(sala, torch.bfloat16, None)
    int8, scratch8 = weight_bytes(sala, torch.bfloat16, "int8")
    int4, _ = weight_bytes(sala, torch.bfloat16, "int4")
    assert bf16 == 9_477_203_968 * 2  # sala-model.md §1.4
    embed = 73448 * 4096 * 2
    assert 0.5 < (int8 - embed) / (bf16 - embed) < 0.51 and 0.26 < (int4 - embed) / (bf16 - embed) < 0.28
    assert scratch8 == 2 * 16384 * 4096 * 2  # the stacked gate/up weight, dequantised for prefill
    ctx = format_contexts(sala, 16 * GiB)
    assert ctx[None] == 0 and ctx["int8"] > 0 and ctx["int4"] > 1_000_000
    assert choose_format(sala, 141 * GiB, 1_048_576) is None
    assert choose_format(sala, 16 * GiB, 1_048_576) == "int4"
    reach = ctx["int4"]
    fits = plan_memory(sala, 1, reach, 256, free_bytes=16 * GiB, chunk_tokens=8192, quantize="int4")
    over = plan_memory(sala, 1, reach + 4096, 256, free_bytes=16 * GiB, chunk_tokens=8192, quantize="int4")
    assert fits.fits and not over.fits and "int4 weights" in over.describe()


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    g = torch.Generator().manual_seed(0)
    K, N, T = 256, 64, 2048
    mix = torch.randn(K, K, generator=g) / K**0.5 + torch.eye(K)
    x = torch.randn(T, K, generator=g) @ mix * torch.linspace(0.2, 3, K)  # correlated, uneven columns
    w = torch.randn(N, K, generator=g) * 0.05
    h = (x.double().T @ x.double()) / T
    rtn = naive.dequantize(naive.quantize_int4(w))
    opt = naive.dequantize(gptq_int4(w, h))
    err_rtn = (x @ (rtn - w).T).norm()
    err_opt = (x @ (opt - w).T).norm()
    assert err_opt < 0.9 * err_rtn
    # the result is still a valid int4 weight: re-quantizing it on its own grid changes nothing
    packed = gptq_int4(w, h)
    assert torch.equal(naive.dequantize(packed), opt)


@pytest.mark.parametrize("zero", [False, True])
def test_gptq_act_order_on_a_given_grid(zero):
    """Act order (columns by decreasing H diagonal) onto a fixed grid: the grid is kept as given, and the output
    error beats round-to-nearest on that same grid when a few input channels carry most of the energy."""
    g = torch.Generator().manual_seed(1)
    K, N, T = 256, 48, 4096
    x = torch.randn(T, K, generator=g) * torch.where(torch.rand(K, generator=g) < 0.05, 8.0, 0.5)
    x = x @ (torch.eye(K) + torch.randn(K, K, generator=g) / K)
    w = torch.randn(N, K, generator=g) * 0.05
    h = (x.double().T @ x.double()) / T
    grid = naive.quantize_int4(w, zero=zero)
    rtn = naive.dequantize(grid)
    for act_order in (False, True):
        p = gptq_int4(w, h, zero=zero, act_order=act_order, grid=(grid.scale, grid.zero))
        assert torch.equal(p.scale, grid.scale) and (p.zero is None) == (not zero)
        err, err_rtn = (x @ (naive.dequantize(p) - w).T).norm(), (x @ (rtn - w).T).norm()
        assert err < 0.9 * err_rtn, (act_order, err / err_rtn)


def test_clipping_with_zero_points_shrinks_each_end_on_its_own():
    """A group whose minimum is a lone outlier on a quiet input: clipping moves the bottom of the grid up and keeps
    the top, and the input-weighted error beats the min/max grid's."""
    from sala_report.model.clip import clip_int4

    g = torch.Generator().manual_seed(3)
    w = torch.rand(8, 128, generator=g) * 0.1  # 0 .. 0.1
    w[:, 5] = -0.3  # one outlier per row, at the bottom
    act = torch.ones(128)
    act[5] = 0.01
    p = clip_int4(w, act, zero=True)
    lo, hi = w.amin(1), w.amax(1)
    top = p.zero.float()[:, 0] + 15 * p.scale.float()[:, 0]
    assert ((p.zero.float()[:, 0] - lo) > 5 * (hi - top)).all()  # the outlier's end moves, the other hardly
    rtn = naive.quantize_int4(w, zero=True)
    err = lambda q: (((naive.dequantize(q) - w) ** 2) * act).sum()  # noqa: E731
    assert err(p) < err(rtn)


def test_input_hessians_are_the_inputs_second_moments(checkpoint):
    """q/k/v (and gate/up) read one tensor: one shared matrix, equal to XᵀX / T of that input taken by a hook."""
    from sala_report.model.gptq import input_hessians

    lm = load_model(checkpoint("llama"), device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 128, (1, 50), generator=torch.Generator().manual_seed(2))
    seen = {}
    attn = lm.model.layers[1].self_attn

    def keep(name):
        def hook(mod, args, out):
            seen[name] = args[0].reshape(-1, args[0].shape[-1]).double()

        return hook

    hooks = [attn.q_proj.register_forward_hook(keep("q")), attn.o_proj.register_forward_hook(keep("o"))]
    with torch.inference_mode():
        lm(ids)
    for h in hooks:
        h.remove()
    hs = input_hessians(lm, [ids])
    name = "model.layers.1.self_attn"
    assert hs[f"{name}.q_proj"] is hs[f"{name}.v_proj"]
    assert _rel(hs[f"{name}.q_proj"], seen["q"].T @ seen["q"] / 50) < 1e-6
    assert _rel(hs[f"{name}.o_proj"], seen["o"].T @ seen["o"] / 50) < 1e-6


def test_settings_carry_quantize():
    from sala_report.app.settings import ModelSettings

    assert ModelSettings().quantize == "auto"


@pytest.mark.parametrize("method", ["clip", "gptq", "gptq-g32-zero"])
def test_offline_methods_write_a_checkpoint_the_loader_reads(method, checkpoint, tmp_path):
    from sala_report.model.quantize import OfflineOptions, quantize_offline

    folder = checkpoint("sala")
    lm = load_model(folder, device="cpu", dtype=torch.float32)
    ref = load_model(folder, device="cpu", dtype=torch.float32)
    calib = [torch.randint(0, 128, (1, 200), generator=torch.Generator().manual_seed(5))]
    options = OfflineOptions(group=32, zero=True) if method.endswith("g32-zero") else None
    quantize_offline(lm, calib, method.split("-")[0], options)
    back = load_model(quant_checkpoint.save(lm, tmp_path / method, method=method), device="cpu")
    up = back.model.layers[0].mlp.up_proj
    assert (up.group, up.zeros is not None) == ((32, True) if options else (128, True))
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        assert torch.equal(back(ids), lm(ids)) and _rel(back(ids), ref(ids)) < 0.3
    assert json.loads((tmp_path / method / "quantization.json").read_text())["method"] == method


def test_quantize_command_reports_a_missing_calibration_text(tmp_path, capsys):
    from sala_report.model.quantize import main

    assert main(["smollm2-135m", str(tmp_path / "out"), "--calib", str(tmp_path / "absent.txt")]) == 2
    assert "cannot read the calibration text" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
