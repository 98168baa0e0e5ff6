"""What BPTT keeps for the backward, kept small: binary spikes as bits, BatchNorm outputs as a recipe.

A conv or linear layer saves its input for the weight gradient; in a spiking network that input is mostly the spikes
of the neuron before it, ``{0, 1}`` in float32. :class:`SpikePacking` marks the outputs of neurons that declare
``binary_spikes`` (a forward hook) and, while :meth:`SpikePacking.saving` is active, packs every saved tensor that
is such an output (or a view of one) into a ``uint8`` bit array; autograd unpacks it when the backward needs it. A
neuron saves its input, mostly a BatchNorm's output (or a residual sum of those and spikes): with ``recompute=True``
such a tensor is kept as its recipe (``snnexp.models.recompute``) and recomputed from the BN's own saved input when
the backward needs it. With ``recompute_conv`` that input, a convolution's output, is itself kept as its recipe: the
convolution runs again on its input (spikes as bits) in the backward, once for BN and the neuron together;
``"cheap"`` (the default) does so for the convolutions that cost little to run again next to the model's costliest
(1x1 shortcuts, encoding layers), ``"all"`` for every one. All of them restore the original exactly, so gradients
are bit-identical (tests). Within one forward, each tensor is packed once and each shared recipe kept once, however
many times autograd saves them.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch import nn

from snnexp.errors import ConfigValueError
from snnexp.kernels import cpu as cpu_kernels
from snnexp.models.recompute import (BATCH_NORMS, CONVOLUTIONS, SHARED_ATTR, Recipe, cheap_convolutions, recipe_of,
                                     recording, root_of, tag_batch_norm, tag_convolution, untag)

_MARK = "_snnexp_binary_spikes"
RECOMPUTE_CONV = ("none", "cheap", "all")  # which convolutions' outputs are recomputed in the backward
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

    def __init__(self, x: torch.Tensor, bits: torch.Tensor | None = None):
        self.bits, self.shape, self.dtype = pack_bits(x) if bits is None else bits, x.shape, x.dtype


class _Memo:
    """What one forward has already kept compactly, so that a tensor saved twice (a convolution's input spikes and a
    recipe's operand; a convolution's output as BN's input and in the recipe of BN's output) is kept once. Entries
    hold a weak reference to their tensor (or recipe), so a freed one whose address comes again is not mistaken for
    it."""

    def __init__(self):
        self.bits: dict[int, tuple] = {}
        self.roots: dict[int, tuple] = {}

    def packed(self, x: torch.Tensor) -> _Packed:
        root = root_of(x)
        key = (root._version, x.storage_offset(), x.numel())
        entry = self.bits.get(id(root))
        if entry is not None and entry[0]() is root and entry[1] == key:
            return _Packed(x, entry[2])
        packed = _Packed(x)
        self.bits[id(root)] = (weakref.ref(root), key, packed.bits)
        return packed

    def root(self, recipe: Recipe, make) -> _Root:
        """The one recomputation of a shared ``recipe`` (``make()`` builds it the first time); a recipe that is not
        shared gets a recomputation of its own."""
        if not recipe.shared:
            return make()
        entry = self.roots.get(id(recipe))
        if entry is not None and entry[0]() is recipe:
            return entry[1]
        root = make()
        if root is not None:
            self.roots[id(recipe)] = (weakref.ref(recipe), root)
        return root


class _Root:
    """A tagged tensor as its recipe: the kept tensors (with their versions) and operands, compacted. A shared one
    keeps its recomputation once made, for the other saved copies (freed with the last of them)."""

    __slots__ = ("fn", "kept", "versions", "operands", "layout", "shared", "result")

    def __init__(self, recipe: Recipe, kept: list, operands: list):
        self.fn, self.kept, self.operands, self.shared, self.result = recipe.fn, kept, operands, recipe.shared, None
        self.versions = [t._version if isinstance(t, torch.Tensor) else None for t in self.kept]
        self.layout = (recipe.shape, recipe.stride)

    def restore(self) -> torch.Tensor:
        if self.result is not None:
            return self.result
        for t, version in zip(self.kept, self.versions):
            if isinstance(t, torch.Tensor) and t._version != version:
                raise RuntimeError("a tensor needed to recompute a saved BatchNorm or convolution output was "
                                   "modified in place after the forward (set recompute_bn=false, or "
                                   "recompute_conv=false, to keep the outputs instead)")
        with torch.no_grad():
            root = self.fn(*(_unpack(k) for k in self.kept), *(_unpack(o) for o in self.operands))
        shape, stride = self.layout
        if root.stride() != stride:  # the same values in the forward's memory layout, for the saved view
            root = torch.empty_strided(shape, stride, dtype=root.dtype, device=root.device).copy_(root)
        if self.shared:
            setattr(root, SHARED_ATTR, True)  # read again by the other copies: nothing may write into it
            self.result = root
        return root


class _Recomputed:
    """A saved tensor as its recipe's recomputation and the view of it that was saved."""

    __slots__ = ("root", "view")

    def __init__(self, x: torch.Tensor, root: _Root):
        self.root = root
        self.view = None if x._base is None else (x.shape, x.stride(), x.storage_offset())

    def restore(self) -> torch.Tensor:
        root = self.root.restore()
        return root if self.view is None else root.as_strided(*self.view)


