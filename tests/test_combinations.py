"""Every option of every config group runs one fast_dev_run step on the CPU, discovered from ``conf/<group>/*.yaml``
(adding a yaml there tests it here): each model option, each data option with one small model of every family, each
method on one small model of every family, each neuron, surrogate, optimiser, schedule and preset; the partners are
picked by rules derived from the options (helpers/partners.py) rather than a full cross product. The combinations
that cannot work are refused at start-up with a clear message.

Datasets are generated in their real on-disk formats by the writers of tests/helpers/formats.py (the ``data_roots``
fixture)."""

import copy
import json

import pytest

from helpers.partners import default_option, family, needs_teacher, shrink
from helpers.runs import compose_config, options, run_cli
from snnexp.errors import DatasetNotFoundError, IncompatibleError
from snnexp.neurons import MultiStepNeuron
from snnexp.train import run

MODELS, DATA, METHODS = options("model"), options("data"), options("method")
NEURONS, SURROGATES = options("neuron"), options("neuron/surrogate")
OPTIMS, SCHEDULERS, PRESETS = options("optim"), options("scheduler"), options("experiment")
FAMILIES = sorted({family(m) for m in MODELS})


def _spiking_layers(model):
    return sum(isinstance(m, MultiStepNeuron) for m in model.modules())


# Combinations refused on purpose: method -> (the models it refuses, by what they lack; the refusal's message). They
# are asserted as refusals wherever the cells below meet them; the method's own file tests them further.
EVENT_DATA = {"cifar10dvs", "dvsgesture", "nmnist", "synthetic_dvs"}  # conf/data options of event sequences


def _not_convertible(model, data: str) -> bool:
    """Conversion refuses spike-multiplying models, unfoldable norms and event data (it feeds a static image)."""
    from snnexp.training.conversion import fold_batchnorm, unfolded_norms

    if data in EVENT_DATA:
        return True
    blocked = any(getattr(m, "conversion_blocker", None) for m in model.modules())
    folded = copy.deepcopy(model)
    fold_batchnorm(folded)
    return blocked or bool(unfolded_norms(folded))


REFUSED = {  # method: (refuses(model, data), the message's pattern)
    "mtt": (lambda model, data: not hasattr(model, "stages"), r"needs a model\s+with `stages`"),
    "convert": (_not_convertible, "cannot convert this model"),
    "dual_phase": (_not_convertible, "cannot convert this model"),
    "imloss": (lambda model, data: _spiking_layers(model) < 3, "spiking layers except the first and the last"),
}


def _fast_run(tmp_path, *overrides):
    # SGD keeps no per-parameter state: the first step of the 21M-parameter ResNet-34 stays cheap on the CPU
    own = any(o.startswith(("experiment=", "optim=")) for o in overrides)  # presets fix their own optimiser
    cheap = [] if own else ["optim=sgd"]
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", *cheap, *overrides], tmp_path / "run")
    run(cfg)
    return json.loads((tmp_path / "run" / "summary.json").read_text())


# ---- every option of every group, each with a cheap partner -----------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_model_option_runs_a_fast_dev_run(tmp_path, data_roots, partners, model):
    """Each model option at its own size on the default data if it fits, else on the cheapest data it fits (the
    ImageNet-size models at the tiny inputs of the generated datasets)."""
    data = partners.data_for(model)
    summary = _fast_run(tmp_path, *data_roots[data], f"model={model}")
    assert summary["status"] == "completed"
    assert summary["config"]["model"] == model and summary["config"]["data"] == data
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("data", DATA)
def test_every_data_model_pair_runs_a_fast_dev_run(tmp_path, data_roots, partners, data, model):
    """Each data option, read from its generated copy, with one small model of every family: it trains if the model
    fits the data, and is refused at start-up otherwise (point clouds and images, too small an input)."""
    name = partners.representative(model)
    overrides = [*data_roots[data], f"model={name}", *shrink(name)]
    if not partners.fits(name, data, *shrink(name)):
        with pytest.raises(IncompatibleError, match=f"{name} cannot be built for data {data}"):
            _fast_run(tmp_path, *overrides)
        return
    summary = _fast_run(tmp_path, *overrides)
    assert summary["status"] == "completed"
    assert summary["config"]["model"] == name and summary["config"]["data"] == data
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_architecture(method, model, data_roots, partners, ann_teacher, tmp_path):
    """Every training method on one small model of every family, on the data it fits; a method that needs a teacher
    gets a `method=ann` checkpoint of the same model and data. A method that cannot use the model must refuse it at
    start-up."""
    name = partners.representative(model)
    data = partners.data_for(name, *shrink(name))
    student = [f"model={name}", *shrink(name), *data_roots[data]]
    extra = [f"method.teacher_ckpt={ann_teacher(*student)}"] if needs_teacher(method) else []
    overrides = [f"method={method}", *student, *extra]
    refuses, message = REFUSED.get(method, (lambda m, d: False, None))
    if refuses(partners.build(name, data, *shrink(name)), data):
        with pytest.raises(IncompatibleError, match=message):
            _fast_run(tmp_path, *overrides)
        return
    summary = _fast_run(tmp_path, *overrides)
    assert summary["status"] == "completed"
    assert summary["config"]["method"] == method and summary["config"]["model"] == name


