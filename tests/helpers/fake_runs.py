"""Run directories as snnexp.train.run leaves them (summary.json and Lightning's metrics.csv), written without
training, for the tests of ``snnexp.compare``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

METRICS_COLUMNS = ["epoch", "step", "test/acc", "train/loss", "val/acc", "val/loss"]


def summary(method: str = "sdt", seed: int = 0, *, acc: float = 0.9, status: str = "completed", data: str = "digits",
            T: int = 4, energy: bool = True, **extra) -> dict:
    """A summary.json of a completed run whose numbers derive from ``acc`` and ``seed`` (so tests can recompute
    them); ``extra`` replaces top-level keys."""
    neuron = {"tet": "tet_lif"}.get(method, "lif")
    test = {"test/loss": 1 - acc, "test/acc": acc, "test/acc5": 1.0}
    if energy:
        test.update({"test/energy_mJ": 0.001 * (1 + acc), "test/sops": 1e5 * (1 + seed), "test/macs": 2345.0})
    out = {
        "status": status,
        "final_val": {"val/loss": 1 - acc, "val/acc": acc - 0.01, "val/firing_rate": 0.2},
        "test": test,
        "test_by_T": {"2": {"loss": 0.5, "acc": acc - 0.05}, "6": {"loss": 0.4, "acc": acc + 0.01}},
        "best": {"metric": "val/acc", "score": acc + 0.01, "checkpoint": "best.ckpt"},
        "firing_rate": 0.1 + 0.01 * seed,
        "firing_rates": {"conv1.1": 0.1 + 0.02 * seed, "conv2.1": 0.1},
        "epochs": 3, "global_step": 30, "wall_time_s": 2.0 + seed, "num_parameters": 29162,
        "meta": None,
        "config": {"data": data, "model": "convnet", "neuron": neuron, "method": method, "optim": "adam",
                   "scheduler": "cosine", "T": T, "seed": seed, "encoder": "direct",
                   "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.001, "betas": [0.9, 0.999]},
                   "lr_scheduler": {"_target_": "snnexp.optim.WarmupCosineLR", "warmup_epochs": 0},
                   "max_epochs": 3, "batch_size": 64},
    }
    if energy:
        out["energy"] = {"e_mac_pJ": 4.6, "e_ac_pJ": 0.9, "split": "test", "energy_mJ": test["test/energy_mJ"]}
    if status != "completed":
        out.update(test={}, test_by_T={}, best={})
    if status in ("failed", "preempted"):
        out["error"] = f"RuntimeError: run {method}/{seed} blew up"
    out.update(extra)
    return out


def write_run(run_dir: Path, summary: dict, val_acc: list[float] | None = None) -> Path:
    """Write ``summary`` and a metrics.csv with one validation row (``val_acc[e]``) and one train row per epoch."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        for epoch, acc in enumerate(val_acc or []):
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, "val/acc": acc, "val/loss": 1 - acc})
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, "train/loss": 1.5 - acc})
    return run_dir
