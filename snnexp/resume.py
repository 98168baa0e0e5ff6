"""Exact resume: a run killed anywhere (``kill -9`` mid-epoch included) and continued with ``resume=auto`` ends with
the same weights and metrics as the run left alone.

:class:`ExactResume` (in ``conf/callbacks/default.yaml``) writes ``checkpoints/last.ckpt`` every
``every_n_train_steps`` optimiser steps (and/or ``every_n_minutes``), in the middle of epochs too, atomically
(:mod:`snnexp.atomic_save`), and adds to every checkpoint what Lightning leaves out (``checkpoint["snnexp"]``):

- the RNG states of torch (CPU and CUDA), numpy and Python, restored when the checkpoint is loaded for fitting,
  so Poisson spikes, dropout and random augmentations continue as they would have (not those drawn in
  ``num_workers > 0`` worker processes, which start afresh after a resume);
- the running sums behind the epoch-level training metrics (``train/loss``...), added back after the first batch
  that follows a mid-epoch resume, so the epoch's logged mean is the uninterrupted one;
- the wall time spent so far (``summary.json``'s ``wall_time_s`` adds up all segments).

The data order is a function of (seed, epoch) and resumes mid-epoch through Lightning's stateful-dataloader hook
(:mod:`snnexp.data.order`); loops, optimisers and schedulers are Lightning's. On SIGTERM/SIGUSR1/SIGUSR2 it writes
``last.ckpt`` at the next batch boundary and stops with :class:`snnexp.preemption.Preempted`.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from snnexp.atomic_save import atomic_torch_save, remove_partial_writes
from snnexp.preemption import Preempted, SignalCatcher

KEY = "snnexp"  # checkpoint["snnexp"]: what this callback adds to a checkpoint
log = logging.getLogger(__name__)


def rng_states() -> dict:
    """The global RNG states of torch (and every CUDA device), numpy and Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # plain values: checkpoints load with weights_only
    states = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos,
                                                         has_gauss, gauss), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore :func:`rng_states`; CUDA states only onto as many devices as they were saved from."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def epoch_sums(trainer) -> dict:
    """The running sums of the epoch-level metrics logged in training so far this epoch (Lightning keeps them out
    of checkpoints): ``{key: {"value", "count"}}``."""
    sums = {}
    for key, metric in trainer.fit_loop.epoch_loop._results.items():
        if metric.is_tensor and metric.meta.on_epoch and not metric.has_reset:
            sums[key] = {"value": metric.value.detach().cpu().clone(),
                         "count": getattr(metric, "cumulated_batch_size", None)}
    return sums


