"""What a finished job says about its trial: its state, its objective values, its error; and the best trials.

Jobs are read through their ``summary.json`` (the job directory is shared with SLURM/submitit workers too), which
the sweeper then annotates with the trial's number, parameters and state.
"""

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class JobOutcome:
    """One job of a trial: ``state`` is ``complete``, ``pruned`` or ``fail``."""

    state: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    job_dir: str | None = None


def job_dir(job_return) -> Path | None:
    """The output directory of a launched job (where its summary.json is)."""
    try:
        return Path(job_return.hydra_cfg.hydra.runtime.output_dir)
    except Exception:
        return None


def read_summary(path: Path | None) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, AttributeError):
        return None


def outcome(job_return, objectives: list[str]) -> JobOutcome:
    """The state and objective values of one job, from its return status and its summary.json."""
    from hydra.core.utils import JobStatus

    folder = job_dir(job_return)
    summary = read_summary(folder / "summary.json" if folder else None)
    where = str(folder) if folder else None
    failed = job_return.status != JobStatus.COMPLETED
    status = (summary or {}).get("status")
    if status == "pruned":
        return JobOutcome("pruned", error=summary.get("pruned"), job_dir=where)
    if failed or summary is None or status != "completed":
        if failed:
            err = job_return._return_value
            message = f"{type(err).__name__}: {err}"
        else:
            message = (summary or {}).get("error") or f"the job left no completed summary.json (status {status})"
        return JobOutcome("fail", error=(summary or {}).get("error") or message, job_dir=where)
    values = []
    for key in objectives:
        value = objective_value(summary, key)
        if value is None:
            return JobOutcome("fail", error=f"objective {key!r} is not a number in summary.json", job_dir=where)
        values.append(value)
    return JobOutcome("complete", values=values, job_dir=where)


def objective_value(summary: dict, key: str) -> float | None:
    """``key`` in a summary: a top-level number (``firing_rate``), the best checkpoint's score when it monitors
    ``key`` (``val/acc``), the last validation or test metrics, or a dotted path (``test_by_T.2.acc``)."""
    best = summary.get("best") or {}
    candidates = [summary.get(key),
                  best.get("score") if best.get("metric") == key else None,
                  (summary.get("final_val") or {}).get(key),
                  (summary.get("test") or {}).get(key),
                  _dotted(summary, key)]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
    return None


def _dotted(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def annotate(folder: str | None, info: dict) -> None:
    """Add ``info`` (trial number, params, state, values) as ``"optuna"`` to the job's summary.json."""
    if folder is None:
        return
    path = Path(folder) / "summary.json"
    summary = read_summary(path) or {"status": "failed", "error": info.get("error")}
    summary["optuna"] = info
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(path)


def command_line(overrides: list[str], program: str = "python -m snnexp") -> str:
    """A ready-to-paste single-run command with ``overrides``."""
    return " ".join([program, *(shlex.quote(o) for o in overrides)])


def write_best(path: Path, entries: list[dict], pareto: bool) -> None:
    """``best.yaml``: the best trial (one objective) or the Pareto front, each with its overrides and values."""
    body = {"pareto_front": entries} if pareto else entries[0]
    path.write_text(yaml.safe_dump(body, sort_keys=False, width=10_000))
