"""Optuna pruning for a run launched by the Optuna sweeper (hydra_plugins/snnexp_optuna_sweeper).

The sweeper passes ``optuna_trial={storage, study_name, trial_id, trial, monitor, prune, pruner}`` in the job's overrides; this module
reopens that trial from its storage (so it works in-process and in a separate SLURM/submitit process), reports the
monitored metric after every validation epoch and stops the run with :class:`snnexp.errors.RunPruned` when the
study's pruner says so.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from snnexp.errors import RunPruned


class OptunaPruning(Callback):
    """Report ``monitor`` to the trial after each validation epoch; raise :class:`RunPruned` when it should prune."""

    def __init__(self, storage: str, study_name: str, trial_id: int, pruner: dict, monitor: str = "val/acc"):
        import optuna
        from hydra.utils import instantiate

        # the sweeper's pruner, rebuilt here: a study loaded without one would prune with Optuna's default
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=instantiate(pruner))
        self.trial = optuna.trial.Trial(study, trial_id)
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)  # a second seed of the same trial reporting this epoch is ignored
        if self.trial.should_prune():
            raise RunPruned(f"pruned by the sweep's pruner at epoch {epoch} ({self.monitor}={value:.4f})")


def pruning_callbacks(cfg: DictConfig) -> list[Callback]:
    """The pruning callback when this run is an Optuna trial that prunes (``cfg.optuna_trial`` set), else none."""
    spec = cfg.get("optuna_trial")
    if not spec or not spec.get("prune", False):
        return []
    pruner = OmegaConf.to_container(spec.pruner, resolve=True)
    return [OptunaPruning(str(spec.storage), str(spec.study_name), int(spec.trial_id), pruner, str(spec.monitor))]
