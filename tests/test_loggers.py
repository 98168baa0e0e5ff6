"""Loggers (snnexp/loggers.py and conf/logger): wandb runs offline, one per job of a multirun, grouped by method and
tagged with model, data, neuron and T (by study in an Optuna sweep); ``logger=many`` is CSV, TensorBoard and wandb."""

import json

from helpers.runs import SHORT, compose_config, run_cli


def test_multirun_with_wandb_gives_one_run_dir_summary_and_offline_wandb_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "method=sdt,tet", "seed=0,1", "logger=wandb", *SHORT[:-1], "trainer.max_epochs=1",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed"
        seen.add((summary["config"]["method"], summary["config"]["seed"]))
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"{job}: {runs}"
        record = next(runs[0].glob("*.wandb")).read_bytes()  # wandb's protobuf log holds group and tags verbatim
        method = summary["config"]["method"]
        assert f"{method}-convnet-digits-s{summary['config']['seed']}".encode() in record
        neuron = {"sdt": b"neuron=lif", "tet": b"neuron=tet_lif"}[method]  # method=tet brings TET's neuron
        for tag in (b"model=convnet", b"data=digits", neuron, b"T=4"):
            assert tag in record
    assert seen == {("sdt", 0), ("sdt", 1), ("tet", 0), ("tet", 1)}


def test_logger_many_is_csv_tensorboard_and_wandb():
    cfg = compose_config(["logger=many"])
    assert set(cfg.logger) == {"csv", "tensorboard", "wandb"}
    assert cfg.logger.wandb.group == "sdt"


def test_optuna_trials_log_wandb_runs_grouped_by_study_and_named_by_trial(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=lr_study",
                   "optim.lr=tag(log, interval(1e-3, 1e-2))", "logger=wandb", *SHORT[:-1], "trainer.max_epochs=1",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for trial in (0, 1):
        (run,) = (sweep / f"trial{trial}" / "wandb").glob("offline-run-*")
        record = next(run.glob("*.wandb")).read_bytes()
        for text in (b"optuna-lr_study", f"sdt-convnet-digits-s0-trial{trial}".encode(), b"study=lr_study",
                     b"model=convnet"):
            assert text in record, text