def add_epoch_sums(trainer, sums: dict) -> None:
    """Fold the sums of :func:`epoch_sums` into this epoch's (after its first batch: addition, max and min commute,
    so the result is bit-identical to accumulating without a break)."""
    results = trainer.fit_loop.epoch_loop._results
    for key, saved in sums.items():
        metric = results.get(key)
        if metric is None or metric.has_reset:
            continue
        value = saved["value"].to(metric.value.device)
        if metric.meta.is_max_reduction or metric.meta.is_min_reduction:
            metric.value = metric.meta.reduce_fx(metric.value, value)
        else:
            metric.value = metric.value + value
        if saved["count"] is not None and hasattr(metric, "cumulated_batch_size"):
            metric.cumulated_batch_size = metric.cumulated_batch_size + saved["count"].to(metric.value.device)
        metric._computed = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing local files with :func:`atomic_torch_save` (remote paths such as
    ``s3://`` keep Lightning's writer). :class:`ExactResume` installs it: ``ModelCheckpoint``'s files are atomic too."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


def validation_follows(trainer, batch_idx: int) -> bool:
    """Whether validation or the end of the epoch comes right after this batch: no checkpoint is written there.

    Lightning (2.6) resumes a checkpoint written after such a batch as if that validation and epoch end had run
    (it skips them); and it does not resume exactly from one written after them either (at ``on_validation_end``
    or ``on_train_epoch_end`` the scheduler step and the epoch's logged row are left out, at the next
    ``on_train_epoch_start`` the finished epoch's batch counters make it skip the new epoch). So the checkpoint
    that follows an epoch's end is the one after the next epoch's first batch."""
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
        return True
    every = trainer.val_check_batch
    if not isinstance(every, int) or every <= 0:
        return False
    return (batch_idx + 1) % every == 0 or (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0


def elapsed_before(trainer) -> float:
    """Wall time of the earlier segments of this run (0 for a run that did not resume), from its checkpoint."""
    for cb in trainer.callbacks if trainer is not None else ():
        if isinstance(cb, ExactResume):
            return cb.elapsed_before
    return 0.0


def mark_segment_start(callbacks, start: float) -> None:
    """Tell the :class:`ExactResume` callbacks when this process started working on the run (``time.time()``)."""
    for cb in callbacks:
        if isinstance(cb, ExactResume):
            cb.segment_start = start


class ExactResume(Callback):
    """Atomic ``last.ckpt`` with RNG states, metric sums and wall time; stops cleanly on SIGTERM/SIGUSR1.

    ``dirpath/filename`` is written after the first optimiser step of every epoch, after every
    ``every_n_train_steps``-th one (``None``: not by steps) or when ``every_n_minutes`` passed since the last write,
    but never right before validation or an epoch's end (:func:`validation_follows`); and at the end of training.
    ``preemption``: catch SIGTERM/SIGUSR1. Other checkpoints (``ModelCheckpoint``'s best) get the same extras and
    atomic writes."""

    def __init__(self, dirpath: str, filename: str = "last.ckpt", every_n_train_steps: int | None = 100,
                 every_n_minutes: float | None = None, preemption: bool = True):
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1 or null, got {every_n_train_steps}")
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = every_n_train_steps
        self.every_n_seconds = None if every_n_minutes is None else 60.0 * every_n_minutes
        self.signals = SignalCatcher() if preemption else None
        self.segment_start = time.time()
        self.elapsed_before = 0.0
        self._pending_sums: tuple[int, dict] | None = None  # (epoch, sums) to fold in after the first resumed batch
        self._callback_metrics: dict = {}
        self._last_step = self._saved_step = self._saved_epoch = -1
        self._off = False
        self._last_write = time.monotonic()

    # ---- setup and teardown -----------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._off = bool(trainer.fast_dev_run)  # a smoke test writes no checkpoint (as ModelCheckpoint)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a custom or remote IO is left alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and not self._off:
            remove_partial_writes(self.path.parent)

    def on_train_start(self, trainer, pl_module) -> None:
        if self._off:
            return
        self._last_step, self._last_write = trainer.global_step, time.monotonic()
        self._saved_step = trainer.global_step  # the state just loaded (or the start) is on disk already
        if self.signals is not None:
            self.signals.install()  # after Lightning's handlers, which ours pass the signal on to

    def on_train_end(self, trainer, pl_module) -> None:
        if self._off:
            return
        stop = self._stop_requested(trainer)  # a signal during the last validation: stop before testing
        if trainer.global_step != self._saved_step:
            self._save(trainer)
        self._uninstall()
        if stop:
            self._stop(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._uninstall()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._uninstall()

    def _uninstall(self) -> None:
        if self.signals is not None:
            self.signals.uninstall()

    # ---- writing ----------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._off:
            return
        if self._pending_sums is not None:
            epoch, sums = self._pending_sums
            self._pending_sums = None
            if epoch == trainer.current_epoch:
                add_epoch_sums(trainer, sums)
        if trainer.global_step == self._last_step:  # accumulating gradients: not at an optimiser-step boundary
            return
        self._last_step = trainer.global_step
        if validation_follows(trainer, batch_idx):  # not a point Lightning resumes exactly from
            return
        stop = self._stop_requested(trainer)
        first_of_epoch = self._saved_epoch != trainer.current_epoch  # at least one checkpoint an epoch
        if stop or first_of_epoch or self._due(trainer):
            self._save(trainer)
        if stop:
            self._stop(trainer)

    def _due(self, trainer) -> bool:
        due = bool(self.every_n_train_steps) and trainer.global_step % self.every_n_train_steps == 0
        if self.every_n_seconds is not None and time.monotonic() - self._last_write >= self.every_n_seconds:
            due = True
        if trainer.world_size > 1 and self.every_n_seconds is not None:  # clocks differ: rank 0 decides for all
            due = trainer.strategy.broadcast(due, src=0)
        return due

    def _stop_requested(self, trainer) -> bool:
        if self.signals is None:
            return False
        requested = self.signals.received is not None
        if trainer.world_size > 1:  # the signal may reach only some processes; all must stop at the same batch
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        return requested

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._last_write = time.monotonic()
        self._saved_step, self._saved_epoch = trainer.global_step, trainer.current_epoch

    def _stop(self, trainer) -> None:
        stop = Preempted(self.signals.received or "a signal on another process", str(self.path),
                         then=self.signals.handed_on())
        if rank_zero_only.rank == 0:
            log.warning("%s at step %d; exiting with status %d", stop, trainer.global_step, stop.code)
        raise stop

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:  # rows logged before this checkpoint must be on disk when it is
            if isinstance(logger, CSVLogger):
                logger.save()
        checkpoint[KEY] = {
            "rng": rng_states(),
            "epoch_sums": (trainer.current_epoch, epoch_sums(trainer)),
            "elapsed_s": self.elapsed_before + time.time() - self.segment_start,
            # what the last validation left for summary.json, for a resume that has no validation left to run
            "callback_metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()
                                 if isinstance(v, torch.Tensor)},
            "firing_rates": dict(getattr(pl_module, "last_firing_rates", None) or {}),
        }

    # ---- reading ----------------------------------------------------------------------------------------------
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get(KEY)
        if state is None or trainer.state.fn != TrainerFn.FITTING:  # testing a checkpoint resumes nothing
            return
        set_rng_states(state["rng"])
        self._pending_sums = state["epoch_sums"]
        self.elapsed_before = float(state["elapsed_s"])
        self._callback_metrics = state.get("callback_metrics") or {}
        if state.get("firing_rates") and hasattr(pl_module, "last_firing_rates"):
            pl_module.last_firing_rates = dict(state["firing_rates"])

    def on_fit_start(self, trainer, pl_module) -> None:
        # after Lightning cleared the metrics of the restored run; the next validation replaces them
        trainer.callback_metrics.update(self._callback_metrics)
        self._callback_metrics = {}
