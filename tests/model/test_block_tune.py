"""Block-wise grid tuning (model/block_tune.py): with the int4 codes fixed, each decoder layer's output moves towards
the full-precision layer's, measured here through the models' own forward, not through block_tune's code."""

from __future__ import annotations

import pytest
import torch

from sala_report.kernels.quant import naive
from sala_report.model import load_model, quant
from sala_report.model.block_tune import TuneOptions, tune_grids


def _layer_errors(fp, lm, ids, *, feed_fp: bool = True) -> list[float]:
    """Per decoder layer: squared distance of lm's residual-stream output from fp's; with `feed_fp` each layer of
    lm is fed the fp model's input to that layer (forward pre-hooks swap it in), so errors do not pile up across
    layers, else lm runs on its own stream."""
    seen_in, seen_out, hooks = {}, {}, []
    for i, layer in enumerate(fp.model.layers):

        def keep(mod, args, out, i=i):
            seen_in[i] = args[:2]
            seen_out[i] = out[0] + mod.residual_scale * out[1]

        hooks.append(layer.register_forward_hook(keep))
    with torch.no_grad():
        fp(ids)
    for h in hooks:
        h.remove()
    errors, hooks = [], []
    for i, layer in enumerate(lm.model.layers):

        def swap(mod, args, i=i):
            return (*seen_in[i], *args[2:])

        def measure(mod, args, out, i=i):
            errors.append(float(((out[0] + mod.residual_scale * out[1] - seen_out[i]) ** 2).sum()))

        hooks += [layer.register_forward_pre_hook(swap)] if feed_fp else []
        hooks.append(layer.register_forward_hook(measure))
    with torch.no_grad():
        lm(ids)
    for h in hooks:
        h.remove()
    return errors


def _quantized(folder, packed):
    lm = load_model(folder, device="cpu", dtype=torch.float32)
    for n, p in packed.items():
        quant.set_module(lm, n, quant.QuantLinear(p))
    return lm


@pytest.mark.parametrize("family", ["llama", "sala"])
@pytest.mark.parametrize("stream", ["fp", "quant"])
def test_tuned_grids_bring_each_layer_closer_to_full_precision(family, stream, checkpoint):
    """Round-to-nearest grids, then tuned: codes unchanged, every layer's output error against the fp32 model's on
    the calibration text smaller (SALA's Lightning layers through their MLP alone), each layer fed what it was
    tuned on (the fp32 model's input, or the quantized model's own stream); the fp32 model is left as it was."""
    folder = checkpoint(family)
    fp = load_model(folder, device="cpu", dtype=torch.float32)
    lm = load_model(folder, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 128, (1, 96), generator=g) for _ in range(5)]
    packed = {
        n: naive.quantize_int4(lm.get_submodule(n).weight.detach(), zero=True, group=32)
        for n, role in quant.target_linears(lm)
        if role == "body"
    }
    tuned = tune_grids(lm, batches, packed, TuneOptions(epochs=10, lr=3e-3, stream=stream, held_out=1))
    assert sorted(tuned) == sorted(packed)
    for n, p in tuned.items():
        assert torch.equal(p.data, packed[n].data), n
        assert p.scale.dtype == torch.float16 and p.zero.dtype == torch.float16
    ids = torch.cat(batches[:-1], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(lm(ids), fp(ids), rtol=0, atol=0)
    before = _layer_errors(fp, _quantized(folder, packed), ids, feed_fp=stream == "fp")
    after = _layer_errors(fp, _quantized(folder, tuned), ids, feed_fp=stream == "fp")
    assert all(a < 0.97 * b for a, b in zip(after, before, strict=True)), (before, after)


def test_bad_tune_options_are_one_clear_error(checkpoint):
    lm = load_model(checkpoint("llama"), device="cpu", dtype=torch.float32)
    ids = [torch.zeros(1, 8, dtype=torch.long)] * 2
    with pytest.raises(ValueError, match="stream must be one of"):
        tune_grids(lm, ids, {}, TuneOptions(stream="bf16"))
    with pytest.raises(ValueError, match="held-out batches"):
        tune_grids(lm, ids[:1], {}, TuneOptions())


def test_offline_quantize_tunes_gptqs_grids_on_the_same_codes(checkpoint):
    """quantize_offline with block_tune: GPTQ's codes as without it, each layer's output error smaller."""
    from sala_report.model.quantize import OfflineOptions, quantize_offline

    folder = checkpoint("llama")
    fp = load_model(folder, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    calib = [torch.randint(0, 128, (1, 96), generator=g) for _ in range(5)]
    models = []
    for tune in (False, True):
        lm = load_model(folder, device="cpu", dtype=torch.float32)
        quantize_offline(lm, calib, "gptq", OfflineOptions(group=32, block_tune=tune))
        models.append(lm)
    plain, tuned = models
    for n, role in quant.target_linears(fp):
        a, b = plain.get_submodule(n), tuned.get_submodule(n)
        assert torch.equal(a.qweight, b.qweight), n
        assert (role == "head") == torch.equal(a.scales, b.scales), n
    ids = torch.cat(calib[:-1], dim=1)
    before, after = _layer_errors(fp, plain, ids, feed_fp=False), _layer_errors(fp, tuned, ids, feed_fp=False)
    assert all(a < b for a, b in zip(after, before, strict=True)), (before, after)
