"""The BN recomputation of snnexp/models/recompute.py gives the forward's output bit for bit, whether it writes into
a buffer of the CPU path's cache (contiguous float32 CPU inputs: in one pass from the saved batch statistics, or
by torch's kernel again) or calls ``F.batch_norm`` (anything else)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.markers import needs_host_build
from snnexp.kernels import cpu
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


@needs_host_build
@pytest.mark.parametrize("shape", [(64, 8), (6, 4, 9), (5, 8, 16, 16), (3, 8, 2, 4, 4), (7, 3, 5, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_again_from_the_saved_statistics_equals_the_forward_bit_for_bit(shape, affine):
    """The one-pass recompute from the mean and invstd that BN saved (what a tagged BN output carries): torch's
    rounding, FMA and all, on whole vectors and tails; it is used only where the once-per-process check passes."""
    cpu.extension()  # loaded: the one-pass kernel lives there
    assert recompute._affine_rounds_as_torch()
    generator = torch.Generator().manual_seed(1)
    y = torch.randn(shape, generator=generator) * 3 + 1
    weight, bias = (torch.randn(shape[1], generator=generator) for _ in range(2)) if affine else (None, None)
    forward, mean, invstd = torch.ops.aten.native_batch_norm(y, weight, bias, None, None, True, 0.1, 1e-5)
    again = recompute._batch_norm_again(1e-5, y, weight, bias, mean, invstd)
    assert again.shape == forward.shape and again.stride() == forward.stride()
    assert torch.equal(again, forward)


@needs_host_build
def test_a_tagged_batch_norm_output_carries_its_saved_statistics():
    """The forward hook keeps BN's own saved mean and invstd with the recipe, so the backward skips the statistics."""
    cpu.extension()
    bn = torch.nn.BatchNorm2d(4)
    bn.register_forward_hook(recompute.tag_batch_norm)
    x = torch.randn(3, 4, 6, 6, requires_grad=True)
    with recompute.recording():
        out = bn(x)
    recipe = recompute.recipe_of(out)
    mean, invstd = recipe.kept[3:]
    torch.testing.assert_close(mean, x.detach().mean((0, 2, 3)))
    torch.testing.assert_close(invstd, 1 / torch.sqrt(x.detach().var((0, 2, 3), unbiased=False) + bn.eps))
    assert torch.equal(recipe.fn(*recipe.kept), out.detach())


def test_batch_norm_again_keeps_a_channels_last_layout():
    y = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(8), torch.randn(8)
    forward = F.batch_norm(y, None, None, weight, bias, True, 0.1, 1e-5)
    again = recompute._batch_norm_again(1e-5, y, weight, bias)
    assert again.stride() == forward.stride() and torch.equal(again, forward)
