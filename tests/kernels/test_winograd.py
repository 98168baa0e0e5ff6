"""The Winograd convolutions (snnexp/kernels/winograd.py: F(4x4, 3x3) for stride 1, the polyphase F(3x3, 2x2) for
stride 2) equal float64 ``conv2d``, forward and every gradient, over image sizes that are and are not multiples of
the tile, chunks of images and blocks of output channels; only the calls they handle take them; without a compiler
they warn once and torch convolves."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from snnexp.kernels import winograd

needs_winograd = pytest.mark.skipif(not winograd.available(), reason="the Winograd transforms cannot be built here")

# float32 rounding of F(4x4, 3x3), relative to the largest entry (measured about 1e-5 at 128-512 channels)
TOLERANCE = 5e-5


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours.double() - reference).abs().max() / reference.abs().max()).item()


def _against_float64(N, C, K, H, W, *, bias=True, spikes=True, seed=0, stride=1):
    """Output and gradients (input, weight, bias) of Winograd3x3 and of float64 conv2d, on the same values."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(N, C, H, W, generator=generator) < 0.2).float() if spikes else \
        torch.randn(N, C, H, W, generator=generator)
    weight = torch.randn(K, C, 3, 3, generator=generator) * (2 / (9 * C)) ** 0.5
    b = torch.randn(K, generator=generator) if bias else None
    grad = torch.randn(N, K, winograd.output_size(H, stride), winograd.output_size(W, stride), generator=generator)
    ours = [t.clone().requires_grad_() if t is not None else None for t in (x, weight, b)]
    theirs = [t.double().requires_grad_() if t is not None else None for t in (x, weight, b)]
    winograd.Winograd3x3.apply(*ours, stride).backward(grad)
    out = winograd.Winograd3x3.apply(*[t.detach() if t is not None else None for t in ours], stride)
    reference = F.conv2d(*theirs, stride=stride, padding=1)
    reference.backward(grad.double())
    pairs = [(out, reference.detach())] + [(a.grad, r.grad) for a, r in zip(ours, theirs) if a is not None]
    return pairs


@needs_winograd
@pytest.mark.parametrize("shape", [
    (2, 16, 24, 8, 8),      # whole tiles
    (3, 17, 16, 9, 11),     # partial tiles on both sides, channels not a multiple of the 16-channel block
    (2, 16, 32, 1, 6),      # a single row
    (1, 48, 20, 5, 4),      # W of one tile
    (4, 64, 64, 6, 6),      # 6x6 (VGGSNN's conv7): 36 of the 64 pixels of its 2x2 tiles
    (2, 20, 18, 7, 35),     # rows of 16 + 16 + 3 pixels (transposed 16 at a time), 16 + 4 channels
])
def test_forward_and_gradients_equal_float64_conv2d(shape):
    for ours, reference in _against_float64(*shape):
        assert _relative_error(ours, reference) < TOLERANCE


@needs_winograd
@pytest.mark.parametrize("shape", [
    (2, 16, 24, 12, 12),    # 6x6 outputs: whole 3x3 tiles
    (3, 17, 16, 9, 11),     # 5x6 outputs: a partial tile row, channels not a multiple of the 16-channel block
    (2, 16, 32, 1, 6),      # a single row
    (1, 48, 20, 5, 4),      # odd and even sizes: 3x2 outputs
    (2, 20, 18, 7, 35),     # 4x18 outputs, rows of 16 + 16 + 3 input pixels
    (2, 64, 32, 48, 48),    # VGGSNN's conv2 shape (48 -> 24)
])
@pytest.mark.parametrize("winograd_forward_from", [0, winograd.MIN_STRIDE2_FORWARD_CHANNELS])
def test_stride_2_forward_and_gradients_equal_float64_conv2d(shape, winograd_forward_from, monkeypatch):
    """The polyphase F(3x3, 2x2)'s constants are 1 and 1/2: about the direct convolution's rounding. Its forward at
    every channel count, and as runs use it (torch's forward below MIN_STRIDE2_FORWARD_CHANNELS, equal to conv2d's
    float32 output)."""
    monkeypatch.setattr(winograd, "MIN_STRIDE2_FORWARD_CHANNELS", winograd_forward_from)
    pairs = _against_float64(*shape, stride=2)
    for ours, reference in pairs:
        assert _relative_error(ours, reference) < 2e-6
    N, C, K, H, W = shape
    if C < winograd_forward_from:
        generator = torch.Generator().manual_seed(0)  # _against_float64's x and weight
        x = (torch.rand(N, C, H, W, generator=generator) < 0.2).float()
        weight = torch.randn(K, C, 3, 3, generator=generator) * (2 / (9 * C)) ** 0.5
        bias = torch.randn(K, generator=generator)
        assert torch.equal(pairs[0][0], F.conv2d(x, weight, bias, 2, 1))


@needs_winograd
def test_dense_inputs_and_no_bias():
    pairs = _against_float64(2, 32, 16, 12, 12, bias=False, spikes=False)
    assert len(pairs) == 3  # output, input and weight gradients
    for ours, reference in pairs:
        assert _relative_error(ours, reference) < TOLERANCE


