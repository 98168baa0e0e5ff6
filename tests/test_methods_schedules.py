"""Dspike's evolving temperature and IM-Loss + ESG, checked against independent computations."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import compose_config
from snnexp.methods.dspike import Dspike, orthonormal_directions
from snnexp.methods.imloss import IMLoss, esg_sharpness
from snnexp.models.layers import SeqToBatch
from snnexp.models.output import ModelOutput
from snnexp.neurons import LIF
from snnexp.train import run


class TinySNN(nn.Module):
    """Linear(3, 2) -> LIF -> Linear(2, 4) -> LIF -> Linear(4, 4) -> LIF -> Linear(4, 3), time-major."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = SeqToBatch(nn.Linear(3, 2)), SeqToBatch(nn.Linear(2, 4)), SeqToBatch(nn.Linear(4, 4))
        self.out = SeqToBatch(nn.Linear(4, 3))
        self.n1, self.n2, self.n3 = LIF(v_threshold=0.5), LIF(v_threshold=0.5), LIF(v_threshold=0.5)
        with torch.no_grad():  # strong enough weights that every layer fires
            g = torch.Generator().manual_seed(0)
            for fc in (self.fc1, self.fc2, self.fc3):
                fc.module.weight.copy_(torch.rand(fc.module.weight.shape, generator=g) * 1.3 - 0.3)
                fc.module.bias.fill_(0.2)

    def forward(self, x):
        s1 = self.n1(self.fc1(x))
        s2 = self.n2(self.fc2(s1))
        s3 = self.n3(self.fc3(s2))
        return ModelOutput(logits=self.out(s3))


class FakeModule(nn.Module):
    """Stands in for SNNModule: ``module(x)`` runs the model, ``current_epoch`` is settable."""

    def __init__(self, model):
        super().__init__()
        self.model, self.current_epoch = model, 0

    def forward(self, x):
        return self.model(x)


def _batch(seed=0, T=4, B=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g) * 2, torch.randint(0, 3, (B,), generator=g)


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


@pytest.mark.parametrize("method", ["dspike", "imloss"])
@pytest.mark.parametrize("model", ["resnet19", "vggsnn"])
def test_method_runs_a_fast_dev_run(tmp_path, method, model):
    data = ["data=digits"] if model == "resnet19" else ["data=synthetic_dvs", "data.sensor=16", "data.num_train=8",
                                                        "data.num_val=4", "data.num_test=4"]
    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", f"model={model}", f"method={method}", *data],
                         tmp_path / "run")
    run(cfg)
    assert (tmp_path / "run" / "summary.json").exists()


def test_imloss_refuses_a_model_with_too_few_spiking_layers(tmp_path):
    from snnexp.errors import IncompatibleError

    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = LIF(), LIF()

    with pytest.raises(IncompatibleError, match="except the first and the last"):
        IMLoss().check(TwoLayers(), None)


def test_tdbn_equals_its_formula_with_statistics_over_time_and_batch():
    from snnexp.models.norm import TDBatchNorm2d

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


def test_tdbn_resnet_scales_residual_branches_by_inverse_sqrt2_and_uses_the_neuron_threshold():
    from snnexp.models import create_model
    from snnexp.models.norm import TDBatchNorm2d

    model = create_model("resnet19", neuron=partial(LIF, v_threshold=0.5), input_shape=(3, 8, 8), num_classes=10,
                         norm="tdbn")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, TDBatchNorm2d) and m.v_threshold == 0.5 for m in norms)
    # ResNet-19: 8 BasicBlocks, each with a residual BN on conv2, plus 3 downsampling shortcuts (64->128, 128->256, 256->512)
    alphas = sorted(round(m.alpha, 6) for m in norms)
    assert alphas.count(round(1 / math.sqrt(2), 6)) == 8 + 3
    assert alphas.count(1.0) == len(norms) - 11


def test_tdbn_method_builds_the_model_with_tdbn_and_runs(tmp_path):
    from snnexp.models.norm import TDBatchNorm2d
    from snnexp.train import build

    cfg = compose_config(["debug=fast", "T=2", "data.batch_size=2", "model=resnet19", "method=tdbn"], tmp_path / "run")
    assert cfg.model.norm == "bn"
    _, module = build(cfg)
    assert any(isinstance(m, TDBatchNorm2d) for m in module.model.modules())
    run(cfg)
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("name", ["convnet", "resnet18", "resnet19", "resnet20", "resnet34", "vggsnn", "vggsnn_pool",
                                  "sdt", "stmixer"])
def test_every_model_takes_tdbn(name):
    from snnexp.models import create_model
    from snnexp.models.norm import TDBatchNorm1d, TDBatchNorm2d

    extra = {"dim": 32, "depth": 1, "heads": 4} if name == "stmixer" else {"dim": 32, "layers": 1} if name == "sdt" else {}
    model = create_model(name, neuron=LIF, input_shape=(3, 16, 16), num_classes=10, norm="tdbn", **extra)
    plain = [m for m in model.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    tds = [m for m in model.modules() if isinstance(m, (TDBatchNorm1d, TDBatchNorm2d))]
    assert not plain and tds
    assert any(m.alpha < 1 for m in tds) == (name not in ("convnet", "vggsnn", "vggsnn_pool"))
    assert model(torch.rand(1, 2, 3, 16, 16)).logits.shape == (1, 2, 10)
