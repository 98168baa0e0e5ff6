"""Open (or continue) the Optuna study of a sweep, count its trials, and keep this process's trials alive.

Several processes given the same storage and study name share one study: the trial budget counts every trial in
the study (running, finished, pruned, failed), and a trial whose process died stops sending heartbeats and is
marked failed by the next process that opens the study.
"""

import random
import threading
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from .errors import SweepInputError


def default_storage(sweep_dir: str) -> str:
    """SQLite beside the sweep's job directories: ``sqlite:///<sweep dir>/optuna.db``."""
    return f"sqlite:///{(Path(sweep_dir) / 'optuna.db').resolve()}"


def spec(node: Any, options: Any, what: str, names: dict[str, type]) -> dict:
    """The constructor spec (``_target_`` and keyword arguments) of the sampler or pruner: ``node`` is a name such as
    ``median`` (the same defaults as its ``hydra/sweeper/<what>=`` group option, ``names``), a config with a
    ``_target_`` (the group's node, or one written in a sweep file) or None (tpe, none); ``options``
    (``hydra.sweeper.<what>_options``) override its keyword arguments."""
    if node is None:
        node = "none" if what == "pruner" else "tpe"
    if isinstance(node, str):
        if node not in names:
            raise SweepInputError(f"hydra.sweeper.{what}={node}: expected one of {', '.join(names)}")
        node = OmegaConf.structured(names[node])
    body = _plain(node)
    if not isinstance(body, dict) or not isinstance(body.get("_target_"), str):
        raise SweepInputError(f"hydra.sweeper.{what}: give a name ({', '.join(names)}) or a config with a _target_")
    extra = _plain(options) if options is not None else {}
    if not isinstance(extra, dict):
        raise SweepInputError(f"hydra.sweeper.{what}_options={options}: give keyword arguments "
                              f"(hydra.sweeper.{what}_options.<key>=<value>)")
    return {**body, **extra}


def build(node: dict, what: str, **kwargs):
    """A sampler or pruner from its :func:`spec`; ``kwargs`` go to the constructor (the grid of a grid sampler)."""
    try:
        return instantiate(node, **kwargs)
    except Exception as err:
        raise SweepInputError(f"hydra.sweeper.{what}: {err.__cause__ or err}") from None


def _plain(node: Any) -> Any:
    """A config node as plain Python containers (interpolations resolved)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def open_storage(url: str, heartbeat_interval: int, grace_period: int | None):
    """The RDB storage at ``url`` with heartbeats on; an unreachable URL is one :class:`SweepInputError`."""
    import optuna

    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise SweepInputError(f"storage {url}: the folder {folder} does not exist")
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period or 2 * heartbeat_interval)
        except Exception as err:
            # workers started together on an empty database all create Optuna's tables: the losers of that race
            # (PostgreSQL: IntegrityError on pg_type; "table already exists") find them made when they try again
            if attempt < 4 and _schema_race(err):
                time.sleep(0.2 + random.random())
                continue
            raise SweepInputError(f"storage {url} cannot be opened: {type(err).__name__}: {_first_line(err)}") from None


def open_study(storage, study_name: str, directions: list[str], sampler, pruner):
    """Create the study, or load it when it exists (the same command continues it); fail stale trials."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except ValueError as err:  # e.g. the stored study has other directions
        raise SweepInputError(f"study {study_name}: {err}") from None
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        stored = [d.name.lower() for d in study.directions]
        raise SweepInputError(f"study {study_name} in the storage has directions {stored}, not {directions}")
    optuna.storages.fail_stale_trials(study)  # trials of a killed process, silent for longer than grace_period
    return study


SURPLUS = "surplus"  # user attribute of a trial asked beyond the budget by a worker that lost the race for it


def _counts(trial) -> bool:
    return not trial.user_attrs.get(SURPLUS, False)


def trials_so_far(study) -> int:
    """Every trial of the study, whatever its state and whichever process runs it (the budget is for them all),
    except the surplus ones :func:`over_budget` turned away."""
    return sum(_counts(t) for t in study.get_trials(deepcopy=False))


def over_budget(study, trial, n_trials: int) -> bool:
    """Whether ``trial``, just asked, lies beyond the budget: ``n_trials`` counting trials numbered before it.

    Counting and asking are two steps, so two workers can both count n_trials - 1 and both ask. Optuna numbers
    trials atomically, so the lower number keeps its place and the higher one is surplus: the study ends with
    exactly ``n_trials`` trials that count, whatever the workers' timing."""
    return sum(_counts(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number) >= n_trials


class Heartbeat:
    """A thread recording a heartbeat for each running trial of this process every ``interval`` seconds."""

    def __init__(self, storage, interval: int):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        self.trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        self.trial_ids.discard(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a busy database now and then: the next beat tries again
                    pass


def _schema_race(err: BaseException) -> bool:
    """Whether ``err`` is another process creating the same tables at the same time (worth a second try)."""
    import sqlalchemy.exc

    return isinstance(err, sqlalchemy.exc.IntegrityError) or (
        isinstance(err, sqlalchemy.exc.DBAPIError) and "already exists" in str(err))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
