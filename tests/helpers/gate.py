"""Hold a training subprocess at a chosen optimiser step, so a test can kill or signal it exactly there.

Added to a CLI run as ``+callbacks.gate._target_=helpers.gate.Gate +callbacks.gate.marker=<file>
+callbacks.gate.step=<n>`` (with ``tests/`` on ``PYTHONPATH``): after step n's batch (and after ``ExactResume`` has
handled it) the process writes ``marker`` and waits until it receives a signal (or ``timeout`` seconds pass).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class Gate(Callback):
    def __init__(self, marker: str, step: int, timeout: float = 600.0):
        self.marker, self.step, self.timeout = Path(marker), step, timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        partial = self.marker.with_suffix(".partial")
        partial.write_text(str(os.getpid()))
        partial.replace(self.marker)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and not _signalled(trainer):
            time.sleep(0.01)


def _signalled(trainer) -> bool:
    """SIGTERM as Lightning records it, or any signal snnexp's ExactResume caught."""
    caught = (getattr(getattr(cb, "signals", None), "received", None) for cb in trainer.callbacks)
    return bool(trainer.received_sigterm) or any(caught)
