"""Fixtures shared across the test folders. Shared code (config composition, CLI runs, writers of the datasets'
on-disk formats, references) lives in ``tests/helpers`` and is imported as ``from helpers.<module> import ...``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers")

from helpers.formats import (  # noqa: E402
    make_events,
    write_cifar10,
    write_cifar10dvs,
    write_cifar100,
    write_gesture_npy,
    write_imagefolder,
    write_modelnet,
    write_nmnist_bin,
)
from helpers.runs import REPO, SMALL_SYNTHETIC_DVS, STUDENT_DATA, compose_config  # noqa: E402


@pytest.fixture
def make_config(tmp_path):
    def make(*overrides: str):
        return compose_config(list(overrides), tmp_path / "run")

    return make


# ---- ANN teachers for the distillation methods ------------------------------------------------------------------


@pytest.fixture(scope="session")
def ann_teacher(tmp_path_factory):
    """``ann_teacher(*overrides)``: the path of a `method=ann` checkpoint (debug=short: 2 batches of one epoch) of
    the model and data the overrides select, trained once per session for each distinct set of overrides."""
    from snnexp.train import run

    made = {}

    def teacher(*overrides: str) -> str:
        if overrides not in made:
            out = tmp_path_factory.mktemp("teacher")
            cfg = compose_config(["debug=short", "method=ann", "T=2", "data.batch_size=4", "optim=sgd", *overrides],
                                 out)
            run(cfg)
            made[overrides] = str(out / "checkpoints" / "last.ckpt")
            assert Path(made[overrides]).is_file()
        return made[overrides]

    return teacher


@pytest.fixture(scope="session")
def teachers(ann_teacher):
    """One `method=ann` checkpoint per student model of the distillation tests (resnet19, vggsnn)."""
    return {model: ann_teacher(f"model={model}", *data) for model, data in STUDENT_DATA.items()}


# ---- tiny datasets of every data option, in their real layouts (the combination tests) --------------------------


@pytest.fixture(scope="session")
def modelnet_root(tmp_path_factory):
    """A tiny ModelNet40/10 in the ``modelnet40_normal_resampled`` layout, written once per session."""
    root = tmp_path_factory.mktemp("modelnet") / "modelnet40_normal_resampled"
    write_modelnet(root)
    return root


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory, modelnet_root):
    """One tiny dataset per data option, in its real layout; returns the overrides that select it.

    The dataset written for an option is chosen by the option's datamodule class (its ``_target_``), so a new yaml
    of an existing datamodule is covered without an edit here."""
    from snnexp.data.cifar10dvs import CIFAR10DVSDataModule
    from snnexp.data.digits import DigitsDataModule
    from snnexp.data.dvsgesture import DVSGestureDataModule
    from snnexp.data.modelnet import ModelNet10DataModule, ModelNet40DataModule
    from snnexp.data.nmnist import NMNISTDataModule
    from snnexp.data.synthetic import SyntheticDVSDataModule
    from snnexp.data.vision import CIFAR10DataModule, CIFAR100DataModule, ImageNetDataModule
    from hydra.utils import get_class

    from helpers.runs import options

    root = tmp_path_factory.mktemp("datasets")

    def cifar10dvs():
        events = {(c, i): make_events(120, 128, 128, seed=10 * c + i) for c in range(10) for i in range(10)}
        return [f"data.root={write_cifar10dvs(root / 'cifar10dvs', 'events_np', events)}", "data.size=32"]

    def nmnist():
        for split, folder in (("Train", "Train"), ("Test", "Test")):
            for digit in range(10):
                write_nmnist_bin(root / "nmnist" / folder / str(digit) / f"{digit:05d}.bin",
                                 make_events(80, 34, 34, seed=digit + (0 if split == "Train" else 50)))
        return [f"data.root={root / 'nmnist'}"]

    def dvsgesture():
        for split in ("ibmGestureTrain", "ibmGestureTest"):
            for label in range(11):
                write_gesture_npy(root / "dvsgesture" / split / "user01_fluorescent" / f"{label}.npy",
                                  make_events(100, 128, 128, seed=label))
        return [f"data.root={root / 'dvsgesture'}", "data.size=32"]

    def cifar10():
        write_cifar10(root / "cifar10")
        return [f"data.root={root / 'cifar10'}", "data.verify_md5=false"]

    def cifar100():
        write_cifar100(root / "cifar100")
        return [f"data.root={root / 'cifar100'}", "data.verify_md5=false"]

    def imagenet():
        write_imagefolder(root / "imagenet")
        return [f"data.root={root / 'imagenet'}", "data.num_classes=2", "data.size=32"]

    def modelnet():
        return [f"data.root={modelnet_root}", "data.num_points=32"]

    writers = {  # datamodule class -> writer of a tiny copy, returning the overrides that point at it
        DigitsDataModule: lambda: [],
        SyntheticDVSDataModule: lambda: SMALL_SYNTHETIC_DVS[1:],
        CIFAR10DataModule: cifar10,
        CIFAR100DataModule: cifar100,
        ImageNetDataModule: imagenet,
        CIFAR10DVSDataModule: cifar10dvs,
        DVSGestureDataModule: dvsgesture,
        NMNISTDataModule: nmnist,
        ModelNet40DataModule: modelnet,
        ModelNet10DataModule: modelnet,
    }
    written, roots = {}, {}
    for name in options("data"):
        cls = get_class(compose_config([f"data={name}"]).data._target_)
        assert cls in writers, f"conf/data/{name}.yaml: no tiny-dataset writer for {cls.__name__} in tests/conftest.py"
        if cls not in written:
            written[cls] = writers[cls]()
        roots[name] = [f"data={name}", *written[cls]]
    return roots


@pytest.fixture(scope="module")
def partners(data_roots):
    """The cheap partner of each config option (see helpers/partners.py)."""
    from helpers.partners import Partners

    return Partners(data_roots)


# ---- the built wheel (test_wheel.py) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """Build the wheel offline, install it into a fresh target directory and return (wheel, site dir)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist"), str(REPO)], check=True, capture_output=True, text=True)
    wheel = next((tmp / "dist").glob("snnexp-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, text=True)
    return wheel, tmp / "site"


# ---- a throwaway PostgreSQL server (distributed Optuna sweeps, test_sweep_workers.py) ----------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of this session on 127.0.0.1 (tests/helpers/postgres.py), stopped at the end; skips the
    test where the server binaries or the psycopg driver are missing."""
    import importlib.util

    from helpers.postgres import MISSING_BINARIES, MISSING_DRIVER, PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        pytest.skip(MISSING_BINARIES)
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip(MISSING_DRIVER)
    server = PostgresServer(*binaries)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """The SQLAlchemy URL (``postgresql+psycopg://...``) of an empty database on the session's PostgreSQL server."""
    return postgres_server.url()
