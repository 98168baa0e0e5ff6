"""BatchNorm over the global batch under DDP, on any device and for BatchNorm subclasses (tdBN) alike.

With several processes each BatchNorm normalises with the statistics of its own process's batch, so a DDP run
of N processes x batch B differs from one process with batch N*B. Lightning's ``sync_batchnorm=True`` fixes that
with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, which (1) works on GPUs only (DDP refuses it on the CPU,
so the gloo backend cannot use it) and (2) replaces every BatchNorm by a plain ``SyncBatchNorm``, dropping what a
subclass adds (tdBN's ``alpha * V_th`` scale), and by a plain BatchNorm again after fitting.

:class:`GlobalBatchNorm` is a Lightning ``LayerSync`` plugin (``trainer.plugins``) that instead changes each
BatchNorm's class in place to a subclass of it whose batch statistics are all-reduced over the processes: the
module keeps its parameters, buffers, state-dict keys and its own forward (tdBN's scale is applied on top of the
global statistics), and ``revert`` restores the original class. Evaluation and single-process runs are unchanged.
The momentum is read at each forward, so a hook that sets it per batch (BatchNorm warm start) keeps working.
Cost: two small all-reduces per BatchNorm in the forward pass and two in the backward pass.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
from lightning.pytorch.plugins import LayerSync
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over the processes, differentiable: the gradient of a sum is the sum of the gradients
    (every process's loss depends on every process's input through the shared statistics)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the processes, with the gradient (``torch.distributed.nn``'s version is deprecated)."""
    return _AllReduceSum.apply(tensor)


class _GlobalBatchStats(_BatchNorm):
    """Mixed in right above ``_BatchNorm`` (see :func:`_synced`): in training with several processes, normalise
    with the mean and (biased) variance of every process's batch and update the running statistics with them,
    as one process holding the whole batch would. The all-reduces are differentiable, so the gradients are the
    global batch's too."""

    _unsynced: type  # the BatchNorm class this one was made from (restored by GlobalBatchNorm.revert)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        values = x.float()  # statistics in float32 under mixed precision, as BatchNorm's kernels keep them
        mean, var, count = _global_moments(values)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        out = (values - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """BatchNorm's update: momentum (or the cumulative average when momentum is None), unbiased variance."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def _global_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` ``[N, C, ...]`` over every process's ``x``, and the number of
    values per channel (processes may hold batches of different sizes). Two passes (the mean, then the centred
    squares: two all-reduces) for the accuracy of BatchNorm's own, not the cancellation of E[x^2] - E[x]^2."""
    dims = [0, *range(2, x.dim())]
    sums = all_reduce(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]))
    count = sums[-1]
    mean = sums[:-1] / count
    centred = x - mean.view(1, -1, *[1] * (x.dim() - 2))
    var = all_reduce((centred * centred).sum(dims)) / count
    return mean, var, count


@functools.cache
def _synced(cls: type) -> type:
    """``cls`` with :class:`_GlobalBatchStats` between it and ``_BatchNorm`` in the MRO: a subclass's forward
    (tdBN's) runs first and its ``super().forward`` reaches the global statistics."""
    return type(f"Synced{cls.__name__}", (cls, _GlobalBatchStats), {"_unsynced": cls})


class GlobalBatchNorm(LayerSync):
    """Lightning plugin: BatchNorm statistics over all processes' batches (``trainer.plugins``; see module doc)."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, _BatchNorm) and not isinstance(module, (_GlobalBatchStats, nn.SyncBatchNorm)):
                module.__class__ = _synced(type(module))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if isinstance(module, _GlobalBatchStats):
                module.__class__ = module._unsynced
        return model
