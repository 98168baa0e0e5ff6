"""The README's code runs as written: the Python API block in a fresh interpreter, and the "Extending snnexp"
examples (a method, a model and a dataset, two files each) written into this checkout and trained together."""

import json
import os
import re
import shutil
import subprocess
import sys
from functools import partial

from helpers.runs import REPO, run_cli

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[tuple[str, str, str]]:
    """``(language, code, the line before the block)`` for every fenced block of the README."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append((match.group(1), match.group(2), before))
    return blocks


def extension_files() -> dict[str, str]:
    """``{path: code}`` of the blocks whose preceding line names a .py or .yaml file of the checkout."""
    files = {}
    for _, code, before in readme_blocks():
        named = re.findall(r"`((?:snnexp|conf)/[\w/]+\.(?:py|yaml))`", before)
        if named:
            files[named[0]] = code
    return files


def test_python_api_block_runs_in_a_fresh_interpreter():
    from snnexp.models import create_model
    from snnexp.neurons import LIF

    code = next(code for lang, code, _ in readme_blocks() if lang == "python" and "snnexp.compose" in code)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sum(p.numel() for p in create_model("resnet19", neuron=partial(LIF), input_shape=(3, 32, 32),
                                                   num_classes=10).parameters())
    assert proc.stdout.split()[-1] == str(expected)


def test_extension_examples_are_two_files_each_and_train_together(tmp_path):
    """The six files go into a copy of the package laid out as in a wheel (``snnexp/conf``, ``snnexp/cuda``),
    first on ``PYTHONPATH``: the checkout itself is never written to."""
    files = extension_files()
    assert sorted(files) == sorted([
        "snnexp/methods/late_steps.py", "conf/method/late_steps.yaml", "snnexp/models/mlp.py",
        "conf/model/spiking_mlp.yaml", "snnexp/data/moons.py", "conf/data/moons.yaml",
    ])
    copy = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "snnexp", copy / "snnexp", ignore=ignore)
    shutil.copytree(REPO / "conf", copy / "snnexp" / "conf", ignore=ignore)
    shutil.copytree(REPO / "cuda", copy / "snnexp" / "cuda", ignore=ignore)
    for path, code in files.items():
        target = copy / ("snnexp/" + path if path.startswith("conf/") else path)
        assert not target.exists(), f"the README example {path} would replace a file of the package"
        target.write_text(code)
    env = {"PYTHONPATH": str(copy)}
    where = subprocess.run([sys.executable, "-c", "import snnexp; print(snnexp.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, **env})
    assert where.stdout.strip() == str(copy / "snnexp" / "__init__.py")

    run_dir = tmp_path / "run"
    proc = run_cli("method=late_steps", "model=spiking_mlp", "data=moons", "trainer.max_epochs=10", "optim.lr=0.01",
                   "neuron.backend=torch", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
                   cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["method"] == "late_steps" and summary["config"]["model"] == "spiking_mlp"
    assert summary["test"]["test/acc"] > 0.75  # two half-moons: far above chance after 10 epochs
    typo = run_cli("method=late_steps", "method.powr=2", "model=spiking_mlp", "data=moons", cwd=tmp_path, env=env)
    assert typo.returncode != 0 and "powr" in typo.stderr  # the derived schema refuses a misspelt key
