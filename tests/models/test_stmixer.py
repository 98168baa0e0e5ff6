"""STMixer (snnexp/models/stmixer.py): named configs, shapes, taps, exact architecture, and the operations it is
allowed (convolution, fully connected, residual: no attention, no max-pool)."""

import json

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.overrides import TorchFunctionMode

import snnexp.neurons as neurons
from helpers.models import B, C, T, bn, build_named, conv, count_params, linear, seq
from helpers.models import TOKEN_NEURONS as NEURONS
from helpers.runs import compose_config
from snnexp.models import create_model
from snnexp.models.registry import ModelConfigError
from snnexp.neurons import LIF


STMIXER_CONFIGS = {"stmixer": (384, 10, 16, None), "stmixer_imagenet_8_768": (768, 8, 16, 4)}  # dim, depth, heads, ds


# STMixer runs with every neuron, STMixer 8-768 (at 16 px: one token) with LIF.


# ---- every named config: composes, instantiates, runs forward/backward with every neuron ----------------------


@pytest.mark.parametrize("name", sorted(STMIXER_CONFIGS))
def test_stmixer_named_configs(name):
    cfg = compose_config([f"model={name}"])
    assert (cfg.model.dim, cfg.model.depth, cfg.model.heads, cfg.model.downsample) == STMIXER_CONFIGS[name]
    assert cfg.model._target_ == f"snnexp.models.stmixer.{name}"


@pytest.mark.parametrize("name", ["stmixer"])
def test_logits_are_the_classifier_applied_to_features(name):
    model = create_model(name, neuron=NEURONS["lif"], input_shape=(2, 16, 16), num_classes=C, dim=64).eval()
    with torch.no_grad():
        out = model(seq(torch.rand(B, 2, 16, 16)))
        torch.testing.assert_close(model.classifier(out.taps["features"]), out.logits)
        out3 = model(torch.rand(3, B, 2, 16, 16))  # an event sequence keeps its own length
    assert out3.logits.shape == (3, B, C)


# ---- exact architecture, shapes, operations -------------------------------------------------------------------


def official_stmixer_params(dim, depth, heads, mlp_ratio, tokens, downsample, num_classes, in_channels=3):
    """sum(p.numel()) of the official STMixerV3 with sml=False (models/STMixer.py): SPSV2, Encoder blocks
    (TokenMixer with STM, FFN), head; every conv bias-free, LIFSpike holds no parameters. The SML surrogate
    modules of the demo (sml=True) are the method's, not the model's, and are not counted."""
    d, h = dim, int(dim * mlp_ratio)
    main = [in_channels, d // 8, d // 4, d // 2, d, d // 8 * 7]
    embed = sum(conv(a, b, 3) + bn(b) for a, b in zip(main, main[1:]))
    embed += conv(in_channels, d // 8, 2 ** downsample) + bn(d // 8)  # short_proj1
    token_mixer = conv(d, d, 1) + bn(d) + heads * linear(tokens, tokens, bias=False) + conv(d, d, 1) + bn(d)
    ffn = conv(d, h, 1) + bn(h) + conv(h, d, 1) + bn(d)
    return embed + depth * (token_mixer + ffn) + linear(d, num_classes)


@pytest.mark.parametrize("name, input_shape, num_classes, expected", [
    # the official demo: STMixerV3(img_size=32, downsample_times=2, embd_dims=384, mlp_ratio=4, depths=10,
    # num_head=16, num_classes=100) -> 8x8 = 64 tokens
    ("stmixer", (3, 32, 32), 100, 17_531_156),
    # ImageNet 8-768 at 224 px, downsample 4 -> 14x14 = 196 tokens (16 heads assumed, see the yaml)
    ("stmixer_imagenet_8_768", (3, 224, 224), 1000, 61_167_432),
])
def test_stmixer_parameter_count_matches_the_official_layer_list(name, input_shape, num_classes, expected):
    dim, depth, heads, ds = STMIXER_CONFIGS[name]
    ds = ds or 2
    tokens = (input_shape[1] // 2 ** ds) ** 2
    assert official_stmixer_params(dim, depth, heads, 4, tokens, ds, num_classes) == expected
    with torch.device("meta"):
        model = build_named(name, input_shape, num_classes=num_classes)
    assert model.tokens == tokens
    assert count_params(model) == expected


ALLOWED_LEAVES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, LIF)


FORBIDDEN_CALLS = {torch.matmul, torch.bmm, torch.einsum, torch.baddbmm, torch.Tensor.matmul, torch.Tensor.__matmul__,
                   torch.Tensor.bmm, nn.functional.max_pool1d, nn.functional.max_pool2d, nn.functional.max_pool3d,
                   nn.functional.scaled_dot_product_attention, nn.functional.softmax, torch.softmax,
                   torch.Tensor.softmax, nn.functional.multi_head_attention_forward}


WEIGHTED_CALLS = {nn.functional.linear, nn.functional.conv1d, nn.functional.conv2d}


class CallRecorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def test_stmixer_uses_only_convolution_fully_connected_and_residual_operations():
    model = create_model("stmixer", neuron=NEURONS["lif"], input_shape=(3, 32, 32), num_classes=C, dim=64,
                         depth=2, heads=4)
    # the module tree: every leaf is a conv, a linear layer, a BatchNorm or a neuron (no pooling, no attention)
    leaves = [m for m in model.modules() if not list(m.children())]
    assert leaves and all(isinstance(m, ALLOWED_LEAVES) for m in leaves), {type(m) for m in leaves}
    assert not any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.MultiheadAttention))
                   for m in model.modules())
    # the forward pass: no product of two activations (attention), no max-pool; every weighted op uses a weight
    parameters = {id(p) for p in model.parameters()}
    x = seq(torch.rand(B, 3, 32, 32))
    with CallRecorder() as rec:
        model(x)
    assert not [f for f, _, _ in rec.calls if f in FORBIDDEN_CALLS]
    weighted = [(f, a, k) for f, a, k in rec.calls if f in WEIGHTED_CALLS]
    assert weighted and all(id(k.get("weight", a[1] if len(a) > 1 else None)) in parameters for f, a, k in weighted)


