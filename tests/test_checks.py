"""Values checked before training (snnexp/checks.py): every bad value is refused in one line naming the key, by
the command line with exit status 1 and no traceback, and the run's summary.json records the failure."""

import json

import pytest
import torch

from helpers.runs import compose_config, run_cli
from snnexp.errors import ConfigValueError
from snnexp.train import build

BAD_VALUES = [  # (overrides, the start of the one-line message)
    (["T=0"], "T=0 is not valid: the number of time steps must be a positive integer"),
    (["data.batch_size=0"], "data.batch_size=0 is not valid: a batch size must be a positive integer"),
    (["data.batch_size=-8"], "data.batch_size=-8 is not valid"),
    (["data.num_workers=-1"], "data.num_workers=-1 is not valid"),
    (["optim.lr=-1"], "optim.lr=-1.0 is not valid: the learning rate must be a number > 0"),
    (["optim.lr=1e300"], "optim.lr=1e+300 is not valid: the learning rate must be a number > 0 that float32 weights"),
    (["optim.lr=0"], "optim.lr=0.0 is not valid"),
    (["optim.lr=nan"], "optim.lr=nan is not valid"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay=-0.1 is not valid: weight decay must be a finite number >= 0"),
    (["optim=sgd", "optim.momentum=1.5"], "optim.momentum=1.5 is not valid: momentum must lie in [0, 1)"),
    (["optim.betas=[0.9,1.0]"], "optim.betas=[0.9, 1.0] is not valid: both betas must lie in [0, 1)"),
    (["scheduler.warmup_epochs=-2"], "scheduler.warmup_epochs=-2 is not valid"),
    (["scheduler.min_lr=-1e-5"], "scheduler.min_lr=-1e-05 is not valid"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0 is not valid"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not valid: train for at least 1 epoch"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is not valid"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1.0 is not valid"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is not valid"),
    (["eval.timesteps=[2,0]"], "eval.timesteps=[2, 0] is not valid: every T to test at must be a positive integer"),
    (["eval.ckpt=first"], "eval.ckpt='first' is not valid"),
    # the constructors' own range checks, raised as the same one-line error (not Hydra's multi-line wrapper)
    (["method=tet", "method.lamb=2"], "method.lamb must lie in [0, 1], got 2.0"),
    (["method=kd", "method.alpha=-1"], "method.alpha must lie in [0, 1], got -1.0"),
    (["method=mtt", "method.t_min=3", "method.t_max=2"], "method.t_min and method.t_max need 1 <= t_min <= t_max"),
    (["method=dspike", "method.b0=100"], "method.b0 must lie in [b_min, b_max]"),
    (["neuron.tau=0"], "neuron: LIF: tau must be a finite number > 0, got 0.0"),
    (["neuron.surrogate.alpha=-1"], "neuron: Sigmoid: alpha must be a finite number > 0"),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_a_bad_value_is_refused_before_anything_is_built_in_one_line(overrides, message):
    with pytest.raises(ConfigValueError) as caught:
        build(compose_config(overrides))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_good_values_pass():
    for overrides in ([], ["optim=sgd"], ["scheduler=step"], ["trainer.limit_train_batches=0.5"], ["eval.timesteps=[1,8]"]):
        build(compose_config(overrides))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_gpu_run_without_a_gpu_says_so_in_one_line():
    with pytest.raises(ConfigValueError, match=r"^trainer.accelerator=gpu: torch sees no CUDA GPU on this machine .*"
                                               r"use trainer=cpu"):
        build(compose_config(["trainer=gpu"]))


def test_the_command_line_refuses_a_bad_value_in_one_line_and_records_it_in_the_summary(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("data.batch_size=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("snnexp: error:")]
    assert errors == ["snnexp: error: data.batch_size=0 is not valid: a batch size must be a positive integer"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "data.batch_size=0 is not valid: a batch size must be a positive integer"
    assert not (run_dir / "checkpoints").exists()
    assert errors[0] in (run_dir / "snnexp.log").read_text()  # the run's log says why it stopped
