"""Ternary, MLF and I-LIF neurons against independent unrolled references written from the official code,
the ternary amplitude re-parameterisation, I-LIF's binary expansion, and a fast end-to-end run of each."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from torch import nn

import snnexp.train
from conftest import compose_config
from snnexp.errors import SnnexpError
from snnexp.models import create_model
from snnexp.models.layers import SeqToBatch
from snnexp.neurons import ILIF, MLF, MultiStepNeuron, Ternary, expand_to_binary, fold_ternary_amplitudes


def sample_input(shape=(8, 4, 6), scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64) + 0.3 * scale).requires_grad_()


def spikes_and_input_grad(fn, x, seed=1):
    """``fn(x)`` and ``d <y, w> / dx`` for a fixed random ``w``."""
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    return y.detach(), grad


# ------------------------------------------------------------------------------------------- references
# Written from the official code (yfguo91/Ternary-Spike spike_layer.py; MLF_unit; SpikeYOLO mem_update),
# sharing no code with snnexp.


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


# ------------------------------------------------------------------------------------------- the neurons


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


@pytest.mark.parametrize("make", [Ternary, MLF, ILIF], ids=lambda c: c.__name__)
def test_streaming_steps_match_the_sequence_forward(make):
    neuron = make().double()
    assert isinstance(neuron, MultiStepNeuron)
    x = sample_input(scale=2.0).detach()
    v, outs = None, []
    for x_t in x:
        s, v = neuron.step(x_t, v)
        outs.append(s)
    torch.testing.assert_close(torch.stack(outs), neuron(x))


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


@pytest.mark.parametrize("neuron", ["ternary", "mlf", "ilif"])
def test_each_new_neuron_trains_resnet19_fast_dev_run(tmp_path, neuron):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", f"neuron={neuron}"],
                         tmp_path / "run")
    snnexp.train.run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
