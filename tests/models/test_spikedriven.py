"""The Spike-driven Transformer (snnexp/models/spikedriven.py): named configs, shapes, taps, exact architectures,
allowed operations, and stochastic depth (drop path per sample, shared by every time step)."""

import json

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

import snnexp.neurons as neurons
from helpers.models import B, C, bn, build_named, conv, count_params, linear, seq
from helpers.models import TOKEN_NEURONS as NEURONS
from helpers.runs import compose_config
from snnexp.models import create_model
from snnexp.models.layers import SeqDropPath
from snnexp.models.registry import ModelConfigError
from snnexp.neurons import LIF


SDT_CONFIGS = {  # named config -> (layers, dim, pooling)
    "sdt": (2, 256, "0011"),
    "sdt_2_256": (2, 256, "0011"),
    "sdt_2_512": (2, 512, "0011"),
    "sdt_8_384": (8, 384, "1111"),
    "sdt_6_512": (6, 512, "1111"),
    "sdt_8_512": (8, 512, "1111"),
    "sdt_10_512": (10, 512, "1111"),
    "sdt_8_768": (8, 768, "1111"),
}


# The CIFAR/DVS-size configs run with every neuron. The ImageNet SDT configs (17M-66M parameters, seconds per
# backward on 2 cores) are built on the meta device in the parameter-count tests below: the same factory and code
# path, only the sizes differ.


# ---- every named config: composes, instantiates, runs forward/backward with every neuron ----------------------


@pytest.mark.parametrize("name", sorted(SDT_CONFIGS))
def test_sdt_named_configs_set_layers_dim_and_pooling(name):
    cfg = compose_config([f"model={name}"])
    assert (cfg.model.layers, cfg.model.dim, cfg.model.pooling) == SDT_CONFIGS[name]
    assert (cfg.model.heads, cfg.model.mlp_ratio, cfg.model.kv_pool) == (8, 4.0, False)  # official configs
    assert cfg.model.drop_path_rate == 0.0
    assert cfg.model._target_ == f"snnexp.models.spikedriven.{name}"


@pytest.mark.parametrize("name", ["sdt"])
def test_logits_are_the_classifier_applied_to_features(name):
    model = create_model(name, neuron=NEURONS["lif"], input_shape=(2, 16, 16), num_classes=C, dim=64).eval()
    with torch.no_grad():
        out = model(seq(torch.rand(B, 2, 16, 16)))
        torch.testing.assert_close(model.classifier(out.taps["features"]), out.logits)
        out3 = model(torch.rand(3, B, 2, 16, 16))  # an event sequence keeps its own length
    assert out3.logits.shape == (3, B, C)


# ---- exact architecture, shapes, operations -------------------------------------------------------------------


