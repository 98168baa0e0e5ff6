"""What BPTT keeps for the backward, kept small: binary spikes as bits, BatchNorm outputs as a recipe.

A conv or linear layer saves its input for the weight gradient; in a spiking network that input is mostly the
spikes of the neuron before it, ``{0, 1}`` in float32. :class:`SpikePacking` marks the outputs of neurons that
declare ``binary_spikes`` (a forward hook) and, while :meth:`SpikePacking.saving` is active, packs every saved
tensor that is such an output (or a view of one) into a ``uint8`` bit array; autograd unpacks it when the backward
needs it. A neuron saves its input, mostly a BatchNorm's output (or a residual sum of those and spikes): with
``recompute=True`` such a tensor is kept as its recipe (``snnexp.models.recompute``) and recomputed from the BN's
own saved input when the backward needs it. Both restore the original exactly, so gradients are bit-identical
(tests).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from snnexp.kernels import cpu as cpu_kernels
from snnexp.models.recompute import (BATCH_NORMS, Recipe, recipe_of, recording, root_of, tag_batch_norm,
                                     untag)

_MARK = "_snnexp_binary_spikes"
_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _in_one_pass(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the CPU extension packs (or unpacks) these spikes: float32 on the CPU, in one pass instead of
    torch's several, the unpacked spikes from its buffer cache."""
    return device.type == "cpu" and dtype == torch.float32 and cpu_kernels.available()


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """A tensor of 0s and 1s as ``ceil(numel / 8)`` bytes, bit ``i`` of byte ``j`` being entry ``8 j + i``."""
    if _in_one_pass(x.device, x.dtype):
        return cpu_kernels.extension().pack_bits(x.detach().contiguous())
    bits = x.reshape(-1).ne(0).to(torch.uint8)
    pad = -bits.numel() % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    bits = bits.view(-1, 8)
    packed = bits[:, 0].clone()
    for i in range(1, 8):
        packed |= bits[:, i] << i
    return packed


def unpack_bits(packed: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a contiguous tensor of ``shape`` and ``dtype`` holding the 0s and 1s."""
    if _in_one_pass(packed.device, dtype):
        return cpu_kernels.extension().unpack_bits(packed, shape.numel()).view(shape)
    shifts = _SHIFTS.get(packed.device)
    if shifts is None:
        shifts = _SHIFTS[packed.device] = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[: shape.numel()].to(dtype).view(shape)


class _Packed:
    """A saved spike tensor in bits, with what it takes to restore it."""

    __slots__ = ("bits", "shape", "dtype")

    def __init__(self, x: torch.Tensor):
        self.bits, self.shape, self.dtype = pack_bits(x), x.shape, x.dtype


class _Recomputed:
    """A saved tensor as its recipe: the kept tensors (with their versions), the operands compacted, and the view
    of the recomputed tensor that was saved."""

    __slots__ = ("fn", "kept", "versions", "operands", "layout", "view")

    def __init__(self, x: torch.Tensor, recipe: Recipe, operands: list):
        self.fn, self.operands = recipe.fn, operands
        self.kept = [_Packed(t) if _is_spikes(t) else t for t in recipe.kept]  # a BN right after a neuron
        self.versions = [t._version if isinstance(t, torch.Tensor) else None for t in self.kept]
        self.layout = (recipe.shape, recipe.stride)
        self.view = None if x._base is None else (x.shape, x.stride(), x.storage_offset())

    def restore(self) -> torch.Tensor:
        for t, version in zip(self.kept, self.versions):
            if isinstance(t, torch.Tensor) and t._version != version:
                raise RuntimeError("a tensor needed to recompute a saved BatchNorm output was modified in place "
                                   "after the forward (set recompute_bn=false to keep the outputs instead)")
        with torch.no_grad():
            root = self.fn(*(_unpack(k) for k in self.kept), *(_unpack(o) for o in self.operands))
        shape, stride = self.layout
        if root.stride() != stride:  # the same values in the forward's memory layout, for the saved view
            root = torch.empty_strided(shape, stride, dtype=root.dtype, device=root.device).copy_(root)
        return root if self.view is None else root.as_strided(*self.view)


def _is_spikes(x) -> bool:
    return isinstance(x, torch.Tensor) and getattr(root_of(x), _MARK, False) and x.is_floating_point() \
        and x.is_contiguous()


def _compact(x: torch.Tensor, recompute: bool):
    """``x`` as bits (binary spikes) or as its recipe (with ``recompute``), or None where neither applies."""
    if _is_spikes(x):
        return _Packed(x)
    recipe = recipe_of(x) if recompute else None
    if recipe is None:
        return None
    operands = [_compact(o, recompute) for o in recipe.operands]
    if any(o is None for o in operands):
        untag(x)  # x is kept as it is: let its operands go
        return None
    return _Recomputed(x, recipe, operands)


def _unpack(saved):
    if isinstance(saved, _Packed):
        return unpack_bits(saved.bits, saved.shape, saved.dtype)
    return saved.restore() if isinstance(saved, _Recomputed) else saved


def _mark(module: nn.Module, args, output) -> None:
    if isinstance(output, torch.Tensor):
        setattr(root_of(output), _MARK, True)


class SpikePacking:
    """Marks the outputs of ``model``'s binary-spike neurons (``enabled``) and tags its exact ``nn.BatchNorm*d``
    outputs as recomputable (``recompute``); :meth:`saving` keeps them compactly when autograd saves them."""

    def __init__(self, model: nn.Module, enabled: bool = True, recompute: bool = False):
        self.recompute = recompute
        marks = [m.register_forward_hook(_mark) for m in model.modules()
                 if enabled and getattr(m, "binary_spikes", False)]
        tags = [m.register_forward_hook(tag_batch_norm) for m in model.modules()
                if recompute and type(m) in BATCH_NORMS]
        self._handles = marks + tags

    def _pack(self, x: torch.Tensor):
        compact = _compact(x, self.recompute)
        return x if compact is None else compact

    @contextlib.contextmanager
    def saving(self):
        """Keep the marked spikes and tagged outputs compactly while autograd saves them inside the block (the
        forward of a training step)."""
        if self._handles:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack), \
                    (recording() if self.recompute else contextlib.nullcontext()):
                yield
        else:
            yield
        # the CPU neurons' cached free buffers are the forward's spikes, freed once packed: kept through the
        # backward they would sit idle at its peak (ResNet-19, T=8: 220 of 1500 MiB), unless the cache is torch's
        # allocator: then the backward's own tensors take their pages
        if not cpu_kernels.caches_torch_tensors():
            cpu_kernels.empty_cache()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
