"""Shared fixtures: compose snnexp configs exactly as the CLI does, with outputs under a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from snnexp.config import CONF_DIR, register_schemas

register_schemas()
REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def make_config(tmp_path):
    def make(*overrides: str):
        return compose_config(list(overrides), tmp_path / "run")

    return make


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m snnexp ARGS`` in a subprocess and return the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "snnexp", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
