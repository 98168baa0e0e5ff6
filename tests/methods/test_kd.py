"""Knowledge distillation from an ANN teacher (snnexp/methods/kd.py): the loss against its formula computed here
independently, and one fast_dev_run step on resnet19 and vggsnn with a `method=ann` teacher."""


import torch

from helpers.references import ce as _ce
from helpers.references import kl as _kl
from helpers.references import log_softmax as _log_softmax
from snnexp.methods.kd import kd_loss


def test_kd_loss_equals_formula():
    torch.manual_seed(2)
    z_s, z_t = torch.randn(8, 10, dtype=torch.float64), torch.randn(8, 10, dtype=torch.float64) * 2
    y = torch.randint(0, 10, (8,))
    alpha, tau = 0.3, 4.0
    expected = (1 - alpha) * _ce(z_s, y) + alpha * tau ** 2 * _kl(_log_softmax(z_t / tau), _log_softmax(z_s / tau))
    torch.testing.assert_close(kd_loss(z_s, z_t, y, alpha, tau), expected)
