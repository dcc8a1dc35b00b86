"""Offline int4 pieces (model/gptq.py): GPTQ layer by layer on the quantized model's own activations, and the grid
refit after GPTQ, each checked against an independent computation."""

from __future__ import annotations

import pytest
import torch

from sala_report.kernels.quant import naive
from sala_report.model import load_model, quant
from sala_report.model.gptq import gptq_int4, quantize_sequential, refit_grid


def _inputs_of(lm, batches, names):
    """{linear name: XᵀX / tokens} of each linear's input in lm's own forward, taken by hooks (not by gptq.py)."""
    sums, hooks = {}, []
    for name in names:

        def hook(mod, args, _out, name=name):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            s, n = sums.get(name, (0, 0))
            sums[name] = (s + x.T @ x, n + x.shape[0])

        hooks.append(lm.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        for ids in batches:
            lm(ids)
    for h in hooks:
        h.remove()
    return {n: s / c for n, (s, c) in sums.items()}


@pytest.mark.parametrize("family", ["llama", "sala"])
def test_sequential_hessians_come_from_the_quantized_model(family, checkpoint):
    """Layer by layer in forward order: each linear's H equals its input's second moment in the model as finally
    quantized (everything upstream was rounded before it was measured), and differs from the fp32 model's."""
    lm = load_model(checkpoint(family), device="cpu", dtype=torch.float32)
    fp = load_model(checkpoint(family), device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 128, (1, 40), generator=g), torch.randint(0, 128, (1, 24), generator=g)]
    seen: dict[str, torch.Tensor] = {}
    order: list[list[str]] = []

    def rtn(names, hessian):
        order.append(names)
        for n in names:
            seen[n] = hessian
            w = lm.get_submodule(n).weight.detach()
            quant.set_module(lm, n, quant.QuantLinear(naive.quantize_int4(w, zero=True, group=32)))

    quantize_sequential(lm, batches, rtn)
    body = [n for n, role in quant.target_linears(lm) if role == "body"]
    assert sorted(seen) == sorted(body)
    assert order[0] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
        *order[0][3:],
    ]
    assert order[1] == ["model.layers.0.self_attn.o_proj"]
    final, ref = _inputs_of(lm, batches, body), _inputs_of(fp, batches, body)
    for n in body:
        err = ((seen[n] - final[n]).norm() / final[n].norm()).item()
        assert err < 1e-5, (n, err)
    last = body[-1]  # the last down projection: every linear before it was rounded
    assert ((ref[last] - final[last]).norm() / final[last].norm()).item() > 1e-3


def test_sequential_without_true_order_takes_a_layer_at_once(checkpoint):
    """true_sequential=False: one stage list per layer, o_proj's H from unrounded q/k/v (the fp32 model's, layer 0)."""
    lm = load_model(checkpoint("llama"), device="cpu", dtype=torch.float32)
    fp = load_model(checkpoint("llama"), device="cpu", dtype=torch.float32)
    batches = [torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(4))]
    seen = {}

    def rtn(names, hessian):
        for n in names:
            seen[n] = hessian
            w = lm.get_submodule(n).weight.detach()
            quant.set_module(lm, n, quant.QuantLinear(naive.quantize_int4(w, zero=True, group=32)))

    quantize_sequential(lm, batches, rtn, true_sequential=False)
    o = "model.layers.0.self_attn.o_proj"
    ref = _inputs_of(fp, batches, [o])[o]
    assert ((seen[o] - ref).norm() / ref.norm()).item() < 1e-6


def _row_errors(q: naive.PackedWeight, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    d = naive.dequantize(q).double() - w.double()
    return ((d @ h) * d).sum(1)


def test_refit_grid_solves_each_rows_least_squares():
    """Against an explicit design matrix per row ([K, 2 groups]: codes per group, ones per group) solved by lstsq
    on H's Cholesky factor; and the refit never leaves a larger trace(ΔW H ΔWᵀ) than GPTQ's grid."""
    g = torch.Generator().manual_seed(0)
    K, N, T, G = 200, 12, 1000, 128
    x = torch.randn(T, K, generator=g) @ (torch.eye(K) + torch.randn(K, K, generator=g) / K**0.5)
    w = torch.randn(N, K, generator=g) * 0.05
    h = (x.double().T @ x.double()) / T
    L = torch.linalg.cholesky(h)
    for zero in (True, False):
        p = gptq_int4(w, h, zero=zero, damp=0.01)
        r = refit_grid(w, p, h)
        assert torch.equal(r.data, p.data)
        assert (_row_errors(r, w, h) <= _row_errors(p, w, h)).all()
        assert _row_errors(r, w, h).sum() < 0.995 * _row_errors(p, w, h).sum()
        codes = naive.unpack_int4(p.data, G).double().reshape(N, -1)[:, :K]
        for n in range(3):
            A = torch.zeros(K, 4 if zero else 2, dtype=torch.float64)
            for gi in range(2):
                cols = slice(gi * G, min(K, (gi + 1) * G))
                A[cols, gi] = codes[n, cols] if zero else codes[n, cols] - 8
                if zero:
                    A[cols, 2 + gi] = 1
            theta = torch.linalg.lstsq(L.T @ A, L.T @ w[n].double()[:, None]).solution[:, 0]
            torch.testing.assert_close(r.scale[n].double(), theta[:2], rtol=2e-3, atol=0)
            if zero:
                torch.testing.assert_close(r.zero[n].double(), theta[2:], rtol=2e-3, atol=2e-4)


def test_sequential_offline_command_writes_a_checkpoint_the_loader_reads(checkpoint, tmp_path):
    """quantize_offline(sequential=True): q/k/v (one input) are rounded as one stacked matrix and split back; the
    folder reads back equal to the model in memory and every body linear is int4 with zero points."""
    from sala_report.model import quant_checkpoint
    from sala_report.model.quantize import OfflineOptions, quantize_offline

    lm = load_model(checkpoint("sala"), device="cpu", dtype=torch.float32)
    calib = [torch.randint(0, 128, (1, 200), generator=torch.Generator().manual_seed(5))]
    quantize_offline(lm, calib, "gptq", OfflineOptions(sequential=True, group=32))
    back = load_model(quant_checkpoint.save(lm, tmp_path / "seq", method="gptq"), device="cpu")
    for name, role in quant.target_linears(back):
        m = back.get_submodule(name)
        assert (m.fmt, m.zeros is not None) == (("int8", False) if role == "head" else ("int4", True)), name
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        assert torch.equal(back(ids), lm(ids))
