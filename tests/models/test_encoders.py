"""Input encoders (snnexp/models/encoders.py): direct and Poisson coding, stateless, T given per call and checked."""

import pytest
import torch

from helpers.models import B
from snnexp.models import ModelConfigError
from snnexp.models.encoders import DirectEncoder, PoissonEncoder, check_timesteps, make_encoder


def test_direct_encoder_repeats_the_input():
    x = torch.rand(B, 3, 4, 4)
    y = DirectEncoder()(x, 3)
    assert y.shape == (3, B, 3, 4, 4) and all(torch.equal(y_t, x) for y_t in y)
    assert torch.equal(y, x.unsqueeze(0).repeat(3, 1, 1, 1, 1))


def test_poisson_encoder_fires_at_the_input_rate():
    torch.manual_seed(0)
    x = torch.tensor([-0.5, 0.0, 0.1, 0.5, 0.9, 1.0, 2.0]).repeat(50, 1)  # [B=50, 7]
    y = PoissonEncoder()(x, 400)
    assert y.shape == (400, 50, 7)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(y.mean((0, 1)), x[0].clamp(0, 1), atol=0.01, rtol=0)


def test_encoders_are_stateless_and_take_T_per_call():
    x = torch.rand(B, 1, 8, 8)
    for name in ("direct", "poisson"):
        encoder = make_encoder(name)
        assert not list(encoder.parameters()) and not list(encoder.buffers()) and not hasattr(encoder, "T")
        assert encoder(x, 5).shape == (5, B, 1, 8, 8) and encoder(x, 1).shape == (1, B, 1, 8, 8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", None, True])
def test_T_must_be_a_positive_integer(bad):
    with pytest.raises(ModelConfigError, match="positive integer"):
        check_timesteps(bad)
    with pytest.raises(ModelConfigError, match="positive integer"):
        DirectEncoder()(torch.rand(B, 3), bad)
    assert check_timesteps(4) == 4 and check_timesteps(4.0) == 4
