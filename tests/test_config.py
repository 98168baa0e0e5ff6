"""Config composition: schemas reject misspelt keys and wrong types before anything runs."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from helpers.runs import compose_config, run_cli


def _composition_error(*overrides):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as info:
        compose_config(list(overrides))
    text = str(info.value) + str(info.value.__cause__ or "")
    return text


def test_default_composition_has_every_group():
    cfg = compose_config([])
    for key in ("data", "model", "neuron", "method", "trainer", "logger", "callbacks", "paths", "optim"):
        assert key in cfg
    assert cfg.T == 4 and cfg.seed == 0 and cfg.resume is None
    assert cfg.neuron._target_ == "snnexp.neurons.LIF"
    assert cfg.neuron.surrogate._target_ == "snnexp.neurons.surrogate.Sigmoid"


def test_misspelt_method_key_is_rejected():
    text = _composition_error("method=tet", "method.lamda=0.1")
    assert "lamda" in text


def test_wrong_type_is_rejected():
    text = _composition_error("trainer.max_epochs=abc")
    assert "abc" in text and "max_epochs" in text


def test_wrong_type_in_derived_schema_is_rejected():
    text = _composition_error("method=tet", "method.lamb=high")
    assert "lamb" in text


def test_misspelt_neuron_key_is_rejected():
    assert "taau" in _composition_error("neuron.taau=3")


def test_seed_zero_and_overrides_compose():
    cfg = compose_config(["seed=0", "T=6", "neuron=plif", "neuron.tau=3", "neuron/surrogate=atan",
                          "neuron.surrogate.alpha=3"])
    assert cfg.seed == 0 and cfg.T == 6
    assert cfg.neuron.tau == 3 and cfg.neuron.surrogate.alpha == 3
    assert cfg.neuron.surrogate._target_.endswith("ATan")


def test_tet_neuron_preset_is_lif_with_triangle_and_no_input_decay():
    cfg = compose_config(["neuron=tet_lif"])
    assert cfg.neuron._target_ == "snnexp.neurons.LIF"
    assert cfg.neuron.decay_input is False and cfg.neuron.tau == 2.0
    assert cfg.neuron.surrogate._target_.endswith("Triangle")


def test_unknown_option_lists_valid_ones(tmp_path):
    proc = run_cli("method=tett", cwd=tmp_path)
    assert proc.returncode != 0
    assert "tett" in proc.stderr and "Available options" in proc.stderr
    assert "tet" in proc.stderr.split("Available options")[1]
    assert "Traceback" not in proc.stderr
