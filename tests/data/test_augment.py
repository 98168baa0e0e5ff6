"""Augmentations (snnexp/data/augment.py): TET's event-frame augmentation and the batch-level MixUp/CutMix with its
probability of mixing a batch."""

import torch

from snnexp.data import TETAugment
from snnexp.data.augment import MixUpCutMix


def all_augmentations(x, max_shift=5):
    for flip in (False, True):
        base = x.flip(-1) if flip else x
        for dh in range(-max_shift, max_shift + 1):
            for dw in range(-max_shift, max_shift + 1):
                yield (flip, dh, dw), torch.roll(base, shifts=(dh, dw), dims=(-2, -1))


def test_tet_augment_is_one_flip_and_one_roll_within_five_pixels_shared_by_all_steps():
    torch.manual_seed(0)
    x = torch.rand(4, 2, 16, 16)
    aug = TETAugment()
    seen = []
    for _ in range(60):
        y = aug(x)
        matches = [params for params, candidate in all_augmentations(x) if torch.equal(candidate, y)]
        assert len(matches) == 1  # the same flip and shift for every time step, |shift| <= 5
        seen.append(matches[0])
    flips = [f for f, _, _ in seen]
    shifts = {s for _, dh, dw in seen for s in (dh, dw)}
    assert 0 < sum(flips) < len(flips)  # both flipped and unflipped occur
    assert min(shifts) < -2 and max(shifts) > 2


def _samples(n=8, classes=4):
    return [(torch.rand(3, 8, 8), i % classes) for i in range(n)]


def test_mixup_prob_mixes_that_fraction_of_batches():
    torch.manual_seed(0)
    mix = MixUpCutMix(4, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.6)
    mixed = 0
    for _ in range(500):
        x, y = mix(_samples())
        assert y.shape == (8, 4)
        torch.testing.assert_close(y.sum(-1), torch.ones(8))
        mixed += bool((y.max(-1).values < 1).any())
    assert abs(mixed / 500 - 0.6) < 0.07  # a mixed batch has some non-one-hot target (lambda < 1 almost surely)


def test_an_unmixed_batch_keeps_its_images_and_one_hot_targets():
    samples = _samples()
    x, y = MixUpCutMix(4, mixup_alpha=0.2, prob=0.0)(samples)
    torch.testing.assert_close(x, torch.stack([s[0] for s in samples]))
    torch.testing.assert_close(y, torch.nn.functional.one_hot(torch.tensor([s[1] for s in samples]), 4).float())