def _is_spikes(x) -> bool:
    return isinstance(x, torch.Tensor) and getattr(root_of(x), _MARK, False) and x.is_floating_point() \
        and x.is_contiguous()


def _compact(x: torch.Tensor, recompute: bool, memo: _Memo):
    """``x`` as bits (binary spikes) or as its recipe (with ``recompute``), or None where neither applies."""
    if _is_spikes(x):
        return memo.packed(x)
    recipe = recipe_of(x) if recompute else None
    if recipe is None:
        return None
    root = memo.root(recipe, lambda: _root_of_recipe(recipe, recompute, memo))
    if root is None:
        untag(x)  # x is kept as it is: let its operands go
        return None
    return _Recomputed(x, root)


def _root_of_recipe(recipe: Recipe, recompute: bool, memo: _Memo) -> _Root | None:
    operands = [_compact(o, recompute, memo) for o in recipe.operands]
    if any(o is None for o in operands):
        return None
    kept = [_compact_kept(t, recompute, memo) for t in recipe.kept]  # a BN right after a neuron, or a convolution
    return _Root(recipe, kept, operands)


def _compact_kept(t, recompute: bool, memo: _Memo):
    """A recipe's kept tensor: as bits if spikes, by its own recipe if it has one (a convolution's output as BN's
    input, a BN's output as a convolution's), else as it is."""
    if not isinstance(t, torch.Tensor):
        return t
    if _is_spikes(t):
        return memo.packed(t)
    if recompute and recipe_of(t) is not None:
        compact = _compact(t, recompute, memo)
        if compact is not None:
            return compact
    return t


def _unpack(saved):
    if isinstance(saved, _Packed):
        return unpack_bits(saved.bits, saved.shape, saved.dtype)
    return saved.restore() if isinstance(saved, _Recomputed) else saved


def _mark(module: nn.Module, args, output) -> None:
    if isinstance(output, torch.Tensor):
        setattr(root_of(output), _MARK, True)


def recompute_conv_mode(value) -> str:
    """``value`` as one of :data:`RECOMPUTE_CONV` (``true`` / ``false`` read as ``all`` / ``none``)."""
    mode = {"true": "all", "false": "none"}.get(str(value).lower(), str(value).lower())
    if mode not in RECOMPUTE_CONV:
        raise ConfigValueError(f"recompute_conv={value!r} is not one of {', '.join(RECOMPUTE_CONV)} (none: keep every "
                               "convolution's output; cheap: recompute the cheap ones; all: recompute every one).")
    return mode


def recomputed_convolutions(model: nn.Module, mode: str) -> list[nn.Module]:
    """The convolutions of ``model`` whose outputs ``recompute_conv=mode`` recomputes."""
    if mode == "cheap":
        return cheap_convolutions(model)
    return [m for m in model.modules() if isinstance(m, CONVOLUTIONS)] if mode == "all" else []


class SpikePacking:
    """Marks the outputs of ``model``'s binary-spike neurons (``enabled``), tags its exact ``nn.BatchNorm*d``
    outputs as recomputable (``recompute``) and its convolutions' outputs too (``recompute_conv``: none, cheap or
    all, with ``recompute``); :meth:`saving` keeps them compactly when autograd saves them."""

    def __init__(self, model: nn.Module, enabled: bool = True, recompute: bool = False,
                 recompute_conv: str | bool = "cheap"):
        self.recompute = recompute
        self._memo = _Memo()
        mode = recompute_conv_mode(recompute_conv)  # checked even where recompute is off
        convolutions = recomputed_convolutions(model, mode) if recompute else []
        marks = [m.register_forward_hook(_mark) for m in model.modules()
                 if enabled and getattr(m, "binary_spikes", False)]
        tags = [m.register_forward_hook(tag_batch_norm) for m in model.modules()
                if recompute and type(m) in BATCH_NORMS]
        tags += [m.register_forward_hook(tag_convolution) for m in convolutions]
        self._handles = marks + tags

    def _pack(self, x: torch.Tensor):
        compact = _compact(x, self.recompute, self._memo)
        return x if compact is None else compact

    @contextlib.contextmanager
    def saving(self):
        """Keep the marked spikes and tagged outputs compactly while autograd saves them inside the block (the
        forward of a training step)."""
        if self._handles:
            self._memo = _Memo()
            try:
                with torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack), \
                        (recording() if self.recompute else contextlib.nullcontext()):
                    yield
            finally:
                self._memo = _Memo()  # the forward's entries go: the backward holds what it needs
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
