"""Every jax detail the ONNX converter relies on that jax does not promise, in one place.

The converter otherwise uses public API only: `jax.make_jaxpr`, the `jax.extend.core` jaxpr
classes and their fields, `jax.core.eval_jaxpr`, `jax.export.is_symbolic_dim`. What remains:

- the text of a symbolic dimension (`str(dim)`, e.g. "4*t", "floordiv(t, 2)"). jax has no
  public evaluator for a dimension expression over runtime values; the text is the syntax
  `jax.export.symbolic_shape` parses and serialized exports store, so it is parsed here.
- the parameters of each primitive's equations: their names (`params`), which one holds a
  call's body (`inner_jaxpr`), and how `scan` orders its operands (`scan_parts`).

tests/test_export.py::test_jax_adapter_hooks_hold checks each on a tiny example; when a jax
upgrade changes one, it and the converter fail with `JaxChanged`, naming the jax version.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.extend import core as jex_core

WRITTEN_FOR_JAX = "0.10.2"


class JaxChanged(RuntimeError):
    """A jax internal the converter reads is not what it was in `WRITTEN_FOR_JAX`."""


def changed(what: str) -> JaxChanged:
    return JaxChanged(f"jax {jax.__version__} changed {what}; update t2v/export/jax_adapter.py "
                      f"(written for jax {WRITTEN_FOR_JAX})")


# --------------------------------------------------------------------------- symbolic dimensions

_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def evaluate_dim(dim: Any, env: Mapping[str, Any], maximum: Callable = builtins.max,
                 minimum: Callable = builtins.min) -> Any:
    """The value of symbolic dimension `dim` with each variable bound by `env`.

    Values only need `+ - *`, unary `-`, `//` and `%` (floor semantics, as jax's `floordiv`
    and `mod`) with ints and each other; `maximum` and `minimum` evaluate `max(a, b)` and
    `min(a, b)`. Ints give ints; the converter passes runtime ONNX tensors.
    """
    text = str(dim)
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise changed(f"the text of symbolic dimensions ({text!r} does not parse)") from None
    calls = {"floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b, "max": maximum, "min": minimum}

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise ValueError(f"symbolic dimension {text!r}: no value for {node.id!r} (have {sorted(env)})")
            return env[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = value(node.operand)
            return -1 * operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.Constant):
            base = value(node.left)
            result = base
            for _ in range(int(node.right.value) - 1):
                result = result * base
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in calls
                and len(node.args) == 2 and not node.keywords):
            return calls[node.func.id](*(value(a) for a in node.args))
        raise changed(f"the text of symbolic dimensions ({ast.dump(node)} in {text!r})")

    return value(tree.body)


# --------------------------------------------------------------------------- equations


def params(eqn: jex_core.JaxprEqn, *names: str) -> tuple:
    """The equation's parameters `names`, in that order."""
    missing = [n for n in names if n not in eqn.params]
    if missing:
        raise changed(f"the parameters of {eqn.primitive.name!r} (no {missing}; has {sorted(eqn.params)})")
    return tuple(eqn.params[n] for n in names)


def inner_jaxpr(eqn: jex_core.JaxprEqn) -> tuple[jex_core.Jaxpr, list[np.ndarray]]:
    """(jaxpr, consts) of the body of a call-like equation (jit, closed_call, custom_jvp_call,
    custom_vjp_call, checkpoint, scan): the one jaxpr among its parameters."""
    found = [v for v in eqn.params.values() if isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr))]
    if len(found) != 1:
        raise changed(f"the parameters of {eqn.primitive.name!r} (expected one jaxpr, found {len(found)})")
    body = found[0]
    if isinstance(body, jex_core.ClosedJaxpr):
        return body.jaxpr, [np.asarray(c) for c in body.consts]
    return body, []


@dataclasses.dataclass(frozen=True)
class ScanParts:
    """A `scan` equation: its body, and its operands split into constants, carry and scanned xs."""

    body: jex_core.Jaxpr
    body_consts: list
    consts: list
    carry: list
    xs: list
    reverse: bool


def scan_parts(eqn: jex_core.JaxprEqn, operands: Sequence) -> ScanParts:
    num_consts, num_carry, reverse = params(eqn, "num_consts", "num_carry", "reverse")
    body, body_consts = inner_jaxpr(eqn)
    if len(body.invars) != len(operands) or len(body.outvars) != len(eqn.outvars):
        raise changed("the operands of 'scan' (the body's inputs are not the scan's operands)")
    operands = list(operands)
    return ScanParts(body, body_consts, operands[:num_consts], operands[num_consts:num_consts + num_carry],
                     operands[num_consts + num_carry:], bool(reverse))


def fold(eqn: jex_core.JaxprEqn, inputs: Sequence[np.ndarray]) -> list[np.ndarray | None]:
    """The equation evaluated on constant inputs (None for its dropped outputs): a one-equation
    jaxpr run by the public `jax.core.eval_jaxpr`, so call-like primitives need no bind params."""
    values = {}
    for var, x in zip(eqn.invars, inputs):
        if not isinstance(var, jex_core.Literal):
            values[var] = x
    kept = [v for v in eqn.outvars if not isinstance(v, jex_core.DropVar)]
    jaxpr = jex_core.Jaxpr([], list(values), kept, [eqn], eqn.effects)
    results = iter(jax.core.eval_jaxpr(jaxpr, [], *values.values()))
    return [None if isinstance(v, jex_core.DropVar) else np.asarray(next(results)) for v in eqn.outvars]