@pytest.mark.parametrize("neuron", NEURONS)
def test_every_neuron_option_trains(tmp_path, neuron):
    """Each neuron in every spiking layer of the default model on the default data."""
    summary = _fast_run(tmp_path, f"neuron={neuron}")
    assert summary["status"] == "completed"
    assert summary["config"]["neuron"] == neuron


@pytest.mark.parametrize("surrogate", SURROGATES)
def test_every_surrogate_trains(tmp_path, surrogate):
    assert _fast_run(tmp_path, f"neuron/surrogate={surrogate}")["status"] == "completed"


@pytest.mark.parametrize("optim", OPTIMS)
def test_every_optim_option_trains(tmp_path, optim):
    assert _fast_run(tmp_path, f"optim={optim}")["status"] == "completed"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_option_trains(tmp_path, scheduler):
    assert _fast_run(tmp_path, f"scheduler={scheduler}")["status"] == "completed"


def test_every_option_has_a_cheap_partner(partners):
    """The rules of helpers/partners.py find a partner for every option: each model fits the data it is paired
    with, each family has a representative of its own, every data option trains at least one family."""
    for model in MODELS:
        assert partners.fits(model, partners.data_for(model)), model
    representatives = {f: partners.representative(f) for f in FAMILIES}
    assert all(family(name) == f for f, name in representatives.items())
    for data in DATA:
        assert any(partners.fits(name, data, *shrink(name)) for name in representatives.values()), data
    assert partners.data_for(default_option("model")) == default_option("data")


# ---- refusals ---------------------------------------------------------------------------------------------------


def test_model_too_deep_for_the_input_is_refused_at_start_up(tmp_path):
    with pytest.raises(IncompatibleError, match=r"vggsnn_pool cannot be built for data digits \(input \(1, 8, 8\)"):
        _fast_run(tmp_path, "model=vggsnn_pool")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_rate_coding_an_event_stream_is_refused(tmp_path, data_roots):
    with pytest.raises(IncompatibleError, match="already a spike sequence"):
        _fast_run(tmp_path, *data_roots["cifar10dvs"], "model=vggsnn", "encoder=poisson")


def test_frames_that_disagree_with_T_are_refused(tmp_path, data_roots):
    with pytest.raises(IncompatibleError, match="set data.T to match"):
        _fast_run(tmp_path, *data_roots["cifar10dvs"], "model=vggsnn", "data.T=5")


def test_missing_dataset_is_reported_before_training(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data.root="):
        _fast_run(tmp_path, "data=cifar10", f"data.root={tmp_path / 'none'}")


def test_point_cloud_models_and_image_data_do_not_mix(tmp_path, data_roots):
    with pytest.raises(IncompatibleError, match="pointnet cannot be built for data digits"):
        _fast_run(tmp_path, "model=pointnet")
    with pytest.raises(IncompatibleError, match="resnet19 cannot be built for data modelnet40"):
        _fast_run(tmp_path, *data_roots["modelnet40"], "model=resnet19")


# ---- the README's canonical command -----------------------------------------------------------------------------


def test_canonical_command_without_data_is_one_clear_error(tmp_path):
    proc = run_cli("method=tet", "model=resnet34", "data=cifar10dvs", cwd=tmp_path)
    assert proc.returncode == 1
    assert "snnexp: error: CIFAR10-DVS not found under" in proc.stderr
    assert "data.root=" in proc.stderr and "Traceback" not in proc.stderr


def test_canonical_command_on_generated_cifar10dvs_runs_train_val_test(tmp_path, data_roots):
    root = data_roots["cifar10dvs"][1]
    proc = run_cli("method=tet", "model=resnet34", "data=cifar10dvs", root, "debug=fast", "T=2",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and "test/acc" in summary["test"] and "val/acc" in summary["final_val"]


# ---- paper presets (conf/experiment) ----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_carries_its_paper_number_and_runs_at_reduced_size(tmp_path, data_roots, preset):
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.meta.paper
    # a paper number, or a stated reason why the preset has none
    assert (cfg.meta.reported_top1 or 0) > 0 or cfg.meta.get("reported_top1_missing")
    data = cfg.hydra.runtime.choices.data
    summary = _fast_run(tmp_path, f"experiment={preset}", *data_roots[data][1:], "T=2")
    assert summary["status"] == "completed"
    assert summary["meta"]["reported_top1"] == cfg.meta.reported_top1


def test_tet_cifar10dvs_preset_has_the_papers_hyperparameters():
    cfg = compose_config(["experiment=tet_cifar10dvs_vggsnn"])
    assert (cfg.T, cfg.seed, cfg.method.lamb, cfg.optim.lr, cfg.trainer.max_epochs) == (10, 1000, 1e-3, 1e-3, 150)
    assert cfg.model._target_.endswith("vggsnn") and cfg.neuron.decay_input is False
    assert cfg.neuron.surrogate._target_.endswith("Triangle") and cfg.meta.reported_top1 == 83.17
    assert (cfg.data.size, cfg.data.norm, cfg.data.split_by) == (48, "max", "number")


def test_pointnet_preset_trains_at_one_step_and_tests_at_four(tmp_path, data_roots):
    summary = _fast_run(tmp_path, "experiment=pointnet_modelnet40_t1", *data_roots["modelnet40"][1:], "T=1")
    assert sorted(summary["test_by_T"]) == ["1", "2", "3", "4"]
