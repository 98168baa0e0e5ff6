"""Binary weights for ReverB-SNN: "Reversing Bit of the Weight and Activation for Spiking Neural Networks"
(Guo, Zhang, Jie, Liu, Tong, Chen, Peng, Ma; ICML 2025, PMLR 267:21220-21231; arXiv 2506.07720).

ReverB swaps the usual roles: weights are binary, spikes real-valued (``snnexp.neurons.reverb``), so each
synaptic operation is still an addition. From the paper's text (no official code was found):

    W_b = sign(W),  sign(w) = +1 if w >= 0 else -1           (the paper's binarisation)
    W_b = alpha * sign(W)                                      (its "trainable factor" for the amplitude)

and at inference the factor is re-parameterised away so the network holds plain ±1 weights again.

Choices that are ours, where the text we could read leaves them open:

* ``alpha`` is one trainable value per output channel, initialised to ``mean |W|`` over that channel
  (XNOR-Net's closed-form scale, Rastegari et al. 2016); it is then learnt by backprop.
* Backward: straight-through estimator with clipping (BinaryConnect / XNOR-Net),
  ``dL/dW = dL/dW_b * alpha * 1[|W| <= 1]``; the latent real ``W`` is what the optimiser updates.
* Every Conv/Linear is binarised except the input layers and the output layer (customary in BNNs):
  input layers are the convolutions that read the data's channels (``in_channels == input_shape[0]``: the
  stem, and the parallel stems of STMixer's patch embedding and PointNet's T-Net and conv1), or the first
  Conv/Linear when no convolution matches; the output layer is ``model.classifier``.
* Re-parameterisation (:func:`reparameterise_binary`, eval mode only): a binarised layer computes
  ``y = alpha * (W_b x) + b = alpha * (W_b x + b / alpha)``; the per-channel ``alpha`` goes into the
  BatchNorm that follows (``gamma <- gamma * alpha``, ``running_mean <- running_mean / alpha``, exact in eval
  mode); where no BatchNorm follows (e.g. ResNet-19's fc 512->256) it stays as an explicit per-channel
  :class:`ChannelScale` after the ±1 layer, the same cost as an inference BatchNorm's affine.
  The spikes need no folding: ReverB's are real-valued by design (O = U when U >= V_th).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # tdBN subclasses these, so folds the same way


class SignSTE(torch.autograd.Function):
    """Forward ``sign(w)`` with ``sign(0) = +1``; backward the clipped straight-through estimator
    ``dL/dw = dL/dsign * 1[|w| <= 1]``."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def binarize(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` in {-1, +1} (``sign(0) = +1``), straight-through gradient clipped to ``|w| <= 1``."""
    return SignSTE.apply(w)


