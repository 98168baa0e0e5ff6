"""Specification of snnexp.models: shapes, taps, encoders, time folding, T read from the input, exact
architectures, construction-time norms, and the registry of every conf/model option."""

import functools
import inspect
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from snnexp.config import _locate
from snnexp.models import ModelConfigError, ModelOutput, SeqToBatch, create_model, list_models
from snnexp.models.encoders import DirectEncoder, PoissonEncoder, check_timesteps, make_encoder
from snnexp.models.norm import TDBatchNorm1d, TDBatchNorm2d, batch_norm, make_norm_layer, tdbn
from snnexp.models.resnet import BasicBlock

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"

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
    return create_model(name, neuron=neuron, input_shape=shape, num_classes=C, **kw)


def seq(x, steps=T):
    """The static batch ``x`` repeated at ``steps`` time steps (direct coding)."""
    return DirectEncoder()(x, steps)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family():
    assert set(STAGE_TAPS) <= set(list_models())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(STAGE_TAPS))
def test_model_maps_a_sequence_to_per_step_logits(name, shape):
    if (name, shape) in TOO_SMALL:
        with pytest.raises(ValueError, match="16x16"):
            build(name, shape)
        return
    torch.manual_seed(0)
    model = build(name, shape)

    with torch.no_grad():
        out = model(seq(torch.rand(B, *shape)))  # a static batch, direct-coded into T steps
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (T, B, C)
    assert list(out.taps) == STAGE_TAPS[name] + ["features"]
    assert all(v.shape[:2] == (T, B) for v in out.taps.values())
    assert out.taps["features"].shape == (T, B, model.num_features)

    out = model(torch.rand(3, B, *shape))  # a sequence of another length: T is read from the input
    assert out.logits.shape == (3, B, C)
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(STAGE_TAPS))
def test_logits_are_the_classifier_applied_to_features(name):
    model = build(name, (2, 16, 16)).eval()
    with torch.no_grad():
        out = model(seq(torch.rand(B, 2, 16, 16)))
        torch.testing.assert_close(model.classifier(out.taps["features"]), out.logits)


@pytest.mark.parametrize("name, shape", [("convnet", (1, 8, 8)), ("resnet19", (3, 16, 16)), ("vggsnn", (2, 16, 16))])
def test_models_run_with_the_snnexp_lif(name, shape):
    model = build(name, shape, neuron=real_lif())
    out = model(seq(torch.rand(B, *shape)))
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
    y = DirectEncoder()(x, 3)
    assert y.shape == (3, B, 3, 4, 4) and all(torch.equal(y_t, x) for y_t in y)
    assert torch.equal(y, x.unsqueeze(0).repeat(3, 1, 1, 1, 1))


def test_poisson_encoder_fires_at_the_input_rate():
    torch.manual_seed(0)
    x = torch.tensor([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0]).repeat(50, 1)  # [B=50, 7]
    y = PoissonEncoder()(x, 400)
    assert y.shape == (400, 50, 7)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y.mean((0, 1)), x[0].clamp(0, 1), atol=0.01, rtol=0)


