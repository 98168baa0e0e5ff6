"""Specification of snnexp.models: shapes, taps, encoders, time folding and exact architectures."""

import functools

import pytest
import torch
from torch import nn

from snnexp.models import ModelOutput, SeqToBatch, create_model, list_models
from snnexp.models.layers import DirectEncoder, PoissonEncoder, make_encoder
from snnexp.models.resnet import BasicBlock

B, T, C = 2, 2, 5
SHAPES = [(3, 32, 32), (2, 48, 48), (1, 8, 8)]
TOO_SMALL = {("vggsnn_pool", (1, 8, 8))}  # four AvgPool2d(2) need at least 16x16
STAGE_TAPS = {
    "convnet": ["conv1", "conv2"],
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "resnet34": ["layer1", "layer2", "layer3", "layer4"],
    "resnet19": ["layer1", "layer2", "layer3"],
    "resnet20": ["layer1", "layer2", "layer3"],
    "vggsnn": [f"conv{i}" for i in range(1, 9)],
    "vggsnn_pool": [f"conv{i}" for i in range(1, 9)],
}


class StandInNeuron(nn.Module):
    """Multi-step LIF (u <- 0.5 u + x, fire at 1, hard reset) with a sigmoid straight-through gradient."""

    def __init__(self, v_threshold: float = 1.0):
        super().__init__()
        self.v_threshold = v_threshold

    def forward(self, x):
        v, spikes = torch.zeros_like(x[0]), []
        for x_t in x:
            v = 0.5 * v + x_t
            sg = torch.sigmoid(4 * (v - self.v_threshold))
            s = (v >= self.v_threshold).float() + sg - sg.detach()
            v = v * (1 - s.detach())
            spikes.append(s)
        return torch.stack(spikes)


def real_lif():
    try:
        from snnexp.neurons import LIF
    except ImportError:
        pytest.skip("snnexp.neurons.LIF is not available yet")
    return functools.partial(LIF, tau=2.0)


def build(name, shape, neuron=StandInNeuron, **kw):
    return create_model(name, neuron=neuron, input_shape=shape, num_classes=C, T=T, **kw)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family():
    assert set(STAGE_TAPS) <= set(list_models())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(STAGE_TAPS))
def test_model_maps_static_and_sequence_input_to_per_step_logits(name, shape):
    if (name, shape) in TOO_SMALL:
        with pytest.raises(ValueError, match="16x16"):
            build(name, shape)
        return
    torch.manual_seed(0)
    model = build(name, shape)

    with torch.no_grad():
        out = model(torch.rand(B, *shape))  # static: encoded to T steps
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (T, B, C)
    assert list(out.taps) == STAGE_TAPS[name] + ["features"]
    assert all(v.shape[:2] == (T, B) for v in out.taps.values())
    assert out.taps["features"].shape == (T, B, model.num_features)

    out = model(torch.rand(3, B, *shape))  # sequence: used as is
    assert out.logits.shape == (3, B, C)
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(STAGE_TAPS))
def test_logits_are_the_classifier_applied_to_features(name):
    model = build(name, (2, 16, 16)).eval()
    with torch.no_grad():
        out = model(torch.rand(B, 2, 16, 16))
        torch.testing.assert_close(model.classifier(out.taps["features"]), out.logits)


@pytest.mark.parametrize("name, shape", [("convnet", (1, 8, 8)), ("resnet19", (3, 16, 16)), ("vggsnn", (2, 16, 16))])
def test_models_run_with_the_snnexp_lif(name, shape):
    model = build(name, shape, neuron=real_lif())
    out = model(torch.rand(B, *shape))
    assert out.logits.shape == (T, B, C)
    out.logits.sum().backward()


def test_each_spiking_layer_gets_its_own_neuron():
    calls = []

    def neuron(**overrides):
        calls.append(overrides)
        return StandInNeuron(**overrides)

    build("resnet19", (3, 32, 32), neuron=neuron)
    assert len(calls) == 1 + 2 * (3 + 3 + 2) + 1  # stem, two per block, head
    calls.clear()
    build("vggsnn", (2, 48, 48), neuron=neuron)
    assert len(calls) == 8


# ---- exact architectures: parameter counts computed from the published layer lists -------------------------

def conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def linear(fin, fout):
    return fin * fout + fout


def basic_block(cin, cout):
    n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
    return n + (conv(cin, cout, 1) + bn(cout) if cin != cout else 0)  # downsample only where shape changes


