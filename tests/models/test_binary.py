"""ReverB-SNN's binary weights (snnexp/models/binary.py; Guo et al., ICML 2025): alpha * sign(W) with
``model.binary_weights=true``, the straight-through gradient, which layers stay real in every model, and the
re-parameterisation to plain +-1 weights for inference."""

import json
from collections import OrderedDict
from functools import partial

import pytest
import torch
from torch import nn

from helpers.runs import compose_config
from snnexp.models import SeqToBatch, create_model
from snnexp.models.binary import (BinaryWeight, ChannelScale, binary_parametrization, init_weight_, real_weights,
                                  reparameterise_binary, sign_weights, weights_for)
from snnexp.models.encoders import DirectEncoder
from snnexp.models.layers import SpikingModel
from snnexp.models.output import ModelOutput
from snnexp.neurons import LIF
from snnexp.neurons.reverb import ReverBLIF
from snnexp.train import build, run


def _sign(w):
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


class Small(SpikingModel):
    """conv(real) - BN - neuron - conv(bias, binary) - BN - neuron - fc(binary, no BN) - neuron - fc(dropout, BN)
    - neuron - classifier(real): every fold path of the re-parameterisation."""

    def __init__(self, neuron, input_shape=(3, 8, 8), num_classes=5, hidden_weights=sign_weights):
        super().__init__(input_shape, num_classes)
        C = input_shape[0]
        self.body = nn.Sequential(
            SeqToBatch(nn.Sequential(OrderedDict(conv=nn.Conv2d(C, 8, 3, padding=1, bias=False),
                                                 bn=nn.BatchNorm2d(8)))), neuron(),
            SeqToBatch(nn.Sequential(OrderedDict(conv=hidden_weights(nn.Conv2d(8, 8, 3, 2, 1, bias=True)),
                                                 bn=nn.BatchNorm2d(8)))), neuron())
        self.fc1 = SeqToBatch(hidden_weights(nn.Linear(8 * 4 * 4, 16)))
        self.sn1 = neuron()
        self.fc2 = SeqToBatch(nn.Sequential(hidden_weights(nn.Linear(16, 12)), nn.Dropout(0.3), nn.BatchNorm1d(12)))
        self.sn2 = neuron()
        self.classifier = SeqToBatch(nn.Linear(12, num_classes))

    def forward(self, x):
        x = self.body(self.check_sequence(x)).flatten(2)
        x = self.sn2(self.fc2(self.sn1(self.fc1(x))))
        return ModelOutput(logits=self.classifier(x), taps={})


