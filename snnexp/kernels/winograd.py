"""3x3 convolutions (padding 1) on the CPU by Winograd's minimal filtering: stride 1 by F(4x4, 3x3) (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", CVPR 2016), 4x fewer multiplications than the direct
convolution; stride 2 by a polyphase F(3x3, 2x2), 81/49 = 1.65x fewer. Forward and backward.

Stride 1: each 6x6 input patch ``d`` (4 apart) and each filter ``g`` are transformed (``B^T d B``, ``G g G^T``),
multiplied elementwise and summed over input channels, which is 36 matrix products ``[P, C] x [C, K]`` (MKL,
through ``torch.bmm``), and transformed back (``A^T m A``) into a 4x4 output tile. Stride 2: output ``i`` of a
row is ``w0 x[2i-1] + w1 x[2i] + w2 x[2i+1]``, the outer taps on the odd pixels (a 2-tap filter, by F(3, 2): 4
products for 3 outputs) and the middle one on the even pixels (3 products); along both dimensions, a 7x7 patch (6
apart) gives 49 products for a 3x3 output tile, against 81 for the direct convolution. The backward runs the
adjoint transforms (``A dy A^T`` and ``B v B^T``, overlap-added) and the same products transposed. The tile
transforms are ``cuda/winograd_cpu.cpp``, built like the neuron extension (:func:`snnexp.kernels.cpu.load_cached`);
the images go through in chunks so the transformed tiles stay a few MiB (cache-sized, and no fresh pages for every
call).

The result is the convolution's up to float32 rounding: about 1e-5 of the output's largest entry for stride 1,
against 1e-6 for the direct convolution (F(4x4, 3x3)'s constants, up to 8, grow the rounding; tests bound it against
float64); stride 2's constants are 1 and 1/2. oneDNN (what ``F.conv2d`` runs on the CPU) has no Winograd path for
AVX2 machines, and its direct convolutions are most of a spiking ResNet's training step there.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F

from snnexp.kernels import cpu, sources, strided_conv

SOURCE = "winograd_cpu.cpp"
CHUNK_BYTES = 16 << 20  # the transformed tiles of one chunk of images, per tensor (8 MiB: thinner, slower products)
# The transformed filters of one block of output channels (and their gradient), per stride. A wide layer's input is
# transformed again for each block: stride 1's 512x512 (36 MiB) goes in 3 blocks, 17 MiB less ResNet-19 peak (T=8)
# than 2 blocks for about 1% of a VGGSNN step; stride 2's 25 filters of 512x512 (VGGSNN's) take one.
FILTER_BYTES = {1: 12 << 20, 2: 28 << 20}
MIN_CHANNELS = 16  # below this, the matrix products are too thin to beat the direct convolution
# The least share of the output tiles' pixels inside the output, per stride. Stride 1: 2.25 / share multiplications
# per output and tap against the direct 9; 6x6 images (36 of 64) are 1.7x faster than oneDNN (512 channels, T*B =
# 160), 5x5 (25 of 64) would be slower. Stride 2 only gains with whole tiles (outputs a multiple of 3, as VGGSNN's at
# 48 px): at 16x16 outputs (0.79 of 18x18) it was 15% slower than the im2col backward, at 32x32 (0.94) 15% too.
MIN_TILE_USE = {1: 0.5, 2: 0.95}
# Below this many input channels a stride-2 forward is torch's (oneDNN) and only its backward Winograd's: the products
# it saves (81 - 49 per tile and channel pair) are then worth less than the transforms' traffic (VGGSNN's conv2, 64
# channels: 94 ms against oneDNN's 58; from 256 channels Winograd is ahead). The backward is ahead at 64 channels too.
MIN_STRIDE2_FORWARD_CHANNELS = 128


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One Winograd algorithm: ``tile`` output pixels per tile and dimension from ``values`` transformed values per
    dimension, its filter transform ``G`` (``values x 3``), and how its ``values ** 2`` products share filters:
    ``groups`` of ``(filters, sharing)``, in the order the tile transforms keep the values (each filter's
    ``sharing`` values adjacent), and ``filters``, the ``(i, j)`` of each distinct transformed filter in that
    order."""

    stride: int
    tile: int
    values: int
    G: tuple[tuple[float, ...], ...]
    groups: tuple[tuple[int, int], ...]
    filters: tuple[tuple[int, int], ...]
    tile_sum: int  # where the output gradient's transform keeps the sum of its tile (the bias gradient's share)


