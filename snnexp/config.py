"""Structured-config schemas, so a misspelt key or a wrong type is rejected when Hydra composes the config.

The top level and the trainer have hand-written dataclasses. The options of the groups that build objects
(``data``, ``model``, ``neuron``, ``neuron/surrogate``, ``method``, ``optim``, ``scheduler``) get their schema
*derived from the constructor* their yaml's ``_target_`` names, so the schema cannot drift from the code:
``method.lamda=0.1`` fails with "Key 'lamda' not in 'TET'". Each such yaml starts with
``defaults: [/schema/<group>/<option>@_here_, _self_]``; :func:`register_schemas` stores those entries.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

CONF_DIR = Path(str(files("snnexp.conf")))

# Groups whose options instantiate a class or factory, and the arguments snnexp passes at build time
# (so they are not config keys).
SCHEMA_GROUPS: dict[str, tuple[str, ...]] = {
    "data": (),
    "model": ("neuron", "input_shape", "num_classes"),
    "neuron": (),
    "neuron/surrogate": (),
    "method": (),
    "optim": ("params", "model_or_params"),  # the parameters (or module): snnexp.optim.configure passes them
    "scheduler": ("optimizer", "max_epochs"),  # the optimiser and the run's epochs: passed by configure
}


@dataclass
class EvalConfig:
    """Evaluation options."""

    ckpt: str = "best"  # test with the "best" checkpoint (when checkpointing is on) or the "last" weights
    timesteps: list[int] = field(default_factory=list)  # also test the same weights at each of these T


@dataclass
class EnergyConfig:
    """The energy estimate's cost per operation, in picojoules (45 nm figures, as SNN papers use them)."""

    e_mac: float = 4.6  # one multiply-accumulate: layers whose input is not spikes
    e_ac: float = 0.9  # one accumulate: a spike arriving at one synapse


@dataclass
class TrainerConfig:
    """The Lightning ``Trainer`` arguments snnexp exposes (``Any`` where Lightning accepts several types)."""

    _target_: str = "lightning.Trainer"
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: Any = "auto"
    plugins: Any = None  # Lightning plugins, e.g. snnexp.training.sync_norm.GlobalBatchNorm (DDP: global-batch BN)
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 0
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    deterministic: Any = False
    benchmark: Optional[bool] = None
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    default_root_dir: Optional[str] = None


@dataclass
class PathsConfig:
    root_dir: str = "."
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrainConfig:
    """The composed experiment. Group nodes are validated by their own schemas (see module docstring)."""

    T: int = 4
    encoder: str = "direct"  # how a static input becomes T steps: direct (repeat) | poisson (rate coding)
    seed: int = 0
    resume: Optional[str] = None  # null, "auto" (the run dir's checkpoints/last.ckpt) or a checkpoint path
    task_name: str = "train"
    optimized_metric: str = "val/acc"
    bn_warm_start: bool = True  # BatchNorm running statistics: plain average of the first 1/momentum batches
    pack_spikes: bool = True  # BPTT memory: binary spikes saved for the backward kept as bits (exact gradients)
    recompute_bn: bool = True  # BPTT memory: BN outputs a neuron saves recomputed in the backward (exact gradients)
    recompute_conv: str = "cheap"  # BPTT memory: conv outputs BN saves recomputed in the backward: none | cheap | all
    winograd: bool = True  # CPU speed: 3x3 convolutions by Winograd (stride 1: F(4x4, 3x3), rounding ~1e-5; stride 2)
    im2col_backward: bool = True  # CPU speed: stride-2 convolutions (3x3 backward, 1x1 both) as im2col products
    cache_cpu_tensors: bool = True  # CPU speed: torch's large CPU tensors from snnexp's buffer cache (no page faults)
    reuse_heap: bool = False  # CPU speed for memory: glibc keeps freed large blocks for reuse instead of unmapping them
    optim: Any = MISSING  # the optim group: a partial optimiser (see snnexp.optim)
    scheduler: Any = None  # the scheduler group: a partial per-epoch schedule; none (~scheduler) = no scheduler
    eval: EvalConfig = field(default_factory=EvalConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: Any = MISSING
    model: Any = MISSING
    neuron: Any = MISSING
    method: Any = MISSING
    logger: Any = None
    callbacks: Any = None
    meta: Any = None  # free-form metadata of a preset (paper, reported accuracy); copied into summary.json
    optuna_trial: Any = None  # set by the Optuna sweeper: {storage, study_name, trial_id, trial, monitor, prune, pruner}


def _locate(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


_PLAIN = (int, float, bool, str)


def _schema_type(annotation) -> Any:
    """Map a constructor annotation to a type OmegaConf can check (``Any`` where it cannot)."""
    if annotation in _PLAIN:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        import torch

        members = typing.get_args(annotation)
        args = [a for a in members if a is not type(None) and a is not torch.Tensor]  # torch's lr: float | Tensor
        if len(args) == 1 and args[0] in _PLAIN:
            return Optional[args[0]] if type(None) in members else args[0]
    return Any


@functools.lru_cache(maxsize=None)
def schema_for(target: str, skip: tuple[str, ...] = (), partial: bool = False) -> type:
    """A dataclass whose fields are the keyword arguments of ``target`` (minus ``skip``), with its defaults."""
    obj = _locate(target)
    hints: dict = {}
    for owner in reversed(obj.__mro__ if inspect.isclass(obj) else (obj,)):
        try:
            hints.update(typing.get_type_hints(owner.__init__ if inspect.isclass(obj) else owner))
        except Exception:  # annotations that cannot be evaluated: fall back to Any
            pass
    fields: list[tuple] = [("_target_", str, field(default=target))]
    if partial:
        fields.append(("_partial_", bool, field(default=True)))
    for name, param in _parameters(obj).items():
        if name in skip or name == "self":
            continue
        kind = _schema_type(hints.get(name, Any))
        default = param.default
        if default is inspect.Parameter.empty:
            spec = field(default=MISSING)
        elif isinstance(default, (list, dict, tuple)):
            spec = field(default_factory=functools.partial(_copy_default, default))
            kind = Any
        elif default is None or isinstance(default, _PLAIN):
            spec = field(default=default)
        else:  # an object default (e.g. a surrogate instance): configurable through a nested node
            spec = field(default=None)
            kind = Any
        fields.append((name, kind, spec))
    return dataclasses.make_dataclass(obj.__name__, fields)


def _parameters(obj) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``obj``; a class whose ``__init__`` forwards ``**kwargs`` gets its bases' too."""
    params: dict[str, inspect.Parameter] = {}
    owners = obj.__mro__ if inspect.isclass(obj) else (obj,)
    for owner in owners:
        init = owner.__init__ if inspect.isclass(obj) else owner
        if init is object.__init__:
            break
        forwards = False
        for name, param in inspect.signature(init).parameters.items():
            if param.kind == param.VAR_KEYWORD:
                forwards = True
            elif param.kind != param.VAR_POSITIONAL:
                params.setdefault(name, param)
        if not forwards:
            break
    return params


def _copy_default(value):
    return list(value) if isinstance(value, tuple) else type(value)(value)


def register_schemas() -> None:
    """Store the top-level schema and one schema per option of the object-building groups."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for group, skip in SCHEMA_GROUPS.items():
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            node = yaml.safe_load(path.read_text()) or {}
            target = node.get("_target_")
            if target is None:
                continue
            schema = schema_for(target, skip, bool(node.get("_partial_", False)))
            cs.store(group=f"schema/{group}", name=path.stem, node=schema)
