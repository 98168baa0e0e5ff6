"""Write the comparison: Markdown (stdout and compare.md), compare.csv, PNG figures and one self-contained
report.html (the figures embedded as ``data:`` URIs, so the file can be mailed or archived alone).

An output directory is ours only where we wrote before: a manifest lists our files, and without one we refuse to
replace a file that has one of our names, so nothing the user wrote is overwritten.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from snnexp.compare.plots import Plot
from snnexp.compare.runs import CompareError
from snnexp.compare.study import StudyReport
from snnexp.compare.table import Comparison, Stat

MANIFEST = ".snnexp-compare.json"
DASH = "–"


@dataclass
class Report:
    """A comparison with its figures, the notes of figures left out, and the Optuna study if one was read."""

    comparison: Comparison
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    study: StudyReport | None = None

    @property
    def all_plots(self) -> list[Plot]:
        return self.plots + (self.study.plots if self.study else [])


# ---- tables as lists of cells, shared by Markdown and HTML ---------------------------------------------------------


def main_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison: the keys, n, runs not averaged, then mean ± std of every metric."""
    keys = comparison.label_keys or ["data"]
    header = keys + ["n", "not averaged"] + [m.label for m in comparison.metrics]
    rows = []
    for g in comparison.groups:
        cells = [_text(g.key.get(k)) for k in keys] + [str(len(g.runs)), str(len(g.others))]
        rows.append(cells + [format_stat(g.stats[m.name], m.fmt, len(g.runs)) for m in comparison.metrics])
    return header, rows


def paper_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """The paper's reported top-1 beside ours, with the difference in percentage points."""
    header = ["group", "paper", "at", "reported %", "ours %", "ours − reported"]
    rows = []
    for g in comparison.groups:
        for p in g.paper:
            ours = format_stat(p["ours"], ".2f", len(g.runs)) if p["ours"] is not None else DASH
            reported = DASH if p["reported"] is None else f"{p['reported']:.2f}"
            diff = DASH if p["diff"] is None else f"{p['diff']:+.2f}"
            rows.append([g.label(comparison.label_keys), _text(p["paper"]), p["at"], reported, ours, diff])
    return header, rows


def not_averaged(comparison: Comparison) -> list[str]:
    """One line per run that is not averaged: its directory, status and error."""
    lines = []
    for g in comparison.groups:
        for run in g.others:
            why = run.summary.get("error") or run.summary.get("pruned") or ""
            lines.append(f"{run.path} — {run.status}" + (f": {why}" if why else ""))
    return lines


def study_table(study: StudyReport) -> tuple[list[str], list[list[str]]]:
    """The study's best trials: number, value(s) and params."""
    header = list(dict.fromkeys(k for row in study.best for k in row))
    return header, [[_text(row.get(k)) for k in header] for row in study.best]


def format_stat(stat: Stat, fmt: str, group_n: int) -> str:
    """``97.20 ± 0.31``; ``–`` for a missing value or the std of one run; ``(n=2)`` when some runs lack the value."""
    if not stat.n:
        return DASH
    std = DASH if math.isnan(stat.std) else format(stat.std, fmt)
    text = f"{format(stat.mean, fmt)} ± {std}"
    return text + (f" (n={stat.n})" if stat.n < group_n else "")


# ---- Markdown ------------------------------------------------------------------------------------------------------


def markdown(report: Report) -> str:
    """The whole report as Markdown: tables, runs not averaged, the study, notes."""
    c = report.comparison
    runs = sum(len(g.runs) + len(g.others) for g in c.groups)
    parts = [f"## snnexp comparison\n\n{_count(runs, 'run')} in {_count(len(c.groups), 'group')} "
             f"(grouped by {', '.join(c.keys)}; seeds aggregated: mean ± sample std)\n",
             md_table(*main_table(c))]
    if any(g.paper for g in c.groups):
        parts += ["### Reported by the paper\n", md_table(*paper_table(c))]
    parts += _md_list("Not averaged (failed, pruned, preempted or running)", not_averaged(c))
    if report.study:
        s = report.study
        parts += [f"### Optuna study {s.name}\n\n{_states(s)}\n", md_table(*study_table(s)) if s.best else ""]
    parts += _md_list("Notes", c.warnings + report.notes + (report.study.notes if report.study else []))
    return "\n".join(p for p in parts if p)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    line = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)]) + "\n"


