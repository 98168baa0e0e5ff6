"""The stride-2 3x3 convolution with the im2col backward (snnexp/kernels/strided_conv.py): its unfold equals
torch's ``F.unfold`` and its fold torch's ``F.fold``; output and every gradient equal float64 ``conv2d`` over even
and odd image sizes, chunks of images and frozen operands; only the calls it handles take it; without a compiler it
warns once and torch convolves."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from snnexp.kernels import strided_conv

needs_loops = pytest.mark.skipif(not strided_conv.available(), reason="the im2col loops cannot be built here")

TOLERANCE = 1e-5  # float32 matrix products against float64, relative to the largest entry


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours.double() - reference).abs().max() / reference.abs().max()).item()


def _columns(x: torch.Tensor) -> torch.Tensor:
    """``F.unfold`` in this module's layout: ``[N, 9C, L] -> [9C, N * L]``."""
    cols = F.unfold(x, 3, padding=1, stride=2)
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


@needs_loops
@pytest.mark.parametrize("shape", [(3, 5, 9, 11), (2, 4, 8, 8), (1, 3, 1, 5), (2, 2, 2, 3), (1, 2, 1, 1), (2, 3, 3, 2)])
def test_unfold_and_fold_equal_torchs(shape):
    N, C, H, W = shape
    x = torch.randn(shape)
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    cols = torch.empty(9 * C, N * Ho * Wo)
    strided_conv.extension().unfold3x3(x, cols)
    assert torch.equal(cols, _columns(x))  # pure copies: exact
    grad_cols = torch.randn(9 * C, N * Ho * Wo)
    folded = torch.empty(shape)
    strided_conv.extension().fold3x3(grad_cols, folded)
    reference = F.fold(grad_cols.view(9 * C, N, Ho * Wo).permute(1, 0, 2), (H, W), 3, padding=1, stride=2)
    torch.testing.assert_close(folded, reference, rtol=1e-6, atol=1e-6)


def _against_float64(N, C, K, H, W, *, bias=True, seed=0, needs=(True, True, True)):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(N, C, H, W, generator=generator) < 0.3).float()
    weight = torch.randn(K, C, 3, 3, generator=generator) * (2 / (9 * C)) ** 0.5
    b = torch.randn(K, generator=generator) if bias else None
    grad = torch.randn(N, K, (H + 1) // 2, (W + 1) // 2, generator=generator)
    ours = [t.clone().requires_grad_(need) if t is not None else None for t, need in zip((x, weight, b), needs)]
    theirs = [t.double().requires_grad_(need) if t is not None else None for t, need in zip((x, weight, b), needs)]
    out = strided_conv.Conv3x3Stride2.apply(*ours)
    out.backward(grad)
    reference = F.conv2d(*theirs, stride=2, padding=1)
    reference.backward(grad.double())
    pairs = [(out.detach(), reference.detach())]
    pairs += [(a.grad, r.grad) for a, r in zip(ours, theirs) if a is not None and a.requires_grad]
    return pairs


@needs_loops
@pytest.mark.parametrize("shape", [
    (3, 20, 24, 9, 11),   # odd height and width: the last output column reads one real pixel
    (2, 16, 32, 8, 8),    # even sizes
    (1, 16, 16, 1, 5),    # a single row
    (4, 17, 18, 6, 7),
])
def test_forward_and_gradients_equal_float64_conv2d(shape):
    pairs = _against_float64(*shape)
    assert len(pairs) == 4
    for ours, reference in pairs:
        assert _relative_error(ours, reference) < TOLERANCE


@needs_loops
def test_chunks_of_images(monkeypatch):
    """A chunk budget of 3 images (the last chunk short): the weight gradient summed over chunks, each chunk's input
    gradient folded into its own images."""
    monkeypatch.setattr(strided_conv, "CHUNK_BYTES", 9 * 16 * 4 * 4 * 3)  # 3 images of 16 channels, 4x4 outputs
    for ours, reference in _against_float64(7, 16, 24, 8, 8, bias=False):
        assert _relative_error(ours, reference) < TOLERANCE


@needs_loops
@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True)])
def test_only_the_gradients_asked_for(needs):
    pairs = _against_float64(2, 16, 16, 10, 10, needs=needs)
    assert len(pairs) == 1 + sum(needs)
    for ours, reference in pairs:
        assert _relative_error(ours, reference) < TOLERANCE


