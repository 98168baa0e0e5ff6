"""End-to-end runs (snnexp/train.py): files written and read back, resume, refusal to overwrite, NaN stop, the
TensorBoard logger, DDP refused under multirun, testing at other T."""

import csv
import json
from pathlib import Path

import pytest
import torch

from helpers.runs import SHORT, compose_config, run_cli
from snnexp.errors import NonFiniteLossError, SnnexpError
from snnexp.kernels import heap
from snnexp.methods.sdt import SDT
from snnexp.lit import SNNModule
from snnexp.train import build, run


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_run_writes_config_metrics_checkpoints_and_summary(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(*SHORT, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"] == {**summary["config"], "data": "digits", "model": "convnet", "neuron": "lif",
                                 "method": "sdt", "T": 4, "seed": 0}
    assert summary["epochs"] == 2
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0 and "test/acc5" in summary["test"]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert summary["num_parameters"] == 29_162  # convnet on 1x8x8, see tests/models
    assert summary["num_parameters"] == sum(t.numel() for k, t in state.items() if "running" not in k
                                            and "num_batches" not in k)
    assert set(summary["firing_rates"]) == {"conv1.1", "conv2.1"}
    assert all(0.0 <= r <= 1.0 for r in summary["firing_rates"].values())
    rows = _read_csv(run_dir / "metrics.csv")
    val_rows = [r for r in rows if r.get("val/acc")]
    assert len(val_rows) == 2 and float(val_rows[-1]["val/acc"]) == pytest.approx(summary["final_val"]["val/acc"])
    assert any(r.get("train/loss") for r in rows)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / ".hydra" / "config.yaml").read_text().count("snnexp.methods.sdt.SDT") == 1
    # the results table, on the console and in the run's log, with the summary's numbers
    test_acc = f"{100 * summary['test']['test/acc']:.2f}%"
    for text in (proc.stdout + proc.stderr, (run_dir / "snnexp.log").read_text()):
        assert "snnexp results" in text and str(run_dir) in text
        assert test_acc in text.split("test accuracy", 1)[1].splitlines()[0]
        assert "29,162" in text


def test_resume_auto_continues_and_nothing_is_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    first = run_cli(*SHORT[:-1], "trainer.max_epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt_before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    again = run_cli(*SHORT, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 1
    assert "resume=auto" in again.stderr and "Traceback" not in again.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == ckpt_before

    resumed = run_cli(*SHORT, "resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from"].endswith("last.ckpt") and summary["epochs"] == 2
    # 3 batches per epoch: the first attempt made 3 optimiser steps, the continuation 3 more
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert summary["global_step"] == 6
    # metrics.csv holds the whole history: the first attempt's epoch, then the continuation's (tests/test_resume.py)
    rows = _read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows if r.get("val/acc")] == ["0", "1"]
    assert not list(run_dir.glob("metrics.*.csv"))