def test_encoders_are_stateless_and_take_T_per_call():
    x = torch.rand(B, 1, 8, 8)
    for name in ("direct", "poisson"):
        encoder = make_encoder(name)
        assert not list(encoder.parameters()) and not list(encoder.buffers()) and not hasattr(encoder, "T")
        assert encoder(x, 5).shape == (5, B, 1, 8, 8) and encoder(x, 1).shape == (1, B, 1, 8, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", None, True])
def test_T_must_be_a_positive_integer(bad):
    with pytest.raises(ModelConfigError, match="positive integer"):
        check_timesteps(bad)
    with pytest.raises(ModelConfigError, match="positive integer"):
        DirectEncoder()(torch.rand(B, 3), bad)
    assert check_timesteps(4) == 4 and check_timesteps(4.0) == 4


def test_unknown_names_are_refused_with_the_valid_choices():
    with pytest.raises(ModelConfigError, match=r"direct.*poisson.*encoder="):
        make_encoder("latency")
    with pytest.raises(ValueError, match="resnet19"):
        create_model("resnet1000", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ModelConfigError, match=r"bn.*tdbn.*model.norm="):
        build("convnet", (1, 8, 8), norm="layernorm")


def test_T_is_read_from_the_input_sequence_and_the_model_holds_none():
    model = build("convnet", (1, 8, 8))
    assert not hasattr(model, "T") and not hasattr(model, "encoder")
    x = torch.rand(B, 1, 8, 8)
    assert model(PoissonEncoder()(x, 5)).logits.shape == (5, B, C)
    assert model(seq(x, 1)).logits.shape == (1, B, C)
    assert model(torch.rand(3, B, 1, 8, 8)).logits.shape == (3, B, C)


@pytest.mark.parametrize("name", list_models())
def test_factories_take_no_T_and_no_encoder(name):
    from snnexp.models.registry import _MODELS

    params = inspect.signature(_MODELS[name]).parameters
    assert not {"T", "encoder"} & set(params)
    assert [n for n, p in params.items() if p.default is inspect.Parameter.empty] == ["neuron", "input_shape",
                                                                                      "num_classes"]
    assert all(p.kind == p.KEYWORD_ONLY for p in params.values())


def test_input_of_the_wrong_rank_is_refused_with_how_to_encode_it():
    model = build("convnet", (1, 8, 8))
    for bad in (torch.rand(B, 1, 8, 8), torch.rand(8, 8)):  # a static batch is no sequence either
        with pytest.raises(ValueError, match=r"\[T, B, 1, 8, 8\].*snnexp\.models\.encoders"):
            model(bad)


# ---- construction-time normalisation --------------------------------------------------------------------------

def test_norm_layer_builds_bn_or_tdbn_with_alpha_on_residual_branches():
    assert type(batch_norm(4)) is nn.BatchNorm2d and type(batch_norm(4, dims=1, residual=True)) is nn.BatchNorm1d
    plain, residual = tdbn(4, v_threshold=0.5), tdbn(4, dims=1, residual=True, v_threshold=0.5)
    assert isinstance(plain, TDBatchNorm2d) and (plain.alpha, plain.v_threshold) == (1.0, 0.5)
    assert isinstance(residual, TDBatchNorm1d) and residual.alpha == pytest.approx(1 / math.sqrt(2))
    norm_layer = make_norm_layer("tdbn", functools.partial(real_lif(), v_threshold=0.25))
    assert norm_layer(3).v_threshold == 0.25  # tdBN's V_th is the threshold of the model's neuron
    assert make_norm_layer("bn", StandInNeuron) is batch_norm


# which norms feed a residual sum (tdBN alpha 1/sqrt(2)), by model: conv2 and shortcut BNs of ResNet blocks, the
# SDSA projection and MLP fc2 BNs of the Spike-driven Transformer, STMixer's token-mixer and FFN fc2 BNs
RESIDUAL_NORMS = {
    "convnet": ((1, 8, 8), {}, set()),
    "vggsnn": ((2, 16, 16), {}, set()),
    "resnet20": ((3, 8, 8), {}, {f"stages.layer{s}.{b}.conv2.module.bn" for s in (1, 2, 3) for b in range(3)}
                 | {"stages.layer2.0.shortcut.module.bn", "stages.layer3.0.shortcut.module.bn"}),
    "sdt": ((3, 16, 16), {"layers": 2, "dim": 32, "heads": 4},
            {f"blocks.{i}.{n}" for i in (0, 1) for n in ("attn.proj.module.bn", "mlp.fc2.module.bn")}),
    "stmixer": ((3, 16, 16), {"depth": 2, "dim": 32, "heads": 4},
                {f"blocks.{i}.{n}.fc2.1.module.1" for i in (0, 1) for n in ("token_mix", "channel_mix")}),
    "pointnet": ((3, 16), {}, set()),
}


@pytest.mark.parametrize("name", sorted(RESIDUAL_NORMS))
def test_tdbn_is_built_in_every_norm_with_alpha_one_over_sqrt2_exactly_on_residual_branches(name):
    shape, kw, residual = RESIDUAL_NORMS[name]
    lif = functools.partial(real_lif(), v_threshold=0.5)
    model = create_model(name, neuron=lif, input_shape=shape, num_classes=C, norm="tdbn", **kw)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert norms and all(isinstance(m, (TDBatchNorm1d, TDBatchNorm2d)) and m.v_threshold == 0.5
                         for m in norms.values())
    assert {n for n, m in norms.items() if m.alpha != 1.0} == residual
    assert all(norms[n].alpha == pytest.approx(1 / math.sqrt(2)) for n in residual)
    plain = create_model(name, neuron=lif, input_shape=shape, num_classes=C, **kw)
    assert not any(isinstance(m, (TDBatchNorm1d, TDBatchNorm2d)) for m in plain.modules())


# ---- every conf/model option is a registered name --------------------------------------------------------------

def _yaml_options(path):
    """The option's ``_target_`` and values, as the yaml documents them (interpolations resolved to defaults)."""
    node = yaml.safe_load(path.read_text())
    values = {k: v for k, v in node.items() if k not in ("defaults", "_target_")}
    values = {k: (False if isinstance(v, str) and v.startswith("${oc.select:") else v) for k, v in values.items()}
    return node["_target_"], values


@pytest.mark.parametrize("path", sorted(CONF_MODEL.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_is_a_registered_name_built_by_its_own_factory(path):
    target, values = _yaml_options(path)
    assert path.stem in list_models()
    assert target.rsplit(".", 1)[1] == path.stem  # the yaml names the module-level factory of the same name
    factory = _locate(target)
    params = inspect.signature(factory).parameters
    assert "encoder" not in values and "T" not in values
    assert {k: params[k].default for k in values} == values  # the yaml documents the factory's defaults
    shape = (3, 16) if path.stem == "pointnet" else (3, 32, 32)
    with torch.device("meta"):  # the ImageNet sizes hold up to 66M parameters
        via_yaml = factory(neuron=StandInNeuron, input_shape=shape, num_classes=10, **values)
        by_name = create_model(path.stem, neuron=StandInNeuron, input_shape=shape, num_classes=10)
    assert count_params(via_yaml) == count_params(by_name)
    assert [(k, v.shape) for k, v in via_yaml.state_dict().items()] == \
        [(k, v.shape) for k, v in by_name.state_dict().items()]