def official_sdt_params(layers, dim, num_classes, in_channels=3, heads=8, mlp_ratio=4):
    """sum(p.numel()) of the official SpikeDrivenTransformer, from its layer list (module/sps.py, ms_conv.py,
    model/spikeformer.py); neurons (MultiStepLIFNode) hold no parameters."""
    d = dim
    sps = conv(in_channels, d // 8, 3) + bn(d // 8) + conv(d // 8, d // 4, 3) + bn(d // 4)  # proj_conv(1)
    sps += conv(d // 4, d // 2, 3) + bn(d // 2) + conv(d // 2, d, 3) + bn(d)  # proj_conv2, proj_conv3
    sps += conv(d, d, 3) + bn(d)  # rpe_conv, rpe_bn
    attn = 3 * (conv(d, d, 1) + bn(d))  # q/k/v_conv (no bias) + BN
    attn += heads * heads  # talking_heads Conv1d(heads, heads, 1, bias=False): built, never used in forward
    attn += conv(d, d, 1, bias=True) + bn(d)  # proj_conv (bias) + proj_bn
    h = int(d * mlp_ratio)
    mlp = conv(d, h, 1, bias=True) + bn(h) + conv(h, d, 1, bias=True) + bn(d)  # fc1/fc2_conv (bias) + BN
    return sps + layers * (attn + mlp) + linear(d, num_classes)


def unused_talking_heads(layers, heads=8):
    return layers * heads * heads  # snnexp leaves the official dead talking_heads conv out


@pytest.mark.parametrize("name, num_classes, in_channels, official, paper", [
    # fixed numbers: official_sdt_params(...) evaluated once; "paper" is the count printed in the paper (M):
    # 10.28M and 66.34M as quoted in issue 3, the other ImageNet sizes from the paper's table as recalled (not
    # re-read from the PDF here)
    ("sdt_2_256", 10, 2, 2_566_794, None),  # CIFAR10-DVS
    ("sdt_2_512", 10, 3, 10_233_546, None),  # CIFAR-10
    ("sdt_2_512", 100, 3, 10_279_716, 10.28),  # CIFAR-100: the paper's 10.28M
    ("sdt_8_384", 1000, 3, 16_816_536, 16.81),
    ("sdt_6_512", 1000, 3, 23_373_736, 23.37),
    ("sdt_8_512", 1000, 3, 29_689_896, 29.68),
    ("sdt_10_512", 1000, 3, 36_006_056, 36.01),
    ("sdt_8_768", 1000, 3, 66_339_144, 66.34),
])
def test_sdt_parameter_count_matches_the_official_layer_list(name, num_classes, in_channels, official, paper):
    layers, dim, _ = SDT_CONFIGS[name]
    assert official_sdt_params(layers, dim, num_classes, in_channels) == official
    if paper is not None:
        assert abs(official / 1e6 - paper) < 0.01  # the paper truncates or rounds to 2 decimals
    with torch.device("meta"):  # no memory, no init cost
        model = build_named(name, (in_channels, 32, 32), num_classes=num_classes)
    assert count_params(model) == official - unused_talking_heads(layers)


def recording_neuron(calls):
    def neuron(**overrides):
        calls.append(overrides)
        return NEURONS["lif"](**overrides)

    return neuron


def test_sdt_has_one_neuron_per_spiking_layer_and_the_kv_neuron_fires_at_half():
    calls = []
    create_model("sdt", neuron=recording_neuron(calls), input_shape=(3, 32, 32), num_classes=C, layers=3, dim=64)
    # SPS 4; per block: SDSA input, q, k, v, kv (Vth 0.5), MLP fc1, fc2; head 1
    assert len(calls) == 4 + 3 * 7 + 1
    assert calls.count({"v_threshold": 0.5}) == 3
    assert all(c in ({}, {"v_threshold": 0.5}) for c in calls)


@pytest.mark.parametrize("shape, pooling, grid", [
    ((3, 32, 32), "0011", 8),  # CIFAR
    ((2, 64, 64), "0011", 16),  # CIFAR10-DVS
    ((2, 128, 128), "0111", 16),  # DVS Gesture
    ((3, 224, 224), "1111", 14),  # ImageNet
])
def test_sdt_takes_cifar_dvs_and_imagenet_sizes(shape, pooling, grid):
    model = create_model("sdt", neuron=NEURONS["lif"], input_shape=shape, num_classes=C, layers=1, dim=16,
                         heads=2, pooling=pooling)
    with torch.no_grad():
        out = model(seq(torch.rand(1, *shape), 1))
    assert out.taps["block1"].shape == (1, 1, 16, grid, grid)
    assert out.logits.shape == (1, 1, C)


def test_sdt_blocks_use_membrane_shortcuts_and_every_neuron_emits_spikes():
    torch.manual_seed(0)
    model = create_model("sdt", neuron=NEURONS["lif"], input_shape=(3, 16, 16), num_classes=C, dim=64)
    outputs = []
    for m in model.modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda mod, inp, out: outputs.append(out))
    with torch.no_grad():
        out = model(seq(torch.rand(B, 3, 16, 16) * 4))
    assert len(outputs) == 4 + 2 * 7 + 1
    assert all(set(o.unique().tolist()) <= {0.0, 1.0} for o in outputs)
    block = out.taps["block1"]  # the residual stream is a membrane-path (real-valued) tensor, not spikes
    assert not set(block.unique().tolist()) <= {0.0, 1.0}


def test_sdt_kv_pool_is_the_official_dvs_erode():
    torch.manual_seed(0)
    kwargs = dict(neuron=NEURONS["lif"], input_shape=(2, 32, 32), num_classes=C, dim=64)
    plain = create_model("sdt", **kwargs)
    eroded = create_model("sdt", kv_pool=True, **kwargs)
    assert count_params(plain) == count_params(eroded)  # a parameter-free max-pool
    assert sum(isinstance(m, nn.MaxPool2d) for m in eroded.modules()) == 1 + 2  # SPS pool + one Erode per block
    eroded.load_state_dict(plain.state_dict())
    x = seq(torch.rand(B, 2, 32, 32) * 3)
    out = eroded(x)
    out.logits.sum().backward()
    with torch.no_grad():
        assert not torch.equal(plain(x).logits, out.logits)


def test_sdt_refuses_bad_pooling_and_widths_with_the_override():
    kwargs = dict(neuron=NEURONS["lif"], input_shape=(3, 32, 32), num_classes=C)
    with pytest.raises(ModelConfigError, match="model.pooling"):
        create_model("sdt", pooling="011", **kwargs)
    with pytest.raises(ModelConfigError, match="model.dim"):
        create_model("sdt", dim=100, **kwargs)
    with pytest.raises(ModelConfigError, match="model.drop_path_rate"):
        create_model("sdt", drop_path_rate=1.0, **kwargs)


# ---- stochastic depth -----------------------------------------------------------------------------------------


def test_sdt_drop_path_rate_grows_linearly_over_the_blocks_on_both_residual_branches():
    model = create_model("sdt", neuron=NEURONS["lif"], input_shape=(3, 16, 16), num_classes=C, layers=5, dim=32,
                         heads=4, drop_path_rate=0.2)
    expected = [0.0, 0.05, 0.1, 0.15, 0.2]  # timm's ViT: torch.linspace(0, rate, layers)
    for block, rate in zip(model.blocks, expected):
        for branch in (block.attn.drop_path, block.mlp.drop_path):
            if rate == 0:
                assert isinstance(branch, nn.Identity)
            else:
                assert isinstance(branch, SeqDropPath) and branch.drop_prob == pytest.approx(rate)
    plain = create_model("sdt", neuron=NEURONS["lif"], input_shape=(3, 16, 16), num_classes=C, layers=5, dim=32,
                         heads=4)
    assert not any(isinstance(m, SeqDropPath) for m in plain.modules())  # rate 0: no drop path at all
    assert list(plain.state_dict()) == list(model.state_dict())  # drop path holds no state


def test_sdt_drop_path_acts_per_sample_in_training_and_not_at_all_in_eval():
    torch.manual_seed(0)
    kwargs = dict(neuron=NEURONS["lif"], input_shape=(3, 16, 16), num_classes=C, layers=2, dim=32, heads=4)
    model = create_model("sdt", drop_path_rate=0.9, **kwargs)
    seen = []
    for m in model.modules():
        if isinstance(m, SeqDropPath):
            m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
    x = seq(torch.rand(16, 3, 16, 16) * 4, 3)
    model.train()(x)
    assert len(seen) == 2  # block 2's SDSA and MLP branches (block 1's rate is 0)
    for branch, out in seen:
        kept = torch.isclose(out, branch / 0.1).flatten(2).all(-1)  # [T, B]
        dropped = (out == 0).flatten(2).all(-1)
        assert (kept.all(0) | dropped.all(0)).all()
    plain = create_model("sdt", **kwargs)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model.eval()(x).logits, plain.eval()(x).logits)


# ---- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sdt_2_256"])
def test_transformer_trains_end_to_end_on_event_data(tmp_path, model):
    from snnexp.train import run

    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", f"model={model}", "data=synthetic_dvs",
                          "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.sensor=32"], tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["model"] == model


@pytest.mark.parametrize("name,neuron_name", [("sdt_8_384", "LIF"), ("sdt_6_512", "IF"), ("sdt_8_512", "PLIF"),
                                              ("sdt_10_512", "LIF"), ("sdt_8_768", "IF")])
def test_imagenet_size_configs_run_forward_and_backward_at_small_input(name, neuron_name):
    """The ImageNet configs at 32 px, batch 1, T=1 (the small configs of the same factories run every neuron)."""
    cfg = compose_config([f"model={name}"])
    model = instantiate(cfg.model, neuron=getattr(neurons, neuron_name), input_shape=(3, 32, 32), num_classes=10)
    out = model(seq(torch.rand(1, 3, 32, 32), 1))
    assert out.logits.shape == (1, 1, 10) and "features" in out.taps
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