def _stride2_filters() -> tuple[tuple[int, int], ...]:
    """The 25 distinct filters of the polyphase F(3x3, 2x2): values 4, 5, 6 of a dimension all take w1, so (i, j)
    with i or j at least 4 share the filter of (min(i, 4), min(j, 4)); grouped as the C++ source keeps them."""
    return (tuple((i, j) for i in range(4) for j in range(4)) + tuple((i, 4) for i in range(4))
            + tuple((4, j) for j in range(4)) + ((4, 4),))


ALGORITHMS = {
    1: Algorithm(1, 4, 6, ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
                          (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),  # F(4x4, 3x3)
                 groups=((36, 1),), filters=tuple((i, j) for i in range(6) for j in range(6)), tile_sum=6 * 1 + 1),
    # polyphase: (w0, w2) by F(3, 2) with points 0, 1, -1, infinity, then w1 three times (the direct middle tap)
    2: Algorithm(2, 3, 7, ((1, 0, 0), (1 / 2, 0, 1 / 2), (1 / 2, 0, -1 / 2), (0, 0, 1), (0, 1, 0), (0, 1, 0), (0, 1, 0)),
                 groups=((16, 1), (4, 3), (4, 3), (1, 9)), filters=_stride2_filters(), tile_sum=4 * 1 + 1),
}


@functools.cache
def extension():
    """Build (or load from the cache) and import the tile transforms; raises if they cannot be built."""
    with sources.source_dir() as cuda_dir:
        return cpu.load_cached("snnexp_winograd_cpu", [cuda_dir / SOURCE], cflags=cpu.CFLAGS, ldflags=cpu.LDFLAGS,
                               what="the Winograd convolution's tile transforms",
                               usually="about 20 seconds on 2 idle cores")


@functools.cache
def available() -> bool:
    """True when the tile transforms build and load here; otherwise one warning with the reason, and False."""
    return cpu.loads(extension, "the Winograd convolution's tile transforms", "torch's 3x3 convolutions")


def output_size(n: int, stride: int) -> int:
    """The output size of a 3x3 convolution with padding 1 over ``n`` pixels."""
    return (n - 1) // stride + 1


def supports(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> bool:
    """Whether :func:`conv3x3` runs this call faster than torch: float32 CPU tensors outside autocast, a batch of
    2-d images whose output fills at least the stride's :data:`MIN_TILE_USE` of its tiles, a ``[K, C, 3, 3]`` filter
    with ``C`` and ``K`` at least :data:`MIN_CHANNELS`, stride 1 or 2."""
    if x.dim() != 4 or weight.dim() != 4 or x.numel() == 0 or stride not in ALGORITHMS:
        return False
    K, C = weight.shape[:2]
    tile = ALGORITHMS[stride].tile
    Ho, Wo = (output_size(n, stride) for n in x.shape[2:])
    tile_use = Ho * Wo / (tile * tile * _ceil_div(Ho, tile) * _ceil_div(Wo, tile))
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.shape[2:] == (3, 3) and x.shape[1] == C and min(C, K) >= MIN_CHANNELS
            and tile_use >= MIN_TILE_USE[stride] and not torch.compiler.is_compiling() and not cpu.autocast_on())


