"""Every training method on the architectures beyond the ResNets and VGG: the Spike-driven Transformer,
STMixer and Spiking PointNet (at reduced size). A method that cannot use a model must refuse it at start-up."""

import json

import pytest

from conftest import compose_config
from snnexp.errors import IncompatibleError
from snnexp.train import run
from test_modelnet import write_modelnet

METHODS = ["sdt", "tet", "ann", "dspike", "imloss", "tdbn", "sml", "shortcut", "kd", "enof", "contrastive"]
DISTILL = {"kd", "enof", "contrastive"}
SMALL = {
    "sdt": ["model=sdt", "model.layers=2", "model.dim=32", "model.heads=4", "data=synthetic_dvs", "data.sensor=16",
            "data.num_train=8", "data.num_val=4", "data.num_test=4"],
    "stmixer": ["model=stmixer", "model.dim=32", "model.depth=2", "model.heads=4"],
}


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """Overrides per architecture and one `method=ann` teacher checkpoint for each."""
    root = tmp_path_factory.mktemp("arch")
    write_modelnet(root / "modelnet")
    overrides = {**SMALL, "pointnet": ["model=pointnet", "data=modelnet40", f"data.root={root / 'modelnet'}",
                                       "data.num_points=32"]}
    teachers = {}
    for name, extra in overrides.items():
        cfg = compose_config(["debug=short", "method=ann", "T=2", "data.batch_size=4", "optim=sgd", *extra],
                             root / f"teacher_{name}")
        run(cfg)
        teachers[name] = str(root / f"teacher_{name}" / "checkpoints" / "last.ckpt")
    return overrides, teachers


@pytest.mark.parametrize("model", ["sdt", "stmixer", "pointnet"])
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_architecture(method, model, setups, tmp_path):
    overrides, teachers = setups
    extra = [f"method.teacher_ckpt={teachers[model]}"] if method in DISTILL else []
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=4", "optim=sgd", f"method={method}",
                          *overrides[model], *extra], tmp_path / "run")
    run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("model", ["sdt", "stmixer", "pointnet"])
def test_mtt_refuses_models_without_stages(model, setups, tmp_path):
    overrides, _ = setups
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=4", "method=mtt", *overrides[model]], tmp_path / "run")
    with pytest.raises(IncompatibleError, match="stages"):
        run(cfg)
