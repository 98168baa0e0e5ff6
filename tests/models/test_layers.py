"""Time folding and the shared model layers (snnexp/models/layers.py): BatchNorm statistics over time and batch, T
read from the input sequence, the input-rank check, and drop path shared by every time step."""

import pytest
import torch
from torch import nn

from helpers.models import B, C, build, seq
from snnexp.models import SeqToBatch
from snnexp.models.encoders import PoissonEncoder
from snnexp.models.layers import SeqDropPath


def test_seq_to_batch_batchnorm_pools_statistics_over_time():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 5, 5) + torch.arange(3.0).view(3, 1, 1, 1, 1) * 10  # a different mean per step
    bn_layer = SeqToBatch(nn.BatchNorm2d(2, momentum=0.1)).train()
    y = bn_layer(x)
    assert y.shape == x.shape
    pooled = x.transpose(1, 2).reshape(3, 2, -1).transpose(0, 1).reshape(2, -1)  # [C, T*B*H*W]
    torch.testing.assert_close(bn_layer.module.running_mean, 0.1 * pooled.mean(1))
    torch.testing.assert_close(bn_layer.module.running_var, 0.9 + 0.1 * pooled.var(1, unbiased=True))
    mean, var = pooled.mean(1).view(1, 1, 2, 1, 1), pooled.var(1, unbiased=False).view(1, 1, 2, 1, 1)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))


def test_T_is_read_from_the_input_sequence_and_the_model_holds_none():
    model = build("convnet", (1, 8, 8))
    assert not hasattr(model, "T") and not hasattr(model, "encoder")
    x = torch.rand(B, 1, 8, 8)
    assert model(PoissonEncoder()(x, 5)).logits.shape == (5, B, C)
    assert model(seq(x, 1)).logits.shape == (1, B, C)
    assert model(torch.rand(3, B, 1, 8, 8)).logits.shape == (3, B, C)


def test_input_of_the_wrong_rank_is_refused_with_how_to_encode_it():
    model = build("convnet", (1, 8, 8))
    for bad in (torch.rand(B, 1, 8, 8), torch.rand(8, 8)):  # a static batch is no sequence either
        with pytest.raises(ValueError, match=r"\[T, B, 1, 8, 8\].*snnexp\.models\.encoders"):
            model(bad)


def test_seq_drop_path_keeps_or_drops_a_sample_at_every_time_step_alike():
    torch.manual_seed(0)
    drop = SeqDropPath(0.5).train()
    x = torch.rand(4, 64, 3, 5) + 0.1  # [T, B, ...], no zeros
    y = drop(x)
    kept = (y == x / 0.5).flatten(2).all(-1)  # [T, B]: kept and scaled by 1 / (1 - p)
    dropped = (y == 0).flatten(2).all(-1)
    assert (kept | dropped).all()
    assert (kept.all(0) | dropped.all(0)).all()  # a sample is kept at all steps or dropped at all steps
    assert 0 < dropped[0].sum() < 64  # both happen
    assert torch.equal(drop.eval()(x), x)  # eval: the identity
    assert torch.equal(SeqDropPath(0.0).train()(x), x)  # rate 0: the identity
