"""Construction-time normalisation (snnexp/models/norm.py): BatchNorm or threshold-dependent BatchNorm (tdBN) in
every norm of every model, alpha 1/sqrt(2) exactly on residual branches, and tdBN against its formula."""

import functools
import math

import pytest
import torch
from torch import nn

from helpers.models import C, StandInNeuron, real_lif
from snnexp.models import SeqToBatch, create_model
from snnexp.models.norm import TDBatchNorm1d, TDBatchNorm2d, batch_norm, make_norm_layer, tdbn
from snnexp.neurons import LIF


def test_norm_layer_builds_bn_or_tdbn_with_alpha_on_residual_branches():
    assert type(batch_norm(4)) is nn.BatchNorm2d and type(batch_norm(4, dims=1, residual=True)) is nn.BatchNorm1d
    plain, residual = tdbn(4, v_threshold=0.5), tdbn(4, dims=1, residual=True, v_threshold=0.5)
    assert isinstance(plain, TDBatchNorm2d) and (plain.alpha, plain.v_threshold) == (1.0, 0.5)
    assert isinstance(residual, TDBatchNorm1d) and residual.alpha == pytest.approx(1 / math.sqrt(2))
    norm_layer = make_norm_layer("tdbn", functools.partial(real_lif(), v_threshold=0.25))
    assert norm_layer(3).v_threshold == 0.25  # tdBN's V_th is the threshold of the model's neuron
    assert make_norm_layer("bn", StandInNeuron) is batch_norm


# which norms feed a residual sum (tdBN alpha 1/sqrt(2)), by model: conv2 and shortcut BNs of ResNet blocks, the
# SDSA projection and MLP fc2 BNs of the Spike-driven Transformer, STMixer's token-mixer and FFN fc2 BNs
RESIDUAL_NORMS = {
    "convnet": ((1, 8, 8), {}, set()),
    "vggsnn": ((2, 16, 16), {}, set()),
    "resnet20": ((3, 8, 8), {}, {f"stages.layer{s}.{b}.conv2.module.bn" for s in (1, 2, 3) for b in range(3)}
                 | {"stages.layer2.0.shortcut.module.bn", "stages.layer3.0.shortcut.module.bn"}),
    "sdt": ((3, 16, 16), {"layers": 2, "dim": 32, "heads": 4},
            {f"blocks.{i}.{n}" for i in (0, 1) for n in ("attn.proj.module.bn", "mlp.fc2.module.bn")}),
    "stmixer": ((3, 16, 16), {"depth": 2, "dim": 32, "heads": 4},
                {f"blocks.{i}.{n}.fc2.1.module.1" for i in (0, 1) for n in ("token_mix", "channel_mix")}),
    "pointnet": ((3, 16), {}, set()),
}


@pytest.mark.parametrize("name", sorted(RESIDUAL_NORMS))
def test_tdbn_is_built_in_every_norm_with_alpha_one_over_sqrt2_exactly_on_residual_branches(name):
    shape, kw, residual = RESIDUAL_NORMS[name]
    lif = functools.partial(real_lif(), v_threshold=0.5)
    model = create_model(name, neuron=lif, input_shape=shape, num_classes=C, norm="tdbn", **kw)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert norms and all(isinstance(m, (TDBatchNorm1d, TDBatchNorm2d)) and m.v_threshold == 0.5
                         for m in norms.values())
    assert {n for n, m in norms.items() if m.alpha != 1.0} == residual
    assert all(norms[n].alpha == pytest.approx(1 / math.sqrt(2)) for n in residual)
    plain = create_model(name, neuron=lif, input_shape=shape, num_classes=C, **kw)
    assert not any(isinstance(m, (TDBatchNorm1d, TDBatchNorm2d)) for m in plain.modules())


def test_tdbn_equals_its_formula_with_statistics_over_time_and_batch():
    torch.manual_seed(4)
    bn = TDBatchNorm2d(3, alpha=0.7, v_threshold=0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    x = torch.randn(2, 5, 3, 4, 4)  # [T, B, C, H, W]
    out = SeqToBatch(bn)(x)
    mu = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    var = x.var(dim=(0, 1, 3, 4), unbiased=False, keepdim=True)
    lam, beta = bn.weight.view(1, 1, 3, 1, 1), bn.bias.view(1, 1, 3, 1, 1)
    expected = lam * 0.7 * 0.5 * (x - mu) / torch.sqrt(var + bn.eps) + beta
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["convnet", "resnet18", "resnet19", "resnet20", "resnet34", "vggsnn", "vggsnn_pool",
                                  "sdt", "stmixer"])
def test_every_model_takes_tdbn(name):
    extra = {"dim": 32, "depth": 1, "heads": 4} if name == "stmixer" else {"dim": 32, "layers": 1} if name == "sdt" else {}
    model = create_model(name, neuron=LIF, input_shape=(3, 16, 16), num_classes=10, norm="tdbn", **extra)
    plain = [m for m in model.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    tds = [m for m in model.modules() if isinstance(m, (TDBatchNorm1d, TDBatchNorm2d))]
    assert not plain and tds
    assert any(m.alpha < 1 for m in tds) == (name not in ("convnet", "vggsnn", "vggsnn_pool"))
    assert model(torch.rand(1, 2, 3, 16, 16)).logits.shape == (1, 2, 10)


def test_warm_start_averages_the_first_batches_then_follows_pytorch_momentum():
    from snnexp.models.norm import warm_start_running_stats

    torch.manual_seed(0)
    batches = [0.2 * torch.randn(8, 3, 4, 4) + 1 for _ in range(14)]
    warm, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    assert warm_start_running_stats(nn.Sequential(warm)) == 1
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.var(dim=(0, 2, 3)) for b in batches])  # unbiased, as BatchNorm's running_var
    for n, batch in enumerate(batches, start=1):
        warm(batch)
        plain(batch)
        k = min(n, 10)  # the first 10 = 1/momentum batches: their plain average ...
        mean, var = means[:k].mean(0), variances[:k].mean(0)
        for later in range(10, n):  # ... then torch's exponential average with momentum 0.1
            mean, var = 0.9 * mean + 0.1 * means[later], 0.9 * var + 0.1 * variances[later]
        torch.testing.assert_close(warm.running_mean, mean)
        torch.testing.assert_close(warm.running_var, var)
    # PyTorch's own start at (0, 1) still weighs 0.9^14 = 23% in the plain layer's variance after 14 batches
    assert (plain.running_var - var).abs().min() > 0.2 * (1 - var).abs().min()


def test_warm_start_leaves_a_cumulative_average_alone_and_eval_mode_untouched():
    from snnexp.models.norm import warm_start_running_stats

    bn = nn.BatchNorm1d(2, momentum=None)
    assert warm_start_running_stats(bn) == 0
    bn = nn.BatchNorm1d(2)
    warm_start_running_stats(bn)
    bn.eval()
    bn(torch.randn(5, 2))
    assert int(bn.num_batches_tracked) == 0 and bn.momentum == 0.1
    bn.train()
    bn.momentum = None  # MTT's recalibration switches to a cumulative average for a while
    x = torch.randn(5, 2)
    bn(x)
    assert bn.momentum is None
    torch.testing.assert_close(bn.running_mean, x.mean(0))
