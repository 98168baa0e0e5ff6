"""Switching a model's stride-2 convolutions to im2col products (snnexp/models/strided_conv.py): which layers turn,
that the state dict and the 3x3 forward stay torch's, and the ``im2col_backward`` option of a run."""

from __future__ import annotations

import copy

import torch
from torch import nn

from helpers.models import build, seq
from helpers.runs import compose_config
from snnexp.models.strided_conv import Stride2Conv2d, convertible, use_im2col_backward
from snnexp.models.winograd import WinogradConv2d
from snnexp.train import build as build_run


def test_only_3x3_padding_1_and_1x1_stride_2_convolutions_turn():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 16, 1, 2),
                          nn.Conv2d(16, 16, 3, 2, 0), nn.Conv2d(16, 16, 3, 2, 1, groups=2),
                          nn.Conv2d(16, 16, 3, 2, 1, padding_mode="circular"), nn.Conv2d(16, 32, 3, 2, 1, bias=False),
                          nn.Conv2d(16, 16, 1, 1), nn.Conv2d(16, 16, 1, 2, 1))
    before = copy.deepcopy(model.state_dict())
    assert use_im2col_backward(model) == 3
    assert [type(m) is Stride2Conv2d for m in model] == [True, False, True, False, False, False, True, False, False]
    assert not convertible(model[0])  # already turned
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_the_forward_is_torchs():
    torch.manual_seed(0)
    model = build("vggsnn", (2, 16, 16))
    turned = copy.deepcopy(model)
    assert use_im2col_backward(turned) == 4  # layers 2, 4, 6 and 8
    x = seq(torch.rand(2, 2, 16, 16))
    with torch.no_grad():
        assert torch.equal(turned(x).logits, model(x).logits)


def test_resnet_shortcuts_turn_and_compute_as_torch_up_to_rounding():
    torch.manual_seed(0)
    model = build("resnet19", (3, 16, 16))
    turned = copy.deepcopy(model)
    shortcuts = [m for m in turned.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.stride == (2, 2)]
    assert len(shortcuts) == 2 and use_im2col_backward(turned) == 4
    assert all(type(m) is Stride2Conv2d for m in shortcuts)
    x = seq(torch.rand(2, 3, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(turned(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


def test_the_run_option_turns_them_on_and_off(tmp_path):
    """VGGSNN's four 3x3 stride-2 layers take the im2col backward with ``winograd=false``; by default they are
    Winograd's (stride 2), which turns them first."""
    counts = {}
    for overrides in (["winograd=false", "im2col_backward=true"], ["winograd=false", "im2col_backward=false"], []):
        cfg = compose_config(["model=vggsnn", "data=digits", *overrides], tmp_path / str(len(counts)))
        _, module = build_run(cfg)
        counts[" ".join(overrides) or "default"] = (sum(type(m) is Stride2Conv2d for m in module.model.modules()),
                                                   sum(type(m) is WinogradConv2d and m.stride == (2, 2)
                                                       for m in module.model.modules()))
    assert counts == {"winograd=false im2col_backward=true": (4, 0), "winograd=false im2col_backward=false": (0, 0),
                      "default": (0, 4)}