@pytest.mark.parametrize("shape,bias,chunk", [((3, 16, 24, 9, 11), True, None), ((2, 32, 16, 8, 8), False, None),
                                              ((1, 16, 20, 1, 5), True, None), ((7, 16, 24, 8, 8), True, 3)])
def test_the_1x1_products_equal_float64_conv2d(shape, bias, chunk, monkeypatch):
    """Forward and all three gradients of the 1x1 stride-2 convolution (odd sizes: the last even pixel is read;
    ``chunk``: images per columns buffer, the last chunk short)."""
    N, C, K, H, W = shape
    if chunk:
        monkeypatch.setattr(strided_conv, "CHUNK_BYTES", 4 * C * ((H + 1) // 2) * ((W + 1) // 2) * chunk)
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(N, C, H, W, generator=generator) < 0.3).float()
    tensors = (x, torch.randn(K, C, 1, 1, generator=generator) / C ** 0.5,
               torch.randn(K, generator=generator) if bias else None)
    grad = torch.randn(N, K, (H + 1) // 2, (W + 1) // 2, generator=generator)
    ours = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    theirs = [t.double().requires_grad_() if t is not None else None for t in tensors]
    out = strided_conv.conv1x1_stride2(*ours)
    out.backward(grad)
    reference = F.conv2d(*theirs, stride=2)
    reference.backward(grad.double())
    assert out.grad_fn.name() == "Conv1x1Stride2Backward" and out.shape == reference.shape
    pairs = [(out.detach(), reference.detach())] + [(a.grad, r.grad) for a, r in zip(ours, theirs) if a is not None]
    for mine, exact in pairs:
        assert _relative_error(mine, exact) < TOLERANCE


def test_supports_only_the_calls_it_handles():
    weight = torch.zeros(32, 16, 3, 3)
    assert strided_conv.supports(torch.zeros(2, 16, 8, 8), weight)
    assert not strided_conv.supports(torch.zeros(2, 16, 8, 8, dtype=torch.float64), weight.double())
    assert not strided_conv.supports(torch.zeros(2, 8, 8, 8), torch.zeros(32, 8, 3, 3))  # too few channels
    assert not strided_conv.supports(torch.zeros(2, 16, 8, 8), torch.zeros(32, 16, 1, 1))
    assert strided_conv.supports(torch.zeros(2, 16, 8, 8), torch.zeros(32, 16, 1, 1), size=1)
    assert not strided_conv.supports(torch.zeros(2, 16, 8, 8), weight, size=1)
    assert not strided_conv.supports(torch.zeros(16, 8, 8), weight)  # unbatched
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not strided_conv.supports(torch.zeros(2, 16, 8, 8), weight)


def test_falls_back_to_torch_with_one_warning_without_a_compiler(monkeypatch):
    monkeypatch.setattr(strided_conv, "extension", lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
    strided_conv.available.cache_clear()
    try:
        x, weight = torch.randn(2, 16, 8, 8), torch.randn(16, 16, 3, 3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = strided_conv.conv3x3_stride2(x, weight), strided_conv.conv3x3_stride2(x, weight)
        assert torch.equal(first, F.conv2d(x, weight, None, 2, 1)) and torch.equal(second, first)
        messages = [str(w.message) for w in caught if "im2col" in str(w.message)]
        assert len(messages) == 1 and "no C++ compiler" in messages[0]
    finally:
        strided_conv.available.cache_clear()
