"""Group runs by the config choices that vary among them and aggregate each group's seeds: mean, sample std, n.

Only completed runs are averaged; failed, pruned, preempted and running ones are counted in their group and listed.
The data set always separates groups: accuracies on different data are never averaged together.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from snnexp.compare.runs import CompareError, Loaded, Run

# the scalar choices of summary["config"] that may name a group; "seed" is what gets aggregated, never a key
CHOICES = ("data", "model", "neuron", "method", "optim", "scheduler", "T", "encoder", "batch_size", "max_epochs")
# blocks flattened to optimizer.lr, lr_scheduler.T_max, method.calibration, model.width, neuron.tau, ...
HYPERPARAMETERS = {"optimizer": "optimizer", "lr_scheduler": "lr_scheduler", "method_options": "method",
                   "model_options": "model", "neuron_options": "neuron"}


@dataclass(frozen=True)
class Metric:
    """One aggregated column: its name in compare.csv, its header in the Markdown table, how to print it."""

    name: str
    label: str
    fmt: str
    read: object = field(compare=False, repr=False)  # Run -> float | None


@dataclass
class Stat:
    """Mean and sample standard deviation (n-1; NaN for one run) over the runs that have the value."""

    mean: float
    std: float
    n: int


@dataclass
class Group:
    """The runs sharing one value of every grouping key; ``others`` are its runs that are not averaged."""

    key: dict
    runs: list[Run]
    others: list[Run] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)
    paper: list[dict] = field(default_factory=list)

    def label(self, shown: list[str]) -> str:
        """``method=tet, neuron=tet_lif``: the keys that vary (the data set alone when nothing else does)."""
        parts = [f"{k}={self.key[k]}" for k in shown if k in self.key]
        return ", ".join(parts) or f"data={self.key.get('data')}"


@dataclass
class Comparison:
    """Everything the report shows: groups with their statistics, the columns, and what was skipped or odd."""

    keys: list[str]
    metrics: list[Metric]
    groups: list[Group]
    loaded: Loaded
    warnings: list[str]

    @property
    def label_keys(self) -> list[str]:
        """The keys that tell groups apart (data only when the runs hold more than one data set)."""
        return [k for k in self.keys if k != "data" or len({g.key.get("data") for g in self.groups}) > 1]

    @property
    def rows(self) -> list[dict]:
        """One flat dict per group, as compare.csv holds it: keys, n, then mean/std/n of every metric."""
        return [flat_row(g, self) for g in self.groups]


def percent(key: str, block: str):
    """A reader of an accuracy (a fraction in summary.json) in percent."""
    return lambda run: _scale((run.summary.get(block) or {}).get(key), 100)


def best_val_acc(run: Run) -> float | None:
    """The best validation accuracy: the checkpoint callback's best score, else the best epoch of metrics.csv."""
    best = run.summary.get("best") or {}
    if best.get("metric") == "val/acc" and best.get("score") is not None:
        return _scale(best["score"], 100)
    if run.val_acc_by_epoch:
        return 100 * max(run.val_acc_by_epoch.values())
    return percent("val/acc", "final_val")(run)


def test_metric(key: str, energy_key: str):
    """A test-split cost (energy, SOPs) from ``test``, else from the ``energy`` block (written by newer runs)."""
    def read(run: Run):
        value = (run.summary.get("test") or {}).get(f"test/{key}")
        block = run.summary.get("energy") or {}
        if value is None and block.get("split") == "test":  # the block may hold val numbers: never mixed in
            value = block.get(energy_key)
        return _scale(value, 1)
    return read


def top_level(key: str):
    return lambda run: _scale(run.summary.get(key), 1)


def acc_at_T(T: str):
    return lambda run: _scale(((run.summary.get("test_by_T") or {}).get(T) or {}).get("acc"), 100)


BASE_METRICS = [
    Metric("best_val_acc_pct", "best val acc %", ".2f", best_val_acc),
    Metric("test_acc_pct", "test acc %", ".2f", percent("test/acc", "test")),
]
ANN_ACC = Metric("ann_test_acc_pct", "ANN test acc %", ".2f", percent("test/ann_acc", "test"))  # conversion runs
COST_METRICS = [
    Metric("energy_mJ", "energy mJ/sample", ".4g", test_metric("energy_mJ", "energy_mJ")),
    Metric("sops", "SOPs", ".4g", test_metric("sops", "sops")),
    Metric("firing_rate", "firing rate", ".4f", top_level("firing_rate")),
    Metric("params", "params", ",.0f", top_level("num_parameters")),
    Metric("epochs", "epochs", ".3g", top_level("epochs")),
    Metric("wall_time_s", "wall s", ".1f", top_level("wall_time_s")),
]


