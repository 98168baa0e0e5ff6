"""Compare runs: ``python -m snnexp.compare DIR [DIR ...]`` groups run, multirun and sweep directories by the
choices that vary, aggregates seeds (mean ± sample std, n), and writes compare.csv, PNG figures and report.html.

The same in Python::

    from snnexp.compare import compare, write_report
    comparison = compare(["outputs/multirun/2024-05-01/12-00-00"], by=["method"])
    comparison.rows                      # one dict per group, as compare.csv holds it
    write_report(comparison, "report/")  # figures drawn here
"""

from __future__ import annotations

from pathlib import Path

from snnexp.compare.plots import draw_all
from snnexp.compare.report import Report, markdown, write_files
from snnexp.compare.runs import CompareError, Loaded, Run, load_runs
from snnexp.compare.study import StudyReport, read_study
from snnexp.compare.table import Comparison, compare_runs

__all__ = ["CompareError", "Comparison", "Loaded", "Report", "Run", "StudyReport", "build_report", "compare",
           "load_runs", "markdown", "read_study", "write_report"]


def compare(paths, by: list[str] | None = None) -> Comparison:
    """Read every run under ``paths`` and group them (by ``by``, or by the choices that vary); ``.rows`` is the
    table. Raises :class:`CompareError` when there is no run at all."""
    return compare_runs(load_runs(paths), by)


def build_report(comparison: Comparison, study: StudyReport | None = None) -> Report:
    """The comparison with its figures drawn (and the Optuna study, if given)."""
    plots, notes = draw_all(comparison)
    return Report(comparison, plots, notes, study)


def write_report(comparison: Comparison | Report, out, study: StudyReport | None = None) -> list[Path]:
    """Write compare.csv, compare.md, report.html and the PNG figures into ``out``; returns the files written."""
    report = comparison if isinstance(comparison, Report) else build_report(comparison, study)
    return write_files(report, Path(out))
