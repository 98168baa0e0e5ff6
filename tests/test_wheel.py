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
    assert "snnexp/cuda/neuron_math.cuh" in names and "snnexp/cuda/neuron_kernels.cu" in names
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
