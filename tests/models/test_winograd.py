"""Switching a model's 3x3 convolutions to Winograd (snnexp/models/winograd.py): which layers turn, that the state
dict and a float64 model stay as they were, that a spiking ResNet-19's step matches torch's convolutions, and the
``winograd`` option of a run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.models import build, seq
from helpers.runs import compose_config
from snnexp.kernels import winograd as kernels
from snnexp.models.winograd import WinogradConv2d, convertible, use_winograd
from snnexp.train import build as build_run

needs_winograd = pytest.mark.skipif(not kernels.available(), reason="the Winograd transforms cannot be built here")


def test_only_3x3_stride_1_or_2_padding_1_convolutions_turn():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, 16, 1),
                          nn.Conv2d(16, 16, 3, 1, 2, dilation=2), nn.Conv2d(16, 16, 3, 1, 1, groups=2),
                          nn.Conv2d(16, 16, 3, 1, 1, padding_mode="circular"), nn.Conv2d(16, 32, 3, 1, 1, bias=False),
                          nn.Conv2d(16, 16, 3, 3, 1), nn.Conv2d(16, 16, 3, 2, 0))
    before = copy.deepcopy(model.state_dict())
    assert use_winograd(model) == 3
    assert [type(m) is WinogradConv2d for m in model] == [True, True, False, False, False, False, True, False, False]
    assert not convertible(model[0])  # already turned
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_resnet19_turns_its_3x3_convolutions():
    model = build("resnet19", (3, 32, 32))
    expected = sum(convertible(m) for m in model.modules())
    assert expected > 10 and use_winograd(model) == expected
    assert sum(m.stride == (2, 2) for m in model.modules() if type(m) is WinogradConv2d) == 2  # stages 2 and 3
    assert all(m.kernel_size == (1, 1) for m in model.modules() if type(m) is nn.Conv2d)  # the shortcuts stay


@needs_winograd
def test_a_float64_model_is_untouched_and_a_float32_one_close():
    torch.manual_seed(0)
    model = build("resnet19", (3, 16, 16))
    turned = copy.deepcopy(model)
    use_winograd(turned)
    x = seq(torch.rand(2, 3, 16, 16))
    with torch.no_grad():
        assert torch.equal(turned.double()(x.double()).logits, model.double()(x.double()).logits)
        reference = model.float()(x).logits
        ours = turned.float()(x).logits
    assert ((ours - reference).abs().max() / reference.abs().max()).item() < 1e-4


@needs_winograd
def test_a_training_step_of_spiking_resnet19_matches_torch_convolutions(tmp_path):
    """The default run (winograd and im2col_backward on) against both off (torch's convolutions): loss and every
    gradient within float32 rounding of F(4x4, 3x3) (the spikes of a neuron whose input lies within that rounding
    of its threshold could flip; this seed's do not)."""
    results = []
    for switch in ("true", "false"):
        cfg = compose_config(["model=resnet19", "data=digits", "neuron=tet_lif", "data.batch_size=4", "seed=0",
                              f"winograd={switch}", f"im2col_backward={switch}"], tmp_path / switch)
        torch.manual_seed(0)
        _, module = build_run(cfg)
        turned = sum(type(m) is WinogradConv2d for m in module.model.modules())
        torch.manual_seed(1)
        x, y = torch.rand(4, *module.input_shape), torch.arange(4) % module.num_classes
        with module.spike_packing.saving():
            loss = module.method.loss(module(x), y)
        loss.backward()
        results.append((turned, loss.detach(), {n: p.grad for n, p in module.model.named_parameters()}))
    (turned, loss, grads), (untouched, reference_loss, reference_grads) = results
    assert turned > 10 and untouched == 0
    torch.testing.assert_close(loss, reference_loss, rtol=1e-5, atol=0)
    for name, grad in reference_grads.items():
        scale = grad.abs().max().item()
        assert (grads[name] - grad).abs().max().item() <= 1e-4 * scale + 1e-9, name


@needs_winograd
def test_a_vggsnn_step_through_its_stride_2_layers_matches_torch_convolutions():
    """VGGSNN at 24x24: stride-2 layers 24 -> 12 (64 channels: torch's forward, Winograd's backward), 12 -> 6 and
    6 -> 3 (Winograd both ways; 3 -> 2 stays torch's) between Winograd stride-1 layers, against torch's convolutions
    on the same weights: loss and every gradient within float32 rounding (no spike of this seed flips; the conv
    biases, BN right after, have zero gradient up to rounding, about 1e-7)."""
    torch.manual_seed(0)
    model = build("vggsnn", (2, 24, 24))
    turned = copy.deepcopy(model)
    assert use_winograd(turned) == 8
    x, y = seq(torch.rand(2, 2, 24, 24)), torch.tensor([1, 3])
    losses, grads = [], []
    for net in (turned, model):
        loss = nn.functional.cross_entropy(net(x).logits.mean(0), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad for name, p in net.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    for name, grad in grads[1].items():
        assert (grads[0][name] - grad).abs().max().item() <= 1e-4 * grad.abs().max().item() + 5e-6, name


@needs_winograd
def test_a_stride_2_layer_without_whole_tiles_takes_the_im2col_backward():
    """A 16x16 input (8x8 outputs, not whole 3x3 tiles): torch's forward, exactly, and the im2col backward."""
    torch.manual_seed(0)
    layer = nn.Conv2d(16, 32, 3, 2, 1)
    turned = copy.deepcopy(layer)
    use_winograd(turned)
    x = (torch.rand(4, 16, 16, 16) < 0.2).float()
    out = turned(x)
    assert torch.equal(out, layer(x)) and type(out.grad_fn).__name__ == "Conv3x3Stride2Backward"
    whole = turned(torch.rand(4, 16, 12, 12))  # 6x6 outputs: Winograd's
    assert type(whole.grad_fn).__name__ == "Winograd3x3Backward"
