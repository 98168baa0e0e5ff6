"""Binary spikes kept for the backward pass as bits: 32× less memory than float32 for what BPTT stores most.

A conv or linear layer saves its input for the weight gradient; in a spiking network that input is mostly the
spikes of the neuron before it, ``{0, 1}`` in float32. :class:`SpikePacking` marks the outputs of neurons that
declare ``binary_spikes`` (a forward hook) and, while :meth:`SpikePacking.saving` is active, packs every saved
tensor that is such an output (or a view of one) into a ``uint8`` bit array; autograd unpacks it when the backward
needs it. The unpacked tensor equals the original exactly, so gradients are bit-identical (tests).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_MARK = "_snnexp_binary_spikes"
_SHIFTS: dict[torch.device, torch.Tensor] = {}


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """A tensor of 0s and 1s as ``ceil(numel / 8)`` bytes, bit ``i`` of byte ``j`` being entry ``8 j + i``."""
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


def _root(x: torch.Tensor) -> torch.Tensor:
    return x._base if x._base is not None else x


def _pack(x: torch.Tensor):
    if getattr(_root(x), _MARK, False) and x.is_floating_point() and x.is_contiguous():
        return _Packed(x)
    return x


def _unpack(saved):
    return unpack_bits(saved.bits, saved.shape, saved.dtype) if isinstance(saved, _Packed) else saved


def _mark(module: nn.Module, args, output) -> None:
    if isinstance(output, torch.Tensor):
        setattr(_root(output), _MARK, True)


class SpikePacking:
    """Marks the outputs of ``model``'s binary-spike neurons; :meth:`saving` packs them when autograd saves them."""

    def __init__(self, model: nn.Module, enabled: bool = True):
        self.enabled = enabled
        self._handles = [m.register_forward_hook(_mark) for m in model.modules()
                         if enabled and getattr(m, "binary_spikes", False)]

    @contextlib.contextmanager
    def saving(self):
        """Pack the marked spikes autograd saves inside the block (the forward of a training step)."""
        if not (self.enabled and self._handles):
            yield
            return
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
