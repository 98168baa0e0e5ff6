"""Find and read run directories: every ``summary.json`` under the given paths, with the ``metrics.csv`` beside it.

A run, a multirun and a sweep directory all hold run directories at some depth, so the search is recursive. A file
that cannot be read (half-written, not JSON, not a summary) is skipped and reported, never fatal.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from snnexp.errors import SnnexpError

SUMMARY = "summary.json"
METRICS = "metrics.csv"
AVERAGED = "completed"  # the only status whose numbers are averaged; failed, pruned, preempted, running are listed


class CompareError(SnnexpError):
    """Input that leaves nothing to compare (no runs, a bad option); the CLI prints it as one line, exit status 1."""


@dataclass
class Run:
    """One run directory: its summary.json as written by snnexp.train.run and its validation-accuracy history."""

    path: Path
    summary: dict
    val_acc_by_epoch: dict[int, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    @property
    def averaged(self) -> bool:
        return self.status == AVERAGED

    @property
    def config(self) -> dict:
        return self.summary.get("config") or {}

    @property
    def data(self) -> str:
        return str(self.config.get("data", "?"))


@dataclass
class Skipped:
    """A summary.json that could not be read, and why."""

    path: Path
    reason: str


@dataclass
class Loaded:
    """What the search found: the runs, the files skipped, and the directories that held no run at all."""

    runs: list[Run]
    skipped: list[Skipped]
    empty: list[Path]
    studies: list[Path] = field(default_factory=list)  # optuna.db files seen beside the runs (sweep directories)


def load_runs(paths) -> Loaded:
    """Read every run under ``paths`` (run, multirun or sweep directories, searched recursively), each run once."""
    runs, skipped, empty, studies, seen = [], [], [], [], set()
    for root in map(Path, paths):
        if not root.is_dir():
            found = [root] if root.name == SUMMARY and root.is_file() else []
            if not found:
                raise CompareError(f"{root} is not a directory (expected a run, multirun or sweep directory)")
        else:
            found = sorted(root.rglob(SUMMARY))
            studies += sorted(root.rglob("optuna.db"))
        if not found:
            empty.append(root)
        for path in found:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            run = read_run(path)
            (runs if isinstance(run, Run) else skipped).append(run)
    return Loaded(runs, skipped, empty, sorted(set(studies)))


def read_run(path: Path) -> Run | Skipped:
    """One summary.json and its metrics.csv, or a :class:`Skipped` saying what is wrong with the file."""
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return Skipped(path, f"not valid JSON (half-written?): {err.msg} at line {err.lineno}")
    except (OSError, UnicodeDecodeError) as err:
        return Skipped(path, f"cannot be read: {err}")
    if not isinstance(summary, dict) or "status" not in summary:
        return Skipped(path, "not a snnexp summary (no 'status' key)")
    return Run(path.parent, summary, read_val_acc(path.parent / METRICS))


def read_val_acc(path: Path) -> dict[int, float]:
    """``val/acc`` by epoch from Lightning's CSVLogger file (rows without it skipped; the last row of an epoch wins)."""
    if not path.is_file():
        return {}
    history = {}
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                epoch, acc = _number(row.get("epoch")), _number(row.get("val/acc"))
                if epoch is not None and acc is not None:
                    history[int(epoch)] = acc
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return dict(sorted(history.items()))


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
