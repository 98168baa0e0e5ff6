"""SML, shortcut heads, KD, EnOF and contrastive learning: each loss equals its formula computed here
independently, the shortcut balance decays over epochs, training-only heads vanish from evaluation and the
exported parameter count, the ANN teacher stays frozen and out of the optimiser, every method trains one
fast_dev_run step on resnet19 and vggsnn, and a model without the needed taps is refused at start-up."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import compose_config
from snnexp.errors import IncompatibleError, SnnexpError
from hydra.utils import instantiate
from snnexp.methods.contrastive import info_nce
from snnexp.methods.enof import EnOF, af_loss
from snnexp.methods.kd import kd_loss
from snnexp.methods.shortcut import Shortcut, balance
from snnexp.methods.sml import SML, sml_loss
from snnexp.models.layers import SpikingModel
from snnexp.models.output import ModelOutput
from snnexp.neurons import MultiStepNeuron
from snnexp.train import build, run

DISTILL = ["kd", "enof", "contrastive"]
METHODS = ["sml", "shortcut", *DISTILL]
DATA = {
    "resnet19": ["data=digits"],
    "vggsnn": ["data=synthetic_dvs", "data.num_train=8", "data.num_val=4", "data.num_test=4", "data.sensor=16"],
}


# ---- independent references ----------------------------------------------------------------------------
def _log_softmax(z):
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def _ce(z, y):
    return -_log_softmax(z)[torch.arange(len(y)), y].mean()


def _kl(p_log, q_log):
    """KL(P || Q) = sum_c P_c (log P_c - log Q_c), batch mean, from log-probabilities."""
    return (torch.exp(p_log) * (p_log - q_log)).sum(-1).mean()


def test_sml_loss_equals_formula():
    torch.manual_seed(0)
    f, a1, a2 = (torch.randn(6, 5, dtype=torch.float64) * 3 for _ in range(3))
    y = torch.randint(0, 5, (6,))
    tau, alpha, lamb = 3.0, 0.5, 0.9
    hard = (_ce(f, y) + alpha * (_ce(a1, y) + _ce(a2, y))) / (2 * alpha + 1)
    p = {k: _log_softmax(v / tau) for k, v in (("f", f), ("a1", a1), ("a2", a2))}
    # KL(a || sg f) trains a towards f: the reference distribution is f's
    soft = (_kl(p["f"], p["a1"]) + _kl(p["a1"], p["f"]) + _kl(p["f"], p["a2"]) + _kl(p["a2"], p["f"])) / 4
    loss, got_hard, got_soft = sml_loss(f, [a1, a2], y, tau, alpha, lamb)
    torch.testing.assert_close(got_hard, hard)
    torch.testing.assert_close(got_soft, soft)
    torch.testing.assert_close(loss, lamb * soft + (1 - lamb) * hard)


def test_sml_soft_term_stops_the_gradient_of_its_reference():
    """With lamb = 1 the gradient reaching f comes only from KL(f || sg a): d/df of sum_c p_a log(p_a / p_f)."""
    torch.manual_seed(1)
    f = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    a = torch.randn(4, 3, dtype=torch.float64)
    tau = 3.0
    sml_loss(f, [a], torch.zeros(4, dtype=torch.long), tau, 0.5, 1.0)[0].backward()
    # soft = [KL(a||sg f) + KL(f||sg a)] / 2; only the second depends on f with a gradient:
    # d/df (1/B) sum p_a (log p_a - log_softmax(f/tau)) / 2 = (softmax(f/tau) - p_a) / (2 B tau)
    expected = (torch.softmax(f.detach() / tau, -1) - torch.softmax(a / tau, -1)) / (2 * 4 * tau)
    torch.testing.assert_close(f.grad, expected)


def test_kd_loss_equals_formula():
    torch.manual_seed(2)
    z_s, z_t = torch.randn(8, 10, dtype=torch.float64), torch.randn(8, 10, dtype=torch.float64) * 2
    y = torch.randint(0, 10, (8,))
    alpha, tau = 0.3, 4.0
    expected = (1 - alpha) * _ce(z_s, y) + alpha * tau ** 2 * _kl(_log_softmax(z_t / tau), _log_softmax(z_s / tau))
    torch.testing.assert_close(kd_loss(z_s, z_t, y, alpha, tau), expected)


def test_enof_af_loss_equals_formula():
    torch.manual_seed(3)
    W, b = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    f_s, f_a = torch.rand(7, 12, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64)
    tau = 2.0
    z_s, z_a = f_s @ W.t() + b, f_a @ W.t() + b
    expected = tau ** 2 * _kl(_log_softmax(z_a / tau), _log_softmax(z_s / tau))
    torch.testing.assert_close(af_loss(f_s, f_a, lambda v: v @ W.t() + b, tau), expected)


def test_contrastive_info_nce_equals_formula():
    torch.manual_seed(4)
    s, a = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    tau = 0.1
    total = 0.0
    for i in range(6):
        sims = [torch.dot(s[i], a[j]) / (s[i].norm() * a[j].norm()) / tau for j in range(6)]
        total += -(sims[i] - torch.log(sum(torch.exp(v) for v in sims)))
    torch.testing.assert_close(info_nce(s, a, tau), total / 6)


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


# ---- building real models ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """One `method=ann` checkpoint per student model (debug=short: 2 batches of one epoch)."""
    root = tmp_path_factory.mktemp("teachers")
    ckpts = {}
    for model, data in DATA.items():
        cfg = compose_config(["debug=short", "method=ann", f"model={model}", "T=2", "data.batch_size=4",
                              "optim=sgd", *data], root / model)
        run(cfg)
        ckpts[model] = str(root / model / "checkpoints" / "last.ckpt")
        assert Path(ckpts[model]).is_file()
    return ckpts


def _overrides(method, model, teachers):
    extra = [f"method.teacher_ckpt={teachers[model]}"] if method in DISTILL else []
    return [f"method={method}", f"model={model}", "T=2", *DATA[model], *extra]


@pytest.mark.parametrize("model", ["resnet19", "vggsnn"])
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_one_fast_dev_run_step(method, model, teachers, tmp_path):
    cfg = compose_config(["debug=fast", "data.batch_size=4", "optim=sgd", *_overrides(method, model, teachers)],
                         tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 0.0 <= summary["test"]["test/acc"] <= 1.0


@pytest.mark.parametrize("method", ["sml", "shortcut"])
def test_training_only_heads_are_the_methods_own_and_absent_from_prediction(method, tmp_path):
    cfg = compose_config([*_overrides(method, "resnet19", {}), "data.batch_size=4"], tmp_path / "run")
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
    cfg = compose_config([*_overrides(method, "resnet19", {}), "data.batch_size=4"], tmp_path / "run")
    _, module = build(cfg)
    for p in module.method.parameters():
        p.data.normal_()
    _, fresh = build(cfg)
    fresh.load_state_dict(module.state_dict())
    for (name, a), b in zip(module.method.state_dict().items(), fresh.method.state_dict().values()):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, msg=name)


def test_sml_default_taps_per_family(tmp_path):
    expected = {"resnet19": ["layer1", "layer2"], "resnet18": ["layer2", "layer3"], "vggsnn": ["conv3", "conv6"],
                "convnet": ["conv1"]}
    for model, taps in expected.items():
        cfg = compose_config(["method=sml", f"model={model}", "T=1", "data=digits"], tmp_path / model)
        _, module = build(cfg)
        assert list(module.method.branches) == taps, model


@pytest.mark.parametrize("method", DISTILL)
def test_teacher_is_frozen_and_outside_the_optimiser(method, teachers, tmp_path):
    cfg = compose_config([*_overrides(method, "resnet19", teachers), "data.batch_size=4"], tmp_path / "run")
    datamodule, module = build(cfg)
    teacher = module.method._teacher.net
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in module.parameters()}
    assert not any(k.startswith("method._teacher") for k in module.state_dict())  # never written into checkpoints
    optimizer = instantiate(cfg.optim)(module.parameters())
    assert not teacher_ids & {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module.train()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss, _ = module.method.training_step(module, (x, y))
    loss.backward()
    optimizer.step()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"teacher tensor {k} changed")


def test_enof_replaces_the_last_spiking_neuron_by_relu(teachers, tmp_path):
    cfg = compose_config(_overrides("enof", "resnet19", teachers), tmp_path / "run")
    _, module = build(cfg)
    assert module.method.replaced_neuron == "head.1"  # ResNet-19's fc -> neuron head, producing "features"
    assert isinstance(module.model.head[1], nn.ReLU)
    assert sum(isinstance(m, MultiStepNeuron) for m in module.model.modules()) > 0


def test_missing_teacher_checkpoint_says_how_to_make_one(tmp_path):
    cfg = compose_config(["method=kd", f"method.teacher_ckpt={tmp_path / 'nope.ckpt'}"], tmp_path / "run")
    with pytest.raises(SnnexpError, match=r"python -m snnexp method=ann model=<m> data=<d>"):
        build(cfg)


def test_teacher_of_another_shape_is_refused(teachers, tmp_path):
    cfg = compose_config(["method=kd", "model=convnet", "data=digits", f"method.teacher_ckpt={teachers['resnet19']}"],
                         tmp_path / "run")
    with pytest.raises(IncompatibleError, match="does not fit"):
        build(cfg)


class _NoTaps(SpikingModel):
    """A model exposing logits only: no stage taps, no features, no classifier."""

    def __init__(self):
        super().__init__((1, 8, 8), 10)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return ModelOutput(logits=self.fc(self.check_sequence(x).flatten(2)))


class _Data:
    input_shape, num_classes, time_steps = (1, 8, 8), 10, None


@pytest.mark.parametrize("method", [SML(), Shortcut(), EnOF()])
def test_model_without_taps_is_refused_with_one_clear_message(method):
    with pytest.raises(IncompatibleError, match=r"needs .*(taps|features)"):
        method.check(_NoTaps(), _Data())


def test_contrastive_without_taps_is_refused(tmp_path):
    from snnexp.methods.contrastive import Contrastive

    with pytest.raises(IncompatibleError, match="needs intermediate feature taps"):
        Contrastive().check(_NoTaps(), _Data())


def test_summary_counts_only_the_snn_and_names_layers_as_in_the_bare_model(tmp_path):
    import json

    from conftest import compose_config
    from snnexp.train import run

    cfg = compose_config(["debug=short", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "method=sml"],
                         tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_parameters"] == 29_162  # the bare convnet on 1x8x8, without the SML branch
    assert set(summary["firing_rates"]) == {"conv1.1", "conv2.1"}
