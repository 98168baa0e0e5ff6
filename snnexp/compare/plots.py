"""The report's figures, drawn with matplotlib's object API (no pyplot state) and returned as PNG bytes.

Each group keeps one colour in every figure. A figure without data (no energy in older runs, no ``test_by_T``) is
left out, and :func:`draw_all` says why in its notes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from snnexp.compare.table import Comparison, Group, aggregate


@dataclass
class Plot:
    """One figure of the report: a file name stem, a caption and the PNG."""

    name: str
    caption: str
    png: bytes


def draw_all(comparison: Comparison) -> tuple[list[Plot], list[str]]:
    """Every figure the runs have data for, and one note per figure left out."""
    plots, notes = [], []
    for name, caption, draw in FIGURES:
        figure = draw(comparison)
        if figure is None:
            notes.append(f"figure '{caption}' left out: {MISSING[name]}")
        else:
            plots.append(Plot(name, caption, to_png(figure)))
    return plots, notes


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (matplotlib's Agg canvas)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def val_acc_curves(comparison: Comparison) -> Figure | None:
    """Validation accuracy against epoch: the mean over a group's seeds, with a band of one std."""
    figure, ax = _axes("validation accuracy", "epoch", "val acc %")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    drawn = False
    for i, group in enumerate(comparison.groups):
        epochs = sorted({e for r in group.runs for e in r.val_acc_by_epoch})
        stats = [aggregate(100 * r.val_acc_by_epoch[e] if e in r.val_acc_by_epoch else None for r in group.runs)
                 for e in epochs]
        if not epochs:
            continue
        mean = [s.mean for s in stats]
        std = [0.0 if math.isnan(s.std) else s.std for s in stats]
        ax.plot(epochs, mean, marker="o", color=_colour(i), label=_label(group, comparison))
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=_colour(i), alpha=0.2)
        drawn = True
    return _finish(figure, ax) if drawn else None


def acc_by_T(comparison: Comparison) -> Figure | None:
    """Test accuracy against the number of time steps: ``test_by_T`` and the run's own T (mean ± std)."""
    figure, ax = _axes("test accuracy by time steps T", "T", "test acc %")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    drawn = False
    for i, group in enumerate(comparison.groups):
        by_T = {}
        for run in group.runs:
            for T, acc in _accuracies_by_T(run).items():
                by_T.setdefault(T, []).append(acc)
        if not any(r.summary.get("test_by_T") for r in group.runs):
            continue
        Ts = sorted(by_T)
        stats = [aggregate(by_T[T]) for T in Ts]
        ax.errorbar(Ts, [s.mean for s in stats], yerr=[0.0 if math.isnan(s.std) else s.std for s in stats],
                    marker="o", capsize=3, color=_colour(i), label=_label(group, comparison))
        drawn = True
    return _finish(figure, ax) if drawn else None


def acc_vs_energy(comparison: Comparison) -> Figure | None:
    """Test accuracy against energy per sample, one point per group; the Pareto front (no group has both higher
    accuracy and lower energy) is joined by a line and ringed."""
    points = [(i, g, g.stats["energy_mJ"], g.stats["test_acc_pct"]) for i, g in enumerate(comparison.groups)]
    points = [p for p in points if p[2].n and p[3].n]
    if not points:
        return None
    figure, ax = _axes("accuracy against energy", "energy per sample (mJ)", "test acc %")
    for i, group, energy, acc in points:
        ax.errorbar(energy.mean, acc.mean, xerr=_err(energy), yerr=_err(acc), marker="o", capsize=3,
                    color=_colour(i), label=_label(group, comparison))
    front = pareto_front([(e.mean, a.mean) for _, _, e, a in points])
    ax.plot(*zip(*front), "k--", linewidth=1, label="Pareto front")
    ax.scatter(*zip(*front), s=160, facecolors="none", edgecolors="k")
    return _finish(figure, ax)


def firing_rates(comparison: Comparison) -> Figure | None:
    """Mean firing rate of each spiking layer, one bar per group (mean over seeds, std as the error bar)."""
    layers = list(dict.fromkeys(k for g in comparison.groups for r in g.runs for k in r.summary.get("firing_rates")
                                or {}))
    if not layers:
        return None
    groups = [g for g in comparison.groups if g.runs]
    width = 0.8 / len(groups)
    figure, ax = _axes("firing rate per layer", "layer", "firing rate", size=(max(6.0, 0.6 * len(layers) + 3), 4))
    for i, group in enumerate(groups):
        stats = [aggregate((r.summary.get("firing_rates") or {}).get(layer) for r in group.runs) for layer in layers]
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, [0.0 if math.isnan(s.mean) else s.mean for s in stats], width,
               yerr=[0.0 if math.isnan(s.std) else s.std for s in stats], capsize=2,
               color=_colour(comparison.groups.index(group)), label=_label(group, comparison))
    ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 6 else 0, ha="right")
    return _finish(figure, ax)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (energy, accuracy) points no other point beats on both (lower or equal energy and higher or equal
    accuracy, better in one), ordered by energy."""
    front = [p for p in points
             if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


FIGURES = [
    ("val_acc", "Validation accuracy by epoch", val_acc_curves),
    ("acc_by_T", "Test accuracy by T", acc_by_T),
    ("acc_vs_energy", "Accuracy against energy", acc_vs_energy),
    ("firing_rates", "Firing rate per layer", firing_rates),
]
MISSING = {
    "val_acc": "no metrics.csv with a val/acc column beside the summaries",
    "acc_by_T": "no run was tested at another T (eval.timesteps)",
    "acc_vs_energy": "no run has test/energy_mJ (older runs do not record energy)",
    "firing_rates": "no run has firing_rates",
}


def _accuracies_by_T(run) -> dict[int, float]:
    """A run's test accuracy (percent) at its own T and at each T of ``test_by_T``."""
    out = {}
    T, acc = run.config.get("T"), (run.summary.get("test") or {}).get("test/acc")
    if isinstance(T, int) and isinstance(acc, (int, float)):
        out[T] = 100 * acc
    for key, metrics in (run.summary.get("test_by_T") or {}).items():
        if isinstance(metrics, dict) and isinstance(metrics.get("acc"), (int, float)) and str(key).isdigit():
            out[int(key)] = 100 * metrics["acc"]
    return out


def _axes(title: str, xlabel: str, ylabel: str, size=(6.4, 4.0)):
    figure = Figure(figsize=size)
    ax = figure.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return figure, ax


def _finish(figure: Figure, ax) -> Figure:
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _label(group: Group, comparison: Comparison) -> str:
    return group.label(comparison.label_keys)


def _colour(i: int):
    return f"C{i % 10}"


def _err(stat) -> float:
    return 0.0 if math.isnan(stat.std) else stat.std
