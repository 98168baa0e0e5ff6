"""Optimisers and learning-rate schedules built from the ``optim`` / ``scheduler`` config groups (Hydra partials
completed by ``snnexp.optim.configure``), checked against their formulas."""

import math

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import ListConfig

from helpers.runs import compose_config
from snnexp.config import CONF_DIR
from snnexp.optim import WarmupCosineLR, configure

OPTIMS = sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONF_DIR / "scheduler").glob("*.yaml"))


def _params():
    return [torch.nn.Parameter(torch.zeros(3))]


def _net():
    """Conv (4-d weight + bias), BN (1-d weight and bias), Linear: weights that decay and ones that do not."""
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4, 3))


# ---- optimisers --------------------------------------------------------------------------------------------------


def test_the_group_options_are_the_documented_ones():
    assert OPTIMS == ["adam", "adamw", "lamb", "sgd", "timm"]
    assert SCHEDULERS == ["cosine", "none", "step"]


@pytest.mark.parametrize("name", OPTIMS)
def test_every_optim_option_composes_and_builds(name):
    cfg = compose_config([f"optim={name}", "optim.lr=0.05"])
    net = _net()
    optimizer = configure(net, instantiate(cfg.optim), None)["optimizer"]
    assert isinstance(optimizer, torch.optim.Optimizer)
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    assert sorted(map(id, trained)) == sorted(id(p) for p in net.parameters())
    assert all(group["lr"] == 0.05 for group in optimizer.param_groups)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_from_config(name, cls):
    cfg = compose_config([f"optim={name}", "optim.lr=0.05", "optim.weight_decay=1e-4"])
    opt = instantiate(cfg.optim)(_params())
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 1e-4


def test_lamb_is_timms():
    from timm.optim import Lamb

    cfg = compose_config(["optim=lamb", "optim.lr=1e-3"])
    opt = instantiate(cfg.optim)(_params())
    assert type(opt) is Lamb
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], tuple(group["betas"]), group["eps"], group["max_grad_norm"]) == (
        1e-3, 0.01, (0.9, 0.999), 1e-6, 1.0)


def test_the_default_is_adam_at_1e_3_without_weight_decay():
    cfg = compose_config([])
    opt = configure(_net(), instantiate(cfg.optim), None)["optimizer"]
    assert type(opt) is torch.optim.Adam
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"], tuple(group["betas"])) == (1e-3, 0.0, (0.9, 0.999))


def test_timm_factory_leaves_biases_and_norm_parameters_out_of_weight_decay():
    from timm.optim import Lamb

    cfg = compose_config(["optim=timm", "optim.opt=lamb", "optim.lr=2e-3", "optim.weight_decay=0.05"])
    net = _net()
    opt = configure(net, instantiate(cfg.optim), None)["optimizer"]
    assert type(opt) is Lamb
    decay_of = {id(p): group["weight_decay"] for group in opt.param_groups for p in group["params"]}
    expected = {id(p): 0.05 if p.ndim > 1 else 0.0 for p in net.parameters()}  # conv / linear weights decay
    assert decay_of == expected
    assert all(group["lr"] == 2e-3 for group in opt.param_groups)
    # switched off: one group, everything decays
    cfg = compose_config(["optim=timm", "optim.opt=adamw", "optim.weight_decay=0.05", "optim.filter_bias_and_bn=false"])
    opt = configure(net, instantiate(cfg.optim), None)["optimizer"]
    assert type(opt) is torch.optim.AdamW
    assert {group["weight_decay"] for group in opt.param_groups} == {0.05}


def test_only_trainable_parameters_are_optimised():
    net = _net()
    net[0].weight.requires_grad_(False)
    for name in ("adam", "timm"):
        opt = configure(net, instantiate(compose_config([f"optim={name}"]).optim), None)["optimizer"]
        trained = {id(p) for group in opt.param_groups for p in group["params"]}
        assert trained == {id(p) for p in net.parameters() if p.requires_grad}


def test_a_list_of_parameters_works_with_both_kinds_of_target():
    net = _net()
    for name in ("adamw", "timm"):
        opt = configure(list(net.parameters()), instantiate(compose_config([f"optim={name}"]).optim), None)["optimizer"]
        assert sum(len(group["params"]) for group in opt.param_groups) == len(list(net.parameters()))


