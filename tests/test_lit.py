"""SNNModule: it owns the input encoding, a method's extras are its submodules, and checkpoints written before
methods were modules (SNN and extras wrapped together, method state on the side) still load."""

import json

import torch

from helpers.runs import compose_config, run_cli
from snnexp.lit import upgrade_checkpoint
from snnexp.train import build

SML_DIGITS = ["method=sml", "model=convnet", "data=digits", "T=2"]


def _old_layout(checkpoint: dict) -> dict:
    """The same checkpoint as the snnexp before this change wrote it: ``model.snn.*``, ``model.extras.*`` and a
    ``method_state`` entry (the method's non-tensor state), computed here independently of the upgrade code."""
    weights = {}
    for key, value in checkpoint["state_dict"].items():
        if key.startswith("model."):
            key = "model.snn." + key[len("model."):]
        elif key.startswith("method.branches."):
            key = "model.extras." + key[len("method.branches."):]
        weights[key] = value
    return {**checkpoint, "state_dict": weights, "method_state": {}}


def test_old_sml_checkpoint_is_upgraded_to_the_same_weights(tmp_path):
    _, module = build(compose_config(SML_DIGITS, tmp_path / "run"))
    for p in module.parameters():
        p.data.normal_()
    current = {"state_dict": module.state_dict()}
    upgraded = _old_layout(current)
    upgrade_checkpoint(upgraded, module.method)
    assert "method_state" not in upgraded
    assert upgraded["state_dict"].keys() == current["state_dict"].keys()
    _, fresh = build(compose_config(SML_DIGITS, tmp_path / "run2"))
    fresh.load_state_dict(upgraded["state_dict"])
    for key, value in module.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value, msg=key)


def test_old_dspike_state_becomes_the_methods_extra_state(tmp_path):
    _, module = build(compose_config(["method=dspike", "T=2"], tmp_path / "run"))
    checkpoint = {"state_dict": {k: v for k, v in module.state_dict().items() if k != "method._extra_state"},
                  "method_state": {"b": 4.5}}
    upgrade_checkpoint(checkpoint, module.method)
    module.load_state_dict(checkpoint["state_dict"])
    assert module.method.b == 4.5 and module.method.surrogate.alpha == 4.5


def test_a_run_resumes_from_an_old_layout_checkpoint(tmp_path):
    first = tmp_path / "first"
    args = [*SML_DIGITS, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "trainer.enable_progress_bar=false"]
    proc = run_cli(*args, "trainer.max_epochs=1", f"hydra.run.dir={first}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    old = tmp_path / "old.ckpt"
    torch.save(_old_layout(torch.load(first / "checkpoints" / "last.ckpt", weights_only=False)), old)
    second = tmp_path / "second"
    proc = run_cli(*args, "trainer.max_epochs=2", f"resume={old}", f"hydra.run.dir={second}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2 and summary["resumed_from"] == str(old)


def test_module_encodes_static_inputs_once_at_its_T_and_passes_sequences_through(tmp_path):
    _, module = build(compose_config(["T=3"], tmp_path / "run"))
    x = torch.rand(5, 1, 8, 8)
    encoded = module.encode(x)
    assert encoded.shape == (3, 5, 1, 8, 8) and all(torch.equal(step, x) for step in encoded)
    sequence = torch.rand(2, 5, 1, 8, 8)
    assert module.encode(sequence) is sequence
    with module.timesteps(7):
        assert module.encode(x).shape[0] == 7 and module(x).logits.shape == (7, 5, 10)
    assert module.T == 3


def test_ann_baseline_encodes_one_step(tmp_path):
    _, module = build(compose_config(["method=ann", "T=4"], tmp_path / "run"))
    assert module.T == 1 and module(torch.rand(2, 1, 8, 8)).logits.shape == (1, 2, 10)
