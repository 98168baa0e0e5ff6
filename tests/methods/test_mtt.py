"""MTT (snnexp/methods/mtt.py; Du et al., ICLR 2025): mixed time-step training steps and BN recalibration against
independent code, models without stages refused, and an end-to-end run tested at every T."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.references import reference_convert
from helpers.runs import SMALL_SYNTHETIC_DVS, compose_config
from snnexp.errors import IncompatibleError
from snnexp.methods.mtt import MTT
from snnexp.models.encoders import DirectEncoder
from snnexp.models.layers import SeqToBatch
from snnexp.models.output import ModelOutput
from snnexp.neurons import LIF
from snnexp.train import build, run
from snnexp.training.mixed_time import MixedTimeStage


# ---- a small staged model ----------------------------------------------------------------------------------


class TinyStaged(nn.Module):
    """Stem Linear(3, 8) -> LIF, stages of Linear -> [BN] -> LIF, classifier Linear(8, 3); time-major input."""

    def __init__(self, bn=False):
        super().__init__()
        self.stem = nn.Sequential(SeqToBatch(nn.Linear(3, 8)), LIF(v_threshold=0.5))
        self.stages = nn.ModuleDict()
        for name in ("layer1", "layer2", "layer3"):
            layers = [SeqToBatch(nn.Linear(8, 8))] + ([SeqToBatch(nn.BatchNorm1d(8))] if bn else [])
            self.stages[name] = nn.Sequential(*layers, LIF(v_threshold=0.5))
        self.classifier = SeqToBatch(nn.Linear(8, 3))
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for p in self.parameters():
                if p.dim() == 2:
                    p.copy_(torch.rand(p.shape, generator=g) * 1.2 - 0.2)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages.values():
            x = stage(x)
        return ModelOutput(logits=self.classifier(x))


class FakeModule(nn.Module):
    """What MTT needs of the LightningModule: ``model``, ``trainer`` and a forward encoding at T (or ``self.T``)."""

    def __init__(self, model, trainer=None, T=4):
        super().__init__()
        self.model = model
        self.T = T
        if trainer is not None:
            self.trainer = trainer

    def forward(self, x, T=None):
        return self.model(x.unsqueeze(0).repeat(T or self.T, 1, 1))


def reference_loss(model, x, y, Ts):
    """The network unrolled by hand at (T_stem, T_1, ..., T_S), without the method's wrappers."""
    h = model.stem(x.unsqueeze(0).repeat(Ts[0], 1, 1))
    for stage, T in zip(model.stages.values(), Ts[1:]):
        h = reference_convert(h, T)
        for layer in stage:
            h = layer(h)
    return F.cross_entropy(model.classifier(h).mean(0), y)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_training_step_runs_each_stage_at_its_drawn_T_and_accumulates_the_draws(reduction):
    model = TinyStaged()
    method = MTT(t_min=1, t_max=5, draws=3, reduction=reduction)
    method.check(model, None)
    model = method.setup(model, None)
    assert all(isinstance(s, MixedTimeStage) for s in model.stages.values())
    seen = []
    hooks = [model.stem[0].register_forward_pre_hook(lambda m, a: seen.append(("stem", a[0].shape[0])))]
    for name, stage in model.stages.items():
        hooks.append(stage[0].register_forward_pre_hook(lambda m, a, name=name: seen.append((name, a[0].shape[0]))))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, generator=g) * 2, torch.randint(0, 3, (16,), generator=g)

    torch.manual_seed(3)
    loss, logs = method.training_step(FakeModule(model), (x, y))
    model.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for h in hooks:
        h.remove()

    draws = method.last_draws
    assert len(draws) == 3 and all(len(Ts) == 4 and all(1 <= T <= 5 for T in Ts) for Ts in draws)
    expected_seen = [(n, T) for Ts in draws for n, T in zip(("stem", "layer1", "layer2", "layer3"), Ts)]
    assert seen == expected_seen
    assert all(s.T is None for s in model.stages.values())  # restored after the step

    per_draw = [torch.autograd.grad(reference_loss(model, x, y, Ts), list(model.parameters())) for Ts in draws]
    scale = 1 / 3 if reduction == "mean" else 1.0
    for i, grad in enumerate(grads):
        torch.testing.assert_close(grad, scale * sum(d[i] for d in per_draw))
    losses = torch.stack([reference_loss(model, x, y, Ts) for Ts in draws])
    torch.testing.assert_close(loss.detach(), losses.mean() if reduction == "mean" else losses.sum())
    assert logs["mtt_T_mean"].item() == pytest.approx(sum(map(sum, draws)) / 12)


