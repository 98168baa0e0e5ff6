"""The Optuna sweeper (hydra_plugins/snnexp_optuna_sweeper, ``hydra/sweeper=optuna``): search-space parsing, the
sampler and pruner chosen by name or by config group, real sweeps through the CLI (study in optuna.db, per-trial summary.json, best.yaml, continuing, pruning, failures,
seeds, multi-objective), and bad input refused in one line before anything is written."""

from __future__ import annotations

import json
import statistics
import sys

import optuna
import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra
from optuna.trial import TrialState

from helpers.runs import run_cli
from hydra_plugins.snnexp_optuna_sweeper import register_with_hydra
from hydra_plugins.snnexp_optuna_sweeper import errors
from hydra_plugins.snnexp_optuna_sweeper.search_space import SearchSpace, parse
from hydra_plugins.snnexp_optuna_sweeper.sweeper import OptunaSweeper

# the error class is looked up when raised (errors.SweepInputError): Hydra's first plugin scan in this process (the
# first composition) executes the plugin's modules again, which makes new classes in the same modules
TINY = ["debug=short", "logger=none"]  # digits, one epoch of 2 batches on the CPU, checkpointed in the job dir


def sweep(tmp_path, *args: str):
    """Run an Optuna sweep into ``tmp_path/sweep`` and return (process, study)."""
    proc = run_cli("-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path / 'sweep'}", *TINY, *args,
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, optuna.load_study(study_name="snnexp", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")


def summaries(trial) -> list[dict]:
    return [json.loads(open(f"{d}/summary.json").read()) for d in trial.user_attrs["job_dirs"]]


def test_search_space_parses_log_intervals_choices_ranges_and_fixed_values():
    space = parse(["optim.lr=tag(log, interval(1e-4, 1e-1))", "neuron.tau=interval(1.5, 4.0)",
                   "method.lamb=choice(0, 0.001, 0.05)", "T=range(2, 5)", "data.batch_size=int(interval(4, 16))",
                   "method=tet"], params={"neuron.tau": "interval(1.0, 2.0)", "seed": "3"})
    d = space.distributions
    assert d["optim.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert d["neuron.tau"] == optuna.distributions.FloatDistribution(1.5, 4.0)  # the command line wins over params
    assert d["method.lamb"].choices == (0, 0.001, 0.05) and d["T"].choices == (2, 3, 4)
    assert d["data.batch_size"] == optuna.distributions.IntDistribution(4, 16)
    assert space.fixed == ["seed=3", "method=tet"]
    assert space.overrides({"optim.lr": 0.01, "method.lamb": 0}) == ["seed=3", "method=tet", "optim.lr=0.01",
                                                                     "method.lamb=0"]


@pytest.mark.parametrize("bad", ["neuron.tau=interval(5, 1)", "optim.lr=tag(log, interval(0, 1))",
                                 "data.batch_size=choice()"])
def test_bad_search_space_is_one_error(bad):
    with pytest.raises(errors.SweepInputError) as err:
        parse([bad])
    assert "\n" not in str(err.value)


def first_point(sampler) -> dict:
    """The first parameters ``sampler`` asks for in a fresh in-memory study (equal for equal seeds)."""
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    return optuna.create_study(sampler=sampler).ask(space).params


@pytest.mark.parametrize("form", ["name", "group"])
def test_sampler_and_pruner_by_name_or_group_with_options(form):
    """``hydra.sweeper.pruner=median`` (a plain value) and ``hydra/sweeper/pruner=median`` (the config group) build
    the same pruner, and ``*_options`` set its arguments; composed as the CLI would, then built in-process."""
    from hydra.utils import instantiate

    from helpers.runs import compose_config

    register_with_hydra()
    choose = {"name": ["hydra.sweeper.sampler=random", "hydra.sweeper.pruner=median"],
              "group": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=median"]}[form]
    cfg = compose_config(["hydra/sweeper=optuna", *choose, "hydra.sweeper.sampler_options.seed=7",
                          "hydra.sweeper.pruner_options.n_startup_trials=0",
                          "hydra.sweeper.pruner_options.n_warmup_steps=2"])
    GlobalHydra.instance().clear()
    sampler, pruner, spec = instantiate(cfg.hydra.sweeper)._sampler_and_pruner(SearchSpace())
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    assert first_point(sampler) == first_point(optuna.samplers.RandomSampler(seed=7))
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    # what the job gets to rebuild the pruner (snnexp/sweep_pruning.py): the group's defaults under the options
    assert spec == {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 0, "n_warmup_steps": 2,
                    "interval_steps": 1}
    assert vars(instantiate(spec)) == vars(pruner)


@pytest.mark.parametrize("sampler,pruner", [("tpe", "none"), ("random", "median"), ("nsgaii", "hyperband"),
                                            ("grid", "threshold")])
def test_every_sampler_and_pruner_name_builds(sampler, pruner):
    targets = {"tpe": "TPESampler", "random": "RandomSampler", "nsgaii": "NSGAIISampler", "grid": "GridSampler",
               "none": "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner",
               "threshold": "ThresholdPruner"}
    sweeper = OptunaSweeper(sampler=sampler, pruner=pruner, sampler_options={"seed": 0},
                            pruner_options={"lower": 0.5} if pruner == "threshold" else None)
    space = parse(["T=choice(2, 4)"])
    built, pruned_by, spec = sweeper._sampler_and_pruner(space)
    assert type(built).__name__ == targets[sampler] and type(pruned_by).__name__ == targets[pruner]
    assert (spec is None) == (pruner == "none")


@pytest.mark.parametrize("sampler,pruner,options,expected", [
    ("tpes", "none", {}, "hydra.sweeper.sampler=tpes: expected one of tpe, random, nsgaii, grid"),
    ("tpe", "medain", {}, "hydra.sweeper.pruner=medain: expected one of none, median, hyperband, threshold"),
    ("tpe", "median", {"n_startup_trails": 0}, "hydra.sweeper.pruner: "),
])
def test_bad_sampler_or_pruner_is_one_input_error(sampler, pruner, options, expected):
    with pytest.raises(errors.SweepInputError) as err:
        OptunaSweeper(sampler=sampler, pruner=pruner, pruner_options=options)._sampler_and_pruner(SearchSpace())
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    if options:
        assert "n_startup_trails" in str(err.value)


BAD_VALUE = "Error merging 'data.batch_size=7.5'\nValue '7.5' of type 'float' could not be converted to Integer"


class ComposingLauncher:
    """Stands in for Hydra's launcher: composes each job (a job with ``data.batch_size=7.5`` does not compose, as
    Hydra's launchers raise then), runs none, returns a completed job for the others (val/acc 0.5)."""

    def __init__(self, tmp_path):
        self.tmp_path, self.launched = tmp_path, []

    def load_sweep_config(self, master_config, sweep_overrides):
        from hydra.errors import ConfigCompositionException

        if "data.batch_size=7.5" in sweep_overrides:
            raise ConfigCompositionException(BAD_VALUE)

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus
        from omegaconf import OmegaConf

        returns = []
        for overrides in job_overrides:
            self.launched.append(list(overrides))
            self.load_sweep_config(None, overrides)
            folder = self.tmp_path / str(len(self.launched))
            folder.mkdir()
            (folder / "summary.json").write_text(json.dumps({"status": "completed",
                                                             "best": {"metric": "val/acc", "score": 0.5}}))
            job = JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)
            job.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}})
            returns.append(job)
        return returns


