"""The Method interface (snnexp/training/method.py) as every method with training-only parts or schedules uses it:
each trains a fast_dev_run step on ResNet-19 and VGGSNN; heads and branches are the method's own submodules, absent from
prediction and from the SNN's parameters, and they round-trip through a checkpoint."""

import json

import pytest
import torch

from helpers.runs import compose_config, student_overrides
from snnexp.train import build, run


@pytest.mark.parametrize("model", ["resnet19", "vggsnn"])
@pytest.mark.parametrize("method", ["sml", "shortcut", "kd", "enof", "contrastive", "dspike", "imloss"])
def test_method_trains_one_fast_dev_run_step(method, model, teachers, tmp_path):
    cfg = compose_config(["debug=fast", "data.batch_size=4", "optim=sgd", *student_overrides(method, model, teachers)],
                         tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("method", ["sml", "shortcut"])
def test_training_only_heads_are_the_methods_own_and_absent_from_prediction(method, tmp_path):
    cfg = compose_config([*student_overrides(method, "resnet19", {}), "data.batch_size=4"], tmp_path / "run")
    _, module = build(cfg)
    snn, extras = module.model, module.method
    n_extra = sum(p.numel() for p in extras.parameters())
    assert n_extra > 0
    assert not {id(p) for p in snn.parameters()} & {id(p) for p in extras.parameters()}
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in snn.parameters()) + n_extra
    assert any(key.startswith("method.") for key in module.state_dict())  # checkpointed with the module
    x = torch.rand(3, 1, 8, 8)
    module.eval()
    with torch.no_grad():
        before = module.method.predict(module(x))
        for p in extras.parameters():  # scrambling the heads changes nothing at evaluation
            p.add_(torch.randn_like(p))
        after = module.method.predict(module(x))
        torch.testing.assert_close(before, after)
        torch.testing.assert_close(after, snn(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)).logits.mean(0))  # T=2
    with module.timesteps(5):  # evaluating at another T changes only the encoding
        assert module.encode(x).shape == (5, 3, 1, 8, 8)
    assert module.encode(x).shape[0] == 2


@pytest.mark.parametrize("method", ["sml", "shortcut"])
def test_training_only_heads_round_trip_through_a_checkpoint(method, tmp_path):
    cfg = compose_config([*student_overrides(method, "resnet19", {}), "data.batch_size=4"], tmp_path / "run")
    _, module = build(cfg)
    for p in module.method.parameters():
        p.data.normal_()
    _, fresh = build(cfg)
    fresh.load_state_dict(module.state_dict())
    for (name, a), b in zip(module.method.state_dict().items(), fresh.method.state_dict().values()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, msg=name)
