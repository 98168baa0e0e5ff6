"""Every data x model x method x neuron combination that makes sense runs one fast_dev_run step on the CPU;
the ones that cannot work are refused at start-up with a clear message.

Datasets are generated here in their real on-disk formats by the writers of the data tests.
"""

import itertools
import json

import pytest

from conftest import compose_config, run_cli
from snnexp.config import CONF_DIR
from snnexp.errors import DatasetNotFoundError, IncompatibleError
from snnexp.train import run
from test_data import make_events, write_cifar10dvs, write_gesture_npy, write_nmnist_bin
from test_data_static import write_cifar10, write_cifar100, write_imagefolder
from test_modelnet import write_modelnet

MODELS = ["convnet", "resnet18", "resnet19", "resnet20", "resnet34", "vggsnn", "vggsnn_pool"]
POINT_MODELS, POINT_DATA = ["pointnet"], ["modelnet40", "modelnet10"]
METHODS = ["sdt", "tet", "ann"]
NEURONS = ["lif", "if", "plif", "tet_lif"]


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    """One tiny dataset per data option, in its real layout; returns the overrides that select it."""
    root = tmp_path_factory.mktemp("datasets")
    c10dvs = write_cifar10dvs(root / "cifar10dvs", "events_np",
                              {(c, i): make_events(120, 128, 128, seed=10 * c + i) for c in range(10) for i in range(10)})
    for split, folder in (("Train", "Train"), ("Test", "Test")):
        for digit in range(10):
            write_nmnist_bin(root / "nmnist" / folder / str(digit) / f"{digit:05d}.bin",
                             make_events(80, 34, 34, seed=digit + (0 if split == "Train" else 50)))
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        for label in range(11):
            write_gesture_npy(root / "dvsgesture" / split / "user01_fluorescent" / f"{label}.npy",
                              make_events(100, 128, 128, seed=label))
    write_cifar10(root / "cifar10")
    write_cifar100(root / "cifar100")
    write_imagefolder(root / "imagenet")
    write_modelnet(root / "modelnet")
    return {
        "digits": ["data=digits"],
        "synthetic_dvs": ["data=synthetic_dvs", "data.num_train=8", "data.num_val=4", "data.num_test=4",
                          "data.sensor=16"],
        "cifar10": ["data=cifar10", f"data.root={root / 'cifar10'}", "data.verify_md5=false"],
        "cifar100": ["data=cifar100", f"data.root={root / 'cifar100'}", "data.verify_md5=false"],
        "imagenet": ["data=imagenet", f"data.root={root / 'imagenet'}", "data.num_classes=2", "data.size=32"],
        "cifar10dvs": ["data=cifar10dvs", f"data.root={c10dvs}", "data.size=32"],
        "dvsgesture": ["data=dvsgesture", f"data.root={root / 'dvsgesture'}", "data.size=32"],
        "nmnist": ["data=nmnist", f"data.root={root / 'nmnist'}"],
        "modelnet40": ["data=modelnet40", f"data.root={root / 'modelnet'}", "data.num_points=32"],
        "modelnet10": ["data=modelnet10", f"data.root={root / 'modelnet'}", "data.num_points=32"],
    }


def _fast_run(tmp_path, *overrides):
    # SGD keeps no per-parameter state: the first step of the 21M-parameter ResNet-34 stays cheap on the CPU
    cheap = [] if any(o.startswith("experiment=") for o in overrides) else ["optim=sgd"]  # presets fix their own
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", *cheap, *overrides], tmp_path / "run")
    run(cfg)
    return json.loads((tmp_path / "run" / "summary.json").read_text())


def _cells():
    """Each data x model pair once, with method and neuron cycling so every pair of them also meets."""
    cycle = itertools.cycle(itertools.product(METHODS, NEURONS))
    data = ["digits", "synthetic_dvs", "cifar10", "cifar100", "imagenet", "cifar10dvs", "dvsgesture", "nmnist"]
    for d in data:
        for m in MODELS:
            if (d, m) == ("digits", "vggsnn_pool"):
                continue  # 8x8 is too small for four 2x2 poolings: refused, see below
            method, neuron = next(cycle)
            yield d, m, method, neuron
    for d in POINT_DATA:
        for m in POINT_MODELS:
            method, neuron = next(cycle)
            yield d, m, method, neuron


@pytest.mark.parametrize("data,model,method,neuron", list(_cells()))
def test_every_data_model_pair_runs_a_fast_dev_run(tmp_path, data_roots, data, model, method, neuron):
    summary = _fast_run(tmp_path, *data_roots[data], f"model={model}", f"method={method}", f"neuron={neuron}")
    assert summary["status"] == "completed"
    assert summary["config"]["model"] == model and summary["config"]["method"] == method
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("method,neuron", list(itertools.product(METHODS, NEURONS)))
def test_every_method_with_every_neuron(tmp_path, method, neuron):
    summary = _fast_run(tmp_path, "model=resnet19", f"method={method}", f"neuron={neuron}")
    assert summary["status"] == "completed"


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "triangle", "rectangle", "dspike"])
def test_every_surrogate_trains(tmp_path, surrogate):
    assert _fast_run(tmp_path, f"neuron/surrogate={surrogate}")["status"] == "completed"


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


PRESETS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_carries_its_paper_number_and_runs_at_reduced_size(tmp_path, data_roots, preset):
    cfg = compose_config([f"experiment={preset}"])
    assert cfg.meta.paper and cfg.meta.reported_top1 > 0
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


def test_point_cloud_models_and_image_data_do_not_mix(tmp_path, data_roots):
    with pytest.raises(IncompatibleError, match="pointnet cannot be built for data digits"):
        _fast_run(tmp_path, "model=pointnet")
    with pytest.raises(IncompatibleError, match="resnet19 cannot be built for data modelnet40"):
        _fast_run(tmp_path, *data_roots["modelnet40"], "model=resnet19")


def test_pointnet_preset_trains_at_one_step_and_tests_at_four(tmp_path, data_roots):
    summary = _fast_run(tmp_path, "experiment=pointnet_modelnet40_t1", *data_roots["modelnet40"][1:], "T=1")
    assert sorted(summary["test_by_T"]) == ["1", "2", "3", "4"]