class NoHeartbeat:
    def discard(self, trial_id):
        pass


@pytest.mark.parametrize("batch", [[7.5], [8.0, 7.5]], ids=["one trial", "two trials"])
def test_a_trial_whose_config_does_not_compose_fails_alone_in_one_line(batch, tmp_path):
    """A sampled value the config refuses fails its trial, in one line, and no other; the launcher of a batch of one
    trial composes it once (the sweeper does not compose it first), the jobs of a larger batch are checked first."""
    from types import SimpleNamespace

    study = optuna.create_study()
    launcher = ComposingLauncher(tmp_path)
    sweeper = OptunaSweeper()
    sweeper.launcher, sweeper.hydra_context = launcher, SimpleNamespace(config_loader=launcher)
    jobs = []
    for size in batch:
        trial = study.ask({"data.batch_size": optuna.distributions.FloatDistribution(4.0, 16.0)})
        jobs += [(trial, seed, [f"data.batch_size={size}", f"seed={seed}"]) for seed in (0, 1)]
    sweeper._launch_and_tell(study, jobs, ["val/acc"], NoHeartbeat())
    *good, bad = study.get_trials()
    assert bad.state == TrialState.FAIL and bad.user_attrs["error"] == BAD_VALUE.replace("\n", " ")
    assert [(t.state, t.value) for t in good] == [(TrialState.COMPLETE, 0.5)] * len(good)
    launched_bad = [o for o in launcher.launched if "data.batch_size=7.5" in o]
    assert len(launched_bad) == (1 if len(batch) == 1 else 0)  # not composed twice; the launcher stopped at it
    assert len(launcher.launched) == 2 * len(good) + len(launched_bad)


