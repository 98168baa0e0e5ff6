"""The ready sweeps of sweeps/ (the package ``snnexp.sweeps``): every Hydra sweep file is found as ``+sweep=<name>``
through the search path of conf/train.yaml, and every parameter a sweep file or a wandb spec searches is a key snnexp
accepts, with values from both ends of its range (composed through Hydra as a trial would be)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers.runs import REPO, compose_config

SWEEP_FILES = sorted((REPO / "sweeps" / "sweep").glob("*.yaml"))
WANDB_FILES = sorted((REPO / "sweeps" / "wandb").glob("*.yaml"))
SWEEPER = "override /hydra/sweeper"


def sample_values(expression: str) -> list[str]:
    """Override-ready values of a Hydra sweep expression: both ends of an interval (tags such as ``log`` aside),
    every value of a ``choice`` or ``range``, or the plain value itself."""
    override = OverridesParser.create().parse_override(f"key={expression}")
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [repr(value.start), repr(value.end)]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def without_sweeper(path, tmp_path):
    """A copy of the sweep file at ``<tmp>/sweep/<name>.yaml`` without what only the Optuna sweeper understands (its
    defaults entry and the ``hydra`` node); returns the overrides that compose it from there instead of the package."""
    body = yaml.safe_load(path.read_text())
    body["defaults"] = [entry for entry in body["defaults"] if SWEEPER not in entry]
    body.pop("hydra")
    (tmp_path / "sweep").mkdir(exist_ok=True)
    (tmp_path / "sweep" / path.name).write_text("# @package _global_\n" + yaml.safe_dump(body, sort_keys=False))
    return [f"hydra.searchpath=[file://{tmp_path}]", f"+sweep={path.stem}"]


def test_every_method_family_has_a_sweep():
    params = {key for path in SWEEP_FILES for key in yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]}
    names = {path.stem for path in SWEEP_FILES}
    assert {"tet_digits", "tet_cifar10dvs"} <= names
    assert any(name.startswith(family) for family in ("sml", "dspike", "imloss") for name in names)
    assert {"optim.lr", "method.lamb", "method.tau", "method.b0", "method.weight", "neuron.tau",
            "neuron.surrogate.alpha"} <= params


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_is_an_optuna_sweep(path):
    text = path.read_text()
    assert text.startswith("# @package _global_\n"), "a sweep file sets top-level keys: it needs _global_"
    body = yaml.safe_load(text)
    assert {SWEEPER: "optuna"} in body["defaults"]
    sweeper = body["hydra"]["sweeper"]
    assert isinstance(sweeper["n_trials"], int) and sweeper["n_trials"] > 0
    assert sweeper["sampler"]["_target_"].startswith("optuna.samplers.")
    assert sweeper["direction"] == "maximize"  # optimized_metric is val/acc
    assert sweeper["params"] and all(isinstance(v, str) for v in sweeper["params"].values())


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_params_are_snnexp_overrides(path, tmp_path):
    """The file's fixed part composes, and with each searched key at each end of its range too; the method is then
    built, so a value its constructor refuses (Dspike's b0 outside [b_min, b_max], ...) fails here."""
    fixed = without_sweeper(path, tmp_path)
    compose_config(fixed)
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    for key, expression in params.items():
        for value in sample_values(expression):
            cfg = compose_config([*fixed, f"{key}={value}"])
            assert str(OmegaConf.select(cfg, key)) == value, (key, value)
            instantiate(cfg.method)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_whole_sweep_file_composes_from_the_package(path):
    """``+sweep=<name>`` as the command line gives it, found through ``pkg://snnexp.sweeps``. Without the Optuna
    sweeper plugin, composing stops at its missing config, past finding and reading the sweep file."""
    try:
        cfg = compose_config([f"+sweep={path.stem}"])
    except MissingConfigException as err:
        assert "hydra/sweeper/optuna" in str(err), err  # not sweep/<name>: the file itself was found
        pytest.skip("hydra/sweeper=optuna is not registered (the Optuna sweeper plugin is not installed)")
    sweeper = yaml.safe_load(path.read_text())["hydra"]["sweeper"]
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    assert dict(cfg.hydra.sweeper.params) == sweeper["params"]
    assert cfg.hydra.sweeper.n_trials == sweeper["n_trials"]


def test_installed_wheel_ships_the_sweeps_and_finds_them_from_another_directory(installed_wheel, tmp_path):
    wheel, site = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"snnexp/sweeps/sweep/{p.name}" for p in SWEEP_FILES} <= set(names)
    assert {f"snnexp/sweeps/wandb/{p.name}" for p in WANDB_FILES} <= set(names)
    proc = subprocess.run([sys.executable, "-m", "snnexp", "+sweep=tet_digits", "--cfg", "job"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    if proc.returncode != 0:  # without the Optuna sweeper: the file was found, its sweeper was not
        assert "Could not find 'hydra/sweeper/optuna'" in proc.stderr, proc.stderr[-2000:]
    else:
        assert "_target_: snnexp.methods.tet.TET" in proc.stdout


# ---- wandb sweep specs --------------------------------------------------------------------------------------------

WANDB_DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform_values",
                       "q_log_uniform_values", "inv_log_uniform_values", "normal", "q_normal", "log_normal",
                       "q_log_normal", "beta", "q_beta"}


def wandb_samples(spec: dict) -> list:
    """Sample values of one wandb parameter: its ``value``, each of its ``values``, or both ends of min/max."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def test_there_are_tet_and_neuron_wandb_specs():
    params = {key for path in WANDB_FILES for key in yaml.safe_load(path.read_text())["parameters"]}
    assert {"optim.lr", "method.lamb", "T", "neuron.tau", "neuron.surrogate.alpha"} <= params


@pytest.mark.parametrize("path", WANDB_FILES, ids=lambda p: p.stem)
def test_wandb_spec_params_are_snnexp_overrides(path):
    """The agent runs ``python -m snnexp <fixed overrides> key=value ...``: the spec's metric is snnexp's
    ``optimized_metric`` and every sample value of every parameter composes with the fixed overrides."""
    spec = yaml.safe_load(path.read_text())
    command = spec["command"]
    assert command[command.index("-m") + 1] == "snnexp" and command[-1] == "${args_no_hyphens}"
    fixed = [arg for arg in command if "=" in arg]
    base = compose_config(fixed)
    assert spec["method"] in ("bayes", "random", "grid")
    assert spec["metric"] == {"name": base.optimized_metric, "goal": "maximize"}
    for key, param in spec["parameters"].items():
        assert param.get("distribution", "categorical") in WANDB_DISTRIBUTIONS, key
        for value in wandb_samples(param):
            cfg = compose_config([*fixed, f"{key}={value}"])
            assert OmegaConf.select(cfg, key) == value, (key, value)
