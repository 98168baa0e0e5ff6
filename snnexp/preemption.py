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

A preempted ``python -m snnexp`` exits with status :data:`EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "try again later")
after writing ``summary.json`` with ``"status": "preempted"``; run it again with ``resume=auto`` to continue.
"""

from __future__ import annotations

import signal
import threading

from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_PREEMPTED = 75  # os.EX_TEMPFAIL
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)
PASS_ON = tuple(s for s in (getattr(signal, "SIGUSR1", None),) if s is not None)  # SLURM requeueing (Lightning)


class Preempted(SystemExit):
    """The run stopped on a signal after writing a checkpoint to resume from; exits with :data:`EXIT_PREEMPTED`."""

    def __init__(self, signal_name: str, checkpoint: str | None = None):
        super().__init__(EXIT_PREEMPTED)
        self.signal_name, self.checkpoint = signal_name, checkpoint

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
    """Records SIGTERM/SIGUSR1 in :attr:`received` (the first one's name); the signals in ``pass_on`` also go to the
    handler installed before.

    ``install()`` after Lightning registered its handlers (``on_train_start``), ``uninstall()`` when training ends;
    a handler is put back only if ours is still the installed one (Lightning restores its own originals on teardown).
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, pass_on: tuple[int, ...] = PASS_ON):
        self.signals, self.pass_on = signals, pass_on
        self.received: str | None = None
        self._previous: dict[int, object] = {}

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
        if signum in self.pass_on and callable(previous):  # not SIG_DFL, which would end the process
            previous(signum, frame)