def compare_runs(loaded: Loaded, by: list[str] | None = None) -> Comparison:
    """Group ``loaded.runs`` by ``by`` (default: the choices that vary) and aggregate every metric per group."""
    runs = loaded.runs
    if not runs:
        raise CompareError(no_runs_message(loaded))
    averaged = [r for r in runs if r.averaged] or runs
    keys = grouping_keys(averaged, by)
    ann = [ANN_ACC] if any("test/ann_acc" in (r.summary.get("test") or {}) for r in averaged) else []
    metrics = BASE_METRICS + ann + [Metric(f"test_acc_T{T}_pct", f"test acc % T={T}", ".2f", acc_at_T(T))
                                    for T in test_Ts(averaged)] + COST_METRICS
    groups = make_groups(runs, keys)
    for group in groups:
        group.stats = {m.name: aggregate(m.read(r) for r in group.runs) for m in metrics}
        group.paper = paper_rows(group)
    return Comparison(keys, metrics, groups, loaded, warnings(loaded, groups))


def grouping_keys(runs: list[Run], by: list[str] | None) -> list[str]:
    """``data`` first, then ``by`` as given, or else every choice that varies among ``runs`` (hyperparameters only
    where they split the runs further than the keys before them: optimizer.betas does not repeat optim=)."""
    choices = [config_choices(r) for r in runs]
    if by:
        known = set().union(*choices) | {"seed"}
        unknown = [k for k in by if k not in known]
        if unknown:
            raise CompareError(f"--by {','.join(unknown)}: no run has this key; keys of these runs: "
                               f"{', '.join(sorted(known))}")
        return ["data"] + [k for k in by if k != "data"]
    keys = ["data"]
    for key in dict.fromkeys(k for c in choices for k in c):
        values = [_hashable(c.get(key)) for c in choices]
        if key == "data" or len(set(values)) < 2:
            continue
        if key in CHOICES or _splits_further(choices, keys, key):
            keys.append(key)
    return keys


def config_choices(run: Run) -> dict:
    """A run's candidate grouping keys: scalar choices, flattened hyperparameters and the Optuna trial's params."""
    cfg = run.config
    out = {k: cfg[k] for k in CHOICES if k in cfg}
    for block, prefix in HYPERPARAMETERS.items():
        if isinstance(cfg.get(block), dict):
            out.update({k: v for k, v in _flatten(cfg[block], prefix).items() if not _private(k)})
    params = (run.summary.get("optuna") or {}).get("params") or {}
    out.update({k: v for k, v in params.items() if k not in out})
    return out


def make_groups(runs: list[Run], keys: list[str]) -> list[Group]:
    """One group per distinct key among the averaged runs; other runs join the group they match (a failed run
    that stopped early may lack keys), or a group of their own."""
    groups: dict[tuple, Group] = {}
    for run in sorted(runs, key=lambda r: not r.averaged):
        key = {k: config_choices(run).get(k, run.config.get(k)) for k in keys}
        match = next((g for g in groups.values() if _matches(key, g.key)), None) if not run.averaged else None
        if match is None:
            match = groups.setdefault(tuple(_hashable(v) for v in key.values()), Group(key, []))
        (match.runs if run.averaged else match.others).append(run)
    return sorted(groups.values(), key=lambda g: [_sort_key(g.key[k]) for k in keys])


def aggregate(values) -> Stat:
    """Mean, sample std (n-1) and n of the values that are there (None skipped); NaN where there are too few."""
    present = [v for v in values if v is not None]
    mean = statistics.fmean(present) if present else math.nan
    std = statistics.stdev(present) if len(present) > 1 else math.nan
    return Stat(mean, std, len(present))


def paper_rows(group: Group) -> list[dict]:
    """The paper's reported top-1 (percent) beside ours, at the run's T and at each test T the paper gives."""
    meta = next((r.summary["meta"] for r in group.runs if isinstance(r.summary.get("meta"), dict)), None)
    if not meta:
        return []
    run = group.runs[0]
    T = run.config.get("T")
    by_T = _by_T(meta.get("reported_top1_by_T"))  # values for models trained at other T
    reported = by_T.get(str(T), meta.get("reported_top1"))
    rows = [_paper_row(meta, f"T={T}", reported, group.stats.get("test_acc_pct"))]
    test_Ts = list((run.summary.get("test_by_T") or {}))
    by_test_T = _by_T(meta.get("reported_top1_by_test_T"), test_Ts)
    rows += [_paper_row(meta, f"tested at T={t}", value, group.stats.get(f"test_acc_T{t}_pct"))
             for t, value in by_test_T.items() if t in test_Ts]
    return rows


