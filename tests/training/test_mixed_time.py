"""MTT's communication module (snnexp/training/mixed_time.py: convert_time) against an independent loop, for divisible
and non-divisible numbers of time steps."""

import pytest
import torch

from helpers.references import reference_convert
from snnexp.training.mixed_time import convert_time


@pytest.mark.parametrize("in_T", range(1, 8))
@pytest.mark.parametrize("out_T", range(1, 8))
def test_communication_matches_reference_for_divisible_and_non_divisible_T(in_T, out_T):
    x = torch.randn(in_T, 2, 3)
    y = convert_time(x, out_T)
    assert y.shape == (out_T, 2, 3)
    torch.testing.assert_close(y, reference_convert(x, out_T))
    if in_T > out_T:  # contraction keeps the total (every input step lands in exactly one group)
        torch.testing.assert_close(y.sum(0), x.sum(0))


def test_communication_worked_examples():
    x = torch.arange(1.0, 5.0)  # steps [1, 2, 3, 4]
    assert convert_time(x[:2], 4).tolist() == [1, 1, 2, 2]
    assert convert_time(x, 2).tolist() == [3, 7]
    assert convert_time(x[:2], 3).tolist() == [1, 2, 2]
    assert convert_time(x[:3], 2).tolist() == [1, 5]
    assert convert_time(x, 3).tolist() == [1, 5, 4]  # 4 -> 3: bounds 0, 4/3 -> 1, 8/3 -> 3, 4
    assert convert_time(x[:1], 3).tolist() == [1, 1, 1]


def test_communication_passes_gradients():
    x = torch.randn(3, 2, requires_grad=True)
    (convert_time(x, 5) * torch.arange(5.0)[:, None]).sum().backward()
    # 3 -> 5: groups [0, 1], [2], [3, 4] -> d/dx_k = sum of the output indices of group k
    torch.testing.assert_close(x.grad, torch.tensor([[1.0], [2.0], [7.0]]).expand(3, 2))
