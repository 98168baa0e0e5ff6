"""The built wheel (the ``installed_wheel`` fixture of tests/conftest.py) ships conf/ and cuda/ inside the package, so
snnexp composes and runs from any directory."""

import os
import subprocess
import sys
import zipfile


def test_wheel_contains_configs_and_cuda_sources(installed_wheel):
    wheel, _ = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "snnexp/conf/train.yaml" in names
    assert "snnexp/conf/method/tet.yaml" in names and "snnexp/conf/neuron/surrogate/atan.yaml" in names
    assert "snnexp/cuda/neuron_math.cuh" in names and "snnexp/cuda/neuron_device.cuh" in names  # the rest: generated
    assert "snnexp/cuda/neuron_host.cuh" in names and "snnexp/cuda/neuron_cpu.cpp" in names
    assert not any(name.startswith(("conf/", "cuda/", "tests/")) for name in names)


def test_installed_wheel_composes_and_prints_config_from_another_directory(installed_wheel, tmp_path):
    _, site = installed_wheel
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "import snnexp.config as c; print(c.__file__); print(c.CONF_DIR); "
                               "from snnexp.kernels.sources import cuda_dir; print(cuda_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(p.startswith(str(site)) for p in probe), probe
    proc = subprocess.run([sys.executable, "-m", "snnexp", "method=tet", "model=resnet19", "--cfg", "job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "_target_: snnexp.methods.tet.TET" in proc.stdout and "_target_: snnexp.models.resnet.resnet19" in proc.stdout


def test_installed_wheel_ships_the_optuna_sweeper_plugin_found_by_hydras_scan(installed_wheel, tmp_path):
    """hydra_plugins/snnexp_optuna_sweeper is in the wheel (hydra_plugins itself stays a namespace package), and
    Hydra's own plugin scan finds it, from another directory, in the installed copy."""
    wheel, site = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "hydra_plugins/snnexp_optuna_sweeper/sweeper.py" in names
    assert "hydra_plugins/snnexp_optuna_sweeper/config.py" in names and "hydra_plugins/__init__.py" not in names
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", "from hydra.core.plugins import Plugins; import sys; "
                               "cls = Plugins.instance().class_name_to_class"
                               "['hydra_plugins.snnexp_optuna_sweeper.sweeper.OptunaSweeper']; "
                               "print(sys.modules[cls.__module__].__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.strip().startswith(str(site)), probe.stdout
    proc = subprocess.run([sys.executable, "-m", "snnexp", "hydra/sweeper=optuna", "--cfg", "hydra"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "_target_: hydra_plugins.snnexp_optuna_sweeper.sweeper.OptunaSweeper" in proc.stdout
