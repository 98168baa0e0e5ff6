"""Independent reference computations shared by several test files: losses written out from their formulas and
MTT's communication module as a loop, sharing no code with snnexp."""

from __future__ import annotations

from fractions import Fraction

import torch


def log_softmax_ce(logits_2d, target):
    """Cross-entropy written out: mean over samples of logsumexp(z) - z_y."""
    return sum(
        torch.logsumexp(logits_2d[i], 0) - logits_2d[i, target[i]] for i in range(len(target))
    ) / len(target)


def log_softmax(z):
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def ce(z, y):
    return -log_softmax(z)[torch.arange(len(y)), y].mean()


def kl(p_log, q_log):
    """KL(P || Q) = sum_c P_c (log P_c - log Q_c), batch mean, from log-probabilities."""
    return (torch.exp(p_log) * (p_log - q_log)).sum(-1).mean()


def reference_convert(x, out_T):
    """Independent loop version: boundaries k*m/n rounded half down; repeat to expand, sum groups to contract."""
    in_T = x.shape[0]
    if in_T == out_T:
        return x
    n, m = min(in_T, out_T), max(in_T, out_T)

    def boundary(k):
        q = Fraction(k * m, n)
        whole, frac = divmod(q, 1)
        return int(whole) + (1 if frac > Fraction(1, 2) else 0)

    groups = [range(boundary(k), boundary(k + 1)) for k in range(n)]
    if in_T < out_T:  # step k of the input fills every output step of group k
        out = [None] * out_T
        for k, group in enumerate(groups):
            for t in group:
                out[t] = x[k]
        return torch.stack(out)
    return torch.stack([sum(x[t] for t in group) for group in groups])
