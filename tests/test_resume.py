"""Exact resume with real processes and real signals (snnexp/resume.py, preemption.py, atomic_save.py,
csv_history.py, data/order.py): a CLI run killed with SIGKILL in the middle of an epoch, or stopped by SIGTERM /
SIGUSR1 / SIGUSR2 (submitit's), and continued with ``resume=auto`` ends with the weights, metrics and metrics.csv of the run left alone.

The runs sample Poisson spikes (randomness in every forward). A run is held at a chosen optimiser step by
``helpers.gate.Gate`` (it writes a marker file and waits), so each signal lands at a known step, not after a sleep.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.runs import REPO

# digits, 4 training batches x 2 epochs = 8 optimiser steps; last.ckpt after steps 1 and 5 (each epoch's first
# batch), 2 and 6 (every 2 steps; 4 and 8 end an epoch, so none there) and at the end of training
RUN = ["debug=short", "trainer.limit_train_batches=4", "trainer.max_epochs=2", "encoder=poisson",
       "callbacks.exact_resume.every_n_train_steps=2"]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline",
       "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def environment() -> dict:
    """The children's environment: one thread (bit-reproducible CPU math) and no SLURM variables (under SLURM,
    Lightning would answer SIGUSR1 with ``scontrol requeue``)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}, **ENV}


TIMEOUT = 600  # generous: the machine may be busy; every wait below ends as soon as its file or process is there


def start(run_dir: Path, *extra: str, program: tuple[str, ...] = ("-m", "snnexp"), env: dict | None = None
          ) -> subprocess.Popen:
    """``python -m snnexp RUN EXTRA`` (or ``python PROGRAM RUN EXTRA``) writing into ``run_dir``, started in the
    background; its output goes to a log file next to ``run_dir`` (``proc.log``)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.{len(list(run_dir.parent.glob(run_dir.name + '.*.log')))}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *program, *RUN, *extra, f"hydra.run.dir={run_dir}"],
                                cwd=run_dir.parent, env={**environment(), **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen) -> int:
    """The process's exit status (negative: the signal that ended it)."""
    try:
        return proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()


def printed(proc: subprocess.Popen) -> str:
    """The end of what a run printed, for failure messages."""
    return proc.log.read_text()[-3000:]


