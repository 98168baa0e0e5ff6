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
* Every Conv/Linear is binarised except the input layers and the output layer (customary in BNNs). Each model
  says which those are as it builds them: the layers that read the data (the stem; the parallel stems of
  STMixer's patch embedding; PointNet's input T-Net and conv1) and the classifier are built real, every other
  Conv/Linear passes through the model's ``hidden_weights``, :func:`real_weights` or :func:`sign_weights`
  (``model.binary_weights=true``; :func:`weights_for` maps the flag). A model that re-initialises its weights
  after building them does so with :func:`init_weight_`, which also re-sets alpha from the new latent weight.
* Re-parameterisation (:func:`reparameterise_binary`, eval mode only): a binarised layer computes
  ``y = alpha * (W_b x) + b = alpha * (W_b x + b / alpha)``; the per-channel ``alpha`` goes into the
  BatchNorm that follows (``gamma <- gamma * alpha``, ``running_mean <- running_mean / alpha``, exact in eval
  mode); where no BatchNorm follows (e.g. ResNet-19's fc 512->256) it stays as an explicit per-channel
  :class:`ChannelScale` after the ±1 layer, the same cost as an inference BatchNorm's affine.
  The spikes need no folding: ReverB's are real-valued by design (O = U when U >= V_th).
"""

from __future__ import annotations

import copy
from typing import Callable

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
        self.alpha = nn.Parameter(self.initial_alpha(weight))

    @staticmethod
    def initial_alpha(weight: torch.Tensor) -> torch.Tensor:
        """XNOR-Net's closed-form scale: ``mean |W|`` over each output channel."""
        return weight.detach().abs().flatten(1).mean(1).clone()

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


WeightsFn = Callable[[nn.Module], nn.Module]  # hidden_weights(layer) -> layer, applied as the layer is built


def real_weights(layer: nn.Module) -> nn.Module:
    """``layer`` as built: real weights."""
    return layer


def sign_weights(layer: nn.Module) -> nn.Module:
    """``layer`` with ReverB's binary weights, ``weight = alpha * sign(W)`` (:class:`BinaryWeight`; the real
    ``W`` becomes ``layer.parametrizations.weight.original``)."""
    if not isinstance(layer, LAYERS):
        raise TypeError(f"sign_weights binarises Conv/Linear layers; got {type(layer).__name__}")
    parametrize.register_parametrization(layer, "weight", BinaryWeight(layer.weight))
    return layer


def weights_for(binary_weights: bool) -> WeightsFn:
    """The ``hidden_weights`` of a model factory's ``binary_weights`` flag (``model.binary_weights``)."""
    return sign_weights if binary_weights else real_weights


@torch.no_grad()
def init_weight_(layer: nn.Module, init: Callable[..., torch.Tensor], *args, **kwargs) -> None:
    """Initialise ``layer``'s real weight in place with ``init(weight, *args, **kwargs)`` (an ``nn.init``
    function). On a binarised layer that is the latent ``W``, and alpha is re-set to ``mean |W|`` per channel,
    exactly as if the layer had been binarised after its initialisation."""
    p = binary_parametrization(layer)
    if p is None:
        init(layer.weight, *args, **kwargs)
        return
    latent = layer.parametrizations.weight.original
    init(latent, *args, **kwargs)
    p.alpha.copy_(BinaryWeight.initial_alpha(latent))


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
