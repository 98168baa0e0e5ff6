"""Spiking PointNet (snnexp/models/pointnet.py): the official layer list (parameter count), every neuron, the
feature-transform aux output, membrane-potential perturbation, and a fast run through the CLI's composition on a
generated ModelNet40."""

import json
from functools import partial

import pytest
import torch

from helpers.formats import write_modelnet
from helpers.runs import compose_config
from snnexp.models import ModelConfigError, create_model
from snnexp.models.encoders import DirectEncoder
from snnexp.models.norm import TDBatchNorm1d
from snnexp.models.pointnet import PerturbedNeuron, feature_transform_regularizer
from snnexp.neurons import IF, LIF, PLIF
from snnexp.train import run


NEURONS = {"lif": partial(LIF, tau=2.0), "if": partial(IF), "plif": partial(PLIF)}


def make(neuron="lif", num_classes=40, points=16, **kwargs):
    channels = 6 if kwargs.get("use_normals") else 3
    return create_model("pointnet", neuron=NEURONS[neuron], input_shape=(channels, points), num_classes=num_classes,
                        **kwargs)


def seq(points, T):
    """The point clouds ``[B, C, N]`` repeated at T time steps (direct coding): ``[T, B, C, N]``."""
    return DirectEncoder()(points, T)


# The official count (DayongRen/Spiking-PointNet models/pointnet_cls.py get_model + models/pointnet_utils.py),
# from its layer list; spiking neurons (LIF) have no parameters. Every Conv1d (kernel 1) and Linear has
# weight + bias = in*out + out; every BatchNorm1d has weight + bias = 2*C (running statistics are buffers).
def layer(i, o):
    return i * o + o


def tnet(c_in, kk):
    """STN3d (kk = 3) / STNkd (kk = 64): conv c->64->128->1024, fc 1024->512->256->kk*kk, five BNs."""
    return (layer(c_in, 64) + layer(64, 128) + layer(128, 1024) + layer(1024, 512) + layer(512, 256)
            + layer(256, kk * kk) + 2 * (64 + 128 + 1024 + 512 + 256))


def official_parameter_count(k=40, channels=3):
    encoder = tnet(channels, 3) + tnet(64, 64) + layer(channels, 64) + layer(64, 128) + layer(128, 1024) \
        + 2 * (64 + 128 + 1024)  # + feature T-Net, conv1..3 and bn1..3
    head = layer(1024, 512) + layer(512, 256) + layer(256, k) + 2 * (512 + 256)  # fc1..3, bn1, bn2
    return encoder + head


def test_parameter_count_equals_the_official_implementation():
    n = sum(p.numel() for p in make(points=1024).parameters())
    assert n == official_parameter_count() == 3_471_473
    n6 = sum(p.numel() for p in make(points=1024, use_normals=True).parameters())
    assert n6 == official_parameter_count(channels=6)
    no_ft = sum(p.numel() for p in make(points=1024, feature_transform=False).parameters())
    assert n - no_ft == tnet(64, 64) == 1_857_344  # the feature T-Net alone


@pytest.mark.parametrize("neuron", sorted(NEURONS))
def test_forward_backward_with_every_neuron(neuron):
    torch.manual_seed(0)
    model = make(neuron, num_classes=5)
    out = model(seq(torch.randn(3, 3, 16), 2))
    assert out.logits.shape == (2, 3, 5)
    assert out.aux["feature_transform"].shape == (3, 64, 64)
    assert out.taps["features"].shape == (2, 3, 256)
    assert out.taps["global_features"].shape == (2, 3, 1024)
    assert out.taps["point_features"].shape == (2, 3, 64, 16)
    torch.testing.assert_close(model.classifier(out.taps["features"]), out.logits)
    loss = out.logits.mean(0).logsumexp(-1).mean() + 0.001 * feature_transform_regularizer(out.aux["feature_transform"])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.input_transform.out.module.weight.grad.abs().sum() > 0  # gradients reach the input T-Net


def test_normals_give_six_input_channels_and_mismatches_are_refused():
    out = make(use_normals=True)(seq(torch.randn(2, 6, 16), 1))
    assert out.logits.shape == (1, 2, 40)
    with pytest.raises(ModelConfigError, match="use_normals"):
        create_model("pointnet", neuron=NEURONS["lif"], input_shape=(6, 16), num_classes=40)
    with pytest.raises(ModelConfigError, match="channels, points"):
        create_model("pointnet", neuron=NEURONS["lif"], input_shape=(3, 32, 32), num_classes=10)


def test_T_is_read_from_the_repeated_points():
    model = make().eval()
    x = torch.randn(2, 3, 16)
    one = model(seq(x, 1)).logits
    three = model(seq(x, 3)).logits
    assert one.shape == (1, 2, 40) and three.shape == (3, 2, 40)
    torch.testing.assert_close(three[0], one[0])  # step 0 does not depend on later steps