def test_config_lists_reach_the_optimiser_as_plain_python(tmp_path):
    cfg = compose_config(["optim=lamb", "optim.betas=[0.8,0.9]"])
    factory = instantiate(cfg.optim)
    assert isinstance(factory.keywords["betas"], ListConfig)  # what Hydra hands over
    opt = configure(_net(), factory, None)["optimizer"]
    assert opt.param_groups[0]["betas"] == [0.8, 0.9] and type(opt.param_groups[0]["betas"]) is list
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")  # a checkpoint loads without unpickling OmegaConf
    assert torch.load(tmp_path / "optimizer.pt", weights_only=True)["param_groups"][0]["betas"] == [0.8, 0.9]


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ConfigCompositionException, match=r"(?s)optim/lion.*adam.*adamw.*lamb.*sgd"):
        compose_config(["optim=lion"])


@pytest.mark.parametrize("overrides,message", [
    (["optim.lrr=1"], "Could not override 'optim.lrr'"),
    (["optim=lamb", "optim.momentum=0.9"], "Could not override 'optim.momentum'"),
    (["optim=timm", "optim.betas=[0.9,0.99]"], "Could not override 'optim.betas'"),
    (["scheduler.warmup_epoch=3"], "Could not override 'scheduler.warmup_epoch'"),
    (["scheduler=step", "scheduler.min_lr=0.1"], "Could not override 'scheduler.min_lr'"),
    (["scheduler.min_lr=abc"], "scheduler.min_lr=abc"),
])
def test_misspelt_or_mistyped_keys_are_rejected_at_compose_time(overrides, message):
    with pytest.raises(ConfigCompositionException, match=message):
        compose_config(overrides)


def test_lamb_composes_with_a_learning_rate():
    cfg = compose_config(["optim=lamb", "optim.lr=1e-3"])
    assert cfg.optim._target_ == "timm.optim.Lamb" and cfg.optim.lr == 1e-3


# ---- schedules ---------------------------------------------------------------------------------------------------


def _lrs(scheduler_overrides, epochs, base_lr=0.1):
    opt = torch.optim.SGD(_params(), lr=base_lr)
    scheduler = configure(opt.param_groups[0]["params"], lambda params: opt,
                          instantiate(compose_config(scheduler_overrides).scheduler), epochs)["lr_scheduler"]
    assert scheduler["interval"] == "epoch"
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler["scheduler"].step()
    return lrs


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_option_composes_and_builds(name):
    cfg = compose_config([f"scheduler={name}"])
    opt = torch.optim.SGD(_params(), lr=0.1)
    built = configure(opt.param_groups[0]["params"], lambda params: opt, instantiate(cfg.scheduler), 5)
    assert isinstance(built["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.LRScheduler)
    assert built["optimizer"] is opt and built["lr_scheduler"]["interval"] == "epoch"


def test_the_default_schedule_is_todays_cosine_to_zero_without_warmup():
    lrs = _lrs([], epochs=10)
    opt = torch.optim.SGD(_params(), lr=0.1)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.0)
    expected = []
    for _ in range(10):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        reference.step()
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_schedule_follows_the_formula():
    lrs = _lrs(["scheduler.min_lr=0.001"], epochs=10)
    expected = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_linear_warmup_then_cosine():
    lrs = _lrs(["scheduler.warmup_epochs=3", "scheduler.warmup_start_factor=0.1"], epochs=8)
    warm = [0.1 * (0.1 + (1 - 0.1) * e / 3) for e in range(3)]
    cosine = [0.1 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert lrs == pytest.approx(warm + cosine, rel=1e-6)


def test_warmup_cosine_to_min_lr_at_every_epoch():
    base, min_lr, warmup, epochs, factor = 0.1, 0.002, 4, 15, 0.05
    lrs = _lrs([f"scheduler.warmup_epochs={warmup}", f"scheduler.warmup_start_factor={factor}",
                f"scheduler.min_lr={min_lr}"], epochs=epochs, base_lr=base)
    expected = []
    for e in range(epochs):
        if e < warmup:  # a straight line from base * factor (epoch 0) towards base (epoch `warmup`)
            expected.append(base * factor + (base - base * factor) * e / warmup)
        else:  # half a cosine period from base (epoch `warmup`) down to min_lr (epoch `epochs`, never reached)
            phase = (e - warmup) / (epochs - warmup)
            expected.append(min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * phase)))
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[warmup] == pytest.approx(base) and min(lrs) > min_lr


