"""The small expression language of neuron and surrogate declarations: a Python expression, evaluated with torch
(the reference) and translated to a C expression (the generated kernels), so each formula is written once.

Allowed: numbers, names, ``+ - * /``, ``** 2``, unary ``-``, one comparison (``<``, ``<=``, ``>``, ``>=``, ``==``,
``!=``; a number, 1 or 0, in arithmetic), ``a if cond else b``, ``and`` / ``or`` / ``not`` and the functions of
:data:`FUNCTIONS`. The C text is fully parenthesised, so it computes in the order the Python text is written, with
float32 literals (``0.5`` -> ``0.5f``). ``kind == "plif"`` compares a neuron family's member (C: ``KIND == 2``).
"""

from __future__ import annotations

import ast
import copy
import functools
import math

import torch

# name -> C spelling (a format with {0}, {1} for the arguments); torch / Python implementations are in _TORCH
FUNCTIONS = {
    "exp": "expf({0})",
    "abs": "fabsf({0})",
    "tanh": "tanhf({0})",
    "maximum": "snn::maximum({0}, {1})",
    "sigmoid": "(1.0f / (1.0f + expf(-({0}))))",
    "sign": "snn::sign({0})",
    "heaviside": "snn::heaviside({0})",
}
CONSTANTS = {"pi": math.pi}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


@functools.cache
def parse(src: str) -> ast.expr:
    """The expression's syntax tree; raises ``ValueError`` for anything outside the language."""
    tree = ast.parse(src.strip(), mode="eval").body
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.BoolOp, ast.Call, ast.Name,
                               ast.Constant, ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            ok = isinstance(node.right, ast.Constant) and node.right.value == 2
        elif isinstance(node, ast.BinOp):
            ok = type(node.op) in _BINOPS
        elif isinstance(node, ast.Compare):
            ok = len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        if not ok:
            raise ValueError(f"not in the declaration language: {ast.unparse(node)!r} in {src!r}")
    return tree


def names(src: str) -> set[str]:
    """The variable names an expression reads (not its functions)."""
    tree = parse(src)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called} - set(CONSTANTS)


def _float(value: float) -> str:
    return f"{float(value)!r}f"


def to_c(src: str, rename: dict[str, str] | None = None, kinds: tuple[str, ...] = ()) -> str:
    """The C expression of ``src``; ``rename`` maps names to their C spelling, ``kinds`` lists the family's members
    (``kind == "lif"`` becomes ``(KIND == 1)``)."""
    rename = rename or {}

    def emit(node) -> str:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return "true" if node.value else "false"
            return _float(node.value)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return _float(CONSTANTS[node.id])
            return rename.get(node.id, node.id)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                base = emit(node.left)
                return f"({base} * {base})"
            return f"({emit(node.left)} {_BINOPS[type(node.op)]} {emit(node.right)})"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return f"(!{emit(node.operand)})"
            return f"({'-' if isinstance(node.op, ast.USub) else '+'}{emit(node.operand)})"
        if isinstance(node, ast.Compare):
            left, right = node.left, node.comparators[0]
            if isinstance(left, ast.Name) and left.id == "kind" and isinstance(right, ast.Constant):
                if right.value not in kinds:
                    raise ValueError(f"unknown kind {right.value!r}; the family's kinds are {kinds}")
                return f"(KIND {_CMPOPS[type(node.ops[0])]} {kinds.index(right.value)})"
            return f"({emit(left)} {_CMPOPS[type(node.ops[0])]} {emit(right)})"
        if isinstance(node, ast.IfExp):
            return f"({emit(node.test)} ? {emit(node.body)} : {emit(node.orelse)})"
        if isinstance(node, ast.BoolOp):
            op = " && " if isinstance(node.op, ast.And) else " || "
            return "(" + op.join(emit(v) for v in node.values) + ")"
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id].format(*(emit(a) for a in node.args))
        raise ValueError(ast.unparse(node))

    return emit(parse(src))


# ------------------------------------------------------------------------------------------ torch evaluation


def _lift(fn_tensor, fn_float):
    return lambda *a: fn_tensor(*a) if any(isinstance(v, torch.Tensor) for v in a) else fn_float(*a)


def _maximum(a, b):
    if not isinstance(a, torch.Tensor):
        return torch.clamp(b, min=a)
    if not isinstance(b, torch.Tensor):
        return torch.clamp(a, min=b)
    return torch.maximum(a, b)


_TORCH = {
    "exp": _lift(torch.exp, math.exp),
    "abs": _lift(torch.abs, abs),
    "tanh": _lift(torch.tanh, math.tanh),
    "maximum": _lift(_maximum, max),
    "sigmoid": _lift(torch.sigmoid, lambda v: 1.0 / (1.0 + math.exp(-v))),
    "sign": _lift(torch.sign, lambda v: float((v > 0) - (v < 0))),
    "heaviside": _lift(lambda v: (v >= 0).to(v.dtype), lambda v: float(v >= 0)),
}


class _ToCalls(ast.NodeTransformer):
    """Comparisons, conditionals and ``and`` / ``or`` / ``not`` as calls, so they work on tensors too."""

    def visit_Compare(self, node):
        self.generic_visit(node)
        op = ast.Constant(_CMPOPS[type(node.ops[0])])
        return ast.Call(ast.Name("_cmp", ast.Load()), [op, node.left, node.comparators[0]], [])

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return ast.Call(ast.Name("_if", ast.Load()), [node.test, node.body, node.orelse], [])

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        fn = "_and" if isinstance(node.op, ast.And) else "_or"
        return functools.reduce(lambda a, b: ast.Call(ast.Name(fn, ast.Load()), [a, b], []), node.values)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.Call(ast.Name("_not", ast.Load()), [node.operand], [])
        return node


@functools.cache
def _compiled(src: str):
    tree = ast.Expression(_ToCalls().visit(copy.deepcopy(parse(src))))  # parse's tree is cached: not in place
    return compile(ast.fix_missing_locations(tree), f"<declaration {src!r}>", "eval")


_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def evaluate(src: str, env: dict, functions: dict | None = None):
    """``src`` evaluated on ``env`` (tensors, floats, bools, ``kind``): a comparison is 1.0 / 0.0 in the dtype of
    the tensors (a bool between plain values), a conditional on a tensor is ``torch.where``."""
    dtype = next((v.dtype for v in env.values() if isinstance(v, torch.Tensor) and v.is_floating_point()),
                 torch.get_default_dtype())

    def as_tensor(v):
        return v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=dtype)

    def cmp(op, a, b):
        out = _COMPARE[op](a, b)
        return out.to(dtype) if isinstance(out, torch.Tensor) else out

    def if_(test, a, b):
        if isinstance(test, torch.Tensor):
            return torch.where(test != 0, as_tensor(a), as_tensor(b))
        return a if test else b

    def and_(a, b):
        return a * b if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) else (a and b)

    def or_(a, b):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return ((as_tensor(a) != 0) | (as_tensor(b) != 0)).to(dtype)
        return a or b

    def not_(a):
        return (a == 0).to(dtype) if isinstance(a, torch.Tensor) else not a

    scope = {**_TORCH, **(functions or {}), **CONSTANTS, "_cmp": cmp, "_if": if_, "_and": and_, "_or": or_,
             "_not": not_, "__builtins__": {}}
    return eval(_compiled(src), scope, dict(env))  # noqa: S307 -- the declaration language, checked by parse()