@needs_winograd
def test_chunks_of_images_and_blocks_of_output_channels(monkeypatch):
    """Small chunk and filter budgets: 3 images per chunk (the last one short) and output channels in blocks of
    16, the input gradient added block by block; the result is the one-piece computation's."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 36 * 4 * 48 * 4 * 3)  # tiles of 3 images of 48 channels
    monkeypatch.setattr(winograd, "FILTER_BYTES", {1: 36 * 48 * 16 * 4, 2: 25 * 48 * 16 * 4})
    monkeypatch.setattr(winograd, "MIN_STRIDE2_FORWARD_CHANNELS", 0)  # stride 2's forward by Winograd too
    assert winograd._output_blocks(48, 40) == [(0, 16), (16, 32), (32, 40)]
    assert winograd._output_blocks(48, 40, stride=2) == [(0, 16), (16, 32), (32, 40)]
    for stride in (1, 2):
        for ours, reference in _against_float64(7, 48, 40, 8, 8, stride=stride):
            assert _relative_error(ours, reference) < TOLERANCE


@needs_winograd
def test_only_the_input_gradient_when_the_weight_is_frozen():
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    weight = torch.randn(16, 16, 3, 3)
    winograd.Winograd3x3.apply(x, weight, None).sum().backward()
    reference = torch.autograd.grad(F.conv2d(x.double(), weight.double(), None, 1, 1).sum(), x)[0]
    assert _relative_error(x.grad, reference) < TOLERANCE


@pytest.mark.parametrize("stride, filters", [(1, 36), (2, 25)])
def test_filter_transform_and_its_gradient_are_adjoint(stride, filters):
    """<G g G^T, u> == <g, G^T u G>: the weight gradient is the filter transform's adjoint (stride 2 keeps the 25
    distinct entries of its 49)."""
    g, u = torch.randn(5, 7, 3, 3, dtype=torch.float64), torch.randn(filters, 5, 7, dtype=torch.float64)
    assert winograd.filter_transform(g, stride).shape == (filters, 5, 7)
    assert torch.allclose((winograd.filter_transform(g, stride) * u).sum(),
                          (g * winograd.filter_gradient(u, stride)).sum())


def test_the_stride_2_filters_are_the_polyphase_taps():
    """Filter (i, j) of the stride-2 algorithm, from G's rows: the even taps (w0, w2) by F(3, 2) in each dimension,
    w1 for the middle one; so entry (0, 4) is w[0, 1], (3, 3) is w[2, 2], (1, 4) is (w[0, 1] + w[2, 1]) / 2."""
    g = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    u = winograd.filter_transform(g, 2)[:, 0, 0]
    filters = winograd.ALGORITHMS[2].filters
    assert torch.allclose(u[filters.index((0, 4))], g[0, 0, 0, 1])
    assert torch.allclose(u[filters.index((3, 3))], g[0, 0, 2, 2])
    assert torch.allclose(u[filters.index((1, 4))], (g[0, 0, 0, 1] + g[0, 0, 2, 1]) / 2)
    assert torch.allclose(u[filters.index((4, 4))], g[0, 0, 1, 1])


def test_supports_only_calls_it_is_faster_for():
    weight = torch.zeros(32, 16, 3, 3)
    assert winograd.supports(torch.zeros(2, 16, 32, 32), weight)
    assert winograd.supports(torch.zeros(2, 16, 7, 7), weight)  # 49 of 64 tile pixels inside
    assert winograd.supports(torch.zeros(2, 16, 6, 6), weight)  # 36 of 64 (VGGSNN's conv7)
    assert not winograd.supports(torch.zeros(2, 16, 5, 5), weight)  # 25 of 64
    assert not winograd.supports(torch.zeros(2, 16, 8, 8, dtype=torch.float64), weight.double())
    assert not winograd.supports(torch.zeros(2, 8, 8, 8), torch.zeros(32, 8, 3, 3))  # too few channels
    assert not winograd.supports(torch.zeros(2, 16, 8, 8), torch.zeros(32, 16, 5, 5))
    assert not winograd.supports(torch.zeros(16, 8, 8), weight)  # unbatched
    assert winograd.supports(torch.zeros(2, 16, 48, 48), weight, stride=2)  # 24x24 outputs: whole 3x3 tiles
    assert winograd.supports(torch.zeros(2, 16, 5, 6), weight, stride=2)  # 3x3 outputs
    assert not winograd.supports(torch.zeros(2, 16, 32, 32), weight, stride=2)  # 16x16: 256 of 324 tile pixels
    assert not winograd.supports(torch.zeros(2, 16, 12, 12), weight, stride=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: torch's bfloat16 convolution
        assert not winograd.supports(torch.zeros(2, 16, 32, 32), weight)
        assert winograd.conv3x3(torch.ones(1, 16, 8, 8), torch.ones(16, 16, 3, 3)).dtype == torch.bfloat16


def test_falls_back_to_torch_with_one_warning_without_a_compiler(monkeypatch):
    monkeypatch.setattr(winograd, "extension", lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
    winograd.available.cache_clear()
    try:
        x, weight = torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = winograd.conv3x3(x, weight), winograd.conv3x3(x, weight)
        assert torch.equal(first, F.conv2d(x, weight, None, 1, 1)) and torch.equal(second, first)
        messages = [str(w.message) for w in caught if "Winograd" in str(w.message)]
        assert len(messages) == 1 and "no C++ compiler" in messages[0]
    finally:
        winograd.available.cache_clear()
