"""The declaration language (snnexp/kernels/expr.py): evaluating an expression leaves its cached parse tree as
written (found: evaluation rewrote it in place, so a later reader saw ``_and(_cmp(...))`` and refused it)."""

import ast

import torch

from snnexp.kernels import expr


def test_evaluating_leaves_the_parsed_expression_as_written():
    src = "kind != 'if' and decay_input"
    assert expr.evaluate(src, {"kind": "lif", "decay_input": True}) is True
    assert expr.evaluate(src, {"kind": "if", "decay_input": True}) is False
    assert ast.unparse(expr.parse(src)) == src
    assert expr.names(src) == {"kind", "decay_input"}


def test_a_comparison_on_tensors_is_one_or_zero_in_their_dtype():
    x = torch.tensor([0.5, 2.0], dtype=torch.float64)
    out = expr.evaluate("x >= 1.0", {"x": x})
    assert out.dtype == torch.float64 and out.tolist() == [0.0, 1.0]
