"""The config of ``hydra/sweeper=optuna`` and its ``sampler`` / ``pruner`` options, stored in Hydra's ConfigStore.

Keys follow hydra-optuna-sweeper where they mean the same (``sampler``, ``direction``, ``storage``, ``study_name``,
``n_trials``, ``n_jobs``, ``params``), so its users' commands carry over.

A sampler or pruner is chosen either by a plain value, ``hydra.sweeper.pruner=median`` (its options then in
``hydra.sweeper.pruner_options.<key>=``), or as hydra-optuna-sweeper does, by the config group
``hydra/sweeper/pruner=median`` (options in ``hydra.sweeper.pruner.<key>=``, or ``pruner_options`` too). A name gives
the same node as its group option (:data:`SAMPLERS`, :data:`PRUNERS`); ``*_options`` are keyword arguments of the
constructor applied over it.
"""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules, where
# dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50


@dataclass
class GridSamplerConf:
    """Every combination of the ``choice``/``range`` parameters once (the sweeper passes the grid)."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5   # trials that finish before any pruning
    n_warmup_steps: int = 0     # epochs of each trial never pruned
    interval_steps: int = 1


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1       # epochs
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class ThresholdPrunerConf:
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: Optional[float] = None  # prune a trial whose reported metric falls below this (or rises above upper)
    upper: Optional[float] = None
    n_warmup_steps: int = 0


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*``. A trial runs once per entry of ``seeds`` and scores the mean of each objective."""

    _target_: str = "hydra_plugins.snnexp_optuna_sweeper.sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler and pruner itself, reporting bad options in one line
    defaults: List[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = None    # tpe|random|nsgaii|grid: hydra.sweeper.sampler=random, or the group hydra/sweeper/sampler=random
    pruner: Any = None     # none|median|hyperband|threshold: hydra.sweeper.pruner=median, or hydra/sweeper/pruner=median
    # keyword arguments of the sampler's / pruner's constructor, over its defaults (hydra.sweeper.sampler_options.seed=0)
    sampler_options: Dict[str, Any] = field(default_factory=dict)
    pruner_options: Dict[str, Any] = field(default_factory=dict)
    direction: Any = "maximize"       # maximize | minimize, or a list for several objectives
    directions: Optional[List[str]] = None  # several objectives: one direction each (overrides direction)
    objectives: Optional[List[str]] = None  # summary.json keys; default [optimized_metric] (val/acc)
    storage: Optional[str] = None     # an SQLAlchemy URL; default sqlite:///<hydra.sweep.dir>/optuna.db
    study_name: Optional[str] = None  # default: the task's name (snnexp)
    n_trials: int = 20                # trials of the whole study, all processes sharing it together
    n_jobs: int = 1                   # trials launched together in one batch of the launcher
    seeds: Optional[List[int]] = None  # run each trial at each seed (seed=<s>), report the mean
    params: Optional[Dict[str, str]] = None  # the search space in Hydra's override grammar, beside the command line
    heartbeat_interval: int = 60      # seconds between heartbeats of a running trial
    grace_period: Optional[int] = None  # a trial without heartbeat for this long is failed (default 2 intervals)


SAMPLERS = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "nsgaii": NSGAIISamplerConf, "grid": GridSamplerConf}
PRUNERS = {"none": NoPrunerConf, "median": MedianPrunerConf, "hyperband": HyperbandPrunerConf,
           "threshold": ThresholdPrunerConf}


def register() -> None:
    """Store ``hydra/sweeper=optuna`` and its sampler and pruner options."""
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    node = OmegaConf.structured(OptunaSweeperConf)
    for key in ("sampler_options", "pruner_options"):  # any constructor argument, without a leading '+'
        OmegaConf.set_struct(node[key], False)
    cs.store(group="hydra/sweeper", name="optuna", node=node, provider="snnexp_optuna_sweeper")
    options = {"sampler": SAMPLERS, "pruner": PRUNERS}
    for group, nodes in options.items():
        for name, option in nodes.items():
            cs.store(group=f"hydra/sweeper/{group}", name=name, node=option, provider="snnexp_optuna_sweeper")


register()
