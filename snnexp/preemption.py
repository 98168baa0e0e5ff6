"""Preemption: SIGTERM or SIGUSR1 (what SLURM sends before it stops or requeues a job) asks the run to stop at the
next batch boundary, with a checkpoint, instead of dying in the middle of a step.

:class:`SignalCatcher` records the request; acting on it (checkpoint, then :class:`Preempted`) is
:class:`snnexp.resume.ExactResume`'s job, from the start to the end of training. How it fits with Lightning's own
handlers, which Lightning installs when ``fit`` starts and removes when it ends:

- SIGUSR1 is passed on to the handler installed before (Lightning's, under SLURM with ``auto_requeue``: it writes
  ``hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``), so SLURM requeueing works as before; the requeued job
  continues from ``last.ckpt`` when its command has ``resume=auto`` (an explicit checkpoint: Lightning's hpc file,
  written in the middle of a step, is then not used).
- SIGTERM replaces Lightning's handler while training runs. Lightning's only records the signal and ends the
  epoch loop after the current batch, without a checkpoint (or in the middle of validation); here the checkpoint is
  written first. The processes of a DDP run agree on the batch to stop at (an all-reduce), so the signal may reach
  only one of them. Outside training (setup, testing) Lightning's handler is in place: a SIGTERM there ends the run
  with Lightning's ``SIGTERMException``, also reported as preempted (``last.ckpt`` is the latest one written).

- SIGUSR2 is what submitit (``hydra/launcher=submitit_slurm``) asks SLURM to send ``signal_delay_s`` before a job's
  time limit; submitit's handler requeues the job and exits at once. Here the run first writes its checkpoint and
  its summary, and only then hands the signal on to that handler (:meth:`Preempted.hand_on`), so the requeued job,
  which SLURM marks with ``SLURM_RESTART_COUNT``, continues from ``last.ckpt`` instead of redoing the time lost.

A preempted ``python -m snnexp`` exits with status :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "try again later")
after writing ``summary.json`` with ``"status": "preempted"``; run it again with ``resume=auto`` to continue.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_PREEMPTED = 75  # os.EX_TEMPFAIL
_SIGNALS = [getattr(signal, name, None) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2")]
STOP_SIGNALS = tuple(s for s in _SIGNALS if s is not None)
PASS_ON = tuple(s for s in _SIGNALS[1:2] if s is not None)  # SLURM requeueing (Lightning): at once
HAND_ON_AFTER_STOP = tuple(s for s in _SIGNALS[2:] if s is not None)  # submitit's requeue: once the state is saved


class Preempted(SystemExit):
    """The run stopped on a signal after writing a checkpoint to resume from; exits with :data:`EXIT_PREEMPTED`."""

    def __init__(self, signal_name: str, checkpoint: str | None = None, then: Callable[[], None] | None = None):
        super().__init__(EXIT_PREEMPTED)
        self.signal_name, self.checkpoint, self._then = signal_name, checkpoint, then

    def hand_on(self) -> None:
        """Give the signal to the handler that was there before ours (submitit's requeue, which exits the process),
        once the checkpoint and summary are written; nothing when there was none."""
        then, self._then = self._then, None
        if then is not None:
            then()

    def __str__(self) -> str:
        where = f"; {self.checkpoint} holds the state to resume from" if self.checkpoint else ""
        return f"preempted by {self.signal_name}{where} (run again with resume=auto)"


def as_preempted(err: BaseException) -> Preempted | None:
    """``err`` as a :class:`Preempted` when it is a stop on a signal (ours, or Lightning's ``SIGTERMException`` for
    a SIGTERM outside training: setup, testing), else ``None``."""
    if isinstance(err, Preempted):
        return err
    if isinstance(err, SIGTERMException):
        return Preempted("SIGTERM")
    return None


class SignalCatcher:
    """Records SIGTERM/SIGUSR1/SIGUSR2 in :attr:`received` (the first one's name); the signals in ``pass_on`` also go
    to the handler installed before, at once, those in ``hand_on_after_stop`` when :meth:`handed_on` is called.

    ``install()`` after Lightning registered its handlers (``on_train_start``), ``uninstall()`` when training ends;
    a handler is put back only if ours is still the installed one (Lightning restores its own originals on teardown).
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, pass_on: tuple[int, ...] = PASS_ON,
                 hand_on_after_stop: tuple[int, ...] = HAND_ON_AFTER_STOP):
        self.signals, self.pass_on, self.hand_on_after_stop = signals, pass_on, hand_on_after_stop
        self.received: str | None = None
        self._previous: dict[int, object] = {}
        self._deferred: Callable[[], None] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # signals can only be set from the main thread
            return
        for signum in self.signals:
            if signum not in self._previous:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # None: not set from Python
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if not callable(previous):  # SIG_DFL or SIG_IGN: nothing to pass on (SIG_DFL would end the process)
            return
        if signum in self.pass_on:
            previous(signum, frame)
        elif signum in self.hand_on_after_stop and self._deferred is None:
            self._deferred = lambda: previous(signum, None)

    def handed_on(self) -> Callable[[], None] | None:
        """The deferred call to the handler a ``hand_on_after_stop`` signal found in place, if one arrived."""
        return self._deferred
