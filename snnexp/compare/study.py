"""The Optuna part of the report: the best trials of a study and Optuna's own importance and history figures.

The figures come from ``optuna.visualization.matplotlib``, which draws with pyplot; each is closed once saved, so
nothing is left open in a notebook or an interactive session.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from snnexp.compare.plots import Plot, to_png
from snnexp.compare.runs import CompareError

TOP = 5  # trials shown of a single-objective study (the best first)


@dataclass
class StudyReport:
    """A study's name, its trials counted by state, the best trials as table rows, its figures and notes."""

    name: str
    storage: str
    directions: list[str]
    states: dict[str, int]
    best: list[dict]
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_study(storage: str, name: str | None = None) -> StudyReport:
    """Load the study ``name`` (default: the only study in ``storage``) and summarise it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name(storage, name), storage=storage)
    trials = study.get_trials(deepcopy=False)
    report = StudyReport(study.study_name, storage, [d.name.lower() for d in study.directions],
                         dict(Counter(t.state.name.lower() for t in trials)), best_rows(study))
    report.plots, report.notes = study_plots(study)
    return report


def study_name(storage: str, name: str | None) -> str:
    """The study to read: ``name`` if the storage holds it, else the storage's only study; a clear error otherwise."""
    import optuna

    _check_sqlite_file(storage)
    try:
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as err:  # SQLAlchemy's errors vary with the database: say which storage and what it said
        first_line = (str(err).splitlines() or [""])[0]
        raise CompareError(f"--study {storage}: cannot open the Optuna storage ({type(err).__name__}: "
                           f"{first_line})") from None
    if name is not None and name not in names:
        raise CompareError(f"--study-name {name}: no such study in {storage}; it holds: {', '.join(names) or 'none'}")
    if name is None and len(names) != 1:
        raise CompareError(f"--study {storage} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                           "choose one with --study-name NAME")
    return name or names[0]


def best_rows(study) -> list[dict]:
    """The best trials as rows (trial, value(s), params): the Pareto front of a multi-objective study, else the
    ``TOP`` best completed trials, the best first."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    if not done:
        return []
    if len(study.directions) > 1:
        chosen = study.best_trials
    else:
        maximize = study.direction.name == "MAXIMIZE"
        chosen = sorted(done, key=lambda t: t.value, reverse=maximize)[:TOP]
    return [{"trial": t.number, **_values(t), **{f"params.{k}": v for k, v in t.params.items()}} for t in chosen]


def study_plots(study) -> tuple[list[Plot], list[str]]:
    """Optuna's optimisation history and parameter importances (first objective of a multi-objective study)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    target = {} if len(study.directions) == 1 else {"target": lambda t: t.values[0], "target_name": "objective 0"}
    plots, notes = [], []
    for name, caption, draw in (("optuna_history", "Optimisation history", ovm.plot_optimization_history),
                                ("optuna_importances", "Parameter importances", ovm.plot_param_importances)):
        try:  # Optuna sets its ggplot style globally: rc_context gives the report's own figures theirs back
            with warnings.catch_warnings(), plt.rc_context():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib module experimental on every call
                ax = draw(study, **target)
                png = to_png(ax.figure)
                plt.close(ax.figure)
        except (ValueError, RuntimeError) as err:  # e.g. importances need two completed trials
            notes.append(f"figure '{caption}' left out: {err}")
            continue
        plots.append(Plot(name, f"{caption} (study {study.study_name})", png))
    return plots, notes


def _values(trial) -> dict:
    if trial.values is None:
        return {}
    if len(trial.values) == 1:
        return {"value": trial.values[0]}
    return {f"value{i}": v for i, v in enumerate(trial.values)}


def _check_sqlite_file(storage: str) -> None:
    """An SQLite URL must name an existing file: SQLAlchemy would otherwise create an empty database there."""
    prefix = "sqlite:///"
    if storage.startswith(prefix) and storage != prefix + ":memory:":
        path = Path(storage[len(prefix):])
        if not path.is_file():
            raise CompareError(f"--study {storage}: no such SQLite file {path} (a sweep keeps its study in "
                               "<sweep dir>/optuna.db)")
