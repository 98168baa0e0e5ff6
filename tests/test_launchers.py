"""Hydra launchers from hydra-submitit-launcher (the ``slurm`` extra): ``hydra/launcher=submitit_local`` runs a real
multirun, each job a separate submitit process; ``submitit_slurm`` and snnexp's ``slurm`` preset compose."""

import json

import pytest

from helpers.runs import SHORT, compose_config, run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed")


def test_slurm_launchers_compose():
    plain = compose_config(["hydra/launcher=submitit_slurm"]).hydra.launcher
    assert plain._target_.endswith("submitit_launcher.SlurmLauncher")
    preset = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert preset._target_ == plain._target_
    assert (preset.partition, preset.gpus_per_node, preset.tasks_per_node) == ("gpu", 1, 1)
    assert preset.timeout_min > plain.timeout_min and preset.cpus_per_task and preset.mem_gb


@pytest.mark.slow
def test_submitit_local_runs_a_two_job_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "seed=0,1", *SHORT[:-1], "trainer.max_epochs=1",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, seed in ((0, 0), (1, 1)):
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["config"]["seed"] == seed
    # submitit ran each job in its own process, which wrote its own log
    assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2
