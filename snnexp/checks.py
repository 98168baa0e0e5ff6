"""Values checked before anything is built or trained, so a bad one stops the run in one line that names the key,
the value and what is valid, instead of a traceback from deep inside PyTorch or Lightning minutes later.

The types are already checked when Hydra composes the config (``snnexp.config``); this module checks the ranges.
The constructors check their own arguments too (a method's coefficients, a neuron's ``tau``): :func:`instantiate`
turns those ``ValueError``s into the same one-line error.
"""

from __future__ import annotations

import math
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from snnexp.errors import ConfigValueError, SnnexpError

GPU_ACCELERATORS = ("gpu", "cuda")


def check_values(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` for the first value of ``cfg`` outside its valid range."""
    _check_T(cfg.T)
    _check_data(cfg.data)
    _check_optimiser(cfg.optim)
    if cfg.get("scheduler") is not None:
        _check_scheduler(cfg.scheduler)
    _check_trainer(cfg.trainer)
    _check_eval(cfg.eval)


def instantiate(node: DictConfig, key: str, **kwargs) -> Any:
    """Hydra's ``instantiate``, with a constructor's ``ValueError`` (a value out of range) or snnexp error raised as
    one line (a ``ConfigValueError`` naming ``key``) instead of Hydra's multi-line wrapper."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, SnnexpError):
            raise cause from err
        if isinstance(cause, ValueError):
            message = str(cause)
            raise ConfigValueError(message if message.startswith(f"{key}.") else f"{key}: {message}") from err
        raise


def check_neuron(neuron) -> None:
    """Build one neuron from the ``neuron`` partial, so a value out of range (``neuron.tau=0``) is refused as the
    neuron's error rather than as the model's (every layer builds its neurons from this partial)."""
    try:
        neuron()
    except ValueError as err:
        raise ConfigValueError(f"neuron: {err}") from err
    except TypeError:  # a neuron that needs per-layer arguments: the model build checks it
        pass


def _fail(key: str, value, valid: str) -> None:
    raise ConfigValueError(f"{key}={value!r} is not valid: {valid}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_T(T) -> None:
    if not (_is_int(T) and T >= 1):
        _fail("T", T, "the number of time steps must be a positive integer (T=4, or T=1 for an ANN-like run)")


def _check_data(data: DictConfig) -> None:
    for key, value in data.items():
        if key.endswith("batch_size") and value is not None and not (_is_int(value) and value >= 1):
            _fail(f"data.{key}", value, "a batch size must be a positive integer")
    workers = data.get("num_workers")
    if workers is not None and not (_is_int(workers) and workers >= 0):
        _fail("data.num_workers", workers, "the number of loader processes must be 0 (load in the main process) or more")


def _check_optimiser(optim: DictConfig) -> None:
    lr = optim.get("lr")
    if lr is not None and not (_is_number(lr) and lr > 0):
        _fail("optim.lr", lr, "the learning rate must be a finite number > 0")
    decay = optim.get("weight_decay")
    if decay is not None and not (_is_number(decay) and decay >= 0):
        _fail("optim.weight_decay", decay, "weight decay must be a finite number >= 0 (0 turns it off)")
    momentum = optim.get("momentum")
    if momentum is not None and not (_is_number(momentum) and 0 <= momentum < 1):
        _fail("optim.momentum", momentum, "momentum must lie in [0, 1)")
    betas = optim.get("betas")
    if betas is not None and not all(_is_number(b) and 0 <= b < 1 for b in betas):
        _fail("optim.betas", list(betas), "both betas must lie in [0, 1)")
    eps = optim.get("eps")
    if eps is not None and not (_is_number(eps) and eps > 0):
        _fail("optim.eps", eps, "eps must be a finite number > 0")


def _check_scheduler(scheduler: DictConfig) -> None:
    for key in ("warmup_epochs", "cooldown_epochs"):
        value = scheduler.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            _fail(f"scheduler.{key}", value, "a number of epochs must be an integer >= 0")
    for key in ("min_lr", "warmup_lr"):
        value = scheduler.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            _fail(f"scheduler.{key}", value, "a learning rate must be a finite number >= 0")
    step_size = scheduler.get("step_size")
    if step_size is not None and not (_is_int(step_size) and step_size >= 1):
        _fail("scheduler.step_size", step_size, "the epochs between decays must be a positive integer")
    gamma = scheduler.get("gamma")
    if gamma is not None and not (_is_number(gamma) and gamma > 0):
        _fail("scheduler.gamma", gamma, "the decay factor must be a finite number > 0")


def _check_trainer(trainer: DictConfig) -> None:
    if not (_is_int(trainer.max_epochs) and trainer.max_epochs >= 1):
        _fail("trainer.max_epochs", trainer.max_epochs, "train for at least 1 epoch")
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps", "num_nodes"):
        value = trainer.get(key)
        if value is not None and not (_is_int(value) and value >= 1):
            _fail(f"trainer.{key}", value, "must be a positive integer")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not (_is_number(clip) and clip >= 0):
        _fail("trainer.gradient_clip_val", clip, "a gradient-norm limit must be a finite number >= 0 (null: no clipping)")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is not None and not (_is_number(value) and value >= 0 and (_is_int(value) or value <= 1)):
            _fail(f"trainer.{key}", value, "a number of batches (integer >= 0) or a fraction of them in [0, 1]")
    _check_devices(trainer)


def _check_devices(trainer: DictConfig) -> None:
    """A GPU run needs a CUDA device that torch can see, and no more devices than there are."""
    import torch

    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in GPU_ACCELERATORS:
        return
    if not torch.cuda.is_available():
        raise ConfigValueError(
            f"trainer.accelerator={accelerator}: torch sees no CUDA GPU on this machine (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use trainer=cpu, or trainer=default "
            "to use a GPU only where there is one"
        )
    devices, available = trainer.get("devices"), torch.cuda.device_count()
    if _is_int(devices) and devices > available:
        raise ConfigValueError(
            f"trainer.devices={devices}: only {available} CUDA GPU(s) are visible here; use trainer.devices=-1 for all"
        )


def _check_eval(eval_cfg: DictConfig) -> None:
    for T in eval_cfg.timesteps:
        if not (_is_int(T) and T >= 1):
            _fail("eval.timesteps", list(eval_cfg.timesteps), "every T to test at must be a positive integer")
    if eval_cfg.ckpt not in ("best", "last"):
        _fail("eval.ckpt", eval_cfg.ckpt, "test the 'best' checkpoint or the 'last' weights")
