"""TET (snnexp/methods/tet.py; Deng et al., ICLR 2022): the loss against its formula, computed independently here."""

import pytest
import torch

from helpers.references import log_softmax_ce as _log_softmax_ce
from snnexp.methods import TET
from snnexp.models.output import ModelOutput


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


def test_tet_with_soft_targets_equals_the_formula_with_probabilities():
    torch.manual_seed(3)
    T, B, C, lamb = 2, 3, 5, 0.2
    logits, probs = torch.randn(T, B, C), torch.softmax(torch.randn(B, C), -1)
    ce = sum(-(probs[b] * torch.log_softmax(logits[t, b], 0)).sum() for t in range(T) for b in range(B)) / (T * B)
    expected = (1 - lamb) * ce + lamb * ((logits - 1.0) ** 2).mean()
    got = TET(lamb=lamb).loss(ModelOutput(logits), probs)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