def _randomise_norms(model):
    """Give every BatchNorm non-trivial affine parameters and running statistics, as after training, such that
    the neurons fire (a silent network would make the output comparisons vacuous)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean = torch.randn(n, generator=g) * 0.01
            m.running_var = torch.rand(n, generator=g) * 0.01 + 0.002  # small: the neurons fire
        if isinstance(m, BinaryWeight):  # a trained factor, no longer mean |W|, some channels negative
            m.alpha.data = m.alpha.data * (torch.rand(m.alpha.shape, generator=g) + 0.5)
            m.alpha.data[0] = -m.alpha.data[0]
    return model


# ----------------------------------------------------------------------------------------- binarisation


def test_binarised_weight_is_sign_times_per_channel_mean_abs_at_init():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    latent = conv.weight.detach().clone()
    sign_weights(conv)
    alpha = latent.abs().mean(dim=(1, 2, 3))  # XNOR-Net's per-output-channel scale, the initial factor
    expected = alpha.view(-1, 1, 1, 1) * _sign(latent)
    assert torch.equal(conv.parametrizations.weight.original, latent)  # the latent real weights are kept
    assert torch.allclose(conv.weight, expected)
    x = torch.randn(2, 4, 5, 5)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, expected, conv.bias), atol=1e-6)


def test_sign_of_zero_is_plus_one():
    layer = nn.Linear(3, 2)
    layer.weight.data = torch.tensor([[0.0, -0.5, 0.5], [0.0, 0.0, -1.0]])
    sign_weights(layer)
    assert torch.equal(layer.weight.detach() / binary_parametrization(layer).alpha.detach().view(-1, 1),
                       torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]))


def test_straight_through_gradient_passes_only_where_abs_w_at_most_one_and_alpha_gets_its_own():
    layer = nn.Linear(4, 3, bias=False)
    w = torch.tensor([[0.5, -2.0, 1.0, -0.3], [3.0, -0.9, 0.0, 1.5], [-1.2, 0.2, 0.7, -0.1]])
    layer.weight.data = w.clone()
    sign_weights(layer)
    p = binary_parametrization(layer)
    x, g_out = torch.randn(5, 4), torch.randn(5, 3)
    (layer(x) * g_out).sum().backward()
    g_wb = g_out.T @ x  # dL/dW_b for y = x W_b^T
    alpha = w.abs().mean(1)
    expected_w = g_wb * alpha.view(-1, 1) * (w.abs() <= 1).float()
    assert torch.allclose(layer.parametrizations.weight.original.grad, expected_w, atol=1e-6)
    assert torch.allclose(p.alpha.grad, (g_wb * _sign(w)).sum(1), atol=1e-6)


def test_binary_weights_flag_picks_the_hidden_layer_factory():
    assert weights_for(True) is sign_weights and weights_for(False) is real_weights
    layer = nn.Linear(3, 2)
    assert real_weights(layer) is layer and binary_parametrization(layer) is None
    with pytest.raises(TypeError, match="BatchNorm2d"):
        sign_weights(nn.BatchNorm2d(3))


def test_init_weight_initialises_the_latent_weight_and_resets_alpha():
    torch.manual_seed(0)
    plain = nn.Conv2d(4, 6, 3)
    torch.manual_seed(0)
    binary = sign_weights(nn.Conv2d(4, 6, 3))
    torch.manual_seed(1)
    init_weight_(plain, nn.init.kaiming_normal_, mode="fan_out")
    torch.manual_seed(1)
    init_weight_(binary, nn.init.kaiming_normal_, mode="fan_out")
    latent = binary.parametrizations.weight.original
    assert torch.equal(latent, plain.weight)  # the same draw as the real layer's
    assert torch.equal(binary_parametrization(binary).alpha, plain.weight.detach().abs().mean(dim=(1, 2, 3)))


def test_input_and_output_layers_stay_real_the_rest_binary():
    model = Small(partial(LIF))
    first, second = model.body[0].module.conv, model.body[2].module.conv
    assert binary_parametrization(first) is None and binary_parametrization(model.classifier.module) is None
    assert all(binary_parametrization(m) is not None for m in (second, model.fc1.module, model.fc2.module[0]))
    resnet = create_model("resnet19", neuron=partial(LIF), input_shape=(3, 16, 16), num_classes=10,
                          binary_weights=True)
    real = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
            and binary_parametrization(m) is None]
    assert real == ["stem.0.module.conv", "classifier.module"]


def test_binary_weights_false_leaves_the_model_unchanged():
    model = create_model("resnet20", neuron=partial(LIF), input_shape=(3, 16, 16), num_classes=10)
    assert not any(isinstance(m, BinaryWeight) for m in model.modules())


# ------------------------------------------------------------------------------------ re-parameterisation


EXCITABLE = {"v_threshold": 0.05, "decay_input": False, "backend": "torch"}  # so that spikes reach the classifier of an untrained net


@pytest.mark.parametrize("neuron", [partial(LIF, **EXCITABLE), partial(ReverBLIF, **EXCITABLE)], ids=["lif", "reverb"])
def test_reparameterised_small_network_has_pm1_weights_and_the_same_outputs(neuron):
    torch.manual_seed(0)
    model = _randomise_norms(Small(neuron)).eval()
    x = DirectEncoder()(torch.rand(4, 3, 8, 8), 2)
    with torch.no_grad():
        before = model(x).logits
    assert before.std(dim=1).min() > 1e-3  # the outputs depend on the input: spikes reach the classifier
    folded = reparameterise_binary(model)
    assert not any(isinstance(m, BinaryWeight) for m in folded.modules())
    for layer in (folded.body[2].module.conv, folded.fc1.module[0], folded.fc2.module[0]):
        assert set(layer.weight.unique().tolist()) == {-1.0, 1.0}
    assert isinstance(folded.fc1.module[1], ChannelScale)  # no BatchNorm after fc1: the factor stays explicit
    with torch.no_grad():
        assert torch.allclose(folded(x).logits, before, atol=1e-5)
        assert torch.equal(model(x).logits, before)  # the original is untouched and still runs
    assert binary_parametrization(model.fc1.module) is not None


def test_reparameterised_resnet19_has_pm1_weights_and_the_same_outputs():
    torch.manual_seed(0)
    model = create_model("resnet19", neuron=partial(LIF, **EXCITABLE), input_shape=(3, 16, 16), num_classes=10,
                         binary_weights=True)
    model = _randomise_norms(model).eval()
    x = DirectEncoder()(torch.rand(2, 3, 16, 16), 2)
    with torch.no_grad():
        before = model(x).logits
        folded = reparameterise_binary(model)
        after = folded(x).logits
    assert before.std(dim=1).min() > 1e-3  # the outputs depend on the input: spikes reach the classifier
    binary = [m for n, m in folded.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
              and n not in ("stem.0.module.conv", "classifier.module")]
    assert len(binary) == 8 * 2 + 3 + 1  # 8 blocks x two 3x3 convs, 3 shortcut 1x1 convs, fc 512->256
    assert all(set(m.weight.unique().tolist()) == {-1.0, 1.0} for m in binary)
    assert torch.allclose(after, before, atol=1e-4)


# ---------------------------------------------------------------------------------------- every model


SMALL = {
    "convnet": ((1, 8, 8), {}),
    "resnet18": ((3, 8, 8), {}),
    "resnet19": ((3, 8, 8), {}),
    "resnet20": ((3, 8, 8), {}),
    "resnet34": ((3, 8, 8), {}),
    "vggsnn": ((2, 8, 8), {}),
    "vggsnn_pool": ((2, 16, 16), {}),
    "sdt": ((3, 16, 16), {"layers": 1, "dim": 32, "heads": 4}),
    "stmixer": ((3, 16, 16), {"depth": 1, "dim": 32, "heads": 4}),
    "pointnet": ((3, 16), {}),
}


# The layers each model keeps real (the input layers, which read the data, and the classifier), and how many
# Conv/Linear layers it binarises, as the earlier post-hoc binarisation chose them for the SMALL configs: every
# other Conv/Linear is binary.
REAL = {
    "convnet": (["conv1.0.module.conv", "classifier.module"], 1),
    "resnet18": (["stem.0.module.conv", "classifier.module"], 19),
    "resnet19": (["stem.0.module.conv", "classifier.module"], 20),
    "resnet20": (["stem.0.module.conv", "classifier.module"], 20),
    "resnet34": (["stem.0.module.conv", "classifier.module"], 35),
    "vggsnn": (["layers.conv1.0.module.conv", "classifier.module"], 7),
    "vggsnn_pool": (["layers.conv1.0.module.conv", "classifier.module"], 7),
    "sdt": (["patch_embed.convs.0.module.conv", "classifier.module"], 10),
    "stmixer": (["patch_embed.main.0.module.conv", "patch_embed.shortcut.module.0", "classifier.module"], 12),
    "pointnet": (["input_transform.convs.0.module.conv", "conv1.0.module.conv", "classifier.module"], 15),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_accepts_binary_weights(name):
    shape, kw = SMALL[name]
    model = create_model(name, neuron=partial(LIF), input_shape=shape, num_classes=4, binary_weights=True, **kw)
    assert any(isinstance(m, BinaryWeight) for m in model.modules())
    with torch.no_grad():
        out = model(DirectEncoder()(torch.rand(2, *shape), 1)).logits
    assert out.shape == (1, 2, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_model_binarises_exactly_its_hidden_layers(name):
    shape, kw = SMALL[name]
    model = create_model(name, neuron=partial(LIF), input_shape=shape, num_classes=4, binary_weights=True, **kw)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    real, n_binary = REAL[name]
    assert sorted(n for n, m in layers.items() if binary_parametrization(m) is None) == sorted(real)
    assert sum(binary_parametrization(m) is not None for m in layers.values()) == n_binary == len(layers) - len(real)


def test_resnet19_with_binary_weights_trains_end_to_end(tmp_path):
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", "model.binary_weights=true"],
                         tmp_path / "run")
    _, module = build(cfg)
    assert sum(isinstance(m, BinaryWeight) for m in module.model.modules()) == 8 * 2 + 3 + 1
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
