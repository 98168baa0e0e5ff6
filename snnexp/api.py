"""The Python API for notebooks and scripts: compose a config as the command line does, build it, run it.

    import snnexp
    cfg = snnexp.compose(["method=tet", "model=resnet19", "data=cifar10", "T=2"])
    datamodule, module = snnexp.build(cfg)          # touches no dataset on disk
    print(sum(p.numel() for p in module.model.parameters()))
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, open_dict


def compose(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """The experiment config that ``python -m snnexp OVERRIDES`` would run, with the same validation.

    Hydra's own settings are included and made current (so ``snnexp.run(cfg)`` works as from the command line);
    the run directory is ``output_dir``, or a fresh ``outputs/runs/<date>/<time>`` like the command line's.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from snnexp.config import CONF_DIR, register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir if output_dir is not None else cfg.hydra.run.dir)
    return cfg


def build(cfg: DictConfig):
    """``(datamodule, module)`` for ``cfg``: the LightningDataModule and the SNNModule (``module.model`` is the
    SNN, ``module.method`` the training method). No dataset is read."""
    from snnexp.train import build as build_experiment

    return build_experiment(cfg)


def run(cfg: DictConfig):
    """Train, test and write ``summary.json`` exactly as ``python -m snnexp`` does; returns the optimised metric."""
    from snnexp.train import run as run_experiment

    return run_experiment(cfg)
