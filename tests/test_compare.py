"""``python -m snnexp.compare``: run directories in, a comparison out. Groups are the choices that vary, seeds are
aggregated as mean ± sample std, runs that did not complete are listed and never averaged, bad input is one line."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from helpers.fake_runs import summary, write_run
from helpers.runs import SHORT, run_cli

from snnexp.compare import compare
from snnexp.compare.__main__ import main
from snnexp.compare.plots import pareto_front

ACCS = {"sdt": [0.91, 0.93, 0.96], "tet": [0.94, 0.95, 0.99]}  # test accuracy of seeds 0, 1, 2
FIGURES = ["val_acc.png", "acc_by_T.png", "acc_vs_energy.png", "firing_rates.png"]


@pytest.fixture
def multirun(tmp_path) -> Path:
    """Two methods x three seeds, a failed and a pruned run (with numbers that must not be averaged) and a
    half-written summary.json, laid out as a multirun directory."""
    root = tmp_path / "multirun"
    job = 0
    for method, accs in ACCS.items():
        for seed, acc in enumerate(accs):
            write_run(root / str(job), summary(method, seed, acc=acc), val_acc=[acc - 0.2, acc - 0.1, acc + 0.01])
            job += 1
    write_run(root / "6", summary("tet", 3, status="failed", test={"test/acc": 0.0}, firing_rate=9.0))
    write_run(root / "7", summary("sdt", 3, status="pruned", best={"metric": "val/acc", "score": 0.01},
                                  pruned="Trial 7 pruned at epoch 1"))
    (root / "8").mkdir()
    (root / "8" / "summary.json").write_text('{"status": "completed", "final_val": {"val/acc": 0.9')
    return root


def by_method(rows: list[dict]) -> dict[str, dict]:
    return {row["method"]: row for row in rows}


def test_groups_are_the_varying_choices_and_seeds_give_mean_and_sample_std(multirun):
    comparison = compare([multirun])
    assert comparison.label_keys == ["neuron", "method"]  # data, model, T... are the same for all runs
    rows = by_method(comparison.rows)
    for method, accs in ACCS.items():
        row = rows[method]
        assert (row["n"], row["not_averaged"]) == (3, 1)
        expect = {
            "test_acc_pct": [100 * a for a in accs],
            "best_val_acc_pct": [100 * (a + 0.01) for a in accs],
            "test_acc_T2_pct": [100 * (a - 0.05) for a in accs],
            "energy_mJ": [0.001 * (1 + a) for a in accs],
            "sops": [1e5 * (1 + s) for s in range(3)],
            "firing_rate": [0.1 + 0.01 * s for s in range(3)],
            "wall_time_s": [2.0 + s for s in range(3)],
        }
        for name, values in expect.items():
            assert row[f"{name}_mean"] == pytest.approx(statistics.fmean(values)), name
            assert row[f"{name}_std"] == pytest.approx(statistics.stdev(values)), name
            assert row[f"{name}_n"] == 3


def test_cli_prints_table_lists_unaveraged_and_corrupt_runs_and_writes_csv_html_and_pngs(multirun, tmp_path,
                                                                                        capsys):
    out = tmp_path / "report"
    assert main([str(multirun), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    sdt_mean, sdt_std = statistics.fmean(ACCS["sdt"]) * 100, statistics.stdev(ACCS["sdt"]) * 100
    assert f"| lif | sdt | 3 | 1 | " in printed.out
    assert f"{sdt_mean:.2f} ± {sdt_std:.2f}" in printed.out
    assert "RuntimeError: run tet/3 blew up" in printed.out and "pruned: Trial 7 pruned at epoch 1" in printed.out
    corrupt = str(multirun / "8" / "summary.json")
    assert corrupt in printed.out and corrupt in printed.err and "Traceback" not in printed.err

    with open(out / "compare.csv", newline="") as f:
        rows = by_method(list(csv.DictReader(f)))
    assert float(rows["tet"]["test_acc_pct_mean"]) == pytest.approx(statistics.fmean(ACCS["tet"]) * 100)
    assert float(rows["tet"]["test_acc_pct_std"]) == pytest.approx(statistics.stdev(ACCS["tet"]) * 100)
    assert rows["tet"]["n"] == "3" and rows["tet"]["not_averaged"] == "1"

    page = (out / "report.html").read_text()
    assert "<table>" in page and f"{sdt_mean:.2f} ± {sdt_std:.2f}" in page and corrupt in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_directory_keeps_the_users_files(multirun, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert main([str(multirun), "--out", str(out)]) == 0
    assert main([str(multirun), "--out", str(out)]) == 0  # our own files are replaced
    assert (out / "notes.txt").read_text() == "my notes"

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "report.html").write_text("their page")
    capsys.readouterr()
    assert main([str(multirun), "--out", str(theirs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report.html" in err[0] and "choose another --out" in err[0]
    assert (theirs / "report.html").read_text() == "their page" and not (theirs / "compare.csv").exists()


def test_a_paper_preset_shows_the_reported_number_and_the_difference(tmp_path, capsys):
    meta = {"paper": "Spiking PointNet (NeurIPS 2023)", "reported_top1": 91.66,
            "reported_top1_by_test_T": "91.66 / 92.98"}
    run = summary("sdt", 0, acc=0.9, T=1, meta=meta,
                  test_by_T={"1": {"acc": 0.9}, "2": {"acc": 0.935}})
    write_run(tmp_path / "run", run)
    (row,) = compare([tmp_path / "run"]).rows
    assert row["paper"] == meta["paper"]
    assert row["reported_top1_pct"] == 91.66 and row["diff_pct"] == pytest.approx(90.0 - 91.66)

    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| Spiking PointNet (NeurIPS 2023) | T=1 | 91.66 | 90.00 ± – | -1.66 |" in out  # one run: no std
    assert "| tested at T=2 | 92.98 | 93.50 ± – | +0.52 |" in out


def test_runs_on_different_data_are_grouped_apart_with_a_warning(tmp_path, capsys):
    write_run(tmp_path / "a", summary("sdt", 0, acc=0.9, data="digits"))
    write_run(tmp_path / "b", summary("sdt", 1, acc=0.8, data="digits"))
    write_run(tmp_path / "c", summary("sdt", 0, acc=0.5, data="cifar10"))
    rows = {row["data"]: row for row in compare([tmp_path]).rows}
    assert rows["digits"]["n"] == 2 and rows["cifar10"]["n"] == 1
    assert rows["digits"]["test_acc_pct_mean"] == pytest.approx(85.0)

    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr()
    assert "| cifar10 | 1 | 0 |" in printed.out and "| digits | 2 | 0 |" in printed.out
    assert "warning: runs on 2 data sets (cifar10, digits): grouped apart by data" in printed.err


def test_a_directory_without_runs_is_one_line_and_exit_status_1(tmp_path, capsys):
    empty = tmp_path / "nothing_here"
    (empty / "sub").mkdir(parents=True)
    assert main([str(empty), "--out", str(tmp_path / "report")]) == 1
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0] and "no runs to compare" in lines[0]
    assert printed.out == "" and not (tmp_path / "report").exists()


def test_an_unknown_by_key_names_the_keys_there_are(multirun, capsys):
    assert main([str(multirun), "--by", "methd"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--by methd" in line and "method" in line


def test_by_groups_on_the_given_keys_only(multirun):
    (row,) = compare([multirun], by=["model"]).rows  # all six completed runs share the model
    accs = [100 * a for accs in ACCS.values() for a in accs]
    assert row["n"] == 6 and row["not_averaged"] == 2
    assert row["test_acc_pct_mean"] == pytest.approx(statistics.fmean(accs))
    assert row["test_acc_pct_std"] == pytest.approx(statistics.stdev(accs))


def test_conversion_runs_group_by_the_method_option_that_varies_and_show_the_ann_accuracy(tmp_path, capsys):
    """A multirun over method.calibration (options kept in summary.json's config.method_options) is grouped by it,
    and the converted runs' ANN accuracy (test/ann_acc) gets its own column."""
    for job, (calibration, acc, seed) in enumerate([("none", 0.5, 0), ("none", 0.6, 1), ("light", 0.8, 0)]):
        run = summary("convert", seed, acc=acc, method_options={"_target_": "snnexp.methods.convert.Convert",
                                                                "calibration": calibration, "shift": False})
        run["config"]["method_options"] = run.pop("method_options")
        run["test"]["test/ann_acc"] = 0.9 + 0.01 * seed
        write_run(tmp_path / "sweep" / str(job), run)
    comparison = compare([tmp_path / "sweep"])
    assert comparison.keys == ["data", "method.calibration"]  # the constant shift and Hydra's _target_ are not keys
    rows = {row["method.calibration"]: row for row in comparison.rows}
    assert rows["none"]["n"] == 2 and rows["none"]["test_acc_pct_mean"] == pytest.approx(55.0)
    assert rows["none"]["ann_test_acc_pct_mean"] == pytest.approx(90.5) and rows["light"]["n"] == 1
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report")]) == 0
    assert "| method.calibration | n | not averaged | best val acc % | test acc % | ANN test acc % |" in \
        capsys.readouterr().out


def test_runs_without_energy_show_a_dash(tmp_path, capsys):
    write_run(tmp_path / "old", summary("sdt", 0, energy=False))
    write_run(tmp_path / "new", summary("sdt", 1, acc=0.8))
    (row,) = compare([tmp_path]).rows
    assert row["energy_mJ_n"] == 1 and row["energy_mJ_mean"] == pytest.approx(0.0018)
    write_run(tmp_path / "new", summary("sdt", 1, acc=0.8, energy=False))
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    header, _, row_line = capsys.readouterr().out.split("\n\n")[2].splitlines()[:3]
    cells = dict(zip(header.split(" | "), row_line.split(" | ")))
    assert cells["energy mJ/sample"] == "–" and cells["SOPs"] == "–"


def test_pareto_front_keeps_points_no_other_beats_on_accuracy_and_energy():
    points = [(1.0, 90.0), (2.0, 95.0), (2.5, 94.0), (0.5, 80.0), (3.0, 95.0)]
    assert pareto_front(points) == [(0.5, 80.0), (1.0, 90.0), (2.0, 95.0)]


def test_an_optuna_study_adds_its_best_trial_importances_and_history(multirun, tmp_path, capsys):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="lr_study", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: -(t.suggest_float("lr", 1e-4, 1e-1, log=True) - 0.01) ** 2
                   - 0.1 * t.suggest_float("lamb", 0.0, 1.0), n_trials=8)
    best = study.best_trial

    out = tmp_path / "report"
    import matplotlib.style

    ggplot = list(matplotlib.style.library["ggplot"])  # the style Optuna's figures set globally
    style = {k: matplotlib.rcParams[k] for k in ggplot}
    assert main([str(multirun), "--study", storage, "--out", str(out)]) == 0
    assert {k: matplotlib.rcParams[k] for k in ggplot} == style  # it does not leak into the report's figures
    printed = capsys.readouterr().out
    assert "### Optuna study lr_study" in printed and "8 trials (8 complete)" in printed
    best_line = next(line for line in printed.splitlines() if line.startswith(f"| {best.number} |"))
    assert f"{best.value:.6g}" in best_line and f"{best.params['lr']:.6g}" in best_line
    page = (out / "report.html").read_text()
    for caption in ("Optimisation history (study lr_study)", "Parameter importances (study lr_study)"):
        assert f'alt="{caption}"' in page
    assert page.count("data:image/png;base64,") == len(FIGURES) + 2
    assert (out / "optuna_importances.png").is_file() and (out / "optuna_history.png").is_file()

    missing = tmp_path / "no.db"
    assert main([str(multirun), "--study", f"sqlite:///{missing}", "--out", str(out)]) == 1
    assert str(missing) in capsys.readouterr().err and not missing.exists()  # no empty database created


