"""Standard direct training (snnexp/methods/sdt.py): CE of the time mean, and PointNet's feature-transform
regulariser, against their formulas computed independently here."""

import pytest
import torch
from torch import nn

from helpers.references import log_softmax_ce as _log_softmax_ce
from snnexp.methods import SDT
from snnexp.models.output import ModelOutput


def test_sdt_loss_is_ce_of_time_mean():
    torch.manual_seed(2)
    logits, y = torch.randn(4, 6, 10), torch.randint(0, 10, (6,))
    expected = _log_softmax_ce(logits.sum(0) / 4, y)
    assert SDT().loss(ModelOutput(logits), y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(SDT().predict(ModelOutput(logits)), logits.sum(0) / 4)


def test_sdt_feature_transform_regulariser_equals_formula():
    torch.manual_seed(5)
    logits, y, A = torch.randn(1, 4, 10), torch.randint(0, 10, (4,)), torch.randn(4, 5, 5)
    reg = sum(torch.sqrt(((A[b] @ A[b].T - torch.eye(5)) ** 2).sum()) for b in range(4)) / 4
    expected = _log_softmax_ce(logits[0], y) + 0.001 * reg
    got = SDT(transform_reg=0.001).loss(ModelOutput(logits, aux={"feature_transform": A}), y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sdt_refuses_the_regulariser_on_a_model_without_feature_transform():
    from snnexp.errors import IncompatibleError

    with pytest.raises(IncompatibleError, match="feature transform"):
        SDT(transform_reg=0.001).check(nn.Linear(2, 2), None)


# ---- official fidelity (the official code's max, loss and neuron) ----------------------------------------
def test_sdt_log_softmax_combination_is_nll_of_the_mean_log_probability():
    from snnexp.methods.sdt import SDT

    torch.manual_seed(1)
    logits, y = torch.randn(4, 5, 6), torch.randint(0, 6, (5,))
    log_p = [logits[t] - torch.logsumexp(logits[t], -1, keepdim=True) for t in range(4)]
    mean_log_p = sum(log_p) / 4
    expected = -sum(mean_log_p[b, y[b]] for b in range(5)) / 5
    method = SDT(combine="log_softmax")
    assert method.loss(ModelOutput(logits), y).item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(method.predict(ModelOutput(logits)), mean_log_p)
    smoothed = SDT(combine="log_softmax", label_smoothing=0.1).loss(ModelOutput(logits), y)
    expected_smoothed = -sum(0.9 * mean_log_p[b, y[b]] + 0.1 / 6 * mean_log_p[b].sum() for b in range(5)) / 5
    assert smoothed.item() == pytest.approx(expected_smoothed.item(), rel=1e-6)

def test_the_two_combinations_differ_at_T_above_one_and_agree_at_T_one():
    from snnexp.methods.sdt import SDT

    torch.manual_seed(2)
    y = torch.randint(0, 6, (5,))
    multi, single = torch.randn(3, 5, 6), torch.randn(1, 5, 6)
    assert SDT(combine="logits").loss(ModelOutput(multi), y) != pytest.approx(
        SDT(combine="log_softmax").loss(ModelOutput(multi), y).item())
    assert SDT(combine="logits").loss(ModelOutput(single), y).item() == pytest.approx(
        SDT(combine="log_softmax").loss(ModelOutput(single), y).item(), rel=1e-6)

def test_sdt_rejects_an_unknown_combination():
    from snnexp.methods.sdt import SDT

    with pytest.raises(ValueError, match="combine"):
        SDT(combine="mean")

def test_pointnet_presets_train_with_the_official_combination():
    from helpers.runs import compose_config

    for preset in ("pointnet_modelnet40_t1", "pointnet_modelnet10_t1"):
        assert compose_config([f"experiment={preset}"]).method.combine == "log_softmax"
    assert compose_config([]).method.combine == "logits"