class BinaryWeight(nn.Module):
    """Parametrization ``W -> alpha * sign(W)``, alpha per output channel (dim 0), trainable, initialised to
    ``mean |W|`` over the channel. The real ``W`` stays as ``layer.parametrizations.weight.original``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.alpha = nn.Parameter(weight.detach().abs().flatten(1).mean(1).clone())

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """``alpha`` shaped to broadcast over ``w``: ``[C_out, 1, ...]``."""
        return self.alpha.view(-1, *[1] * (w.dim() - 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.scale(w) * binarize(w)


class ChannelScale(nn.Module):
    """``y * alpha`` per channel (``dim``: 1 after a convolution, -1 after a Linear): what remains of a
    binarised layer's factor after :func:`reparameterise_binary` when no BatchNorm follows it."""

    def __init__(self, alpha: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("alpha", alpha.detach().clone())
        self.dim = dim

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.dim == -1:
            return y * self.alpha
        return y * self.alpha.view(-1, *[1] * (y.dim() - 2))

    def extra_repr(self) -> str:
        return f"channels={self.alpha.numel()}, dim={self.dim}"


def binary_parametrization(layer: nn.Module) -> BinaryWeight | None:
    """The :class:`BinaryWeight` on ``layer.weight``, or None when the layer is not binarised."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, BinaryWeight)), None)


def real_layers(model: nn.Module) -> set[nn.Module]:
    """The Conv/Linear layers ReverB keeps real: the input layers and ``model.classifier``'s (see module doc)."""
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    if not layers:
        return set()
    shape = getattr(model, "input_shape", None)
    channels = shape[0] if shape else None
    keep = {m for m in layers if isinstance(m, LAYERS[:3]) and m.in_channels == channels} or {layers[0]}
    classifier = getattr(model, "classifier", None)
    if classifier is not None:
        keep |= {m for m in classifier.modules() if isinstance(m, LAYERS)}
    else:
        keep.add(layers[-1])
    return keep


def apply_binary_weights(model: nn.Module, enabled: bool = False) -> nn.Module:
    """Return ``model`` with, when ``enabled``, every Conv/Linear but the input and output layers binarised:
    ``weight = alpha * sign(W)`` (:class:`BinaryWeight`). ``enabled=False`` leaves the model as it is."""
    if not enabled:
        return model
    keep = real_layers(model)
    for layer in [m for m in model.modules() if isinstance(m, LAYERS)]:
        if layer not in keep and binary_parametrization(layer) is None:
            parametrize.register_parametrization(layer, "weight", BinaryWeight(layer.weight))
    return model


@torch.no_grad()
def reparameterise_binary(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose binarised layers hold exactly ±1 weights and that gives the same
    outputs: each layer's ``alpha`` divides its bias and moves into the BatchNorm that follows it
    (``gamma * alpha``, ``running_mean / alpha``), or into a :class:`ChannelScale` where none does.

    Eval mode only: a training-mode BatchNorm normalises with batch statistics, which the fold cannot change.
    """
    model = copy.deepcopy(model).eval()
    parents = {}
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            parents[id(child)] = (module, child_name)
    for layer in [m for m in model.modules() if isinstance(m, LAYERS)]:
        p = binary_parametrization(layer)
        if p is None:
            continue
        w = layer.parametrizations.weight.original
        alpha = p.alpha.detach().clone()
        if (alpha == 0).any():
            raise ValueError(f"{type(layer).__name__}: a binary-weight factor alpha is exactly 0, so its channel "
                             "cannot be re-parameterised (the channel outputs a constant; prune it instead).")
        _set_plain_weight(layer, torch.where(w >= 0, 1.0, -1.0).to(w.dtype))
        if layer.bias is not None:
            layer.bias.div_(alpha)
        parent, name = parents[id(layer)]
        norm = _following_norm(parent, name)
        if norm is not None:
            norm.weight.mul_(alpha)
            norm.running_mean.div_(alpha)
        else:
            dim = -1 if isinstance(layer, nn.Linear) else 1
            setattr(parent, name, nn.Sequential(layer, ChannelScale(alpha, dim)))
    return model


def _set_plain_weight(layer: nn.Module, weight: torch.Tensor) -> None:
    """Drop ``layer``'s weight parametrization and give it the plain parameter ``weight``. Done by hand because
    ``parametrize.remove_parametrizations`` deletes the property from the injected ``Parametrized*`` class,
    which a deep copy shares with the original model (that would break the original)."""
    if list(layer.parametrizations.keys()) != ["weight"] or len(layer.parametrizations.weight) != 1:
        raise ValueError(f"{type(layer).__name__}: reparameterise_binary expects the binary parametrization to be "
                         f"the only one on the layer; found {dict(layer.parametrizations)}")
    del layer.parametrizations
    layer.__class__ = type(layer).__bases__[0]  # this instance only; the shared class keeps its property
    layer.weight = nn.Parameter(weight)


def _following_norm(parent: nn.Module, name: str) -> nn.Module | None:
    """The affine, running-statistics BatchNorm right after child ``name`` of a Sequential ``parent``
    (skipping Dropout, which is the identity in eval mode), or None."""
    if not isinstance(parent, nn.Sequential):
        return None
    children = list(parent.named_children())
    index = [n for n, _ in children].index(name)
    for _, module in children[index + 1:]:
        if isinstance(module, nn.Dropout):
            continue
        if isinstance(module, NORMS) and module.affine and module.running_mean is not None:
            return module
        return None
    return None
