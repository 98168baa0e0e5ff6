"""Optimisers and learning-rate schedules from the ``optim`` and ``scheduler`` config groups.

Both groups hold Hydra ``_target_`` + ``_partial_: true`` nodes (as in lightning-hydra-template), so any optimiser
or scheduler of torch or timm is chosen in yaml without code: ``hydra.utils.instantiate(cfg.optim)`` returns a
partial that still lacks the parameters, ``instantiate(cfg.scheduler)`` one that still lacks the optimiser.
:func:`configure` completes both and returns what ``LightningModule.configure_optimizers`` returns.

Options (``conf/optim``, ``conf/scheduler``)::

    optim=adam (default: lr 1e-3, no weight decay) | adamw | sgd | lamb (timm.optim.Lamb)
    optim=timm optim.opt=lamb    timm.optim.create_optimizer_v2: any optimiser timm knows by name, on timm's
                                 parameter groups (no weight decay on biases and other 1-d parameters, i.e.
                                 norm scales and shifts; ``optim.filter_bias_and_bn``), as timm's and the
                                 Spike-driven Transformer's training scripts build it
    scheduler=cosine (default)   :class:`WarmupCosineLR`: linear warm-up, cosine to ``min_lr``, cool-down
    scheduler=step | none        torch's ``StepLR`` | ``ConstantLR`` (a constant learning rate)

Excluding biases and norm parameters from weight decay is a choice of *parameter groups*, so it belongs to the
factory that makes them: a target whose first parameter is ``model_or_params`` (timm's
``create_optimizer_v2``) receives the trainable module itself and forms its groups from the parameter names and
shapes; every other target (a torch or timm optimiser class) receives the list of trainable parameters.

Schedules step once per epoch. A scheduler target that has a ``max_epochs`` parameter (``WarmupCosineLR``)
gets the run's number of epochs from :func:`configure`; others take theirs from the yaml (e.g.
``T_max: ${trainer.max_epochs}`` for torch's ``CosineAnnealingLR``).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Iterable, Optional

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up, cosine decay to ``min_lr``, then ``cooldown_epochs`` at ``min_lr``; one step per epoch.

    With ``n = max_epochs - cooldown_epochs`` epochs of schedule, ``w = warmup_epochs`` (at most ``n - 1``), base
    learning rate ``b`` and warm-up start ``s = warmup_lr`` (or ``b * warmup_start_factor`` when ``warmup_lr`` is
    null), the learning rate of epoch ``e`` (counted from 0) is::

        e < w:       s + (b - s) * e / w
        w <= e < n:  min_lr + (b - min_lr) * (1 + cos(pi * t / N)) / 2,
                     t, N = e - w, n - w    if warmup_prefix (the cosine starts after the warm-up)
                     t, N = e, n            otherwise (timm's CosineLRScheduler: the warm-up covers the
                                            first w epochs of one cosine over n)
        e >= n:      min_lr                 (the cool-down epochs of timm's training script)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_epochs: int, warmup_epochs: int = 0,
                 warmup_start_factor: float = 0.01, warmup_lr: Optional[float] = None, min_lr: float = 0.0,
                 cooldown_epochs: int = 0, warmup_prefix: bool = True, last_epoch: int = -1):
        self.max_epochs, self.cooldown_epochs = int(max_epochs), int(cooldown_epochs)
        self.warmup_epochs, self.warmup_start_factor, self.warmup_lr = int(warmup_epochs), warmup_start_factor, warmup_lr
        self.min_lr, self.warmup_prefix = min_lr, warmup_prefix
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        """The learning rate of ``epoch`` for a parameter group whose base learning rate is ``base_lr``."""
        n = max(1, self.max_epochs - self.cooldown_epochs)
        w = max(0, min(self.warmup_epochs, n - 1))
        if epoch < w:
            start = base_lr * self.warmup_start_factor if self.warmup_lr is None else self.warmup_lr
            return start + (base_lr - start) * epoch / w
        if epoch >= n:
            return self.min_lr
        t, span = (epoch - w, n - w) if self.warmup_prefix else (epoch, n)
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * t / span)) / 2

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]


def configure(trainable: nn.Module | Iterable, optimizer: Callable, scheduler: Callable | None = None,
              max_epochs: int | None = 1) -> dict:
    """Build the optimiser and its per-epoch schedule; returns ``configure_optimizers``'s dict.

    ``trainable``: a module (its parameters with ``requires_grad=True`` are trained) or an iterable of
    parameters or parameter-group dicts. ``optimizer``: ``instantiate(cfg.optim)``, a callable taking the
    parameters (or, for a ``model_or_params`` factory, the module). ``scheduler``: ``instantiate(cfg.scheduler)``,
    a callable taking the optimiser, or None for a constant learning rate. ``max_epochs``: the run's epochs
    (at least 1 is used), passed to schedulers that take it.
    """
    optimizer, scheduler = _plain(optimizer), _plain(scheduler)
    built = optimizer(_what_to_optimise(trainable, takes_module=_first_parameter(optimizer) == "model_or_params"))
    result: dict[str, Any] = {"optimizer": built}
    if scheduler is not None:
        kwargs = {}
        if "max_epochs" in _parameters(scheduler) and "max_epochs" not in _keywords(scheduler):
            kwargs["max_epochs"] = max(1, int(max_epochs or 1))
        result["lr_scheduler"] = {"scheduler": scheduler(built, **kwargs), "interval": "epoch"}
    return result


def _what_to_optimise(trainable, takes_module: bool):
    if isinstance(trainable, nn.Module):
        # a module-taking factory forms its own groups (timm's leave frozen parameters out when they filter weight
        # decay; either way a frozen parameter gets no gradient, so no optimiser step changes it)
        return trainable if takes_module else [p for p in trainable.parameters() if p.requires_grad]
    items = list(trainable)
    if takes_module and items and all(isinstance(p, torch.Tensor) for p in items):
        # a bare list has no names: timm's groups then go by shape alone (every 1-d parameter undecayed)
        return nn.ParameterList([p for p in items if p.requires_grad])
    if all(isinstance(p, torch.Tensor) for p in items):
        return [p for p in items if p.requires_grad]
    return items  # parameter-group dicts, as given


def _plain(factory: Callable | None) -> Callable | None:
    """``factory`` with its OmegaConf arguments (``betas: [0.9, 0.999]`` arrives as a ``ListConfig``) replaced by plain
    Python ones, so the optimiser's ``param_groups`` and the checkpoints hold lists and numbers. Wraps rather than
    rebuilds: the partial Hydra returns keeps its own checks on being called."""
    containers = {k: OmegaConf.to_container(v, resolve=True) for k, v in _keywords(factory).items()
                  if isinstance(v, (DictConfig, ListConfig))}
    return functools.partial(factory, **containers) if containers else factory


def _keywords(factory: Callable | None) -> dict[str, Any]:
    """The keyword arguments bound by ``factory`` and the partials it wraps (outer ones win)."""
    bound: dict[str, Any] = {}
    while isinstance(factory, functools.partial):
        bound = {**factory.keywords, **bound}
        factory = factory.func
    return bound


def _parameters(factory: Callable) -> dict[str, inspect.Parameter]:
    """The parameters of the callable ``factory`` finally calls (through any partials)."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return {}


def _first_parameter(factory: Callable) -> str | None:
    return next(iter(_parameters(factory)), None)