def test_every_embedded_image_decodes_and_a_headless_browser_renders_the_report(multirun, tmp_path):
    out = tmp_path / "report"
    assert main([str(multirun), "--out", str(out)]) == 0
    page = out / "report.html"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page.read_text())
    assert len(images) == len(FIGURES)
    for data in images:
        assert base64.b64decode(data, validate=True)[:8] == b"\x89PNG\r\n\x1a\n"

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
                   capture_output=True, timeout=300, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    figures = pixels[400:1600]  # below the tables: where the figures are drawn
    assert figures.std() > 0.05
    assert len({tuple(p) for p in figures.reshape(-1, 3)[::97].round(2).tolist()}) > 10


@pytest.mark.slow
def test_a_real_multirun_compares_to_the_mean_of_its_runs(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "method=sdt,tet", "seed=0,1", *SHORT[:-1], "trainer.max_epochs=2",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(summaries) == 4

    rows = by_method(compare([sweep]).rows)
    assert set(rows) == {"sdt", "tet"}
    for method, row in rows.items():
        mine = [s for s in summaries if s["config"]["method"] == method]
        assert row["n"] == 2
        assert row["test_acc_pct_mean"] == pytest.approx(statistics.fmean(100 * s["test"]["test/acc"] for s in mine))
        assert row["best_val_acc_pct_mean"] == pytest.approx(statistics.fmean(100 * s["best"]["score"] for s in mine))
        assert row["wall_time_s_mean"] == pytest.approx(statistics.fmean(s["wall_time_s"] for s in mine))
        assert row["firing_rate_mean"] == pytest.approx(statistics.fmean(s["firing_rate"] for s in mine))
        if all("test/energy_mJ" in s["test"] for s in mine):
            assert row["energy_mJ_mean"] == pytest.approx(statistics.fmean(s["test"]["test/energy_mJ"] for s in mine))

    assert main([str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert "| lif | sdt | 2 | 0 |" in capsys.readouterr().out
    assert (tmp_path / "report" / "val_acc.png").is_file()