def test_tdbn_is_built_in_every_norm_and_none_is_residual():
    model = make(neuron="if", norm="tdbn")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, TDBatchNorm1d) and m.alpha == 1.0 and m.v_threshold == 1.0 for m in norms)
    assert model(seq(torch.randn(2, 3, 16), 2)).logits.shape == (2, 2, 40)


def test_feature_transform_regularizer_equals_formula():
    a = torch.randn(4, 5, 5)
    expected = sum(torch.sqrt(((a[b] @ a[b].T - torch.eye(5)) ** 2).sum()) for b in range(4)) / 4
    torch.testing.assert_close(feature_transform_regularizer(a), expected)


def test_membrane_perturbation_draws_a_new_initial_potential_at_each_call_and_is_off_by_default():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16)
    # training mode without dropout: BatchNorm normalises with batch statistics, so neurons do fire, and the
    # only randomness left is the perturbation
    x = seq(x, 2)
    plain = make(dropout=0.0).train()
    assert torch.equal(plain(x).logits, plain(x).logits)
    perturbed = make(dropout=0.0, membrane_perturbation=True).train()
    assert not torch.equal(perturbed(x).logits, perturbed(x).logits)
    assert sum(isinstance(m, PerturbedNeuron) for m in perturbed.modules()) == 14  # every neuron of the net
    assert not any(isinstance(m, PerturbedNeuron) for m in plain.modules())


def test_perturbed_neuron_is_the_official_lif_started_from_u0_uniform_0_half():
    # official mem_update: u <- 0.25 u + x, spike if u > 0.5, hard reset to 0; u[-1] ~ 0.5 * rand
    neuron = PerturbedNeuron(LIF(tau=4 / 3, decay_input=False, v_threshold=0.5, v_reset=0.0))
    x = torch.randn(4, 3, 7) * 0.5
    torch.manual_seed(1)
    got = neuron(x)
    torch.manual_seed(1)
    u = torch.rand_like(x[0]) * 0.5
    expected = []
    for x_t in x:
        u = 0.25 * u + x_t
        s = (u > 0.5).float()
        u = u * (1 - s)
        expected.append(s)
    torch.testing.assert_close(got, torch.stack(expected))


def test_perturbed_neurons_become_plain_activations_under_the_ann_method():
    from snnexp.methods.ann import replace_neurons

    model = make(membrane_perturbation=True).eval()
    assert replace_neurons(model, torch.nn.ReLU) == 14
    x = seq(torch.randn(2, 3, 16), 1)
    torch.testing.assert_close(model(x).logits, model(x).logits)  # ReLUs: nothing random left in eval mode


def test_fast_run_of_pointnet_on_a_generated_modelnet40(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    write_modelnet(root)
    cfg = compose_config(["debug=fast", "T=1", "data.batch_size=2", "model=pointnet", "data=modelnet40",
                          f"data.root={root}", "data.num_points=32"], tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


# ---- official fidelity (the official code's max, loss and neuron) ----------------------------------------
def test_max_over_points_sends_the_whole_gradient_to_the_first_maximum_on_ties():
    from snnexp.models.pointnet import max_over_points

    x = torch.tensor([[[[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]]], requires_grad=True)
    upstream = torch.tensor([[[2.0, 3.0, 5.0]]])
    (max_over_points(x) * upstream).sum().backward()
    expected = torch.zeros_like(x)
    expected[0, 0, 0, 0], expected[0, 0, 1, 0], expected[0, 0, 2, 1] = 2.0, 3.0, 5.0  # first maximum of each row
    torch.testing.assert_close(x.grad, expected)

def test_pointnet_parameter_gradients_equal_those_of_an_argmax_gather_reference():
    """With spikes (ties everywhere) the model's gradients equal those of the same model whose max is an explicit
    gather at the first argmax, the gradient of torch.max(x, dim)[0] the official model takes."""
    import snnexp.models.pointnet as pointnet
    from snnexp.neurons import LIF

    torch.manual_seed(0)
    model = pointnet.pointnet(neuron=partial(LIF, v_threshold=0.5), input_shape=(3, 16), num_classes=4).double()
    x = torch.randn(2, 3, 3, 16, dtype=torch.float64)

    def grads():
        torch.manual_seed(1)  # the same dropout mask in both passes
        model.zero_grad()
        model(x).logits.square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours = grads()
    original = pointnet.max_over_points
    pointnet.max_over_points = lambda t: t.gather(-1, t.argmax(-1, keepdim=True)).squeeze(-1)
    try:
        reference = grads()
    finally:
        pointnet.max_over_points = original
    assert ours.keys() == reference.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], msg=name)
