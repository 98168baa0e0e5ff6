"""Optimisers and learning-rate schedules built from the config, checked against their formulas."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from snnexp.config import OptimConfig, SchedulerConfig
from snnexp.lit import build_optimizer, build_scheduler


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_from_config(name, cls):
    cfg = OmegaConf.structured(OptimConfig(name=name, lr=0.05, weight_decay=1e-4))
    opt = build_optimizer(_params(), cfg)
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 1e-4


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="sgd, adam, adamw"):
        build_optimizer(_params(), OmegaConf.structured(OptimConfig(name="lion")))


def _lrs(scheduler_cfg, epochs, base_lr=0.1):
    opt = torch.optim.SGD(_params(), lr=base_lr)
    sched = build_scheduler(opt, OmegaConf.structured(scheduler_cfg), epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_cosine_schedule_follows_the_formula():
    lrs = _lrs(SchedulerConfig(name="cosine", min_lr=0.001), epochs=10)
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_linear_warmup_then_cosine():
    lrs = _lrs(SchedulerConfig(name="cosine", warmup_epochs=3, warmup_start_factor=0.1), epochs=8)
    warm = [0.1 * (0.1 + (1 - 0.1) * e / 3) for e in range(3)]
    cosine = [0.1 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert lrs == pytest.approx(warm + cosine, rel=1e-6)


def test_step_schedule():
    lrs = _lrs(SchedulerConfig(name="step", step_size=2, gamma=0.5), epochs=6)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