@pytest.mark.slow
def test_sweep_records_trials_summaries_best_and_continues_with_pruning(tmp_path):
    space = ["optim.lr=tag(log, interval(1e-4, 1e-1))", "neuron.tau=interval(1.5, 4.0)", "data.batch_size=choice(4, 8)"]
    proc, study = sweep(tmp_path, "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=random",
                        "hydra.sweeper.sampler.seed=0", *space)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        (summary,) = summaries(trial)
        assert summary["status"] == "completed"
        assert summary["optuna"]["trial"] == trial.number and summary["optuna"]["state"] == "COMPLETE"
        assert summary["optuna"]["params"] == trial.params and set(trial.params) == {"optim.lr", "neuron.tau",
                                                                                    "data.batch_size"}
        assert trial.value == summary["best"]["score"]  # val/acc of the best checkpoint, what run() returns
        assert 1e-4 <= trial.params["optim.lr"] <= 1e-1 and trial.params["data.batch_size"] in (4, 8)
    best = yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())
    assert best["trial"] == study.best_trial.number and best["values"]["val/acc"] == study.best_value
    assert "debug=short" in best["overrides"] and best["command"].startswith("python -m snnexp ")
    assert best["command"] in proc.stdout + proc.stderr

    # the same command with more trials continues the study; a pruner that always prunes stops the new trial
    # (chosen by plain values this time: the job rebuilds it from the name and its options)
    _, study = sweep(tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler=random", *space,
                     "hydra.sweeper.pruner=threshold", "hydra.sweeper.pruner_options.lower=1.1")
    again = study.get_trials()
    assert [(t.number, t.params, t.value) for t in again[:3]] == [(t.number, t.params, t.value) for t in trials]
    assert again[3].state == TrialState.PRUNED
    (summary,) = summaries(again[3])
    assert summary["status"] == "pruned" and summary["optuna"]["state"] == "PRUNED"
    assert "pruned" in summary["pruned"] and summary["epochs"] == 0


@pytest.mark.slow
def test_failing_trial_seeds_and_pareto_front(tmp_path):
    """A grid over an impossible model (IncompatibleError) and a good one, each at two seeds, two objectives."""
    _, study = sweep(tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", "hydra.sweeper.seeds=[0,1]",
                     "hydra.sweeper.directions=[maximize,minimize]", "hydra.sweeper.objectives=[val/acc,firing_rate]",
                     "model=choice(convnet, pointnet)")
    by_model = {t.params["model"]: t for t in study.get_trials()}
    failed, good = by_model["pointnet"], by_model["convnet"]
    assert failed.state == TrialState.FAIL and "cannot be built" in failed.user_attrs["error"]
    assert all(s["optuna"]["state"] == "FAIL" for s in summaries(failed))
    assert good.state == TrialState.COMPLETE
    runs = summaries(good)
    assert sorted(s["config"]["seed"] for s in runs) == [0, 1]
    assert good.values == pytest.approx([statistics.fmean(s["best"]["score"] for s in runs),
                                         statistics.fmean(s["firing_rate"] for s in runs)])
    front = yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())["pareto_front"]
    assert [e["trial"] for e in front] == [good.number] and "model=convnet" in front[0]["overrides"]
    assert set(front[0]["values"]) == {"val/acc", "firing_rate"}


