"""The seed methods' losses against their formulas, computed independently here."""


import pytest
import torch
from torch import nn

from snnexp.methods import ANN, SDT, TET
from snnexp.models.output import ModelOutput


def _log_softmax_ce(logits_2d, target):
    """Cross-entropy written out: mean over samples of logsumexp(z) - z_y."""
    return sum(
        torch.logsumexp(logits_2d[i], 0) - logits_2d[i, target[i]] for i in range(len(target))
    ) / len(target)


def test_tet_loss_equals_formula():
    torch.manual_seed(0)
    T, B, C, lamb, phi = 3, 5, 4, 0.3, 1.0
    logits = torch.randn(T, B, C)
    y = torch.randint(0, C, (B,))
    ce_per_step = sum(_log_softmax_ce(logits[t], y) for t in range(T)) / T
    mse = sum((logits[t, b, c] - phi) ** 2 for t in range(T) for b in range(B) for c in range(C)) / (T * B * C)
    expected = (1 - lamb) * ce_per_step + lamb * mse
    got = TET(lamb=lamb, phi=phi).loss(ModelOutput(logits=logits), y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_tet_without_regulariser_is_mean_of_per_step_ce():
    torch.manual_seed(1)
    logits, y = torch.randn(4, 6, 10), torch.randint(0, 10, (6,))
    expected = sum(_log_softmax_ce(logits[t], y) for t in range(4)) / 4
    assert TET(lamb=0.0).loss(ModelOutput(logits), y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_tet_rejects_lambda_outside_unit_interval():
    with pytest.raises(ValueError, match="lamb"):
        TET(lamb=1.5)


def test_sdt_loss_is_ce_of_time_mean():
    torch.manual_seed(2)
    logits, y = torch.randn(4, 6, 10), torch.randint(0, 10, (6,))
    expected = _log_softmax_ce(logits.sum(0) / 4, y)
    assert SDT().loss(ModelOutput(logits), y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(SDT().predict(ModelOutput(logits)), logits.sum(0) / 4)


class _Tiny(nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.block = nn.Sequential(neuron())
        self.act = neuron()


def test_ann_replaces_every_neuron_with_relu_and_runs_one_step():
    from snnexp.neurons import LIF, MultiStepNeuron

    model = _Tiny(LIF)

    class StaticData:
        time_steps = None

    ANN().setup(model, StaticData())
    assert not any(isinstance(m, MultiStepNeuron) for m in model.modules())
    assert isinstance(model.act, nn.ReLU) and isinstance(model.block[0], nn.ReLU)
    assert ANN().timesteps(4) == 1  # static inputs run one step


def test_tet_with_soft_targets_equals_the_formula_with_probabilities():
    torch.manual_seed(3)
    T, B, C, lamb = 2, 3, 5, 0.2
    logits, probs = torch.randn(T, B, C), torch.softmax(torch.randn(B, C), -1)
    ce = sum(-(probs[b] * torch.log_softmax(logits[t, b], 0)).sum() for t in range(T) for b in range(B)) / (T * B)
    expected = (1 - lamb) * ce + lamb * ((logits - 1.0) ** 2).mean()
    got = TET(lamb=lamb).loss(ModelOutput(logits), probs)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


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
