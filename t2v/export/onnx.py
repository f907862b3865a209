"""jaxpr -> ONNX: a serving function's jaxpr converted primitive by primitive.

Only the primitives t2v's serving functions use have rules (`onnx_rules.RULES`); any other
raises `UnsupportedForOnnx`, naming it. Equations whose inputs are all constants are folded
at conversion time; symbolic dimensions become runtime `Shape` arithmetic; `lax.scan`
becomes an ONNX `Scan`. Models whose weights pass `external_data_threshold` bytes are saved
with their tensors in a side file (`<name>.onnx.data`): protobuf caps one file at 2 GB.
See docs/export.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from jax.extend import core as jex_core

import t2v
from t2v.export import jax_adapter
from t2v.export.onnx_rules import RULES, UnsupportedForOnnx, is_symbolic

ONNX_OPSET = 18
ONNX_IR_VERSION = 9  # readable by ONNX Runtime >= 1.16
# Past this many bytes of weights a model's tensors go to a side file; protobuf's limit is 2 GiB.
EXTERNAL_DATA_THRESHOLD = 1 << 30

__all__ = ["ONNX_OPSET", "EXTERNAL_DATA_THRESHOLD", "UnsupportedForOnnx", "to_onnx", "save_onnx"]


class _Model:
    """What all graphs of one ONNX model share: initializers and unique names."""

    def __init__(self):
        self.initializers: list = []
        self._constants: dict[tuple, str] = {}
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, array: np.ndarray) -> str:
        from onnx import numpy_helper

        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]


class _Dim:
    """A runtime dimension (int64 `[1]` tensor) with the arithmetic a dimension expression
    needs (`jax_adapter.evaluate_dim`); each operation emits its ONNX node."""

    __array_ufunc__ = None  # numpy integers defer to the reflected operators below

    def __init__(self, graph: "Graph", name: str):
        self.graph, self.name = graph, name

    def _operand(self, other) -> str:
        return other.name if isinstance(other, _Dim) else self.graph.value(np.array([int(other)], np.int64))

    def _op(self, op: str, other, reverse: bool = False, **attrs) -> "_Dim":
        inputs = [self._operand(other), self.name] if reverse else [self.name, self._operand(other)]
        return _Dim(self.graph, self.graph.node(op, inputs, **attrs))

    def __add__(self, other):
        return self._op("Add", other)

    def __radd__(self, other):
        return self._op("Add", other, True)

    def __sub__(self, other):
        return self._op("Sub", other)

    def __rsub__(self, other):
        return self._op("Sub", other, True)

    def __mul__(self, other):
        return self._op("Mul", other)

    def __rmul__(self, other):
        return self._op("Mul", other, True)

    def __mod__(self, other):  # integer Mod with fmod=0 takes the divisor's sign: Python's %
        return self._op("Mod", other)

    def __rmod__(self, other):
        return self._op("Mod", other, True)

    def __floordiv__(self, other):  # ONNX Div truncates; (a - a % b) / b is exact, so floors
        return (self - self % other)._op("Div", other)

    def __rfloordiv__(self, other):
        return _Dim(self.graph, self.graph.value(np.array([int(other)], np.int64))) // self

    @staticmethod
    def maximum(a, b):
        return a._op("Max", b) if isinstance(a, _Dim) else b._op("Max", a, True) if isinstance(b, _Dim) else max(a, b)

    @staticmethod
    def minimum(a, b):
        return a._op("Min", b) if isinstance(a, _Dim) else b._op("Min", a, True) if isinstance(b, _Dim) else min(a, b)


class Graph:
    """One ONNX graph (the model's, or a Scan body) under construction.

    Values are numpy arrays (constants, folded at conversion time) or tensor names.
    `dims` maps each dimension variable to an int64 `[1]` tensor of the main graph, which
    Scan bodies see through ONNX's outer scope.
    """

    def __init__(self, model: _Model, dims: dict[str, str]):
        self.model, self.dims = model, dims
        self.nodes: list = []

    def subgraph(self) -> "Graph":
        return Graph(self.model, self.dims)

    def convert(self, jaxpr, consts: Sequence, args: Sequence) -> list:
        return convert(self, jaxpr, consts, args)

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> str | list[str]:
        from onnx import helper

        names = [self.model.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=self.model.fresh(f"n_{op}"), **attrs))
        return names[0] if outputs == 1 else names

    def value(self, x) -> str:
        return self.model.constant(x) if isinstance(x, np.ndarray) else x

    def dim(self, d) -> str:
        """int64 `[1]` tensor holding dimension `d` (an int or a symbolic expression)."""
        if not is_symbolic(d):
            return self.value(np.array([int(d)], np.int64))
        env = {var: _Dim(self, name) for var, name in self.dims.items()}
        result = jax_adapter.evaluate_dim(d, env, _Dim.maximum, _Dim.minimum)
        return result.name if isinstance(result, _Dim) else self.value(np.array([int(result)], np.int64))

    def shape(self, dims: Sequence) -> str:
        """int64 `[len(dims)]` tensor of a shape that may hold symbolic dimensions."""
        if not any(is_symbolic(d) for d in dims):
            return self.value(np.array([int(d) for d in dims], np.int64))
        return self.node("Concat", [self.dim(d) for d in dims], axis=0)

    def transpose(self, x, perm: Sequence[int]):
        if list(perm) == list(range(len(perm))):
            return x
        if isinstance(x, np.ndarray):
            return np.transpose(x, perm)
        return self.node("Transpose", [x], perm=list(perm))

    def cast(self, x, dtype) -> str:
        from onnx import helper

        return self.node("Cast", [self.value(x)], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def unsqueeze(self, x, axes: Sequence[int]) -> str:
        return self.node("Unsqueeze", [self.value(x), self.value(np.array(list(axes), np.int64))])

    @staticmethod
    def value_info(aval, name: str):
        from onnx import helper

        shape = [str(d) if is_symbolic(d) else int(d) for d in aval.shape]
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), shape)


def convert(graph: Graph, jaxpr, consts: Sequence, args: Sequence) -> list:
    """Emit `jaxpr` into `graph` with its constvars bound to `consts` and invars to `args`."""
    env: dict = {}

    def read(var):
        if isinstance(var, jex_core.Literal):
            return np.asarray(var.val, var.aval.dtype)
        return env[var]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        static_outputs = all(not is_symbolic(d) for v in eqn.outvars for d in v.aval.shape)
        foldable = static_outputs and eqn.primitive.name != "dim_as_value"  # a symbolic dimension's value
        if foldable and all(isinstance(x, np.ndarray) for x in inputs):
            outputs = jax_adapter.fold(eqn, inputs)
        else:
            rule = RULES.get(eqn.primitive.name)
            if rule is None:
                raise UnsupportedForOnnx(f"to_onnx: no ONNX rule for the JAX primitive {eqn.primitive.name!r} "
                                         f"({eqn})")
            outputs = rule(graph, eqn, inputs)
            outputs = outputs if isinstance(outputs, list) else [outputs]
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]


def _solve_dims(graph: Graph, input_names: Sequence[str], inputs: Sequence) -> None:
    """Each dimension variable as a runtime value read off an input's shape: from an axis of
    size `v` if there is one, else from one of size `k*v` (divided by k)."""
    scaled = re.compile(r"^(\d+)\*([A-Za-z_]\w*)$")
    for pass_scaled in (False, True):
        for name, spec in zip(input_names, inputs):
            for axis, d in enumerate(spec.shape):
                if not is_symbolic(d):
                    continue
                match = scaled.match(str(d)) if pass_scaled else None
                var, factor = (match.group(2), int(match.group(1))) if match else (str(d), 1)
                if var.isidentifier() and var not in graph.dims and (match or not pass_scaled):
                    size = graph.node("Shape", [name], start=axis, end=axis + 1)
                    if factor != 1:
                        size = graph.node("Div", [size, graph.value(np.array([factor], np.int64))])
                    graph.dims[var] = size


def to_onnx(function, check: bool = True):
    """An `onnx.ModelProto` computing `function` (a `t2v.export.ServingFunction`), with its
    symbolic dimensions kept symbolic. `check`: run the ONNX checker (in memory: under 2 GB)."""
    import onnx
    from onnx import helper

    closed = jax.make_jaxpr(function.fn)(*function.inputs)
    model = _Model()
    graph = Graph(model, {})
    _solve_dims(graph, function.input_names, function.inputs)
    outputs = convert(graph, closed.jaxpr, [np.asarray(c) for c in closed.consts], list(function.input_names))
    for value, name in zip(outputs, function.output_names):
        graph.nodes.append(helper.make_node("Identity", [graph.value(value)], [name], name=model.fresh("n_output")))
    onnx_graph = helper.make_graph(
        graph.nodes, function.name,
        [Graph.value_info(spec, name) for name, spec in zip(function.input_names, function.inputs)],
        [Graph.value_info(v.aval, name) for v, name in zip(closed.jaxpr.outvars, function.output_names)],
        initializer=model.initializers)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="t2v", producer_version=t2v.__version__)
    proto.ir_version = ONNX_IR_VERSION
    if check:
        onnx.checker.check_model(proto)
    return proto


def weight_bytes(proto) -> int:
    """Bytes of the model's initializers (all of its constants: Scan bodies use the outer ones)."""
    return sum(len(t.raw_data) for t in proto.graph.initializer)


def save_onnx(proto, path: str | Path, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> str | None:
    """Write `proto` to `path`, checked; past `external_data_threshold` bytes of weights the
    tensors go to `<path name>.data` beside it. Returns that side file's name, or None."""
    import onnx

    path = Path(path)
    if weight_bytes(proto) <= external_data_threshold:
        onnx.checker.check_model(proto)
        path.write_bytes(proto.SerializeToString())
        return None
    location = f"{path.name}.data"
    (path.parent / location).unlink(missing_ok=True)  # onnx appends to an existing side file
    # Small tensors (shapes, axes) stay inline: ONNX Runtime's shape inference reads them there.
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    onnx.checker.check_model(str(path))  # by path: the checker reads the side file, past 2 GB too
    return location
