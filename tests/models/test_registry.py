"""The model registry (snnexp/models/registry.py) and the contract every registered model keeps: shapes, taps,
T read from the input, one neuron per spiking layer, factories without T or encoder, and every conf/model option a
registered name built by its own factory."""

import inspect

import pytest
import torch
import yaml

from helpers.models import B, C, T, StandInNeuron, build, build_named, count_params, real_lif, seq
from helpers.models import TOKEN_NEURONS
from snnexp.config import CONF_DIR, _locate
from snnexp.models import ModelConfigError, ModelOutput, create_model, list_models
from snnexp.models.encoders import make_encoder


CONF_MODEL = CONF_DIR / "model"


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


@pytest.mark.parametrize("name", list_models())
def test_factories_take_no_T_and_no_encoder(name):
    from snnexp.models.registry import _MODELS

    params = inspect.signature(_MODELS[name]).parameters
    assert not {"T", "encoder"} & set(params)
    assert [n for n, p in params.items() if p.default is inspect.Parameter.empty] == ["neuron", "input_shape",
                                                                                      "num_classes"]
    assert all(p.kind == p.KEYWORD_ONLY for p in params.values())


def test_unknown_names_are_refused_with_the_valid_choices():
    with pytest.raises(ModelConfigError, match=r"direct.*poisson.*encoder="):
        make_encoder("latency")
    with pytest.raises(ValueError, match="resnet19"):
        create_model("resnet1000", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ModelConfigError, match=r"bn.*tdbn.*model.norm="):
        build("convnet", (1, 8, 8), norm="layernorm")


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


# the token models' named configs, each with every token neuron (the ImageNet-size STMixer once, at LIF)
TOKEN_RUNS = ([(name, neuron) for name in ("sdt", "sdt_2_256", "sdt_2_512", "stmixer") for neuron in sorted(TOKEN_NEURONS)]
              + [("stmixer_imagenet_8_768", "lif")])


@pytest.mark.parametrize("name, neuron", TOKEN_RUNS)
def test_named_config_runs_forward_and_backward_with_every_neuron(name, neuron):
    torch.manual_seed(0)
    model = build_named(name, (3, 16, 16), neuron=TOKEN_NEURONS[neuron])
    out = model(seq(torch.rand(B, 3, 16, 16)))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (T, B, C)
    assert "features" in out.taps and out.taps["features"].shape == (T, B, model.num_features)
    assert all(v.shape[:2] == (T, B) for v in out.taps.values())
    out.logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