def flat_row(group: Group, comparison: Comparison) -> dict:
    """compare.csv's row of one group."""
    row = {"group": group.label(comparison.label_keys), **{k: group.key[k] for k in comparison.keys}}
    row.update(n=len(group.runs), not_averaged=len(group.others))
    for m in comparison.metrics:
        stat = group.stats[m.name]
        row.update({f"{m.name}_mean": stat.mean, f"{m.name}_std": stat.std, f"{m.name}_n": stat.n})
    head = group.paper[0] if group.paper else {}
    row.update(paper=head.get("paper"), reported_top1_pct=head.get("reported"), diff_pct=head.get("diff"))
    return row


def warnings(loaded: Loaded, groups: list[Group]) -> list[str]:
    """One line per thing the reader must know: mixed data sets, skipped files, directories without runs."""
    lines = []
    datasets = sorted({str(g.key.get("data")) for g in groups})
    if len(datasets) > 1:
        lines.append(f"runs on {len(datasets)} data sets ({', '.join(datasets)}): grouped apart by data, "
                     "their accuracies are not comparable")
    lines += [f"skipped {s.path}: {s.reason}" for s in loaded.skipped]
    lines += [f"no summary.json under {p} (searched recursively)" for p in loaded.empty]
    lines += [f"group {g.label(list(g.key))} has no completed run" for g in groups if not g.runs]
    return lines


def no_runs_message(loaded: Loaded) -> str:
    """Why there is nothing to compare: where we looked, and which files were skipped."""
    looked = ", ".join(map(str, loaded.empty)) or "the given paths"
    message = f"no runs to compare: no readable summary.json under {looked} (searched recursively)"
    if loaded.skipped:
        message += "; skipped " + "; ".join(f"{s.path}: {s.reason}" for s in loaded.skipped)
    return message


def test_Ts(runs: list[Run]) -> list[str]:
    """Every T of the runs' ``test_by_T``, in numeric order."""
    Ts = {str(t) for r in runs for t in (r.summary.get("test_by_T") or {})}
    return sorted(Ts, key=lambda t: _sort_key(_scale(t, 1) if _scale(t, 1) is not None else t))


def _paper_row(meta: dict, at: str, reported, ours: Stat | None) -> dict:
    reported = _scale(reported, 1)
    mean = ours.mean if ours is not None and ours.n else None
    diff = mean - reported if mean is not None and reported is not None else None
    return {"paper": meta.get("paper"), "at": at, "reported": reported, "ours": ours, "diff": diff}


def _by_T(text, order: list[str] | None = None) -> dict[str, float]:
    """``"72.87 (T=2) / 74.47 (T=4)"`` -> {"2": 72.87, "4": 74.47}; without ``(T=..)`` the values follow ``order``
    (the run's test T in the order it tested them), and only when there are as many."""
    if not isinstance(text, str):
        return {}
    parts = [p.strip() for p in text.split("/") if p.strip()]
    out = {}
    for i, part in enumerate(parts):
        value, _, rest = part.partition(" ")
        T = rest.strip().strip("()").removeprefix("T=").strip() if "T=" in rest else None
        if T is None and order is not None and len(order) == len(parts):
            T = order[i]
        if T is not None and _scale(value, 1) is not None:
            out[str(T)] = _scale(value, 1)
    return out


def _splits_further(choices: list[dict], keys: list[str], key: str) -> bool:
    """Whether ``key`` tells apart runs that ``keys`` leave together."""
    seen = {}
    for c in choices:
        before = tuple(_hashable(c.get(k)) for k in keys)
        if seen.setdefault(before, _hashable(c.get(key))) != _hashable(c.get(key)):
            return True
    return False


def _matches(key: dict, group_key: dict) -> bool:
    return all(v is None or _hashable(v) == _hashable(group_key.get(k)) for k, v in key.items())


def _flatten(block: dict, prefix: str) -> dict:
    out = {}
    for k, v in block.items():
        out.update(_flatten(v, f"{prefix}.{k}") if isinstance(v, dict) else {f"{prefix}.{k}": v})
    return out


def _private(key: str) -> bool:
    """Hydra's own entries (``_target_``, ``_partial_``): they repeat the choice, never a hyperparameter."""
    return key.rsplit(".", 1)[-1].startswith("_")


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _scale(value, factor: float) -> float | None:
    try:
        number = float(value) * factor
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