@pytest.mark.slow
def test_a_trial_whose_loss_becomes_nan_fails_with_its_message_and_the_sweep_goes_on(tmp_path):
    """optim.lr=1e37 overflows the weights in the first step: the run stops on the non-finite loss (keeping its
    last good checkpoint), the trial is FAIL with that message, and the next trial runs."""
    _, study = sweep(tmp_path, "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2", "optim.lr=choice(1e37, 0.001)")
    by_lr = {t.params["optim.lr"]: t for t in study.get_trials()}
    nan, good = by_lr[1e37], by_lr[0.001]
    assert nan.state == TrialState.FAIL and "loss became nan" in nan.user_attrs["error"]
    (summary,) = summaries(nan)
    assert summary["status"] == "failed" and "nan" in summary["error"] and summary["optuna"]["state"] == "FAIL"
    assert good.state == TrialState.COMPLETE and summaries(good)[0]["status"] == "completed"


BAD_INPUT = {
    "unknown parameter": (["neuron.taux=interval(1, 2)"], "taux"),
    "empty choice": (["neuron.tau=choice()"], "empty choice"),
    "inverted interval": (["neuron.tau=interval(5, 1)"], "interval(5.0, 1.0)"),
    "unreachable storage": (["neuron.tau=interval(1, 2)", "hydra.sweeper.storage=sqlite:////no/such/dir/x.db"],
                            "/no/such/dir"),
    "no trials": (["neuron.tau=interval(1, 2)", "hydra.sweeper.n_trials=0"], "n_trials=0"),
    "pruning several objectives": (["neuron.tau=interval(1, 2)", "hydra.sweeper.directions=[maximize,minimize]",
                                    "hydra.sweeper.objectives=[val/acc,firing_rate]", "hydra/sweeper/pruner=median"],
                                   "multi-objective"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_clear_error_and_writes_no_study(case, tmp_path, monkeypatch, capsys):
    """In-process (no new interpreter per case): the CLI's entry point, exit status 1, one line, no optuna.db."""
    from snnexp.__main__ import main

    args, expected = BAD_INPUT[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["snnexp", "-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={tmp_path / 's'}",
                                      *TINY, *args])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as stop:
        main()
    GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert stop.value.code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any(expected in ln and "error" in ln.lower() for ln in lines), err
    if case != "empty choice":  # Hydra's own parser refuses choice() before the sweeper starts (its 2-line message)
        assert len(lines) == 1 and lines[0].startswith("snnexp: error: hydra/sweeper=optuna: "), err
    assert not list(tmp_path.rglob("optuna.db")) and not (tmp_path / "no").exists()


def test_a_trial_asked_beyond_the_budget_is_surplus_whatever_the_workers_timing():
    import optuna

    from hydra_plugins.snnexp_optuna_sweeper import study as studies

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    asked = [study.ask() for _ in range(3)]  # two workers both counted 1 of 2, and both asked: trials 1 and 2
    assert [studies.over_budget(study, t, 2) for t in asked] == [False, False, True]
    asked[2].set_user_attr(studies.SURPLUS, True)
    study.tell(asked[2], state=optuna.trial.TrialState.FAIL)
    assert studies.trials_so_far(study) == 2
    later = study.ask()  # a continued study with a budget of 3: the surplus trial does not take a place
    assert not studies.over_budget(study, later, 3) and studies.over_budget(study, later, 2)
