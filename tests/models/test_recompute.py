"""The BN recomputation of snnexp/models/recompute.py gives the forward's output bit for bit, whether it writes into
a buffer of the CPU path's cache (contiguous float32 CPU inputs) or calls ``F.batch_norm`` (anything else)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from snnexp.models import recompute


@pytest.mark.parametrize("shape", [(64, 8), (6, 4, 9), (5, 8, 16, 16), (3, 8, 2, 4, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_again_equals_the_forward_bit_for_bit(shape, affine):
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(shape, generator=generator) * 3 + 1
    weight, bias = (torch.randn(shape[1], generator=generator) for _ in range(2)) if affine else (None, None)
    forward = F.batch_norm(y, None, None, weight, bias, True, 0.1, 1e-5)
    again = recompute._batch_norm_again(1e-5, y, weight, bias)
    assert again.shape == forward.shape and again.stride() == forward.stride()
    assert torch.equal(again, forward)


def test_batch_norm_again_keeps_a_channels_last_layout():
    y = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8), torch.randn(8)
    forward = F.batch_norm(y, None, None, weight, bias, True, 0.1, 1e-5)
    again = recompute._batch_norm_again(1e-5, y, weight, bias)
    assert again.stride() == forward.stride() and torch.equal(again, forward)
