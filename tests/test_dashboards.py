"""Dashboards that line methods up (snnexp/dashboards.py, snnexp/spike_plots.py): each run is one TensorBoard HParams
session with its choices and results, its wandb config holds the choices flat and its wandb summary the results, and
``callbacks=spike_plots`` logs spike rasters and firing-rate bars as images. Everything is read back from the files
the loggers wrote: TensorBoard's event files and wandb's offline record log."""

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.runs import SHORT, compose_config, run_cli

HP_TAGS = {"hp/best_val_acc", "hp/test_acc", "hp/test_energy_mJ", "hp/test_sops", "hp/firing_rate"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two short runs (sdt and tet on digits, 2 epochs) with TensorBoard, wandb (offline) and spike plots every
    2nd epoch of 8 neurons a layer; returns the sweep directory and its jobs' summaries."""
    tmp = tmp_path_factory.mktemp("dashboards")
    proc = run_cli("-m", "method=sdt,tet", "logger=many", "+callbacks=spike_plots",
                   "callbacks.spike_plots.every_n_epochs=2", "callbacks.spike_plots.neurons_per_layer=8",
                   *SHORT, f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (tmp / "sweep").iterdir() if p.is_dir() and p.name.isdigit())
    summaries = {job: json.loads((job / "summary.json").read_text()) for job in jobs}
    assert [s["status"] for s in summaries.values()] == ["completed", "completed"]
    assert "could not log" not in proc.stderr + proc.stdout
    return tmp / "sweep", summaries


# ---- reading the files back ---------------------------------------------------------------------------------------


def tensorboard_events(log_dir: Path):
    """Every summary value of every event file under ``log_dir``: ``(step, value)`` in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                yield event.step, value


def hparams_records(log_dir: Path) -> dict[str, list]:
    """The HParams plugin's records of one TensorBoard run, by kind (experiment, session_start_info, ...)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    records = {}
    for _, value in tensorboard_events(log_dir):
        if value.metadata.plugin_data.plugin_name == "hparams":
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            records.setdefault(data.WhichOneof("data"), []).append(getattr(data, data.WhichOneof("data")))
    return records


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(run_dir: Path):
    """The records of an offline wandb run (``run-<id>.wandb``): a 7-byte header, then LevelDB's log format (32 KiB
    blocks of chunks with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(chunks)
            chunks = b""


def wandb_config_and_summary(job: Path) -> tuple[dict, dict]:
    """The wandb run's config and summary as its updates leave them (nested summary keys joined with '/')."""
    (run_dir,) = (job / "wandb").glob("offline-run-*")
    config, summary = {}, {}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind in ("config", "summary"):
            for update in getattr(record, kind).update:
                key = update.key or "/".join(update.nested_key)
                (config if kind == "config" else summary)[key] = json.loads(update.value_json)
    return config, summary


def expected_results(summary: dict) -> dict[str, float]:
    """The HParams metrics a run's summary.json gives, missing ones left out."""
    test = summary["test"]
    values = {"hp/best_val_acc": summary["best"].get("score"), "hp/test_acc": test.get("test/acc"),
              "hp/test_energy_mJ": test.get("test/energy_mJ"), "hp/test_sops": test.get("test/sops"),
              "hp/firing_rate": summary["firing_rate"]}
    return {tag: value for tag, value in values.items() if value is not None}


# ---- TensorBoard HParams ------------------------------------------------------------------------------------------


def test_each_run_is_one_hparams_session_with_its_choices_and_the_results_as_metrics(sweep):
    sweep_dir, summaries = sweep
    for job, summary in summaries.items():
        records = hparams_records(job / "tensorboard")
        assert {kind: len(r) for kind, r in records.items()} == {
            "experiment": 1, "session_start_info": 1, "session_end_info": 1}, job
        (experiment,) = records["experiment"]
        assert {m.name.tag for m in experiment.metric_infos} == HP_TAGS  # every column, whatever this run has
        (start,) = records["session_start_info"]
        hparams = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
        config = summary["config"]
        assert {key: hparams[key] for key in ("method", "model", "neuron", "data", "optim", "scheduler")} == {
            key: config[key] for key in ("method", "model", "neuron", "data", "optim", "scheduler")}
        assert (hparams["T"], hparams["seed"], hparams["batch_size"], hparams["max_epochs"]) == (
            config["T"], config["seed"], config["batch_size"], config["max_epochs"])
        assert hparams["lr"] == pytest.approx(config["optimizer"]["lr"])
        assert hparams["status"] == "completed"
        assert records["session_end_info"][0].status == 1  # STATUS_SUCCESS
    methods = sorted(s["config"]["method"] for s in summaries.values())
    assert methods == ["sdt", "tet"]


def test_hparams_metrics_are_scalars_holding_the_summary_values(sweep):
    _, summaries = sweep
    for job, summary in summaries.items():
        logged = scalars(job / "tensorboard")
        expected = expected_results(summary)
        assert {"hp/best_val_acc", "hp/test_acc", "hp/firing_rate"} <= set(expected)
        assert {tag for tag in logged if tag.startswith("hp/")} == set(expected)
        for tag, value in expected.items():
            assert logged[tag] == [(summary["global_step"], pytest.approx(value, rel=1e-6))], tag


def test_a_failed_run_is_a_failed_session_without_the_results_it_does_not_have(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from snnexp.dashboards import log_run_results, wandb_summary

    summary = {"status": "failed", "test": {}, "best": {}, "firing_rate": None, "global_step": 3,
               "config": {"method": "tet", "model": "convnet", "neuron": "tet_lif", "data": "digits", "T": 2,
                          "seed": 1, "optimizer": {"lr": 0.01}, "batch_size": None, "max_epochs": 5}}
    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    log_run_results([logger], summary)
    logger.finalize("failed")
    records = hparams_records(tmp_path / "tb")
    (start,) = records["session_start_info"]
    assert start.hparams["status"].string_value == "failed" and start.hparams["method"].string_value == "tet"
    assert "batch_size" not in start.hparams  # None: left out, not a placeholder
    assert records["session_end_info"][0].status == 2  # STATUS_FAILURE
    assert not [tag for tag in scalars(tmp_path / "tb") if tag.startswith("hp/")]
    assert wandb_summary(summary) == {"status": "failed"}


# ---- wandb ---------------------------------------------------------------------------------------------------------


def test_wandb_config_holds_the_choices_flat_and_the_whole_config_nested(sweep):
    _, summaries = sweep
    for job, summary in summaries.items():
        config, _ = wandb_config_and_summary(job)
        for key in ("method", "model", "neuron", "data", "T", "seed", "max_epochs", "batch_size"):
            assert config[key] == summary["config"][key], key
        assert config["lr"] == pytest.approx(summary["config"]["optimizer"]["lr"])
        nested = config["cfg"]
        assert nested["method"]["_target_"].startswith("snnexp.methods.")
        assert nested["T"] == summary["config"]["T"] and nested["optim"]["lr"] == config["lr"]


def test_wandb_summary_holds_the_run_results(sweep):
    _, summaries = sweep
    for job, summary in summaries.items():
        _, logged = wandb_config_and_summary(job)
        expected = {"best/val_acc": summary["best"]["score"], "firing_rate": summary["firing_rate"],
                    **{key: summary["test"][key] for key in ("test/acc", "test/energy_mJ", "test/sops")
                       if key in summary["test"]}}
        for key, value in expected.items():
            assert logged[key] == pytest.approx(value, rel=1e-6), key
        assert logged["status"] == "completed" and logged["num_parameters"] == summary["num_parameters"]


# ---- spike plots ---------------------------------------------------------------------------------------------------


def test_spike_plots_log_a_raster_per_layer_and_firing_rate_bars_to_tensorboard(sweep):
    from tensorboard.util import tensor_util

    _, summaries = sweep
    for job, summary in summaries.items():
        layers = list(summary["firing_rates"])
        assert layers  # conv1.1 and conv2.1
        images = {}
        for step, value in tensorboard_events(job / "tensorboard"):
            if value.metadata.plugin_data.plugin_name == "images":
                images.setdefault(value.tag, []).append((step, tensor_util.make_ndarray(value.tensor)))
        assert set(images) == {f"spikes/{layer}" for layer in layers} | {"firing_rates"}
        for tag, logged in images.items():
            (step, (width, height, png)), = logged  # every 2nd epoch of 2: epoch 0 only
            assert int(width) > 100 and int(height) > 100 and png.startswith(PNG), tag


def test_spike_plots_write_wandb_image_files(sweep):
    _, summaries = sweep
    for job, summary in summaries.items():
        (run_dir,) = (job / "wandb").glob("offline-run-*")
        images = run_dir / "files" / "media" / "images"
        for layer in summary["firing_rates"]:
            (raster,) = (images / "spikes").glob(f"{layer}_*.png")
            assert raster.read_bytes().startswith(PNG)
        (bars,) = images.glob("firing_rates_*.png")
        assert bars.read_bytes().startswith(PNG)
        _, logged = wandb_config_and_summary(job)
        assert logged["firing_rates/_type"] == "images/separated"


def test_spike_plots_are_off_by_default_and_come_with_the_default_callbacks():
    assert "spike_plots" not in compose_config([]).callbacks
    cfg = compose_config(["callbacks=spike_plots"])
    assert set(cfg.callbacks) == {"model_checkpoint", "exact_resume", "spike_plots"}
    assert (cfg.callbacks.spike_plots.every_n_epochs, cfg.callbacks.spike_plots.neurons_per_layer) == (1, 32)


def test_spike_plots_record_the_first_samples_spikes_of_evenly_spaced_neurons_on_the_first_batch_only(tmp_path):
    from snnexp.neurons import MultiStepNeuron
    from snnexp.spike_plots import SpikePlots
    from snnexp.train import build

    datamodule, module = build(compose_config(["T=3"], tmp_path))
    module.eval()
    neurons = {name: m for name, m in module.model.named_modules() if isinstance(m, MultiStepNeuron)}
    outputs = {}
    for name, neuron in neurons.items():  # what each layer really fires, to compare the recording with
        neuron.register_forward_hook(lambda m, i, out, name=name: outputs.__setitem__(name, out.detach()))
    hooks = {name: len(n._forward_hooks) for name, n in neurons.items()}  # ours and snnexp's own (spike packing)
    callback = SpikePlots(neurons_per_layer=5)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0)
    x = torch.rand(2, *datamodule.input_shape)

    callback.on_validation_batch_start(trainer, module, (x, None), batch_idx=0)
    with torch.no_grad():
        module(x)
    callback.on_validation_batch_end(trainer, module, None, (x, None), batch_idx=0)
    assert set(callback._spikes) == set(neurons)
    for name, recorded in callback._spikes.items():
        first = outputs[name][:, 0].reshape(3, -1)
        picked = [round(i * (first.shape[1] - 1) / 4) for i in range(5)]
        assert torch.equal(recorded, first[:, picked].float()), name
    assert {name: len(n._forward_hooks) for name, n in neurons.items()} == hooks  # the callback's are gone

    callback.on_validation_batch_start(trainer, module, (x, None), batch_idx=1)
    assert {name: len(n._forward_hooks) for name, n in neurons.items()} == hooks  # later batches: no hooks added
