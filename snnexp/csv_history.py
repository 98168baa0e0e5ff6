"""``metrics.csv`` keeps the whole history of a run that was stopped and resumed, each row once.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts. So on resume the earlier rows are first
*held* in ``metrics.earlier.csv``, cut to those logged before the checkpoint the run continues from (``step`` below
the checkpoint's ``global_step``: the later ones belong to work that is done again, and are logged again), and when
the run ends (completed, failed or preempted) they are *merged* in front of the new rows into ``metrics.csv``.

Every step writes whole files atomically and rows are de-duplicated (a row equal to an earlier one is dropped), so a
kill at any moment loses nothing and duplicates nothing: the next resume holds and merges again. Rows the resumed run
logs again for the checkpoint's own step (the same values, as resume is exact) are dropped as duplicates.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

METRICS = "metrics.csv"
EARLIER = "metrics.earlier.csv"


def hold_earlier_rows(out_dir: Path, before_step: int) -> None:
    """Before a resumed run's logger starts: keep the rows with ``step < before_step`` in ``metrics.earlier.csv``."""
    out_dir = Path(out_dir)
    rows = _unique(_read(out_dir / EARLIER) + _read(out_dir / METRICS))
    kept = [row for row in rows if _step(row) is None or _step(row) < before_step]
    if kept or (out_dir / EARLIER).exists():
        _write(out_dir / EARLIER, kept)
    (out_dir / METRICS).unlink(missing_ok=True)


def merge_earlier_rows(out_dir: Path) -> None:
    """After a resumed run: ``metrics.csv`` = the held rows, then this run's; ``metrics.earlier.csv`` removed."""
    out_dir = Path(out_dir)
    if not (out_dir / EARLIER).exists():
        return
    _write(out_dir / METRICS, _unique(_read(out_dir / EARLIER) + _read(out_dir / METRICS)))
    (out_dir / EARLIER).unlink()


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _write(path: Path, rows: list[dict]) -> None:
    columns = sorted(set().union(*rows)) if rows else []  # sorted, as Lightning's CSVLogger writes them
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def _unique(rows: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for row in rows:
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def _step(row: dict) -> int | None:
    try:
        return int(float(row["step"]))
    except (KeyError, ValueError):
        return None