def test_timm_style_schedule_matches_timms_cosine_scheduler_with_cooldown():
    """warmup_prefix=false + warmup_lr + cooldown_epochs reproduce timm's CosineLRScheduler as timm's training
    script runs it (one cosine over `epochs`, warm-up inside it, then `cooldown_epochs` at min_lr)."""
    from timm.scheduler import CosineLRScheduler

    base, epochs, cooldown, warmup = 1.5e-3, 30, 3, 5
    lrs = _lrs([f"scheduler.warmup_epochs={warmup}", "scheduler.warmup_lr=1e-5", "scheduler.min_lr=1.5e-5",
                f"scheduler.cooldown_epochs={cooldown}", "scheduler.warmup_prefix=false"],
               epochs=epochs + cooldown, base_lr=base)
    opt = torch.optim.SGD(_params(), lr=base)
    timm_scheduler = CosineLRScheduler(opt, t_initial=epochs, lr_min=1.5e-5, warmup_t=warmup, warmup_lr_init=1e-5)
    expected = []
    for epoch in range(epochs + cooldown):
        expected.append(opt.param_groups[0]["lr"])
        timm_scheduler.step(epoch + 1)
    assert lrs == pytest.approx(expected, rel=1e-9)
    assert lrs[-cooldown:] == pytest.approx([1.5e-5] * cooldown)


def test_step_schedule():
    lrs = _lrs(["scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"], epochs=6)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_none_is_a_constant_learning_rate_and_removing_the_group_means_no_scheduler():
    assert _lrs(["scheduler=none"], epochs=4) == pytest.approx([0.1] * 4)
    cfg = compose_config(["~scheduler"])
    assert cfg.scheduler is None
    built = configure(_net(), instantiate(cfg.optim), instantiate(cfg.scheduler), 3)
    assert set(built) == {"optimizer"}


def test_warmup_is_cut_to_leave_at_least_one_cosine_epoch():
    opt = torch.optim.SGD(_params(), lr=1.0)
    scheduler = WarmupCosineLR(opt, max_epochs=3, warmup_epochs=10, warmup_start_factor=0.5)
    assert [scheduler.lr_at(e, 1.0) for e in range(3)] == pytest.approx([0.5, 0.75, 1.0])


def test_lightning_steps_the_schedule_once_per_epoch(tmp_path):
    class Tiny(L.LightningModule):
        def __init__(self, optimizer, scheduler):
            super().__init__()
            self.layer, self.optimizer, self.scheduler, self.seen = torch.nn.Linear(2, 1), optimizer, scheduler, []

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def on_train_epoch_start(self):
            self.seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])

        def configure_optimizers(self):
            return configure(self, self.optimizer, self.scheduler, self.trainer.max_epochs)

    cfg = compose_config(["optim=sgd", "optim.lr=0.2", "scheduler.warmup_epochs=2", "scheduler.min_lr=0.01"])
    module = Tiny(instantiate(cfg.optim), instantiate(cfg.scheduler))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, data)
    warm = [0.2 * 0.01 + (0.2 - 0.2 * 0.01) * e / 2 for e in range(2)]
    cosine = [0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert module.seen == pytest.approx(warm + cosine, rel=1e-9)


# ---- presets -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,lr,min_lr", [("sdt_imagenet_8_384", 1.5e-3, 1.5e-5), ("sdt_imagenet_8_512", 1.5e-3, 1.5e-5),
                                              ("sdt_imagenet_8_768", 1e-3, 2e-5)])
def test_sdt_imagenet_presets_use_timms_lamb_and_schedule(preset, lr, min_lr):
    from timm.optim import Lamb

    cfg = compose_config([f"experiment={preset}"])
    assert (cfg.optim._target_, cfg.optim.opt, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.filter_bias_and_bn) == (
        "timm.optim.create_optimizer_v2", "lamb", lr, 0.01, True)
    assert (cfg.scheduler.warmup_epochs, cfg.scheduler.warmup_lr, cfg.scheduler.min_lr, cfg.scheduler.cooldown_epochs,
            cfg.scheduler.warmup_prefix, cfg.trainer.max_epochs) == (20, 1e-5, min_lr, 10, False, 310)
    assert type(configure(_net(), instantiate(cfg.optim), None)["optimizer"]) is Lamb


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_preset_builds_its_optimiser_and_schedule(preset):
    cfg = compose_config([f"experiment={preset}"])
    built = configure(_net(), instantiate(cfg.optim), instantiate(cfg.scheduler), cfg.trainer.max_epochs)
    assert built["optimizer"].param_groups[0]["lr"] > 0 or built["lr_scheduler"]["scheduler"].base_lrs[0] > 0
    assert built["lr_scheduler"]["interval"] == "epoch"
