"""Dspike's evolving temperature (snnexp/methods/dspike.py; Li et al., NeurIPS 2021), checked against independent
finite differences, and a fast_dev_run on resnet19 and vggsnn."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers.tiny import FakeModule, TinySNN
from helpers.tiny import tiny_batch as _batch
from snnexp.methods.dspike import Dspike, orthonormal_directions


def test_orthonormal_directions_are_orthonormal():
    d = orthonormal_directions(6, 6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(d @ d.T, torch.eye(6, dtype=torch.float64))


def test_dspike_picks_the_temperature_whose_gradient_best_matches_the_finite_differences():
    torch.manual_seed(0)
    model = TinySNN()
    module = FakeModule(model)
    method = Dspike(b0=2.0, delta_b=1.0, directions=5, fd_step=0.3, seed=7)
    method.setup(model, None)
    x, y = _batch(B=256)
    W = model.fc1.module.weight
    # independent reference on the same directions: the method draws them from seed * 100003 + epoch
    g = torch.Generator().manual_seed(7 * 100_003 + 0)
    q, _ = torch.linalg.qr(torch.randn(W.numel(), 5, generator=g, dtype=torch.float64))
    dirs = q.T.float()
    h = 0.3 * W.norm().item() / math.sqrt(W.numel())
    model.eval()
    original = W.detach().clone()
    fd = []
    with torch.no_grad():
        for d in dirs:
            W.copy_(original + h * d.view_as(W))
            plus = F.cross_entropy(model(x).logits.mean(0), y)
            W.copy_(original - h * d.view_as(W))
            minus = F.cross_entropy(model(x).logits.mean(0), y)
            fd.append(((plus - minus) / (2 * h)).item())
        W.copy_(original)
    fd = torch.tensor(fd)
    cosines = {}
    for b in (1.0, 2.0, 3.0):
        method.surrogate.alpha = b
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x).logits.mean(0), y), W)
        proj = dirs @ grad.reshape(-1)
        cosines[b] = (proj @ fd / (proj.norm() * fd.norm())).item()
    model.train()
    method.surrogate.alpha = 2.0
    chosen = method.search_temperature(module, (x, y), epoch=0)
    assert fd.abs().sum() > 0 and len({round(c, 4) for c in cosines.values()}) == 3
    assert method.last_similarities == pytest.approx(cosines, abs=1e-4)
    assert chosen == max(cosines, key=cosines.get)
    assert all(n.surrogate.alpha == chosen for n in (model.n1, model.n2, model.n3))
    assert torch.equal(W, original)  # the probes leave the weights as they were


def test_dspike_temperature_moves_at_most_one_step_per_epoch_and_stays_in_bounds():
    torch.manual_seed(1)
    model = TinySNN()
    module = FakeModule(model)
    method = Dspike(b0=1.0, delta_b=0.5, b_min=0.5, b_max=1.5, directions=4)
    method.setup(model, None)
    history = [method.b]
    for epoch in range(5):
        module.current_epoch = epoch
        _, logs = method.training_step(module, _batch(epoch))
        _, logs_again = method.training_step(module, _batch(epoch + 10))  # same epoch: no new search
        assert logs["dspike_b"].item() == logs_again["dspike_b"].item() == method.b
        history.append(method.b)
    steps = [round(abs(a - b), 6) for a, b in zip(history, history[1:])]
    assert set(steps) <= {0.0, 0.5} and all(0.5 <= b <= 1.5 for b in history)