def _md_list(title: str, lines: list[str]) -> list[str]:
    return [f"### {title}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"] if lines else []


# ---- CSV -----------------------------------------------------------------------------------------------------------


def csv_text(comparison: Comparison) -> str:
    """compare.csv: one row per group; a missing value (or the std of one run) is an empty cell."""
    rows = comparison.rows
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["group"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def _csv_cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


# ---- HTML ----------------------------------------------------------------------------------------------------------

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="snnexp.compare">
<title>snnexp comparison</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #eef; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 1em; vertical-align: top; }
img { max-width: 100%; border: 1px solid #ddd; }
</style></head>
<body>
<h1>snnexp comparison</h1>
<p>$intro</p>
$body
</body></html>
""")


def html_page(report: Report) -> str:
    """report.html: every table and figure of the report in one file."""
    c = report.comparison
    body = [html_table(*main_table(c))]
    if any(g.paper for g in c.groups):
        body += ["<h2>Reported by the paper</h2>", html_table(*paper_table(c))]
    body += _html_list("Not averaged (failed, pruned, preempted or running)", not_averaged(c))
    body += ["<h2>Figures</h2>"] + [html_figure(p) for p in report.plots]
    if report.study:
        s = report.study
        body += [f"<h2>Optuna study {html.escape(s.name)}</h2>", f"<p>{html.escape(_states(s))}</p>"]
        body += [html_table(*study_table(s))] if s.best else []
        body += [html_figure(p) for p in s.plots]
    body += _html_list("Notes", c.warnings + report.notes + (report.study.notes if report.study else []))
    runs = sum(len(g.runs) + len(g.others) for g in c.groups)
    intro = (f"{_count(runs, 'run')} in {_count(len(c.groups), 'group')}, grouped by {', '.join(c.keys)}; "
             "seeds aggregated as mean ± sample standard deviation.")
    return PAGE.substitute(intro=html.escape(intro), body="\n".join(body))


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>"


def html_figure(plot: Plot) -> str:
    """The figure embedded as a base64 ``data:`` URI, so report.html needs no file beside it."""
    data = base64.b64encode(plot.png).decode("ascii")
    caption = html.escape(plot.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _html_list(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return [f"<h2>{html.escape(title)}</h2><ul>{items}</ul>"]


# ---- files ---------------------------------------------------------------------------------------------------------


def write_files(report: Report, out: Path) -> list[Path]:
    """Write compare.csv, compare.md, report.html and one PNG per figure into ``out``; returns their paths."""
    out = Path(out)
    files = {"compare.csv": csv_text(report.comparison).encode(), "compare.md": markdown(report).encode(),
             "report.html": html_page(report).encode()}
    files.update({f"{p.name}.png": p.png for p in report.all_plots})
    earlier = _claim(out, list(files))
    for name, content in files.items():
        _write_atomic(out / name, content)
    for name in earlier - set(files):  # a figure of our earlier report that this one does not have
        (out / name).unlink(missing_ok=True)
    _write_atomic(out / MANIFEST, json.dumps(sorted(files)).encode())
    return [out / name for name in files]


def _claim(out: Path, names: list[str]) -> set[str]:
    """Make sure ``out`` may receive our files; returns the names our earlier report there wrote."""
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} is a file, not a directory; choose another --out")
    try:
        earlier = set(json.loads((out / MANIFEST).read_text()))
    except (OSError, ValueError, TypeError):
        earlier = set()
    clash = [n for n in names if (out / n).exists() and n not in earlier]
    if clash:
        raise CompareError(f"--out {out} already holds {', '.join(clash)}, not written by snnexp.compare; "
                           "nothing was overwritten: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return {n for n in earlier if isinstance(n, str) and "/" not in n and n != MANIFEST}


def _write_atomic(path: Path, content: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(content)
    os.replace(partial, path)


def _states(study: StudyReport) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(study.states.items()))
    return f"{_count(sum(study.states.values()), 'trial')} ({counts}); directions: {', '.join(study.directions)}; " \
           f"storage {study.storage}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _text(value) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)

