"""Compose snnexp configs exactly as the CLI does, run the CLI in a subprocess, and run one fast_dev_run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from snnexp.config import CONF_DIR, register_schemas

register_schemas()
REPO = Path(__file__).resolve().parents[2]

# small event data generated in memory: 8 / 4 / 4 samples of 16x16 moving edges
SMALL_SYNTHETIC_DVS = ["data=synthetic_dvs", "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.sensor=16"]


def compose_config(overrides: list[str], output_dir: Path | None = None):
    """Compose ``conf/train.yaml`` with ``overrides`` (as ``python -m snnexp`` would) and set HydraConfig."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m snnexp ARGS`` in a subprocess and return the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "snnexp", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def options(group: str) -> list[str]:
    """The options of a config group: the stems of ``conf/<group>/*.yaml``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def run_and_summarise(overrides: list[str], output_dir: Path) -> dict:
    """``snnexp.train.run`` on the composed ``overrides``, writing into ``output_dir``; returns summary.json."""
    from snnexp.train import run

    run(compose_config(list(overrides), output_dir))
    return json.loads((output_dir / "summary.json").read_text())


# ---- the distillation and surrogate-module tests' students ------------------------------------------------------

STUDENT_DATA = {"resnet19": ["data=digits"], "vggsnn": SMALL_SYNTHETIC_DVS}  # student model -> its data


def student_overrides(method: str, model: str, teachers: dict) -> list[str]:
    """``method`` on the student ``model`` at T=2 on its data; a method whose config has ``teacher_ckpt`` gets the
    model's `method=ann` checkpoint from ``teachers``."""
    from helpers.partners import needs_teacher

    extra = [f"method.teacher_ckpt={teachers[model]}"] if needs_teacher(method) else []
    return [f"method={method}", f"model={model}", "T=2", *STUDENT_DATA[model], *extra]


# a short real run: debug=short (checkpointed, logged) with 3 training batches per epoch, 2 epochs
SHORT = ["debug=short", "trainer.limit_train_batches=3", "trainer.max_epochs=2"]
