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
    if cfg.get("energy") is not None:
        _check_keys(cfg.energy, "energy", ["e_mac", "e_ac"], lambda v: _is_number(v) and v >= 0,
                    "an energy per operation must be a finite number of picojoules >= 0")


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
    if not _positive_int(T):
        _fail("T", T, "the number of time steps must be a positive integer (T=4, or T=1 for an ANN-like run)")


def _check_keys(node: DictConfig, prefix: str, keys, valid_value, valid: str) -> None:
    """Refuse the first of ``keys`` set in ``node`` (``None`` means unset) for which ``valid_value`` is False."""
    for key in keys:
        value = node.get(key)
        if value is not None and not valid_value(value):
            _fail(f"{prefix}.{key}", value, valid)


def _positive_int(value) -> bool:
    return _is_int(value) and value >= 1


def _check_data(data: DictConfig) -> None:
    _check_keys(data, "data", [k for k in data if k.endswith("batch_size")], _positive_int,
                "a batch size must be a positive integer")
    _check_keys(data, "data", ["num_workers"], lambda v: _is_int(v) and v >= 0,
                "the number of loader processes must be 0 (load in the main process) or more")


FLOAT32_MAX = 3.4028234663852886e38  # larger step sizes overflow inside PyTorch's optimisers (a RuntimeError)


def _check_optimiser(optim: DictConfig) -> None:
    _check_keys(optim, "optim", ["lr"], lambda v: _is_number(v) and 0 < v < FLOAT32_MAX,
                "the learning rate must be a number > 0 that float32 weights can be scaled by (below 3.4e38)")
    _check_keys(optim, "optim", ["weight_decay"], lambda v: _is_number(v) and v >= 0,
                "weight decay must be a finite number >= 0 (0 turns it off)")
    _check_keys(optim, "optim", ["momentum"], lambda v: _is_number(v) and 0 <= v < 1, "momentum must lie in [0, 1)")
    betas = optim.get("betas")
    if betas is not None and not all(_is_number(b) and 0 <= b < 1 for b in betas):
        _fail("optim.betas", list(betas), "both betas must lie in [0, 1)")
    _check_keys(optim, "optim", ["eps"], lambda v: _is_number(v) and v > 0, "eps must be a finite number > 0")


def _check_scheduler(scheduler: DictConfig) -> None:
    _check_keys(scheduler, "scheduler", ["warmup_epochs", "cooldown_epochs"], lambda v: _is_int(v) and v >= 0,
                "a number of epochs must be an integer >= 0")
    _check_keys(scheduler, "scheduler", ["min_lr", "warmup_lr"], lambda v: _is_number(v) and v >= 0,
                "a learning rate must be a finite number >= 0")
    _check_keys(scheduler, "scheduler", ["step_size"], _positive_int, "the epochs between decays must be a positive integer")
    _check_keys(scheduler, "scheduler", ["gamma"], lambda v: _is_number(v) and v > 0,
                "the decay factor must be a finite number > 0")


def _check_trainer(trainer: DictConfig) -> None:
    if not _positive_int(trainer.max_epochs):
        _fail("trainer.max_epochs", trainer.max_epochs, "train for at least 1 epoch")
    _check_keys(trainer, "trainer", ["accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps",
                                     "num_nodes"], _positive_int, "must be a positive integer")
    _check_keys(trainer, "trainer", ["gradient_clip_val"], lambda v: _is_number(v) and v >= 0,
                "a gradient-norm limit must be a finite number >= 0 (null: no clipping)")
    _check_keys(trainer, "trainer", ["limit_train_batches", "limit_val_batches", "limit_test_batches"],
                lambda v: _is_number(v) and v >= 0 and (_is_int(v) or v <= 1),
                "a number of batches (integer >= 0) or a fraction of them in [0, 1]")
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
        if not _positive_int(T):
            _fail("eval.timesteps", list(eval_cfg.timesteps), "every T to test at must be a positive integer")
    if eval_cfg.ckpt not in ("best", "last"):
        _fail("eval.ckpt", eval_cfg.ckpt, "test the 'best' checkpoint or the 'last' weights")
