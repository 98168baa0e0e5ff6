"""Logger factories that need more than a ``_target_`` line: wandb offline by default, grouped by method (by study
in an Optuna sweep)."""

from __future__ import annotations

import os


def wandb_is_logged_in() -> bool:
    """True when an API key is configured (``wandb login`` or ``WANDB_API_KEY``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.api.api_key)
    except Exception:
        return False


def wandb_logger(project: str, save_dir: str, group: str, tags: list, name: str | None = None,
                 mode: str | None = None, entity: str | None = None, optuna_trial: dict | None = None):
    """A Lightning ``WandbLogger``: one run per job, grouped by method and tagged with model/data/neuron/T.

    An Optuna trial (``optuna_trial``, set by the sweeper) is grouped by its study instead, named with its trial
    number and tagged ``study=<name>``, so one study's runs sit together in wandb. The mode is, in order: ``mode``
    from the config, ``WANDB_MODE``, "online" when logged in, else "offline" (``wandb sync
    <run dir>/wandb/offline-run-*`` uploads later).
    """
    from lightning.pytorch.loggers import WandbLogger

    if optuna_trial:
        group, tags = f"optuna-{optuna_trial['study_name']}", [*tags, f"study={optuna_trial['study_name']}"]
        name = f"{name or group}-trial{optuna_trial['trial']}"
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_is_logged_in() else "offline")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, group=group, tags=[str(t) for t in tags],
                       name=name, mode=mode, entity=entity, reinit="finish_previous")


def finish_loggers(loggers) -> None:
    """Close every logger's run, so the next job of a multirun starts its own (wandb needs ``finish()``)."""
    for lg in loggers:
        experiment = getattr(lg, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
        else:
            lg.finalize("success")
