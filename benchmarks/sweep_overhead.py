"""The Optuna sweeper's overhead per trial, against the same runs launched directly, in one process.

    python benchmarks/sweep_overhead.py [--trials 5] [--dir /tmp/sweep_overhead] [--storage URL]

Runs the same N tiny digits runs (``debug=short logger=none``: one epoch of 2 batches on the CPU, one ``optim.lr``
each) three ways through snnexp's own entry point (``snnexp.__main__.main``, as ``python -m snnexp`` would, without
the interpreter's start-up):

- ``direct``: N single runs, ``python -m snnexp optim.lr=<lr>``;
- ``multirun``: one Hydra multirun with Hydra's basic sweeper, ``-m optim.lr=<lr1>,...,<lrN>``;
- ``optuna``: one Optuna sweep, ``-m hydra/sweeper=optuna hydra.sweeper.sampler=grid 'optim.lr=choice(...)'`` with
  its default SQLite storage (``<sweep dir>/optuna.db``; ``--storage`` for another URL), so every trial runs one of
  the same learning rates.

After an untimed warm-up run, each way's wall time is split into the time spent inside ``snnexp.train.run`` (the
job itself; summary.json's ``wall_time_s`` is printed beside it) and the rest, the launching overhead, printed per
run. For the Optuna sweep the overhead is also broken down into the sweeper's own bookkeeping: checking the input and
opening the study (once per sweep), ``ask``/``tell`` and user attributes (storage writes), composing each trial's
config, reading and annotating summary.json, and best.yaml (once per sweep).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TINY = ["debug=short", "logger=none"]
LRS = ["0.001", "0.002", "0.003", "0.005", "0.01", "0.02", "0.03", "0.05", "0.1", "0.2"]

spent: dict[str, float] = defaultdict(float)  # seconds per timed function (its own time), reset per way
calls: dict[str, int] = defaultdict(int)
_inner: list[float] = []  # time of timed calls nested in the running ones, kept out of their own time


def timed(owner, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its run time, less that of timed calls inside it, to
    ``spent[label]``."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        _inner.append(0.0)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            nested = _inner.pop()
            spent[label] += elapsed - nested
            calls[label] += 1
            if _inner:
                _inner[-1] += elapsed

    setattr(owner, name, wrapper)


def cli(*args: str) -> float:
    """``python -m snnexp ARGS`` in this process; returns its wall time in seconds."""
    from hydra.core.global_hydra import GlobalHydra

    from snnexp.__main__ import main

    sys.argv = ["snnexp", *args]
    GlobalHydra.instance().clear()
    start = time.perf_counter()
    try:
        main()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise RuntimeError(f"python -m snnexp {' '.join(args)} exited with {stop.code}") from None
    finally:
        GlobalHydra.instance().clear()
    return time.perf_counter() - start


def job_wall_times(folder: Path) -> list[float]:
    """``wall_time_s`` of every summary.json under ``folder``."""
    return [json.loads(p.read_text())["wall_time_s"] for p in sorted(folder.rglob("summary.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="runs of each way (at most %d)" % len(LRS))
    parser.add_argument("--dir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--storage", default=None, help="the Optuna storage URL (default: SQLite in the sweep dir)")
    args = parser.parse_args()
    lrs = LRS[: args.trials]
    root = args.dir or Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)

    import snnexp.__main__  # noqa: F401  (registers the plugin; Hydra's plugin scan runs here, before the wrappers)
    import snnexp.train

    cli(*TINY, f"hydra.run.dir={root / 'warmup'}")  # imports, data, kernels: not timed

    sweeper = sys.modules["hydra_plugins.snnexp_optuna_sweeper.sweeper"]
    studies = sys.modules["hydra_plugins.snnexp_optuna_sweeper.study"]
    results = sys.modules["hydra_plugins.snnexp_optuna_sweeper.results"]
    import optuna

    timed(snnexp.train, "run", "job: snnexp.train.run")
    for owner, name, label in [
        (sweeper.OptunaSweeper, "_plan", "setup: check input, open study (once)"),
        (sweeper.OptunaSweeper, "_report_best", "best.yaml and command line (once)"),
        (optuna.study.Study, "ask", "study.ask"),
        (optuna.study.Study, "tell", "study.tell"),
        (optuna.trial.Trial, "set_user_attr", "trial.set_user_attr"),
        (studies, "trials_so_far", "count trials (budget)"),
        (studies.Heartbeat, "add", "heartbeat"),
        (sweeper.OptunaSweeper, "_check_composes", "compose trial config (check)"),
        (results, "outcome", "read summary.json"),
        (results, "annotate", "annotate summary.json"),
    ]:
        timed(owner, name, label)
    logging.getLogger("hydra_plugins.snnexp_optuna_sweeper").setLevel(logging.WARNING)

    rows, breakdown = [], {}
    ways = {
        "direct": lambda: sum(cli(*TINY, f"hydra.run.dir={root / 'direct' / str(i)}", f"optim.lr={lr}")
                              for i, lr in enumerate(lrs)),
        "multirun": lambda: cli("-m", f"hydra.sweep.dir={root / 'multirun'}", *TINY, f"optim.lr={','.join(lrs)}"),
        "optuna": lambda: cli("-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={root / 'optuna'}", *TINY,
                              "hydra.sweeper.sampler=grid", f"hydra.sweeper.n_trials={len(lrs)}",
                              *([f"hydra.sweeper.storage={args.storage}"] if args.storage else []),
                              f"optim.lr=choice({','.join(lrs)})"),
    }
    for way, launch in ways.items():
        spent.clear()
        calls.clear()
        wall = launch()
        jobs = spent["job: snnexp.train.run"]
        if calls["job: snnexp.train.run"] != len(lrs):
            raise RuntimeError(f"{way}: {calls['job: snnexp.train.run']} jobs ran, not {len(lrs)}")
        rows.append((way, len(lrs), wall, jobs, sum(job_wall_times(root / way)), (wall - jobs) / len(lrs)))
        if way == "optuna":
            breakdown = {k: (v, calls[k]) for k, v in spent.items() if not k.startswith("job")}

    print(f"\n{len(lrs)} runs each of digits {' '.join(TINY)} (one epoch of 2 batches), optim.lr in {', '.join(lrs)}")
    print(f"storage: {args.storage or 'sqlite:///<sweep dir>/optuna.db'}; runs in {root}\n")
    print(f"| {'way':<9} | runs | wall s | in run() s | Σ wall_time_s | overhead per run s |")
    print(f"|{'-' * 11}|------|--------|------------|---------------|--------------------|")
    for way, n, wall, jobs, reported, per in rows:
        print(f"| {way:<9} | {n:>4} | {wall:>6.2f} | {jobs:>10.2f} | {reported:>13.2f} | {per:>18.3f} |")
    base = dict((r[0], r[5]) for r in rows)
    print(f"\nOptuna sweeper's overhead beyond Hydra's basic multirun: {base['optuna'] - base['multirun']:.3f} s per "
          f"trial; beyond direct runs: {base['optuna'] - base['direct']:.3f} s per trial")
    print("\nThe Optuna sweep's own bookkeeping (inside its overhead above):\n")
    print(f"| {'step':<38} | calls | total s | per trial s |")
    print(f"|{'-' * 40}|-------|---------|-------------|")
    total = 0.0
    for label, (seconds, count) in breakdown.items():
        total += seconds
        print(f"| {label:<38} | {count:>5} | {seconds:>7.3f} | {seconds / len(lrs):>11.3f} |")
    print(f"| {'all of the above':<38} |       | {total:>7.3f} | {total / len(lrs):>11.3f} |")


if __name__ == "__main__":
    main()