def test_evaluation_runs_every_stage_at_the_model_T():
    model = MTT().setup(TinyStaged(), None)
    seen = []
    for stage in model.stages.values():
        stage.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
        stage[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    model.eval()
    assert FakeModule(model, T=3)(torch.rand(2, 3)).logits.shape == (3, 2, 3)
    assert seen == [3] * 6


# ---- BatchNorm recalibration -------------------------------------------------------------------------------


def test_bn_recalibration_equals_the_statistics_of_the_calibration_batches_at_the_eval_T():
    model = MTT().setup(TinyStaged(bn=True), None)
    bn = model.stages["layer1"][1].module
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(7.0)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.rand(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(12)]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataloader=lambda: batches))
    model.eval()
    MTT(t_max=4, recalibration_batches=10).on_evaluation_start(FakeModule(model, trainer))

    with torch.no_grad():  # BN input of stage 1 at T = 4: stem output, then the stage's Linear
        inputs = [model.stages["layer1"][0](model.stem(x.unsqueeze(0).repeat(4, 1, 1))).flatten(0, 1)
                  for x, _ in batches[:10]]
    torch.testing.assert_close(bn.running_mean, torch.stack([h.mean(0) for h in inputs]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([h.var(0, unbiased=True) for h in inputs]).mean(0))
    assert bn.num_batches_tracked.item() == 10
    assert bn.momentum == 0.1 and not model.training and not bn.training  # momentum and eval mode restored


def test_bn_recalibration_is_skipped_without_a_trainer():
    model = MTT().setup(TinyStaged(bn=True), None)
    bn = model.stages["layer1"][1].module
    with torch.no_grad():
        bn.running_mean.fill_(5.0)
    MTT().on_evaluation_start(FakeModule(model))  # no trainer attribute at all
    from snnexp.lit import SNNModule
    module = SNNModule(model, MTT(), 3, optimizer=None, scheduler=None, encoder=DirectEncoder(), T=4, input_shape=(3,))
    MTT().on_evaluation_start(module)  # a LightningModule not attached
    assert torch.all(bn.running_mean == 5.0)


# ---- composition -------------------------------------------------------------------------------------------


def test_mtt_refuses_a_model_without_stages(tmp_path):
    cfg = compose_config(["debug=fast", "model=vggsnn", "method=mtt"], tmp_path / "run")
    with pytest.raises(IncompatibleError, match="needs a model\\s+with `stages`"):
        build(cfg)


# the token models at reduced size, on data they fit
SMALL = {
    "sdt": ["model=sdt", "model.layers=2", "model.dim=32", "model.heads=4", *SMALL_SYNTHETIC_DVS],
    "stmixer": ["model=stmixer", "model.dim=32", "model.depth=2", "model.heads=4"],
}


@pytest.mark.parametrize("model", ["sdt", "stmixer", "pointnet"])
def test_mtt_refuses_models_without_stages(model, modelnet_root, tmp_path):
    overrides = {**SMALL, "pointnet": ["model=pointnet", "data=modelnet40", f"data.root={modelnet_root}",
                                       "data.num_points=32"]}
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=4", "method=mtt", *overrides[model]], tmp_path / "run")
    with pytest.raises(IncompatibleError, match="stages"):
        run(cfg)


def test_mtt_trains_resnet19_end_to_end_and_tests_every_T(tmp_path, monkeypatch):
    calls = []
    original = MTT.recalibrate

    def counting(self, model, loader, device=None):
        calls.append((model.T, original(self, model, loader, device)))  # model: the SNNModule, T its encoding
        return calls[-1][1]

    monkeypatch.setattr(MTT, "recalibrate", counting)
    cfg = compose_config(["debug=fast", "T=4", "data.batch_size=2", "model=resnet19", "method=mtt",
                          "eval.timesteps=[1,2,4]"], tmp_path / "run")
    run(cfg)
    # validation and test at T=4, then one test per T, each after recalibrating on 10 training batches
    assert calls == [(4, 10), (4, 10), (1, 10), (2, 10), (4, 10)]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert set(summary["test_by_T"]) == {"1", "2", "4"}
    assert all("acc" in metrics for metrics in summary["test_by_T"].values())
