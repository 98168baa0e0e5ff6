"""The training data order: a function of (seed, epoch) only, and resumable in the middle of an epoch.

``resumable_loader(dataset, seed=..., ...)`` is the training ``DataLoader`` of every snnexp datamodule. Its sampler
draws each epoch's permutation from a generator seeded with (seed, epoch), never from the global RNG, and the loader
is *stateful* for Lightning: the checkpoint records ``{"epoch", "batches"}`` (the batches of that epoch already
trained on), and after a resume the pass over that same epoch starts after them. The consumed batches are skipped
as indices (no sample is read); a pass over any other epoch (Lightning resuming from an end-of-epoch checkpoint
moves on to the next one) starts at its beginning.

Lightning calls ``set_epoch`` before each epoch; the loader's iterator is created lazily (at the first batch, after
``set_epoch``), so the decision "same epoch: skip; other epoch: start over" sees the epoch Lightning is running.
"""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 62-bit seed for (seed, epoch): the workers' base seed of that epoch (the permutation's generator is seeded
    with ``epoch_seed(seed, 0) + epoch``, as ``DistributedSampler`` does)."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**62)


class ResumableSampler(DistributedSampler):
    """A permutation of this process's share of ``dataset`` drawn from (seed, epoch), able to start after the first
    ``skip`` samples of its next pass. A ``DistributedSampler`` by type, so Lightning keeps it under DDP (it already
    gives this process its share) and calls its ``set_epoch``."""

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=epoch_seed(seed, 0),
                         drop_last=False)
        self.run_seed = int(seed)
        self.skip = 0  # samples of the next pass to leave out (a resumed epoch); cleared when that pass starts

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position in the epoch Lightning saves and restores
    (``state_dict`` / ``load_state_dict``); its length is always the whole epoch's, as Lightning counts it."""

    def __init__(self, dataset: Dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self._epoch, self._batches = 0, 0  # the pass in progress: its epoch and the batches handed out
        self._resume_at: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = dict(state)

    def __iter__(self):
        # a generator: nothing below runs before the first batch is asked for, i.e. after Lightning's set_epoch
        sampler = self.sampler
        epoch = getattr(sampler, "epoch", 0)
        start = 0
        if self._resume_at is not None and self._resume_at["epoch"] == epoch:
            start = int(self._resume_at["batches"])
        self._resume_at = None
        if isinstance(sampler, ResumableSampler) and self.batch_size is not None:
            sampler.skip = start * self.batch_size
            if self.generator is not None:  # the workers' base seed (drawn when they start) from (seed, epoch) too,
                self.generator.manual_seed(epoch_seed(sampler.run_seed, epoch) ^ 0x5EED)  # not the global RNG
        else:
            start = 0
        self._epoch, self._batches = epoch, start
        for batch in super().__iter__():
            self._batches += 1
            yield batch


def resumable_loader(dataset: Dataset, seed: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                     **kwargs) -> ResumableLoader:
    """The training loader of ``dataset``: shuffled by (seed, epoch), this process's share under DDP, resumable."""
    sampler = ResumableSampler(dataset, seed, num_replicas=num_replicas, rank=rank)
    return ResumableLoader(dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator(), **kwargs)
