"""More than one process: ``trainer=ddp_cpu`` (DDP over gloo, two CPU processes) makes one run, in one run dir, whose
metrics, firing rates and weights equal a single-process run with the same global batch; and the global-batch
BatchNorm plugin behind it (snnexp.training.sync_norm) gives BatchNorm's and tdBN's results on the whole batch."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.runs import run_cli
from snnexp.models.norm import TDBatchNorm2d, tdbn
from snnexp.training.sync_norm import GlobalBatchNorm

# 2 epochs x 20 steps of a global batch of 8 on digits; full validation (180) and test (360) sets, whose sizes
# split evenly over two processes (DistributedSampler pads an uneven set with repeated samples)
RUN = ["trainer.max_epochs=2", "trainer.limit_train_batches=20", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false"]
TWO_PROCESSES = ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=4", *RUN]
# a plain one-process run: the training sampler draws each epoch's order from (seed, epoch) alone
# (snnexp/data/order.py) and DDP gives each process every other sample of it, so both see the same global batches
ONE_PROCESS = ["trainer=cpu", "data.batch_size=8", *RUN]
VAL_SAMPLES, TEST_SAMPLES = 180, 360

# Tolerances: float32 sums taken in another order (the gradient all-reduce, the split BatchNorm statistics) over 40
# Adam steps. Measured: weights 4e-6, losses 3e-7, accuracies and firing rates identical. BatchNorm per process
# (trainer.plugins=null) moves the weights by 2e-2 and val/acc by 6 samples, far outside these.
WEIGHTS_ATOL = 1e-4
LOSS_RTOL = 1e-5
RATE_ATOL = 1e-6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{"two": run dir, "one": run dir, "two_proc": the DDP command's CompletedProcess}``: the DDP run in the
    default (timestamped) run dir, to see that rank 1 joins rank 0's; both runs at once, one thread each."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "two").mkdir()
    env = {"OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(2) as pool:
        two = pool.submit(run_cli, *TWO_PROCESSES, cwd=root / "two", env=env, timeout=600)
        one = pool.submit(run_cli, *ONE_PROCESS, f"hydra.run.dir={root / 'one'}", cwd=root, env=env, timeout=600)
        two, one = two.result(), one.result()
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-4000:]
    run_dirs = sorted((root / "two" / "outputs" / "runs").glob("*/*"))
    assert len(run_dirs) == 1, f"rank 1 made a run dir of its own: {run_dirs}"
    return {"two": run_dirs[0], "one": root / "one", "two_proc": two}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_two_processes_write_one_run(runs):
    run_dir, proc = runs["two"], runs["two_proc"]
    assert (run_dir / "train_ddp_process_1.log").exists()  # rank 1 ran in rank 0's run dir
    assert _summary(run_dir)["status"] == "completed"
    assert (proc.stdout + proc.stderr).count("summary written") == 1  # rank 0 alone writes (and reports) it
    assert "summary written" not in (run_dir / "train_ddp_process_1.log").read_text()
    assert "sync_dist=True" not in proc.stderr  # no epoch-level metric is left unsynced
    two = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert two == sorted(p.name for p in (runs["one"] / "checkpoints").iterdir())
    assert len(two) == 2 and "last.ckpt" in two and any(name.startswith("best-") for name in two), two


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(runs):
    two, one = _summary(runs["two"]), _summary(runs["one"])
    assert (two["global_step"], two["epochs"]) == (one["global_step"], one["epochs"]) == (40, 2)
    for split, metrics, samples in (("val", "final_val", VAL_SAMPLES), ("test", "test", TEST_SAMPLES)):
        a, b = two[metrics], one[metrics]
        assert a[f"{split}/loss"] == pytest.approx(b[f"{split}/loss"], rel=LOSS_RTOL)
        for key in (f"{split}/acc", f"{split}/acc5"):
            assert abs(a[key] - b[key]) <= 1.01 / samples, (key, a[key], b[key])  # at most one sample apart
    assert one["final_val"]["val/acc"] > 0.3  # trained past chance, so equal accuracies mean something


@pytest.mark.slow
def test_firing_rates_are_the_whole_validation_sets(runs):
    two, one = _summary(runs["two"]), _summary(runs["one"])
    assert two["firing_rates"].keys() == one["firing_rates"].keys() and two["firing_rates"]
    for layer, rate in one["firing_rates"].items():
        assert 0 < rate < 1 and two["firing_rates"][layer] == pytest.approx(rate, abs=RATE_ATOL), layer
    assert two["firing_rate"] == pytest.approx(one["firing_rate"], abs=RATE_ATOL)
    assert two["final_val"]["val/firing_rate"] == pytest.approx(one["final_val"]["val/firing_rate"], abs=RATE_ATOL)


@pytest.mark.slow
def test_weights_equal_one_process_with_the_global_batch(runs):
    two, one = (torch.load(runs[k] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
                for k in ("two", "one"))
    assert two.keys() == one.keys()
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, atol=WEIGHTS_ATOL, rtol=0, msg=key)


# ---- the global-batch BatchNorm plugin, on two gloo processes -------------------------------------------------

# Each rank normalises its interleaved share of a fixed batch through GlobalBatchNorm and compares with the plain
# layer on the whole batch (run on the same rank, without collectives): outputs, input gradients, parameter
# gradients summed over the ranks, running statistics; and the class after revert. Prints the results as JSON.
WORKER = r"""
import copy, json, sys
import torch, torch.distributed as dist
from torch import nn
from snnexp.models.norm import tdbn
from snnexp.training.sync_norm import GlobalBatchNorm

rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
torch.manual_seed(0)
cases = {"BatchNorm2d": (nn.BatchNorm2d(3), (8, 3, 4, 4)), "TDBatchNorm2d": (tdbn(3, residual=True, v_threshold=0.5),
         (8, 3, 4, 4)), "BatchNorm1d": (nn.BatchNorm1d(4), (6, 4, 5)), "BatchNorm1d_flat": (nn.BatchNorm1d(4), (10, 4))}
results = {}
for name, (layer, shape) in cases.items():
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5), layer.bias.uniform_(-0.5, 0.5)
    x, g = torch.randn(shape) * 3 + 1, torch.randn(shape)
    reference, whole = copy.deepcopy(layer), x.clone().requires_grad_()
    expected = reference(whole)
    (expected * g).sum().backward()
    GlobalBatchNorm().apply(layer)
    share = x[rank::world].clone().requires_grad_()
    out = layer(share)
    (out * g[rank::world]).sum().backward()
    grads = torch.cat([layer.weight.grad, layer.bias.grad])
    dist.all_reduce(grads)
    results[name] = {
        "output": (out - expected[rank::world]).abs().max().item(),
        "input_grad": (share.grad - whole.grad[rank::world]).abs().max().item(),
        "param_grad": (grads - torch.cat([reference.weight.grad, reference.bias.grad])).abs().max().item(),
        "running": max((layer.running_mean - reference.running_mean).abs().max().item(),
                       (layer.running_var - reference.running_var).abs().max().item()),
        "class_after_revert": type(GlobalBatchNorm().revert(layer)).__name__,
    }
print(json.dumps(results))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_global_batchnorm_on_two_processes_is_batchnorm_on_the_whole_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), "2", str(tmp_path / "store")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    for out, _ in outputs:
        results = json.loads(out.strip().splitlines()[-1])
        for name, result in results.items():
            assert result["class_after_revert"] == name.split("_")[0]
            for what in ("output", "input_grad", "param_grad", "running"):
                assert result[what] < 1e-4, (name, what, result[what])  # measured <= 3e-6


def test_global_batchnorm_keeps_the_layer_on_one_process():
    """Outside DDP the plugin changes nothing: same forward (tdBN's scale included), same state-dict keys, and the
    layer stays an instance of its own class (tdBN code that checks isinstance keeps working)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), tdbn(3, residual=True, v_threshold=0.5), nn.BatchNorm2d(3))
    x = torch.randn(4, 1, 6, 6)
    expected, keys = model(x), list(model.state_dict())
    GlobalBatchNorm().apply(model)
    assert isinstance(model[1], TDBatchNorm2d) and isinstance(model[2], nn.BatchNorm2d)
    torch.testing.assert_close(model(x), expected)
    assert list(model.state_dict()) == keys
    GlobalBatchNorm().revert(model)
    assert [type(m) for m in model] == [nn.Conv2d, TDBatchNorm2d, nn.BatchNorm2d]
