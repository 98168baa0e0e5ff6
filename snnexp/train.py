"""Build an experiment from a composed config, train it, test it and write ``summary.json``.

``build(cfg)`` touches no dataset on disk, so tools and tests can inspect any composed experiment;
``run(cfg)`` is what ``python -m snnexp`` calls and returns the metric a sweeper optimises.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import zipfile
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from snnexp.checks import check_neuron, check_values
from snnexp.checks import instantiate as checked_instantiate
from snnexp.csv_history import hold_earlier_rows, merge_earlier_rows
from snnexp.dashboards import log_config, log_run_results
from snnexp.errors import IncompatibleError, RunPruned, SnnexpError, SweepConfigError
from snnexp.kernels import heap
from snnexp.lit import SNNModule
from snnexp.loggers import finish_loggers
from snnexp.models.encoders import check_timesteps, make_encoder
from snnexp.models.norm import warm_start_running_stats
from snnexp.quiet import silence_noise
from snnexp.preemption import as_preempted
from snnexp.resume import elapsed_before, mark_segment_start
from snnexp.sweep_pruning import pruning_callbacks

log = logging.getLogger(__name__)


def build(cfg: DictConfig):
    """Instantiate ``(datamodule, module)`` from the config; refuse combinations that cannot work."""
    check_values(cfg)
    T = check_timesteps(cfg.T)
    datamodule = checked_instantiate(cfg.data, "data")
    method = checked_instantiate(cfg.method, "method")
    neuron = checked_instantiate(cfg.neuron, "neuron")
    check_neuron(neuron)
    model_name = _choice(cfg, "model")
    try:
        model = instantiate(cfg.model, neuron=neuron, input_shape=tuple(datamodule.input_shape),
                            num_classes=datamodule.num_classes, **method.model_options())
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise IncompatibleError(
            f"model {model_name} cannot be built for data {_choice(cfg, 'data')} "
            f"(input {tuple(datamodule.input_shape)}, {datamodule.num_classes} classes): {cause}"
        ) from err
    if datamodule.time_steps is not None and datamodule.time_steps != T:
        raise IncompatibleError(
            f"data {_choice(cfg, 'data')} yields {datamodule.time_steps} time steps but T={T}; "
            "set data.T to match (or leave it as ${T})"
        )
    if datamodule.time_steps is not None and cfg.encoder != "direct":
        raise IncompatibleError(
            f"encoder={cfg.encoder} codes static images into spikes, but data "
            f"{_choice(cfg, 'data')} is already a spike sequence; use encoder=direct"
        )
    method.check(model, datamodule)
    model = method.setup(model, datamodule)
    if cfg.get("bn_warm_start", True):
        warm_start_running_stats(model)
    module = SNNModule(model, method, datamodule.num_classes, optimizer=checked_instantiate(cfg.optim, "optim"),
                       scheduler=checked_instantiate(cfg.scheduler, "scheduler"), encoder=make_encoder(cfg.encoder), T=T,
                       input_shape=datamodule.input_shape, energy=(cfg.energy.e_mac, cfg.energy.e_ac),
                       pack_spikes=cfg.get("pack_spikes", True), recompute_bn=cfg.get("recompute_bn", True),
                       recompute_conv=cfg.get("recompute_conv", "cheap"),
                       winograd=cfg.get("winograd", True), im2col_backward=cfg.get("im2col_backward", True))
    if cfg.get("cache_cpu_tensors", True) and trains_on_cpu(cfg.trainer):
        heap.cache_torch_tensors()
    if cfg.get("reuse_heap", False):  # the process is about to train: keep its large freed blocks for the next step
        heap.reuse_freed_blocks()
    return datamodule, module


def trains_on_cpu(trainer: DictConfig) -> bool:
    """Whether Lightning will put this run on the CPU (``accelerator`` cpu, or auto without a CUDA GPU)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _choice(cfg: DictConfig, group: str) -> str:
    """The option chosen for ``group`` (e.g. ``resnet19``), or the target's name outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices[group]
    except Exception:
        node = cfg.get(group)
        target = node.get("_target_", group) if isinstance(node, DictConfig) else group
        return str(target).rsplit(".", 1)[-1]


def _resume_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    """Which checkpoint to continue from; refuse to overwrite an earlier run's checkpoints silently."""
    last = ckpt_dir / "last.ckpt"
    resume = cfg.resume
    if resume is None and last.exists() and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        log.info("SLURM requeued this job (SLURM_RESTART_COUNT=%s): continuing from %s",
                 os.environ["SLURM_RESTART_COUNT"], last)
        resume = "auto"  # the same job after a preemption or a time limit, in its own run directory
    if resume is None:
        if last.exists():
            raise SnnexpError(
                f"{ckpt_dir} already holds checkpoints of an earlier run; pass resume=auto to continue it, "
                "or choose another hydra.run.dir so nothing is overwritten"
            )
        return None
    from snnexp.checkpoints import check_resume  # a damaged file is refused in one line before Lightning loads it

    if resume == "auto":
        return check_resume(last, "resume=auto") if last.exists() else None
    path = Path(cfg.resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise SnnexpError(f"resume={cfg.resume}: no checkpoint at {path}")
    return check_resume(path, f"resume={cfg.resume}")


def _keep_previous_metrics(out_dir: Path, ckpt_path: str) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; on resume, hold its rows logged before the checkpoint
    in metrics.earlier.csv, merged back into metrics.csv when the run ends (snnexp/csv_history.py)."""
    mmap = zipfile.is_zipfile(ckpt_path)  # the tensors only mapped, not read (a legacy file cannot be mapped)
    step = torch.load(ckpt_path, map_location="cpu", mmap=mmap, weights_only=True).get("global_step", 0)
    hold_earlier_rows(out_dir, before_step=int(step))


def run(cfg: DictConfig) -> float | None:
    """Check, seed, build, fit, test, write ``summary.json``; returns ``cfg.optimized_metric`` for sweepers."""
    start = time.time()
    silence_noise()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        _refuse_ddp_in_multirun(cfg)
        check_values(cfg)  # before the seed is set and anything is built: a bad value stops here, in one line
        L.seed_everything(cfg.seed, workers=True)
        datamodule, module = build(cfg)
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + pruning_callbacks(cfg)
        mark_segment_start(callbacks, start)
        ckpt_dirs = [Path(cb.dirpath) for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        ckpt_path = _resume_path(cfg, ckpt_dirs[0] if ckpt_dirs else out_dir / "checkpoints")
        datamodule.prepare_data()  # a missing dataset stops here, before any training
        if ckpt_path is not None and rank_zero_only.rank == 0:  # DDP: one process moves metrics.csv aside
            _keep_previous_metrics(out_dir, ckpt_path)
        loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except BaseException as err:
        _record_early_failure(out_dir / "summary.json", cfg, err, start)
        raise
    log_config(loggers, _hparams(cfg),  # wandb also gets the choices flat, for its runs table
               {g: _choice(cfg, g) for g in ("data", "model", "neuron", "method", "optim", "scheduler")})

    summary = {"status": "running", "resumed_from": ckpt_path}
    preempted = None
    try:
        if module.method.trains():  # a method converting a given checkpoint only tests
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        val = {k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        best = _best_checkpoint(trainer)
        test_ckpt = best if (cfg.eval.ckpt == "best" and best) else None
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=test_ckpt, verbose=False)
        by_T = {T: _test_at(T, cfg, trainer, module, datamodule) for T in cfg.eval.timesteps}
        summary.update(status="completed", final_val=val, test=tested[0] if tested else {},
                       test_by_T=by_T, tested_checkpoint=test_ckpt)
    except RunPruned as pruned:  # an Optuna sweep's pruner stopped this trial early: a result, not a failure
        summary.update(status="pruned", pruned=str(pruned),
                       final_val={k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    except BaseException as err:  # any failure, ours or not, and Ctrl-C: the summary must not say "running"
        if (preempted := as_preempted(err)) is not None:  # SIGTERM/SIGUSR1/2: exit 75, resume=auto continues
            summary.update(status="preempted", error=str(preempted))
            raise preempted from None
        summary.update(status="failed", error=_error_text(err))
        raise
    finally:
        summary.update(_describe(cfg, trainer, module, start))
        if trainer.is_global_zero:  # DDP: every process holds the same (synced) summary; rank 0 writes it
            _write_summary(out_dir / "summary.json", summary)
        log_run_results(loggers, summary)
        finish_loggers(loggers)
        if trainer.is_global_zero:
            merge_earlier_rows(out_dir)
        if preempted is not None:  # submitit's SIGUSR2 handler requeues the job now that the state is on disk
            preempted.hand_on()
    if trainer.is_global_zero:
        log.info("summary written to %s", out_dir / "summary.json")
        print_results(summary, out_dir)
    if summary["best"]:
        return summary["best"]["score"]
    return summary["final_val"].get(cfg.optimized_metric)


def _record_early_failure(path: Path, cfg: DictConfig, err: BaseException, start: float) -> None:
    """A run that fails before training starts still leaves a summary saying why, unless the directory already
    holds an earlier run's summary (a refused resume or a reused run directory must not overwrite it)."""
    earlier_run = cfg.resume is None and any((path.parent / "checkpoints").glob("*.ckpt"))
    if path.exists() or earlier_run or rank_zero_only.rank != 0:
        return
    _write_summary(path, {
        "status": "failed",
        "error": _error_text(err),
        "wall_time_s": round(time.time() - start, 2),
        "config": {g: _choice(cfg, g) for g in ("data", "model", "neuron", "method", "optim", "scheduler")},
    })


def _error_text(err: BaseException) -> str:
    """A failure as summary.json records it: snnexp's own message as it is, anything else with its type."""
    return str(err) if isinstance(err, SnnexpError) else f"{type(err).__name__}: {err}"


def _test_at(T: int, cfg: DictConfig, trainer: L.Trainer, module: SNNModule, datamodule) -> dict:
    """Test the weights just tested at another number of time steps T (Spiking PointNet's "trained-less,
    learning-more", MTT's temporal-flexibility curve): static inputs are encoded into T steps; event data is
    binned again into T frames. Metrics are logged as ``test_T<T>/acc``."""
    if datamodule.time_steps is None:
        at_T = module.timesteps(T)
    else:
        datamodule = instantiate(cfg.data, T=T)
        datamodule.prepare_data()
        at_T = contextlib.nullcontext()
    module.test_prefix = f"test_T{T}"
    try:
        with at_T:
            results = trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        module.test_prefix = "test"
    return {key.split("/", 1)[1]: value for key, value in (results[0] if results else {}).items()}


def _refuse_ddp_in_multirun(cfg: DictConfig) -> None:
    """Lightning's DDP re-executes ``sys.argv`` on ranks > 0; under ``-m`` that would re-run the whole sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra run (library use)
        return
    strategy = str(cfg.trainer.get("strategy", ""))
    if multirun and strategy.startswith("ddp") and "spawn" not in strategy:
        raise SweepConfigError(
            f"trainer.strategy={strategy} cannot run under -m (multirun): DDP re-executes the command on every "
            "rank, which would re-run the whole sweep. Launch one job per sweep point instead "
            "(a SLURM launcher such as hydra/launcher=submitit_slurm, or a shell loop over single runs)."
        )


def _hparams(cfg: DictConfig) -> dict:
    """The resolved experiment config for the loggers (Hydra's own node left out)."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key != "hydra"}


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return cb.best_model_path if cb is not None and cb.best_model_path else None


def _number(value):
    return value.item() if isinstance(value, torch.Tensor) else value


def _describe(cfg: DictConfig, trainer: L.Trainer, module: SNNModule, start: float) -> dict:
    """Everything in summary.json besides the metrics: choices, sizes, best checkpoint, epochs, wall time."""
    cb = trainer.checkpoint_callback
    best = {}
    if cb is not None and cb.best_model_score is not None:
        best = {"metric": cb.monitor, "score": _number(cb.best_model_score), "checkpoint": cb.best_model_path}
    rates = module.last_firing_rates or module.test_firing_rates.get("test", {})  # no validation: e.g. converted
    split = next((s for s in ("test", "val") if s in module.last_operations), None)
    energy = None
    if split is not None:  # per sample, with each layer's MACs, ACs and input firing rate
        e_mac, e_ac = module.energy_pj
        energy = {"e_mac_pJ": e_mac, "e_ac_pJ": e_ac, "split": split, **module.last_operations[split]}
    return {
        "best": best,
        "firing_rate": sum(rates.values()) / len(rates) if rates else None,
        "firing_rates": rates,
        "energy": energy,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "wall_time_s": round(time.time() - start + elapsed_before(trainer), 2),  # all segments of a resumed run
        "num_parameters": sum(p.numel() for p in module.model.parameters()),  # the SNN: a method's extras excluded
        "meta": OmegaConf.to_container(cfg.meta) if OmegaConf.is_config(cfg.get("meta")) else cfg.get("meta"),
        "config": {
            **{g: _choice(cfg, g) for g in ("data", "model", "neuron", "method", "optim", "scheduler")},
            "T": cfg.T,
            "seed": cfg.seed,
            "encoder": cfg.encoder,
            "optimizer": OmegaConf.to_container(cfg.optim),
            "lr_scheduler": OmegaConf.to_container(cfg.scheduler) if cfg.get("scheduler") is not None else None,
            **{f"{g}_options": _options(cfg, g) for g in ("method", "model", "neuron")},
            "max_epochs": cfg.trainer.max_epochs,
            "batch_size": cfg.data.get("batch_size"),
        },
    }


def _options(cfg: DictConfig, group: str) -> dict | None:
    """A config group's options as the run used them (``method.calibration``, ``model.width``, ...)."""
    node = cfg.get(group)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_dict(node) else None


def results_table(summary: dict, out_dir: Path):
    """The run's results as a rich table: best validation and test accuracy (and at each ``eval.timesteps`` T),
    mean firing rate, parameters, epochs, wall time and the run directory."""
    from rich.table import Table

    def percent(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    table = Table(title="snnexp results", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    best = summary.get("best") or {}
    table.add_row(f"best {best.get('metric', 'val/acc')}", percent(best.get("score")))
    table.add_row("test accuracy", percent((summary.get("test") or {}).get("test/acc")))
    if "test/ann_acc" in (summary.get("test") or {}):  # a converted SNN: its ANN's own accuracy beside it
        table.add_row("ANN test accuracy", percent(summary["test"]["test/ann_acc"]))
    for T, metrics in (summary.get("test_by_T") or {}).items():
        table.add_row(f"test accuracy at T={T}", percent(metrics.get("acc")))
    table.add_row("mean firing rate", "-" if summary["firing_rate"] is None else f"{summary['firing_rate']:.4f}")
    table.add_row("parameters", f"{summary['num_parameters']:,}")
    table.add_row("epochs", str(summary["epochs"]))
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s")
    table.add_row("run directory", str(out_dir))
    return table


def print_results(summary: dict, out_dir: Path) -> None:
    """Render :func:`results_table` as text and log it: the console and the run's ``snnexp.log`` both show it."""
    from rich.console import Console

    console = Console(record=True, width=100, file=io.StringIO())
    console.print(results_table(summary, out_dir))
    log.info("results\n%s", console.export_text())


def _write_summary(path: Path, summary: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)
