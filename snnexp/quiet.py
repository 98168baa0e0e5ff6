"""Silence the messages of our dependencies that are noise in an snnexp run, and only those: each filter matches
one message by its text, so every other warning still shows.

- Lightning's "Experiment logs directory ... exists and is not empty": a run directory always holds Hydra's files,
  and snnexp itself keeps the earlier rows of a resumed run's metrics.csv.
- Lightning's "💡 Tip: ... litlogger" advertisement.
- Lightning's ``isinstance(treespec, LeafSpec)`` deprecation, raised inside Lightning under recent torch.
- Lightning's "`weights_only` was not set, defaulting to `False`" on every full checkpoint it saves.
"""

from __future__ import annotations

import logging
import warnings

NOISY_WARNINGS = (
    r"Experiment logs directory .* exists and is not empty",
    r"Checkpoint directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",
)
NOISY_LOG_MESSAGES = (
    "💡 Tip:",
    "`weights_only` was not set",
)
# the loggers that emit them (a logger's filter sees only the records created on that logger)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning_utilities.core.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector")


class _DropNoise(logging.Filter):
    """Drops the log records whose message starts with one of :data:`NOISY_LOG_MESSAGES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISY_LOG_MESSAGES)


_FILTER = _DropNoise()


def silence_noise() -> None:
    """Install the filters (idempotent: a second call adds nothing)."""
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
