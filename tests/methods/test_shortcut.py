"""Shortcut heads (snnexp/methods/shortcut.py; Guo et al., NeurIPS 2024): the balance decays from beta0 to zero over
the epochs and is checkpointed, the heads are the method's own training-only modules (absent from prediction), one
fast_dev_run step on resnet19 and vggsnn, and a model without taps refused at start-up."""

import json
import math

import pytest
import torch

from helpers.runs import compose_config, student_overrides
from helpers.tiny import NoTaps as _NoTaps
from helpers.tiny import TinyData as _Data
from snnexp.errors import IncompatibleError
from snnexp.methods.shortcut import Shortcut, balance
from snnexp.train import build, run


def test_shortcut_balance_decays_from_beta0_to_zero_over_the_epochs():
    E, beta0 = 5, 2.0
    method = Shortcut(beta0=beta0, schedule="cosine")
    seen = []
    for e in range(E):
        method.on_train_epoch_start(e, E)
        seen.append(method.beta)
    assert seen == pytest.approx([beta0 * 0.5 * (1 + math.cos(math.pi * e / (E - 1))) for e in range(E)])
    assert seen[0] == pytest.approx(beta0) and seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(x >= y for x, y in zip(seen, seen[1:]))
    assert [balance(e, E, beta0, "linear") for e in range(E)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert [balance(e, E, beta0, "constant") for e in range(E)] == pytest.approx([beta0] * E)
    assert method.state_dict()["_extra_state"] == {"beta": seen[-1]}  # saved in checkpoints with the module
    restored = Shortcut(beta0=beta0)
    restored.load_state_dict(method.state_dict())
    assert restored.beta == pytest.approx(seen[-1])


@pytest.mark.parametrize("model", ["resnet19", "vggsnn"])
@pytest.mark.parametrize("method", ["shortcut"])
def test_method_trains_one_fast_dev_run_step(method, model, teachers, tmp_path):
    cfg = compose_config(["debug=fast", "data.batch_size=4", "optim=sgd", *student_overrides(method, model, teachers)],
                         tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("method", ["shortcut"])
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


@pytest.mark.parametrize("method", ["shortcut"])
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


@pytest.mark.parametrize("method", [Shortcut()], ids=["Shortcut"])
def test_model_without_taps_is_refused_with_one_clear_message(method):
    with pytest.raises(IncompatibleError, match=r"needs .*(taps|features)"):
        method.check(_NoTaps(), _Data())