def test_resnet19_matches_tet_layer_list():
    # papers.md (TET): stem conv3x3 3->64-BN; 3 blocks at 128, 3 at 256, 2 at 512; head fc 512->256 -> fc -> 10.
    expected = conv(3, 64, 3) + bn(64)
    expected += basic_block(64, 128) + 2 * basic_block(128, 128)
    expected += basic_block(128, 256) + 2 * basic_block(256, 256)
    expected += basic_block(256, 512) + 1 * basic_block(512, 512)
    expected += linear(512, 256) + linear(256, 10)
    model = create_model("resnet19", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    assert count_params(model) == expected == 12_630_858


def test_vggsnn_matches_tet_layer_list():
    # papers.md (TET): Conv3x3(bias)-BN layers 2->64->128->256->256->512->512->512->512; Linear(512*3*3 -> 10).
    channels = [2, 64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(conv(a, b, 3, bias=True) + bn(b) for a, b in zip(channels, channels[1:]))
    expected += linear(512 * 3 * 3, 10)
    for name in ("vggsnn", "vggsnn_pool"):
        model = create_model(name, neuron=StandInNeuron, input_shape=(2, 48, 48), num_classes=10)
        assert count_params(model) == expected == 9_271_498


def test_resnet18_and_34_match_torchvision_on_imagenet_shapes():
    # torchvision.models.resnet18 / resnet34 (1000 classes, 7x7 stem): 11,689,512 and 21,797,672 parameters.
    for name, expected in [("resnet18", 11_689_512), ("resnet34", 21_797_672)]:
        model = create_model(name, neuron=StandInNeuron, input_shape=(3, 224, 224), num_classes=1000)
        assert model.stem_kind == "imagenet"
        assert count_params(model) == expected


def test_resnet20_is_he_cifar_resnet20_with_projection_shortcuts():
    # He et al.'s ResNet-20 has 269,722 parameters with zero-padding shortcuts (option A); ours adds two
    # 1x1 conv + BN projections (16->32, 32->64).
    model = create_model("resnet20", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    assert count_params(model) == 269_722 + conv(16, 32, 1) + bn(32) + conv(32, 64, 1) + bn(64)


def test_resnet_stem_auto_picks_cifar_up_to_64_px():
    assert build("resnet18", (3, 64, 64)).stem_kind == "cifar"
    assert build("resnet18", (2, 128, 128)).stem_kind == "imagenet"
    assert build("resnet18", (3, 128, 128), stem="cifar").stem_kind == "cifar"
    with pytest.raises(ValueError, match="stem"):
        build("resnet18", (3, 32, 32), stem="tiny")


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    model = build("resnet20", (3, 32, 32), zero_init_residual=True)
    gammas = [m.conv2.module.bn.weight for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(gammas) == 9 and all((g == 0).all() for g in gammas)


# ---- time folding, encoders, T ------------------------------------------------------------------------------

def test_seq_to_batch_batchnorm_pools_statistics_over_time():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 5, 5) + torch.arange(3.0).view(3, 1, 1, 1, 1) * 10  # a different mean per step
    bn_layer = SeqToBatch(nn.BatchNorm2d(2, momentum=0.1)).train()
    y = bn_layer(x)
    assert y.shape == x.shape
    pooled = x.transpose(1, 2).reshape(3, 2, -1).transpose(0, 1).reshape(2, -1)  # [C, T*B*H*W]
    torch.testing.assert_close(bn_layer.module.running_mean, 0.1 * pooled.mean(1))
    torch.testing.assert_close(bn_layer.module.running_var, 0.9 + 0.1 * pooled.var(1, unbiased=True))
    mean, var = pooled.mean(1).view(1, 1, 2, 1, 1), pooled.var(1, unbiased=False).view(1, 1, 2, 1, 1)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))


def test_direct_encoder_repeats_the_input():
    x = torch.rand(B, 3, 4, 4)
    y = DirectEncoder(3)(x)
    assert y.shape == (3, B, 3, 4, 4) and all(torch.equal(y_t, x) for y_t in y)


def test_poisson_encoder_fires_at_the_input_rate():
    torch.manual_seed(0)
    x = torch.tensor([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0]).repeat(50, 1)  # [B=50, 7]
    y = PoissonEncoder(400)(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y.mean((0, 1)), x[0].clamp(0, 1), atol=0.01, rtol=0)


def test_unknown_names_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="direct.*poisson"):
        make_encoder("latency", 4)
    with pytest.raises(ValueError, match="resnet19"):
        create_model("resnet1000", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)


def test_T_attribute_sets_the_number_of_encoded_steps():
    model = build("convnet", (1, 8, 8), encoder="poisson")
    x = torch.rand(B, 1, 8, 8)
    model.T = 5
    assert model(x).logits.shape == (5, B, C)
    model.T = 1
    assert model(x).logits.shape == (1, B, C)
    assert model(torch.rand(3, B, 1, 8, 8)).logits.shape == (3, B, C)  # a sequence keeps its own length
    with pytest.raises(ValueError):
        model.T = 0


def test_input_of_the_wrong_rank_is_refused():
    model = build("convnet", (1, 8, 8))
    with pytest.raises(ValueError, match="static batch"):
        model(torch.rand(8, 8))
