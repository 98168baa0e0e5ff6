"""The Optuna sweeper: ask Optuna for trials, run each as a normal job through Hydra's launcher, tell the outcome.

Every check of the input (search space, settings, composition of a sample trial, storage) happens before the
study is opened, so a bad command writes nothing. Jobs are launched ``n_jobs`` trials at a time (times the number
of ``seeds``) with the launcher Hydra configured, so SLURM/submitit launchers work as with the basic sweeper.
"""

import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from . import results, search_space
from . import study as studies
from .config import PRUNERS, SAMPLERS
from .errors import SweepInputError

log = logging.getLogger(__name__)

DEFAULT_SUBDIR = "${hydra.job.num}"


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=optuna``: see :class:`hydra_plugins.snnexp_optuna_sweeper.config.OptunaSweeperConf`."""

    def __init__(self, sampler: Any = None, pruner: Any = None, sampler_options: Any = None,
                 pruner_options: Any = None, direction: Any = "maximize",
                 directions: Any = None, objectives: Any = None, storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 1, seeds: Any = None,
                 params: Any = None, heartbeat_interval: int = 60, grace_period: int | None = None) -> None:
        super().__init__()
        self.sampler_conf, self.pruner_conf = sampler, pruner
        self.sampler_options, self.pruner_options = sampler_options, pruner_options
        self.direction, self.directions, self.objectives = direction, directions, objectives
        self.storage_url, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.seeds = n_trials, n_jobs, seeds
        self.params = params
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the sweep; bad input stops it in one line (``snnexp: error: ...``) before any trial."""
        try:
            plan = self._plan(arguments)
        except SweepInputError as err:
            print(f"snnexp: error: hydra/sweeper=optuna: {err}", file=sys.stderr)
            sys.exit(1)
        return self._run(*plan)

    # ---- checking the input -------------------------------------------------------------------------------------
    def _plan(self, arguments: list[str]):
        """Check everything, then open the study: (study, storage, space, directions, objectives, pruning)."""
        import warnings

        import optuna

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # our trials are asked, not run by Study.optimize: the Heartbeat thread below beats for them
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        directions, objectives = self._objectives()
        seeds = self._seeds()
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise SweepInputError(f"n_trials={self.n_trials}: a sweep needs at least one trial")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise SweepInputError(f"n_jobs={self.n_jobs}: give a positive number of trials per batch")
        params = OmegaConf.to_container(self.params, resolve=True) if OmegaConf.is_config(self.params) else self.params
        space = search_space.parse(arguments, params, self.hydra_context.config_loader)
        for reserved in ("optuna_trial", "hydra.sweep.subdir", *(["seed"] if seeds else [])):
            if reserved in space.distributions or any(o.split("=", 1)[0].lstrip("+~") == reserved
                                                      for o in space.fixed):
                raise SweepInputError(f"{reserved} is set by the sweeper; leave it out of the search space")
        self._check_composes(space.overrides(space.sample()))
        sampler, pruner, prune = self._sampler_and_pruner(space)
        if prune and len(directions) > 1:
            raise SweepInputError("Optuna cannot prune a multi-objective study; use hydra.sweeper.pruner=none")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        url = self.storage_url or studies.default_storage(str(sweep_dir))
        if not self.storage_url:
            sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = studies.open_storage(url, self.heartbeat_interval, self.grace_period)
        name = self.study_name or self.config.hydra.job.name
        study = studies.open_study(storage, name, directions, sampler, pruner)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return study, storage, url, space, seeds, objectives, prune

    def _objectives(self) -> tuple[list[str], list[str]]:
        """The directions and the summary.json keys they apply to, one each."""
        directions = self.directions if self.directions is not None else self.direction
        directions = [directions] if isinstance(directions, str) else list(directions or [])
        directions = [str(d).lower() for d in directions]
        if not directions or any(d not in ("maximize", "minimize") for d in directions):
            raise SweepInputError(f"direction(s) {directions}: each must be maximize or minimize")
        objectives = self.objectives
        if objectives is None:
            if len(directions) > 1:
                raise SweepInputError(f"{len(directions)} directions need as many objectives "
                                      "(hydra.sweeper.objectives=[val/acc,firing_rate])")
            objectives = [self.config.get("optimized_metric") or "val/acc"]
        objectives = [str(o) for o in ([objectives] if isinstance(objectives, str) else objectives)]
        if len(objectives) != len(directions):
            raise SweepInputError(f"objectives {objectives} and directions {directions} differ in length")
        return directions, objectives

    def _sampler_and_pruner(self, space) -> tuple[Any, Any, dict | None]:
        """The sampler, the pruner and the pruner's spec (None for no pruning): the job rebuilds the same pruner
        from that spec to ask ``should_prune``. ``hydra.sweeper.sampler=random`` (a name) and
        ``hydra/sweeper/sampler=random`` (the group) give the same sampler; ``*_options`` override its arguments."""
        import optuna

        sampler_spec = studies.spec(self.sampler_conf, self.sampler_options, "sampler", SAMPLERS)
        pruner_spec = studies.spec(self.pruner_conf, self.pruner_options, "pruner", PRUNERS)
        sampler = studies.build(sampler_spec, "sampler", **self._grid(sampler_spec, space))
        pruner = studies.build(pruner_spec, "pruner")
        return sampler, pruner, None if isinstance(pruner, optuna.pruners.NopPruner) else pruner_spec

    @staticmethod
    def _grid(sampler_spec: dict, space) -> dict:
        """The ``search_space`` argument of a grid sampler (its choices); nothing for the other samplers."""
        if sampler_spec["_target_"] != SAMPLERS["grid"]._target_:
            return {}
        continuous = [k for k, d in space.distributions.items() if not hasattr(d, "choices")]
        if continuous:
            raise SweepInputError(f"the grid sampler searches choice/range parameters only, not {', '.join(continuous)}")
        return {"search_space": {k: list(d.choices) for k, d in space.distributions.items()}}

    def _seeds(self) -> list[int]:
        seeds = self.seeds
        if seeds is None:
            return []
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SweepInputError(f"seeds={seeds}: give a non-empty list of integers")
        return seeds

    def _check_composes(self, overrides: list[str]) -> str | None:
        """Compose the config with ``overrides`` as a job would: an unknown key or a bad type is an input error."""
        try:
            self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                               sweep_overrides=list(overrides))
        except Exception as err:
            raise SweepInputError(search_space.one_line(str(err))) from None

    # ---- running ------------------------------------------------------------------------------------------------
    def _run(self, study, storage, url, space, seeds, objectives, prune) -> list:
        import optuna

        log.info("Optuna study %s in %s (%s, %s): %d trials of %s", study.study_name, url,
                 type(study.sampler).__name__, type(study.pruner).__name__, self.n_trials,
                 " ".join(space.overrides({k: "<search>" for k in space.distributions})) or "(no search space)")
        returns = []
        own_subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir") == DEFAULT_SUBDIR
        with studies.Heartbeat(storage, self.heartbeat_interval) as heartbeat:
            while True:
                trials = []
                while len(trials) < self.n_jobs and studies.trials_so_far(study) < self.n_trials:
                    trial = study.ask(space.distributions)
                    if studies.over_budget(study, trial, self.n_trials):  # another worker took the last place
                        trial.set_user_attr(studies.SURPLUS, True)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        break
                    heartbeat.add(trial._trial_id)
                    trials.append(trial)
                if not trials:
                    break
                jobs = []  # (trial, seed, overrides)
                for trial in trials:
                    hidden = {"storage": url, "study_name": study.study_name, "trial_id": trial._trial_id,
                              "trial": trial.number,
                              "monitor": objectives[0], "prune": prune is not None,
                              **({"pruner": prune} if prune is not None else {})}
                    trial_overrides = space.overrides(trial.params) + [_dict_override("optuna_trial", hidden)]
                    for seed in seeds or [None]:
                        extra = [] if seed is None else [f"seed={seed}"]
                        if own_subdir:
                            extra.append(f"hydra.sweep.subdir=trial{trial.number}"
                                         + ("" if seed is None else f"_seed{seed}"))
                        jobs.append((trial, seed, trial_overrides + extra))
                returns.append(self._launch_and_tell(study, jobs, objectives, heartbeat))
        self._report_best(study, space, objectives)
        return returns

    def _launch_and_tell(self, study, jobs, objectives, heartbeat) -> list:
        """Launch one batch; each trial is told COMPLETE (mean over seeds), PRUNED or FAIL (with its error).

        A job whose config does not compose (e.g. a sampled value of the wrong type) fails its trial alone. With
        several trials in the batch each job is composed here first, so the launcher gets only those that compose;
        a batch of one trial (n_jobs=1) is not composed twice: the launcher's own composition error fails it."""
        outcomes: dict[int, list] = {trial.number: [] for trial, _, _ in jobs}
        launchable = []
        one_trial = len(outcomes) == 1
        for trial, seed, overrides in jobs:
            if one_trial:
                launchable.append((trial, seed, overrides))
                continue
            try:
                self._check_composes(overrides)
                launchable.append((trial, seed, overrides))
            except SweepInputError as err:  # e.g. a sampled value of the wrong type: this trial fails, not the sweep
                outcomes[trial.number].append((seed, results.JobOutcome("fail", error=str(err))))
        job_returns: list = []
        if launchable:
            try:
                job_returns = list(self.launcher.launch([o for _, _, o in launchable], initial_job_idx=self.job_idx))
            except BaseException as err:  # the launcher itself failed (or Ctrl-C): its trials must not stay RUNNING
                composing = isinstance(err, HydraException)  # the job's config did not compose
                message = search_space.one_line(str(err)) if composing else f"{type(err).__name__}: {err}"
                told = set()
                for trial, _, _ in launchable:
                    if trial.number not in told:
                        told.add(trial.number)
                        self._tell(study, trial, [(None, results.JobOutcome("fail", error=message))], heartbeat)
                if not isinstance(err, Exception):
                    raise
                if not composing:
                    log.error("the launcher failed: %s", err)
                return []
            self.job_idx += len(launchable)
        for (trial, seed, _), job_return in zip(launchable, job_returns):
            outcomes[trial.number].append((seed, results.outcome(job_return, objectives)))
        told = set()
        for trial, _, _ in jobs:
            if trial.number not in told:
                told.add(trial.number)
                self._tell(study, trial, outcomes[trial.number], heartbeat, objectives)
        return job_returns

    def _tell(self, study, trial, seed_outcomes, heartbeat, objectives=()) -> None:
        """Record a trial's state and annotate each of its jobs' summary.json."""
        from optuna.trial import TrialState

        failed = [o for _, o in seed_outcomes if o.state == "fail"]
        pruned = [o for _, o in seed_outcomes if o.state == "pruned"]
        values = None
        if failed:
            state, message = TrialState.FAIL, failed[0].error
            trial.set_user_attr("error", message)
        elif pruned:
            state, message = TrialState.PRUNED, pruned[0].error
        else:
            state, message = TrialState.COMPLETE, None
            values = [statistics.fmean(vals) for vals in zip(*(o.values for _, o in seed_outcomes))]
        trial.set_user_attr("job_dirs", [o.job_dir for _, o in seed_outcomes if o.job_dir])
        if len(seed_outcomes) > 1:
            trial.set_user_attr("seed_values", {str(s): o.values for s, o in seed_outcomes})
        try:
            study.tell(trial, values, state=None if values is not None else state)
        except Exception as err:  # e.g. failed meanwhile as stale by another process
            # Optuna records the state before the sampler's own error (a grid sampler whose grid is done calls
            # Study.stop, which raises outside study.optimize): only a state that was not recorded is worth a warning
            if study._storage.get_trial(trial._trial_id).state != state:
                log.warning("trial %d could not be told %s: %s", trial.number, state.name, err)
        heartbeat.discard(trial._trial_id)
        if state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, message)
        for seed, outcome in seed_outcomes:
            results.annotate(outcome.job_dir, {
                "study": study.study_name, "trial": trial.number, "params": trial.params, "state": state.name,
                "seed": seed, "values": dict(zip(objectives, values)) if values is not None else None,
                **({"error" if state == TrialState.FAIL else "reason": message} if message else {}),
            })

    def _report_best(self, study, space, objectives) -> None:
        """Log the best trial (or the Pareto front) as ready command lines and write ``best.yaml``."""
        from optuna.trial import TrialState

        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not complete:
            log.warning("no trial of study %s completed: no best.yaml", study.study_name)
            return
        pareto = len(study.directions) > 1
        best = study.best_trials if pareto else [study.best_trial]
        entries = []
        for trial in best:
            overrides = space.fixed + [f"{k}={search_space.format_value(v)}" for k, v in trial.params.items()]
            command = results.command_line(overrides)
            entries.append({"trial": trial.number, "values": dict(zip(objectives, trial.values)),
                            "params": dict(trial.params), "overrides": overrides, "command": command})
            log.info("%s trial %d (%s):\n  %s", "Pareto-optimal" if pareto else "Best", trial.number,
                     ", ".join(f"{k}={v:.4g}" for k, v in zip(objectives, trial.values)), command)
        path = Path(self.config.hydra.sweep.dir) / "best.yaml"
        results.write_best(path, entries, pareto)
        log.info("best trial%s written to %s", "s" if pareto else "", path)


def _dict_override(key: str, values: dict) -> str:
    """``key={a:1,b:'text'}`` in Hydra's override grammar."""
    return f"{key}={_dict_text(values)}"


def _dict_text(values: dict) -> str:
    return "{" + ",".join(f"{k}:{_dict_text(v) if isinstance(v, dict) else search_space.format_value(v)}"
                          for k, v in values.items()) + "}"
