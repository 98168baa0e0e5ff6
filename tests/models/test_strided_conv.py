"""Switching a model's 3x3 stride-2 convolutions to the im2col backward (snnexp/models/strided_conv.py): which
layers turn, that the state dict and the forward stay torch's, and the ``im2col_backward`` option of a run."""

from __future__ import annotations

import copy

import torch
from torch import nn

from helpers.models import build, seq
from helpers.runs import compose_config
from snnexp.models.strided_conv import Stride2Conv2d, convertible, use_im2col_backward
from snnexp.train import build as build_run


def test_only_3x3_stride_2_padding_1_convolutions_turn():
    model = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 16, 1, 2),
                          nn.Conv2d(16, 16, 3, 2, 0), nn.Conv2d(16, 16, 3, 2, 1, groups=2),
                          nn.Conv2d(16, 16, 3, 2, 1, padding_mode="circular"), nn.Conv2d(16, 32, 3, 2, 1, bias=False))
    before = copy.deepcopy(model.state_dict())
    assert use_im2col_backward(model) == 2
    assert [type(m) is Stride2Conv2d for m in model] == [True, False, False, False, False, False, True]
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


def test_the_run_option_turns_them_on_and_off(tmp_path):
    counts = {}
    for switch in ("true", "false"):
        cfg = compose_config(["model=vggsnn", "data=digits", f"im2col_backward={switch}"], tmp_path / switch)
        _, module = build_run(cfg)
        counts[switch] = sum(type(m) is Stride2Conv2d for m in module.model.modules())
    assert counts == {"true": 4, "false": 0}