class NaNAfterFirstEpoch(SDT):
    """SDT whose loss becomes NaN from the second epoch on."""

    def training_step(self, module, batch):
        loss, logs = super().training_step(module, batch)
        return (loss * float("nan") if module.current_epoch >= 1 else loss), logs


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    cfg = compose_config([*SHORT, "trainer.max_epochs=3", f"method._target_={__name__}.NaNAfterFirstEpoch"],
                         tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1"):
        run(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "nan" in summary["error"]


def test_tensorboard_logger_writes_event_files(tmp_path):
    cfg = compose_config([*SHORT, "logger=tensorboard"], tmp_path / "run")
    run(cfg)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "metrics.csv").exists()


def test_ddp_under_multirun_is_refused(tmp_path):
    proc = run_cli("-m", "seed=0", "trainer.strategy=ddp", *SHORT, f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "multirun" in proc.stderr and "Traceback" not in proc.stderr


def test_build_touches_no_dataset_and_counts_parameters(tmp_path):
    cfg = compose_config(["data=cifar10dvs", f"data.root={tmp_path / 'nowhere'}", "model=vggsnn", "method=tet",
                          "T=10"], tmp_path / "run")
    datamodule, module = build(cfg)
    assert datamodule.num_classes == 10 and tuple(datamodule.input_shape) == (2, 48, 48)
    assert sum(p.numel() for p in module.model.parameters()) == 9_271_498  # TET's VGGSNN, see tests/models/test_vgg.py


def test_wrong_resume_path_is_a_clear_error(tmp_path):
    cfg = compose_config([*SHORT, f"resume={tmp_path / 'missing.ckpt'}"], tmp_path / "run")
    with pytest.raises(SnnexpError, match="no checkpoint"):
        run(cfg)


def test_eval_timesteps_tests_the_same_weights_at_each_T(tmp_path):
    cfg = compose_config([*SHORT, "eval.timesteps=[1,2,3,4]", "trainer.limit_test_batches=null"], tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    by_T = summary["test_by_T"]
    assert sorted(by_T) == ["1", "2", "3", "4"]
    # T=4 is the training T: the same weights on the same data give the same accuracy as the main test
    assert by_T["4"]["acc"] == pytest.approx(summary["test"]["test/acc"])
    assert all(0.0 <= v["acc"] <= 1.0 for v in by_T.values())
    rows = _read_csv(tmp_path / "run" / "metrics.csv")
    for T in (1, 2, 3, 4):
        logged = [float(r[f"test_T{T}/acc"]) for r in rows if r.get(f"test_T{T}/acc")]
        assert logged == [pytest.approx(by_T[str(T)]["acc"])]


def test_eval_timesteps_rebins_event_data(tmp_path):
    cfg = compose_config(["debug=short", "data=synthetic_dvs", "data.num_train=16", "data.num_val=8",
                          "data.num_test=8", "data.sensor=16", "T=4", "eval.timesteps=[2,8]"], tmp_path / "run")
    run(cfg)
    by_T = json.loads((tmp_path / "run" / "summary.json").read_text())["test_by_T"]
    assert sorted(by_T) == ["2", "8"] and all("acc" in v for v in by_T.values())


def test_a_run_that_fails_with_any_exception_records_it_in_the_summary(tmp_path, monkeypatch):
    def broken_step(self, batch, batch_idx):
        raise RuntimeError("a bug in a training step")

    monkeypatch.setattr(SNNModule, "training_step", broken_step)
    cfg = compose_config(["trainer.max_epochs=1"], tmp_path / "run")
    with pytest.raises(RuntimeError, match="a bug in a training step"):
        run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: a bug in a training step"


def test_a_run_that_fails_before_training_records_it_and_leaves_an_earlier_summary_alone(tmp_path):
    cfg = compose_config(["data=cifar10", f"data.root={tmp_path / 'nowhere'}"], tmp_path / "run")
    with pytest.raises(SnnexpError, match="CIFAR-?10 not found under"):
        run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "not found under" in summary["error"]
    assert summary["config"]["data"] == "cifar10"
    (tmp_path / "run" / "summary.json").write_text('{"status": "completed"}')  # an earlier run's
    with pytest.raises(SnnexpError):
        run(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == {"status": "completed"}


def test_build_keeps_freed_blocks_for_reuse_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "reuse_freed_blocks", lambda: calls.append(1) or True)
    for overrides, expected in (([], 0), (["reuse_heap=true"], 1), (["reuse_heap=false"], 0)):
        calls.clear()
        build(compose_config(["data.batch_size=4", *overrides]))
        assert len(calls) == expected


def test_build_makes_the_buffer_cache_torchs_allocator_for_cpu_runs_unless_told_not(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "cache_torch_tensors", lambda: calls.append(1) or True)
    for overrides, cuda, expected in (([], False, 1), (["cache_cpu_tensors=false"], False, 0),
                                      (["trainer=cpu"], True, 1), ([], True, 0)):  # auto with a GPU: the GPU's run
        calls.clear()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        build(compose_config(["data.batch_size=4", *overrides]))
        assert len(calls) == expected, (overrides, cuda)


def test_the_buffer_cache_falls_back_to_torchs_allocator_with_one_warning(monkeypatch):
    from snnexp.kernels import cpu

    monkeypatch.delenv("SNNEXP_NO_CPU_KERNELS", raising=False)
    monkeypatch.setattr(cpu, "extension", lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
    with pytest.warns(RuntimeWarning, match=r"buffer cache could not be built .*no C\+\+ compiler.*torch's own"):
        assert heap.cache_torch_tensors() is False