def held_at(step: int, marker: Path) -> list[str]:
    """The overrides that hold the run after optimiser step ``step`` (``marker`` appears when it is there)."""
    return ["+callbacks.gate._target_=helpers.gate.Gate", f"+callbacks.gate.marker={marker}",
            f"+callbacks.gate.step={step}"]


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until ``path`` exists (a failure if ``proc`` ends first)."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert proc.poll() is None, f"the run ended (status {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"no {path} after {TIMEOUT} s"
        time.sleep(0.05)


def result(run_dir: Path) -> dict:
    """The final weights, summary and metrics.csv rows of a run."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]
    return {"weights": ckpt["state_dict"], "global_step": ckpt["global_step"], "rows": rows,
            "summary": json.loads((run_dir / "summary.json").read_text())}


def assert_same_run(resumed: dict, reference: dict) -> None:
    """Bit-identical weights, the same metrics in summary.json and the same metrics.csv, row for row."""
    a, b = resumed["weights"], reference["weights"]
    assert a.keys() == b.keys()
    tensors = [k for k in a if isinstance(a[k], torch.Tensor)]
    differ = [k for k in tensors if not torch.equal(a[k], b[k])]
    assert tensors and not differ, differ
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in tensors) == 0.0
    assert resumed["global_step"] == reference["global_step"] == 8
    for key in ("final_val", "test", "best", "firing_rates", "epochs", "global_step"):
        if key == "best":
            assert resumed["summary"][key]["score"] == reference["summary"][key]["score"]
        else:
            assert resumed["summary"][key] == reference["summary"][key], key
    # the whole history: each epoch's validation and training rows and the test row, none lost, none twice
    assert resumed["rows"] == reference["rows"]
    assert len([r for r in resumed["rows"] if "val/acc" in r]) == 2 and len(resumed["rows"]) == 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: started at once, in the background (it overlaps the first test's runs)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = start(run_dir)

    def get() -> dict:
        assert finish(proc) == 0, printed(proc)
        return result(run_dir)

    yield get
    finish(proc)


def test_sigkill_mid_epoch_then_resume_auto_equals_the_uninterrupted_run(tmp_path, reference):
    run_dir, marker = tmp_path / "run", tmp_path / "held"
    killed = start(run_dir, *held_at(7, marker))  # step 7: the 3rd batch of epoch 2; last.ckpt is from step 6
    wait_for(marker, killed)
    killed.send_signal(signal.SIGKILL)
    assert finish(killed) == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    at_kill = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert at_kill["global_step"] == 6 and at_kill["epoch"] == 1  # in the middle of the second epoch

    resumed = start(run_dir, "resume=auto")
    assert finish(resumed) == 0, printed(resumed)
    run = result(run_dir)
    assert run["summary"]["status"] == "completed" and run["summary"]["resumed_from"].endswith("last.ckpt")
    assert_same_run(run, reference())
    assert not (run_dir / "metrics.earlier.csv").exists()
    # wall time: the killed segment's (up to its last checkpoint) plus the resumed one's
    assert run["summary"]["wall_time_s"] > at_kill["snnexp"]["elapsed_s"] > 0


def test_sigterm_or_sigusr1_writes_a_checkpoint_exits_75_and_resume_auto_equals_the_uninterrupted_run(tmp_path,
                                                                                                      reference):
    signals = (signal.SIGTERM, signal.SIGUSR1)  # one run each, side by side
    run_dirs = {signum: tmp_path / signum.name / "run" for signum in signals}
    markers = {signum: tmp_path / signum.name / "held" for signum in signals}
    runs = {signum: start(run_dirs[signum], *held_at(2, markers[signum])) for signum in signals}
    for signum, proc in runs.items():
        wait_for(markers[signum], proc)
        proc.send_signal(signum)  # arrives at step 2: the run stops after the next batch, step 3, mid-epoch
    first, ckpts = {}, {}
    for signum, proc in runs.items():
        assert finish(proc) == 75, printed(proc)
        assert "Traceback" not in printed(proc)
        first[signum] = json.loads((run_dirs[signum] / "summary.json").read_text())
        assert first[signum]["status"] == "preempted"
        assert signum.name in first[signum]["error"] and "resume=auto" in first[signum]["error"]
        ckpts[signum] = torch.load(run_dirs[signum] / "checkpoints" / "last.ckpt", map_location="cpu",
                                   weights_only=True)
        assert ckpts[signum]["global_step"] == 3 and ckpts[signum]["epoch"] == 0
    # both signals stop at the same point with the same state, so continuing one of them shows both continue right
    term, usr1 = (ckpts[signum] for signum in signals)
    assert all(torch.equal(term["state_dict"][k], usr1["state_dict"][k]) for k in term["state_dict"]
               if isinstance(term["state_dict"][k], torch.Tensor))
    assert torch.equal(term["snnexp"]["rng"]["torch"], usr1["snnexp"]["rng"]["torch"])

    run_dir = run_dirs[signal.SIGTERM]
    resumed = start(run_dir, "resume=auto")
    assert finish(resumed) == 0, printed(resumed)
    run = result(run_dir)
    assert run["summary"]["status"] == "completed"
    assert_same_run(run, reference())
    assert not (run_dir / "metrics.earlier.csv").exists()
    assert run["summary"]["wall_time_s"] > first[signal.SIGTERM]["wall_time_s"] > 0  # both segments


SUBMITIT_LIKE = """
import json, runpy, signal, sys
from pathlib import Path

run_dir, seen = Path(sys.argv[1]), Path(sys.argv[2])


def requeue(signum, frame):  # what submitit's handler does on SIGUSR2: requeue the job, then exit at once
    summary = json.loads((run_dir / "summary.json").read_text())
    seen.write_text(json.dumps({"status": summary["status"], "ckpt": (run_dir / "checkpoints/last.ckpt").exists()}))
    sys.exit(-1)


signal.signal(signal.SIGUSR2, requeue)
sys.argv = ["snnexp", *sys.argv[3:]]
runpy.run_module("snnexp", run_name="__main__")
"""


def test_sigusr2_before_a_slurm_time_limit_saves_before_submitit_requeues_and_the_requeued_job_continues(tmp_path,
                                                                                                        reference):
    """submitit's SIGUSR2 handler (requeue, exit) runs only once last.ckpt and summary.json are written; the requeued
    job (SLURM sets SLURM_RESTART_COUNT) continues from last.ckpt with the same command, no resume=auto needed."""
    run_dir, marker, seen = tmp_path / "run", tmp_path / "held", tmp_path / "requeued.json"
    wrapper = tmp_path / "submitit_like.py"
    wrapper.write_text(SUBMITIT_LIKE)
    proc = start(run_dir, *held_at(2, marker), program=(str(wrapper), str(run_dir), str(seen)))
    wait_for(marker, proc)
    proc.send_signal(signal.SIGUSR2)
    assert finish(proc) == 255, printed(proc)  # sys.exit(-1) in the handler, as submitit exits
    assert json.loads(seen.read_text()) == {"status": "preempted", "ckpt": True}
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    assert "SIGUSR2" in json.loads((run_dir / "summary.json").read_text())["error"]

    requeued = start(run_dir, env={"SLURM_RESTART_COUNT": "1"})
    assert finish(requeued) == 0, printed(requeued)
    run = result(run_dir)
    assert run["summary"]["status"] == "completed" and run["summary"]["resumed_from"].endswith("last.ckpt")
    assert_same_run(run, reference())


WRITER = """
import sys, torch
from snnexp.atomic_save import atomic_torch_save
path, i = sys.argv[1], 0
while True:
    i += 1
    atomic_torch_save({"i": i, "blob": torch.full((1 << 20,), float(i))}, path)
    if i == 3:
        open(path + ".ready", "w").close()
"""


def test_sigkill_during_checkpoint_writes_never_leaves_a_broken_file(tmp_path):
    """A process rewriting a 4 MB checkpoint in a loop, killed at arbitrary moments: the file always loads whole,
    and the interrupted write's leftover is removed by the next start."""
    from snnexp.atomic_save import remove_partial_writes

    path = tmp_path / "last.ckpt"
    for attempt in range(2):
        ready = Path(f"{path}.ready")
        ready.unlink(missing_ok=True)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=environment())
        wait_for(ready, writer)
        time.sleep(0.013 * attempt)  # the writer is always inside a write: torch.save, fsync or the rename
        writer.send_signal(signal.SIGKILL)
        assert finish(writer) == -signal.SIGKILL
        saved = torch.load(path, weights_only=True)
        assert saved["i"] >= 3 and torch.equal(saved["blob"], torch.full((1 << 20,), float(saved["i"])))
        remove_partial_writes(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.ready"]
