"""I-LIF integer spikes (snnexp/neurons/ilif.py) against an independent unrolled reference written from SpikeYOLO's
mem_update, the binary expansion of integer spikes, and a fast end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import snnexp.train
from helpers.neurons import scaled_input as sample_input
from helpers.neurons import spikes_and_input_grad
from helpers.runs import compose_config
from snnexp.models.layers import SeqToBatch
from snnexp.neurons import ILIF, expand_to_binary


class Quant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, D):
        ctx.save_for_backward(x)
        ctx.D = D
        return torch.round(torch.clamp(x, min=0, max=D))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        grad = grad.clone()
        grad[x < 0] = 0
        grad[x > ctx.D] = 0
        return grad, None


def reference_ilif(x_seq, D, normalise, decay=0.25):
    """SpikeYOLO's mem_update: mem = (mem_old - spike.detach()) * decay + x; spike = round(clamp(mem, 0, D))."""
    out, mem_old, spike = [], None, None
    for i, x in enumerate(x_seq):
        mem = x if i == 0 else (mem_old - spike.detach()) * decay + x
        spike = Quant.apply(mem, D)
        mem_old = mem
        out.append(spike / D if normalise else spike)
    return torch.stack(out)


@pytest.mark.parametrize("D", [1, 4])
@pytest.mark.parametrize("normalise", [True, False])
def test_ilif_matches_unrolled_reference_spikes_and_gradients(D, normalise):
    x = sample_input(scale=2.5)
    neuron = ILIF(D=D, normalise=normalise)
    y, g = spikes_and_input_grad(neuron, x)
    y_ref, g_ref = spikes_and_input_grad(lambda x: reference_ilif(x, D, normalise), x)
    counts = y * D if normalise else y
    assert torch.equal(counts, counts.round()) and counts.min() == 0 and counts.max() == D
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)


# ------------------------------------------------------------------------------- I-LIF binary expansion


def test_expand_to_binary_groups_of_D_sum_to_the_integer_counts():
    D = 4
    counts = torch.randint(0, D + 1, (3, 2, 5)).double()
    binary = expand_to_binary(counts, D)
    assert binary.shape == (3 * D, 2, 5)
    assert set(torch.unique(binary).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(binary.unflatten(0, (3, D)).sum(1), counts)
    # the counts' spikes come first in each group: d < N[t]
    assert torch.equal(binary[1 * D + 0], (counts[1] > 0).double())


def test_a_linear_layer_on_the_binary_expansion_summed_over_D_equals_it_on_the_integer_spikes():
    torch.manual_seed(0)
    D, T = 4, 3
    neuron = ILIF(D=D, normalise=False)
    spikes = neuron(2.5 * torch.randn(T, 2, 6) + 1.0).detach()
    layer = SeqToBatch(nn.Linear(6, 7, bias=False)).double()
    binary = expand_to_binary(spikes, D).double()
    summed = layer(binary).unflatten(0, (T, D)).sum(1)
    torch.testing.assert_close(summed, layer(spikes.double()))
    # I-LIF(normalise=True) outputs N / D: expanding them gives the same binary spikes
    normalised = ILIF(D=D, normalise=True)(2.5 * torch.randn(T, 2, 6)).detach()
    torch.testing.assert_close(expand_to_binary(normalised, D, normalised=True).unflatten(0, (T, D)).sum(1) / D,
                               normalised)


def test_expand_to_binary_refuses_non_integer_counts():
    with pytest.raises(ValueError, match="integer spike counts"):
        expand_to_binary(torch.tensor([[0.5]]), 4)
    with pytest.raises(ValueError, match="integer spike counts"):
        expand_to_binary(torch.tensor([[5.0]]), 4)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("neuron", ["ilif"])
def test_each_new_neuron_trains_resnet19_fast_dev_run(tmp_path, neuron):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", f"neuron={neuron}"],
                         tmp_path / "run")
    snnexp.train.run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