def test_stm_mixes_tokens_with_one_linear_per_head():
    torch.manual_seed(0)
    model = create_model("stmixer", neuron=NEURONS["lif"], input_shape=(3, 16, 16), num_classes=C, dim=32, depth=1,
                         heads=4)
    stm = model.blocks[0].token_mix.stm
    x = torch.rand(T, B, 32, model.tokens)
    expected = torch.cat([x[:, :, 8 * i:8 * (i + 1)] @ stm.mix[i].weight.T for i in range(4)], dim=2)
    torch.testing.assert_close(stm(x), expected)


def test_stmixer_exposes_patch_embed_and_block_taps_for_surrogate_modules():
    model = create_model("stmixer", neuron=NEURONS["lif"], input_shape=(3, 32, 32), num_classes=C, dim=64,
                         depth=3, heads=4)
    out = model(seq(torch.rand(B, 3, 32, 32)))
    assert list(out.taps) == ["patch_embed", "block1", "block2", "block3", "features"]
    assert all(out.taps[k].shape == (T, B, 64, 64) for k in ("patch_embed", "block1", "block3"))
    # a branch attached to a tap trains the layers below it
    out.taps["block1"].mean(-1).sum().backward()
    assert model.patch_embed.main[0].module[0].weight.grad is not None
    assert model.blocks[2].channel_mix.fc2[1].module[0].weight.grad is None


@pytest.mark.parametrize("shape, downsample, tokens", [((3, 32, 32), 2, 64), ((2, 64, 64), 2, 256),
                                                        ((2, 128, 128), 4, 64), ((3, 224, 224), 4, 196)])
def test_stmixer_downsample_auto_and_input_sizes(shape, downsample, tokens):
    model = create_model("stmixer", neuron=NEURONS["lif"], input_shape=shape, num_classes=C, dim=16, depth=1,
                         heads=2)
    assert (model.downsample, model.tokens) == (downsample, tokens)
    with torch.no_grad():
        assert model(seq(torch.rand(1, *shape), 1)).logits.shape == (1, 1, C)


def test_stmixer_refuses_sizes_the_patch_grid_cannot_take():
    with pytest.raises(ModelConfigError, match="divisible by 4"):
        create_model("stmixer", neuron=NEURONS["lif"], input_shape=(3, 30, 30), num_classes=C)
    with pytest.raises(ModelConfigError, match="model.downsample"):
        create_model("stmixer", neuron=NEURONS["lif"], input_shape=(3, 32, 32), num_classes=C, downsample=3)


# ---- end to end -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["stmixer"])
def test_transformer_trains_end_to_end_on_event_data(tmp_path, model):
    from snnexp.train import run

    extra = ["model.depth=2", "model.dim=64", "model.heads=4"]
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", f"model={model}", *extra, "data=synthetic_dvs",
                          "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.sensor=32"], tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["model"] == model


@pytest.mark.parametrize("name,neuron_name", [("stmixer_imagenet_8_768", "PLIF")])
def test_imagenet_size_configs_run_forward_and_backward_at_small_input(name, neuron_name):
    """The ImageNet configs at 32 px, batch 1, T=1 (the small configs of the same factories run every neuron)."""
    cfg = compose_config([f"model={name}"])
    model = instantiate(cfg.model, neuron=getattr(neurons, neuron_name), input_shape=(3, 32, 32), num_classes=10)
    out = model(seq(torch.rand(1, 3, 32, 32), 1))
    assert out.logits.shape == (1, 1, 10) and "features" in out.taps
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ---- official fidelity (the official code's max, loss and neuron) ----------------------------------------
def test_stmixer_neuron_preset_is_the_official_lif():
    from helpers.runs import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(["neuron=stmixer_lif"])
    neuron = instantiate(cfg.neuron)()
    assert (neuron.tau, neuron.decay_input, neuron.v_threshold, neuron.v_reset, neuron.detach_reset) == \
        (2.0, False, 1.0, 0.0, False)
    assert type(neuron.surrogate).__name__ == "Dspike" and neuron.surrogate.alpha == 2.5
    # the official LIFSpike step: u = 0.5 u + x; spike when u >= 1; hard reset
    x = torch.tensor([[0.6], [0.8], [0.3], [1.2]])
    u, spikes = 0.0, []
    for x_t in x[:, 0].tolist():
        u = 0.5 * u + x_t
        s = float(u >= 1.0)
        spikes.append(s)
        u = u * (1 - s)
    assert neuron(x)[:, 0].tolist() == spikes

def test_stmixer_preset_is_the_official_demo():
    from helpers.runs import compose_config

    cfg = compose_config(["experiment=stmixer_cifar100"])
    assert (cfg.model.dim, cfg.model.depth, cfg.model.heads, cfg.model.mlp_ratio, cfg.T) == (384, 10, 16, 4.0, 1)
    assert cfg.method._target_.endswith("SML") and cfg.method.token_branch == "mixer"
    assert (cfg.optim.opt, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 5e-3, 0.06)