@functools.cache
def _filter_matrix(dtype: torch.dtype, stride: int = 1) -> torch.Tensor:
    """``[filters, 9]``: row ``f``, column ``3 a + b`` is ``G[i, a] G[j, b]`` for the algorithm's filter ``f = (i,
    j)`` (all of ``G (x) G`` for stride 1)."""
    algorithm = ALGORITHMS[stride]
    g = torch.tensor(algorithm.G, dtype=torch.float64)
    rows = [i * algorithm.values + j for i, j in algorithm.filters]
    return torch.kron(g, g)[rows].to(dtype)


def filter_transform(weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """``[K, C, 3, 3] -> [filters, K, C]``: the algorithm's distinct entries of ``G g G^T`` for every filter, one
    product with the weight as it lies (``[K C, 9]``, transposed in the product: no copy)."""
    K, C = weight.shape[:2]
    return torch.mm(_filter_matrix(weight.dtype, stride), weight.reshape(K * C, 9).t()).view(-1, K, C)


def filter_gradient(grad_u: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The adjoint of :func:`filter_transform`: ``[filters, K, C] -> [K, C, 3, 3]``."""
    filters, K, C = grad_u.shape
    return torch.mm(grad_u.reshape(filters, K * C).t(), _filter_matrix(grad_u.dtype, stride)).view(K, C, 3, 3)


def _groups(algorithm: Algorithm, *tiles: torch.Tensor):
    """For each group of products: its slice of the filters, and each of ``tiles`` (``[values^2, rows, channels]``)
    viewed as ``[filters, sharing * rows, channels]``, the values that multiply one filter stacked."""
    value = first = 0
    for filters, sharing in algorithm.groups:
        count = filters * sharing
        yield (slice(first, first + filters),
               *(t[value:value + count].view(filters, sharing * t.shape[1], t.shape[2]) for t in tiles))
        value, first = value + count, first + filters


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _output_blocks(C: int, K: int, stride: int = 1) -> list[tuple[int, int]]:
    """Output channel ranges whose transformed filters take at most about the stride's :data:`FILTER_BYTES` each (a
    multiple of 16 channels), so that a wide layer's transient memory stays bounded (its inputs are transformed
    again for each block)."""
    blocks = _ceil_div(len(ALGORITHMS[stride].filters) * C * K * 4, FILTER_BYTES[stride])
    width = 16 * _ceil_div(_ceil_div(K, blocks), 16) if blocks > 1 else K
    return [(k0, min(K, k0 + width)) for k0 in range(0, K, width)]


class _Workspace:
    """The transformed tiles of one chunk of images: ``tiles(which, images, channels)`` views one of its two work
    buffers (:func:`snnexp.kernels.cpu.scratch`, back to the buffer cache after the call) as a contiguous
    ``[values^2, images * tiles_per_image, channels]``; the chunks keep each about :data:`CHUNK_BYTES`."""

    def __init__(self, x: torch.Tensor, algorithm: Algorithm, channels: int, other_channels: int):
        Ho, Wo = (output_size(n, algorithm.stride) for n in x.shape[2:])
        self.values = algorithm.values ** 2
        self.tiles_per_image = _ceil_div(Ho, algorithm.tile) * _ceil_div(Wo, algorithm.tile)
        per_image = self.values * self.tiles_per_image * max(channels, other_channels) * 4
        self.per_chunk = max(1, min(x.shape[0], CHUNK_BYTES // per_image))
        size = self.values * self.per_chunk * self.tiles_per_image
        floats = CHUNK_BYTES // 4  # one size every call, so that the buffer cache always has it
        self.buffers = (cpu.scratch("winograd tiles", max(floats, size * channels)),
                        cpu.scratch("winograd products", max(floats, size * other_channels)))

    def tiles(self, which: int, images: int, channels: int) -> torch.Tensor:
        rows = images * self.tiles_per_image
        return self.buffers[which][: self.values * rows * channels].view(self.values, rows, channels)

    def chunks(self, N: int):
        return [(n0, min(N, n0 + self.per_chunk)) for n0 in range(0, N, self.per_chunk)]


class Winograd3x3(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride, padding=1)`` for stride 1 or 2 (the :data:`ALGORITHMS`; a stride-2 forward
    with fewer than :data:`MIN_STRIDE2_FORWARD_CHANNELS` input channels by torch); once differentiable."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride=1):
        x, ext, algorithm = x.contiguous(), extension(), ALGORITHMS[stride]
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.stride = bias is not None, stride
        N, C, H, W = x.shape
        if stride == 2 and C < MIN_STRIDE2_FORWARD_CHANNELS:
            return F.conv2d(x, weight, bias, 2, 1)
        bias_values = x.new_empty(0) if bias is None else bias.detach().contiguous()  # empty: no bias
        K = weight.shape[0]
        blocks = _output_blocks(C, K, stride)
        out = cpu.cached_empty((N, K, output_size(H, stride), output_size(W, stride)))  # last step's pages
        work = _Workspace(x, algorithm, C, blocks[0][1])
        for k0, k1 in blocks:  # inputs transformed once per block of outputs (one block unless very wide)
            u = filter_transform(weight.detach()[k0:k1], stride)
            for n0, n1 in work.chunks(N):
                v, m = work.tiles(0, n1 - n0, C), work.tiles(1, n1 - n0, k1 - k0)
                ext.input_transform(x[n0:n1], v, stride)
                for f, v_group, m_group in _groups(algorithm, v, m):
                    torch.bmm(v_group, u[f].transpose(1, 2), out=m_group)
                ext.output_transform(m, out[n0:n1], k0, stride, bias_values)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out, ext, stride = grad_out.contiguous(), extension(), ctx.stride
        algorithm = ALGORITHMS[stride]
        N, C = x.shape[:2]
        K = weight.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        blocks = _output_blocks(C, K, stride)
        grad_x = cpu.cached_empty(x.shape) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        grad_b = weight.new_zeros(K) if need_b and ctx.has_bias else None
        work = _Workspace(x, algorithm, C, blocks[0][1])
        for k0, k1 in blocks:
            u = filter_transform(weight[k0:k1], stride) if need_x else None
            grad_u = x.new_zeros(len(algorithm.filters), k1 - k0, C) if need_w else None
            for n0, n1 in work.chunks(N):
                v, dm = work.tiles(0, n1 - n0, C), work.tiles(1, n1 - n0, k1 - k0)
                ext.grad_output_transform(grad_out[n0:n1], dm, k0, stride)
                if grad_b is not None:  # each tile's sum of dy is one of its transformed values
                    grad_b[k0:k1] += dm[algorithm.tile_sum].sum(0)
                if need_x:
                    for f, dm_group, v_group in _groups(algorithm, dm, v):
                        torch.bmm(dm_group, u[f], out=v_group)
                    ext.grad_input_transform(v, grad_x[n0:n1], k0 > 0, stride)
                if need_w:
                    ext.input_transform(x[n0:n1], v, stride)
                    for f, v_group, dm_group in _groups(algorithm, v, dm):
                        grad_u[f].baddbmm_(dm_group.transpose(1, 2), v_group)
            if need_w:
                grad_w[k0:k1] = filter_gradient(grad_u, stride)
        return grad_x, grad_w, grad_b, None


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, 1)``, by Winograd where :func:`supports` and :func:`available` say so;
    elsewhere torch's, and for stride 2 the im2col backward (:func:`snnexp.kernels.strided_conv.conv3x3_stride2`,
    faster than torch's where it applies)."""
    if supports(x, weight, stride) and available():
        return Winograd3x3.apply(x, weight, bias, stride)
    if stride == 2:
        return strided_conv.conv3x3_stride2(x, weight, bias)
    return F.conv2d(x, weight, bias, stride, 1)
