"""Distributed and resumable Optuna sweeps (hydra/sweeper=optuna): workers opening one new PostgreSQL database at
once all get the study; two CLI worker processes sharing one study in PostgreSQL split its trial budget; a sweep
killed with SIGKILL mid-trial continues where it stopped, its killed trial failed by the heartbeat check. The
PostgreSQL server is the session's throwaway one (the postgres_server fixture, tests/helpers/postgres.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

TINY = ["debug=short", "logger=none"]  # digits, one epoch of 2 batches on the CPU, checkpointed in the job dir
SPACE = ["optim.lr=tag(log, interval(1e-4, 1e-1))"]
TIMEOUT = 600


def start_sweep(tmp_path: Path, log: Path, *args: str) -> subprocess.Popen:
    """``python -m snnexp -m hydra/sweeper=optuna ARGS`` in its own process group, its output in ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "snnexp", "-m", "hydra/sweeper=optuna", *TINY, *args],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> None:
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, log.read_text()[-4000:]


def annotated_summaries(*sweep_dirs: Path) -> dict[Path, dict]:
    """Every job's summary.json under the sweep directories, by job directory."""
    return {p.parent: json.loads(p.read_text()) for d in sweep_dirs for p in sorted(d.glob("*/summary.json"))}


OPEN_TOGETHER = """
import sys, time
from pathlib import Path
import optuna
from hydra_plugins.snnexp_optuna_sweeper import study as studies
url, folder, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(folder / f"ready{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
storage = studies.open_storage(url, 60, None)
study = studies.open_study(storage, "together", ["maximize"], optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
print("opened", study._study_id)
"""


def test_workers_opening_a_new_postgres_database_together_all_open_the_one_study(tmp_path, postgres_server):
    """Workers started together on an empty database each create Optuna's tables: PostgreSQL lets one win and the
    others fail (IntegrityError on pg_type); the plugin's open_storage tries those again, so every worker opens the
    same study. Three processes released at one instant (a go file), as three sweeps would."""
    url = postgres_server.create_database("open_together")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_TOGETHER, url, str(tmp_path), str(i)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready*"))) < len(procs):
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({out.split()[-1] for out, _ in outs}) == 1  # one study id
    assert len(optuna.get_all_study_names(url)) == 1


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_and_its_budget(tmp_path, postgres_url):
    """Two processes started together on one PostgreSQL study of n_trials=4: together they run 4 trials, each once,
    each in its own run directory.

    Counting the study's trials and asking for one are two steps, so two workers can both ask for the last place;
    Optuna numbers trials atomically and the higher number is turned away as a surplus FAIL: exactly n_trials count."""
    n_trials, name = 4, "two_workers"
    common = ["hydra/sweeper/sampler=random", f"hydra.sweeper.n_trials={n_trials}",
              f"hydra.sweeper.storage={postgres_url}", f"hydra.sweeper.study_name={name}", *SPACE]
    dirs = [tmp_path / "worker_a", tmp_path / "worker_b"]
    logs = [tmp_path / "worker_a.log", tmp_path / "worker_b.log"]
    workers = [start_sweep(tmp_path, log, f"hydra.sweep.dir={d}", *common) for d, log in zip(dirs, logs)]
    for proc, log in zip(workers, logs):
        finish(proc, log)

    asked = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
    assert [t.number for t in asked] == list(range(len(asked)))
    surplus = [t for t in asked if t.user_attrs.get("surplus")]
    assert all(t.state == TrialState.FAIL and t.number >= n_trials for t in surplus)
    trials = [t for t in asked if not t.user_attrs.get("surplus")]
    assert [t.number for t in trials] == list(range(n_trials)), [(t.number, t.state) for t in asked]
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state) for t in trials]
    assert len({t.params["optim.lr"] for t in trials}) == len(trials)  # a random sampler: distinct points

    # one job per trial (none ran twice, none ran without a trial), each in its own directory, in either worker's
    jobs = annotated_summaries(*dirs)
    assert sorted(s["optuna"]["trial"] for s in jobs.values()) == [t.number for t in trials]
    for trial in trials:
        (job_dir,) = trial.user_attrs["job_dirs"]
        summary = jobs[Path(job_dir)]
        assert Path(job_dir).name == f"trial{trial.number}" and Path(job_dir).parent in dirs
        assert summary["status"] == "completed" and summary["optuna"]["study"] == name
        assert summary["optuna"]["state"] == "COMPLETE" and summary["optuna"]["params"] == trial.params
        job_config = yaml.safe_load((Path(job_dir) / ".hydra" / "config.yaml").read_text())
        assert job_config["optim"]["lr"] == pytest.approx(trial.params["optim.lr"])  # the job ran the trial's point
    for log in logs:  # both opened the one study (which worker runs how many trials depends on their start-up)
        assert f"Optuna study {name} in postgresql+psycopg://" in log.read_text()
    assert not any(d.joinpath("optuna.db").exists() for d in dirs)  # the study is in PostgreSQL only
    for d in dirs:  # each worker reports the study's best trial, whichever worker ran it
        assert (d / "best.yaml").is_file()


HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]


@pytest.mark.slow
def test_sweep_killed_mid_trial_continues_with_the_killed_trial_failed(tmp_path):
    """SIGKILL the whole sweep while its second trial trains, then run the same command again: the first trial is
    kept as it was, the killed one is FAIL (its heartbeat stopped: failed when the second run opens the study), and
    the budget counts it, so the second run runs the third and last trial and the study holds exactly n_trials
    trials: COMPLETE, FAIL, COMPLETE."""
    sweep_dir, n_trials, grace = tmp_path / "sweep", 3, 2
    args = [f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.n_trials={n_trials}", "hydra/sweeper/sampler=random",
            *HEARTBEAT, *SPACE, "trainer.limit_train_batches=20"]  # >1 s of training to kill it in
    log = tmp_path / "first.log"
    proc = start_sweep(tmp_path, log, *args)
    # the first trial is told (its summary.json annotated) before the second is asked; the second's job directory
    # holds .hydra/config.yaml once its job has started
    deadline = time.monotonic() + TIMEOUT
    first, second = sweep_dir / "trial0" / "summary.json", sweep_dir / "trial1" / ".hydra" / "config.yaml"
    while not (second.is_file() and "optuna" in annotated_summaries(sweep_dir).get(first.parent, {})):
        assert proc.poll() is None, f"the sweep ended before its second trial ran:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, log.read_text()[-4000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait(timeout=60)

    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    before = optuna.load_study(study_name="snnexp", storage=storage).get_trials()
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING], log.read_text()[-4000:]
    assert not (sweep_dir / "best.yaml").exists()
    # the killed trial's last heartbeat is older than its grace period only after it: the rerun's own start-up takes
    # longer than this anyway, the wait makes it certain on any machine
    time.sleep(max(0.0, killed_at + grace + 0.5 - time.monotonic()))

    log = tmp_path / "second.log"
    finish(start_sweep(tmp_path, log, *args), log)
    after = optuna.load_study(study_name="snnexp", storage=storage).get_trials()
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert (after[0].params, after[0].value, after[0].user_attrs) == (before[0].params, before[0].value,
                                                                       before[0].user_attrs)
    assert after[1].params == before[1].params  # the killed trial: failed, not re-run

    jobs = annotated_summaries(sweep_dir)
    assert sorted(p.name for p in jobs) == ["trial0", "trial2"]  # the killed job never wrote a summary
    assert (sweep_dir / "trial1" / ".hydra").is_dir()
    third = jobs[sweep_dir / "trial2"]
    assert third["status"] == "completed" and third["optuna"]["trial"] == 2 and third["optuna"]["state"] == "COMPLETE"
    assert after[2].user_attrs["job_dirs"] == [str(sweep_dir / "trial2")]
    best = after[0] if after[0].value >= after[2].value else after[2]
    assert yaml.safe_load((sweep_dir / "best.yaml").read_text())["trial"] == best.number
