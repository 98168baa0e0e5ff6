"""The multi-level firing neuron (snnexp/neurons/mlf.py) against an independent unrolled reference written from the
official MLF_unit, and a fast end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

import snnexp.train
from helpers.neurons import scaled_input as sample_input
from helpers.neurons import spikes_and_input_grad
from helpers.runs import compose_config
from snnexp.neurons import MLF


class RectSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, theta, a):
        ctx.save_for_backward(u)
        ctx.args = (theta, a)
        return (u >= theta).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        theta, a = ctx.args
        return grad * ((u - theta).abs() < a / 2).to(u.dtype) / a, None, None


def reference_mlf(x_seq, thresholds, a=1.0, tau=0.25):
    """MLF_unit: u_k = tau u_k (1 - spike_k(u_k)) + x for each level k; output sum_k spike_k(u_k)."""
    us = [torch.zeros_like(x_seq[0]) for _ in thresholds]
    out = []
    for x in x_seq:
        us = [tau * u * (1 - RectSpike.apply(u, th, a)) + x for u, th in zip(us, thresholds)]
        out.append(sum(RectSpike.apply(u, th, a) for u, th in zip(us, thresholds)))
    return torch.stack(out)


@pytest.mark.parametrize("levels,spacing", [(3, 1.0), (2, 1.0), (4, 0.5)])
def test_mlf_matches_unrolled_reference_spikes_and_gradients(levels, spacing):
    x = sample_input(scale=2.0)
    neuron = MLF(levels=levels, level_spacing=spacing)
    y, g = spikes_and_input_grad(neuron, x)
    thresholds = [0.6 + k * spacing for k in range(levels)]
    y_ref, g_ref = spikes_and_input_grad(lambda x: reference_mlf(x, thresholds, a=spacing), x)
    assert y.shape == x.shape and y.max() >= 2  # several levels fire at once
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("neuron", ["mlf"])
def test_each_new_neuron_trains_resnet19_fast_dev_run(tmp_path, neuron):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", f"neuron={neuron}"],
                         tmp_path / "run")
    snnexp.train.run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
