"""Ternary spikes (snnexp/neurons/ternary.py) against an independent unrolled reference written from the official code
(yfguo91/Ternary-Spike spike_layer.py), the learnt amplitude and its re-parameterisation into the next weight layer,
and a fast end-to-end run."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from torch import nn

import snnexp.train
from helpers.neurons import scaled_input as sample_input
from helpers.neurons import spikes_and_input_grad
from helpers.runs import compose_config
from snnexp.errors import SnnexpError
from snnexp.models import create_model
from snnexp.models.layers import SeqToBatch
from snnexp.neurons import Ternary, fold_ternary_amplitudes


def reference_ternary(x_seq, amplitude, decay=0.25):
    """Ternary-Spike's mem_update: u = decay u + x; s = sign(u) [|u| >= 0.5] with the STE of clamp(u, -1, 1);
    u = u (1 - |s|); output a s."""
    u = torch.zeros_like(x_seq[0])
    out = []
    for x in x_seq:
        u = u * decay + x
        hard = torch.sign(u) * (u.abs() >= 0.5).to(u.dtype)
        soft = torch.clamp(u, -1, 1)
        s = (hard - soft).detach() + soft
        u = u * (1 - s.abs())
        out.append(s * amplitude)
    return torch.stack(out)


@pytest.mark.parametrize("amplitude", [1.0, 1.7])
def test_ternary_matches_unrolled_reference_spikes_and_gradients(amplitude):
    x = sample_input()
    neuron = Ternary(amplitude=amplitude).double()
    amplitude = neuron.amplitude.item()  # 1.7 as stored (float32, then float64)
    y, g = spikes_and_input_grad(neuron, x)
    y_ref, g_ref = spikes_and_input_grad(lambda x: reference_ternary(x, amplitude), x)
    assert set(torch.unique(y / amplitude).tolist()) == {-1.0, 0.0, 1.0}
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)


def test_ternary_amplitude_is_learnt_with_the_gradient_of_a_times_s():
    x = sample_input()
    neuron = Ternary(amplitude=1.3).double()
    y = neuron(x)
    y.sum().backward()
    torch.testing.assert_close(neuron.amplitude.grad, (y.detach() / neuron.amplitude.detach()).sum())
    assert not isinstance(Ternary(learn_amplitude=False).amplitude, nn.Parameter)


# ---------------------------------------------------------------------------- ternary re-parameterisation


def set_random_amplitudes(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    neurons = [m for m in model.modules() if isinstance(m, Ternary)]
    with torch.no_grad():
        for m in neurons:
            m.amplitude.fill_(0.5 + 1.5 * torch.rand((), generator=g).item())
    return neurons


def randomise_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def test_folding_ternary_amplitudes_keeps_a_sequential_networks_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(
        SeqToBatch(nn.Conv2d(2, 8, 3, padding=1)), SeqToBatch(nn.BatchNorm2d(8)), Ternary(),
        SeqToBatch(nn.Conv2d(8, 8, 3, padding=1, bias=True)), SeqToBatch(nn.BatchNorm2d(8)), Ternary(),
        SeqToBatch(nn.AvgPool2d(2)), SeqToBatch(nn.Flatten()), SeqToBatch(nn.Linear(8 * 4 * 4, 5)),
    ).eval()
    neurons = set_random_amplitudes(model)
    randomise_batchnorm(model)
    x = 2 * torch.randn(3, 2, 2, 8, 8)
    with torch.no_grad():
        before = model(x)
        folded = fold_ternary_amplitudes(model)
        after = model(x)
    assert folded == [("2", "3.module"), ("5", "8.module")]
    assert all(n.amplitude.item() == 1.0 for n in neurons)
    assert model[2](model[1](model[0](x))).abs().sum() > 0 and model[5].amplitude.item() == 1.0
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_folding_refuses_an_amplitude_with_no_weight_layer_before_the_next_neuron():
    model = nn.Sequential(Ternary(amplitude=2.0), Ternary(), SeqToBatch(nn.Linear(3, 3)))
    with pytest.raises(SnnexpError, match="no Linear/Conv layer"):
        fold_ternary_amplitudes(model)


def test_folding_ternary_amplitudes_keeps_vggsnn_outputs_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("vggsnn", neuron=partial(Ternary), input_shape=(2, 16, 16), num_classes=10).eval()
    set_random_amplitudes(model)
    randomise_batchnorm(model)
    x = torch.randn(2, 2, 16, 16).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # T = 2 steps of the same input
    with torch.no_grad():
        before = model(x).logits
        folded = fold_ternary_amplitudes(model)
        after = model(x).logits
    assert len(folded) == 8 and folded[-1][1].startswith("classifier")
    assert before.abs().sum() > 0
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_folding_is_not_exact_across_a_resnet_identity_shortcut_as_documented():
    """The documented limit: a spike tensor that also feeds an identity shortcut keeps its amplitude there."""
    torch.manual_seed(0)
    model = create_model("resnet19", neuron=partial(Ternary), input_shape=(2, 16, 16), num_classes=10).eval()
    set_random_amplitudes(model)
    with torch.no_grad():  # BN weights > 1 keep the spikes alive through the 19 layers
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(2.0)
    x = torch.randn(2, 2, 16, 16).unsqueeze(0).repeat(2, 1, 1, 1, 1)  # T = 2 steps of the same input
    with torch.no_grad():
        before = model(x).logits
        fold_ternary_amplitudes(model)
        after = model(x).logits
    assert before.std() > 0
    assert not torch.allclose(after, before, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize("neuron", ["ternary"])
def test_each_new_neuron_trains_resnet19_fast_dev_run(tmp_path, neuron):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", f"neuron={neuron}"],
                         tmp_path / "run")
    snnexp.train.run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
