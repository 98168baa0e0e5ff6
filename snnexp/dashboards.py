"""Runs lined up on dashboards: each run's choices next to its results, one row per run.

At the start (``log_config``) every logger gets the resolved config; wandb's config also holds the choices flat
(``method``, ``model``, ``neuron``, ``data``, ``optim``, ``scheduler``, ``T``, ``seed``, ``lr``, ``batch_size``,
``max_epochs``) with the full nested config under ``cfg``, so its runs table and parallel-coordinates panel compare
them directly. At the end (``log_run_results``) the run's ``summary.json`` becomes

- TensorBoard: one HParams session per run (the choices and key hyperparameters of :func:`run_hparams`) whose
  metrics are the scalars ``hp/best_val_acc``, ``hp/test_acc``, ``hp/test_energy_mJ``, ``hp/test_sops`` and
  ``hp/firing_rate`` (:data:`HP_METRICS`), logged at the run's last step;
- wandb: the run summary's ``best/val_acc``, ``test/acc``, ``test/energy_mJ``, ``test/sops``, ``firing_rate``, ...

A result the run does not have (a failed run's test accuracy, energy before it is measured) is left out, never
written as a placeholder.
"""

from __future__ import annotations

import logging
from typing import Callable

from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

CHOICES = ("method", "model", "neuron", "data", "optim", "scheduler")

# TensorBoard HParams metric tag -> how to read it from summary.json
HP_METRICS: dict[str, Callable[[dict], float | None]] = {
    "hp/best_val_acc": lambda s: (s.get("best") or {}).get("score"),
    "hp/test_acc": lambda s: (s.get("test") or {}).get("test/acc"),
    "hp/test_energy_mJ": lambda s: (s.get("test") or {}).get("test/energy_mJ"),
    "hp/test_sops": lambda s: (s.get("test") or {}).get("test/sops"),
    "hp/firing_rate": lambda s: s.get("firing_rate"),
}


def log_config(loggers, hparams: dict, choices: dict[str, str]) -> None:
    """The start of a run: ``hparams`` (the resolved config) to every logger; wandb gets the ``choices``
    (``{"method": "tet", ...}``) and the key hyperparameters flat, and the nested config under ``cfg``."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_hyperparams({**_flat(choices, hparams), "cfg": hparams})
        else:
            lg.log_hyperparams(hparams)


def _flat(choices: dict[str, str], hparams: dict) -> dict:
    """The comparison columns: the config groups' choices, T, seed, encoder and the key hyperparameters."""
    optim = hparams.get("optim") or {}
    return {
        **{group: choices[group] for group in CHOICES if group in choices},
        "T": hparams.get("T"),
        "seed": hparams.get("seed"),
        "encoder": hparams.get("encoder"),
        "lr": optim.get("lr"),
        "weight_decay": optim.get("weight_decay"),
        "batch_size": (hparams.get("data") or {}).get("batch_size"),
        "max_epochs": (hparams.get("trainer") or {}).get("max_epochs"),
    }


def run_hparams(summary: dict) -> dict:
    """One run's row in TensorBoard's HParams table, from ``summary.json``: choices, key hyperparameters and status
    (``None`` values left out: TensorBoard takes numbers, strings and booleans only)."""
    config = summary.get("config") or {}
    optimizer = config.get("optimizer") or {}
    row = {
        **{group: config.get(group) for group in CHOICES},
        "T": config.get("T"),
        "seed": config.get("seed"),
        "encoder": config.get("encoder"),
        "lr": optimizer.get("lr"),
        "weight_decay": optimizer.get("weight_decay"),
        "batch_size": config.get("batch_size"),
        "max_epochs": config.get("max_epochs"),
        "status": summary.get("status"),
    }
    return {key: value for key, value in row.items() if isinstance(value, (bool, int, float, str))}


def run_metrics(summary: dict) -> dict[str, float]:
    """The run's results under the :data:`HP_METRICS` tags; missing ones left out."""
    values = {tag: read(summary) for tag, read in HP_METRICS.items()}
    return {tag: float(value) for tag, value in values.items() if isinstance(value, (int, float))}


def wandb_summary(summary: dict) -> dict:
    """The run's results for wandb's run summary (the columns of its runs table); missing ones left out."""
    best = summary.get("best") or {}
    test = summary.get("test") or {}
    values = {
        f"best/{best.get('metric', 'val/acc').replace('/', '_')}": best.get("score"),
        **{key: test.get(key) for key in ("test/acc", "test/acc5", "test/energy_mJ", "test/sops", "test/macs")},
        "firing_rate": summary.get("firing_rate"),
        "num_parameters": summary.get("num_parameters"),
        "epochs": summary.get("epochs"),
        "wall_time_s": summary.get("wall_time_s"),
        "status": summary.get("status"),
    }
    return {key: value for key, value in values.items() if value is not None}


@rank_zero_only
def log_run_results(loggers, summary: dict) -> None:
    """The end of a run: its results to TensorBoard's HParams and wandb's summary. Never fails the run: a logger
    that cannot take them says so in a warning."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for lg in loggers:
        try:
            if isinstance(lg, TensorBoardLogger):
                if summary.get("status") != "preempted":  # the requeued job writes the run's one session
                    log_hparams_session(lg, summary)
            elif isinstance(lg, WandbLogger):
                lg.experiment.summary.update(wandb_summary(summary))
        except Exception as err:  # a dashboard must never turn a finished run into a failed one
            log.warning("could not log the run's results to %s: %s", type(lg).__name__, err)


def log_hparams_session(logger, summary: dict) -> None:
    """Write the run's one HParams session (experiment, session start with the hyperparameters, session end with
    the status) and its metrics as scalars, into the TensorBoard run of ``logger``.

    Every run declares all :data:`HP_METRICS` tags (TensorBoard reads the columns from one run's experiment), and
    logs the values it has at its last step."""
    from torch.utils.tensorboard.summary import hparams

    metrics = run_metrics(summary)
    logger.log_metrics(metrics, step=int(summary.get("global_step") or 0))
    experiment, start, _ = hparams(run_hparams(summary), dict.fromkeys(HP_METRICS, 0.0))
    writer = logger.experiment._get_file_writer()
    for record in (experiment, start, _session_end(summary.get("status"))):
        writer.add_summary(record)
    writer.flush()


def _session_end(status: str | None):
    """HParams' session-end record: success for a completed run, failure for a failed one, unknown otherwise."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    code = {"completed": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE}.get(status, api_pb2.STATUS_UNKNOWN)
    content = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(status=code),
                                                version=metadata.PLUGIN_DATA_VERSION)
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                  content=content.SerializeToString()))
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=meta)])
