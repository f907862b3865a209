"""One ONNX rule per JAX primitive: `rule(graph, eqn, inputs) -> output name(s)`.

`graph` is a `t2v.export.onnx.Graph`; `inputs` are numpy constants or tensor names. Every
read of an equation's parameters goes through `jax_adapter.params`, so a jax upgrade that
renames one fails naming the jax version.
"""

from __future__ import annotations

import functools
import operator
from typing import Callable, Sequence

import numpy as np
from jax import export as jax_export
from jax.extend import core as jex_core
from jax.lax import GatherScatterMode

from t2v.export.jax_adapter import inner_jaxpr, params, scan_parts


class UnsupportedForOnnx(ValueError):
    """The converter has no ONNX rule for a JAX construct a serving function uses."""


def is_symbolic(d) -> bool:
    return jax_export.is_symbolic_dim(d)


def same_dim(a, b) -> bool:
    """a == b when that is decidable (symbolic dimensions may not be comparable)."""
    try:
        return bool(a == b)
    except jex_core.InconclusiveDimensionOperation:
        return False


def _int64(values) -> np.ndarray:
    return np.array(values, np.int64).reshape(-1)


# --------------------------------------------------------------------------- elementwise


_ELEMENTWISE = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
    "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sin": "Sin", "cos": "Cos",
    "sqrt": "Sqrt", "abs": "Abs", "neg": "Neg", "floor": "Floor", "ceil": "Ceil", "sign": "Sign", "erf": "Erf",
    "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal", "not": "Not",
}
_BOOLEAN = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr")}
_REDUCTIONS = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}
_PASS_THROUGH = ("stop_gradient", "copy", "copy_p", "optimization_barrier", "reduce_precision")
_CALLS = ("jit", "pjit", "closed_call", "checkpoint", "custom_jvp_call", "custom_vjp_call")


def _elementwise(op):
    return lambda g, eqn, x: g.node(op, [g.value(v) for v in x])


def _boolean(ops):
    def rule(g, eqn, x):
        return g.node(ops[0] if eqn.outvars[0].aval.dtype == np.bool_ else ops[1], [g.value(v) for v in x])
    return rule


def _reduction(op):
    def rule(g, eqn, x):
        (axes,) = params(eqn, "axes")
        return g.node(op, [g.value(x[0]), g.value(_int64(axes))], keepdims=0)
    return rule


def _inline(g, eqn, x):
    jaxpr, consts = inner_jaxpr(eqn)
    return g.convert(jaxpr, consts, x)


def _ne(g, eqn, x):
    return g.node("Not", [g.node("Equal", [g.value(v) for v in x])])


def _rem(g, eqn, x):  # lax.rem is C's fmod: the sign of the dividend
    return g.node("Mod", [g.value(v) for v in x], fmod=1)


def _rsqrt(g, eqn, x):
    return g.node("Reciprocal", [g.node("Sqrt", [g.value(x[0])])])


def _square(g, eqn, x):
    v = g.value(x[0])
    return g.node("Mul", [v, v])


def _integer_pow(g, eqn, x):
    (y,), v = params(eqn, "y"), g.value(x[0])
    if y == 2:
        return g.node("Mul", [v, v])
    return g.node("Pow", [v, g.value(np.asarray(y, eqn.invars[0].aval.dtype))])


def _log1p(g, eqn, x):
    """log(1 + x) without losing small x: with u = 1 + x (rounded), log(u) * (x / (u - 1))
    cancels u's rounding error (Goldberg 1991, theorem 4); where u == 1 the answer is x."""
    v = g.value(x[0])
    one = g.value(np.asarray(1, eqn.invars[0].aval.dtype))
    u = g.node("Add", [v, one])
    ratio = g.node("Mul", [g.node("Log", [u]), g.node("Div", [v, g.node("Sub", [u, one])])])
    exact = g.node("Or", [g.node("Equal", [u, one]), g.node("IsInf", [u])])  # inf / inf would be NaN
    return g.node("Where", [exact, v, ratio])


def _convert_element_type(g, eqn, x):
    (dtype,) = params(eqn, "new_dtype")
    return g.cast(x[0], dtype)


def _select_n(g, eqn, x):
    if len(x) != 3:
        raise UnsupportedForOnnx(f"to_onnx: select_n with {len(x) - 1} cases (only 2 are supported)")
    predicate = x[0] if eqn.invars[0].aval.dtype == np.bool_ else g.cast(x[0], np.bool_)
    return g.node("Where", [g.value(predicate), g.value(x[2]), g.value(x[1])])


def _clamp(g, eqn, x):
    low, value, high = (g.value(v) for v in x)
    return g.node("Min", [g.node("Max", [value, low]), high])


# --------------------------------------------------------------------------- shapes


def _broadcast_in_dim(g, eqn, x):
    shape, kept = params(eqn, "shape", "broadcast_dimensions")
    operand = g.value(x[0])
    new_axes = [i for i in range(len(shape)) if i not in kept]
    if new_axes:
        operand = g.unsqueeze(operand, new_axes)
    operand_shape = iter(eqn.invars[0].aval.shape)
    unsqueezed = [1 if i in new_axes else next(operand_shape) for i in range(len(shape))]
    if all(same_dim(a, b) for a, b in zip(unsqueezed, shape)):
        return operand
    return g.node("Expand", [operand, g.shape(shape)])


def _reshape(g, eqn, x):
    new_sizes, dimensions = params(eqn, "new_sizes", "dimensions")
    if dimensions is not None:
        raise UnsupportedForOnnx("to_onnx: reshape with `dimensions`")
    return g.node("Reshape", [g.value(x[0]), g.shape(new_sizes)])


def _transpose(g, eqn, x):
    (permutation,) = params(eqn, "permutation")
    return g.transpose(g.value(x[0]), permutation)


def _squeeze(g, eqn, x):
    (dimensions,) = params(eqn, "dimensions")
    return g.node("Squeeze", [g.value(x[0]), g.value(_int64(dimensions))])


def _concatenate(g, eqn, x):
    (dimension,) = params(eqn, "dimension")
    return g.node("Concat", [g.value(v) for v in x], axis=int(dimension))


def _stack(g, eqn, x):
    axis = int(params(eqn, "axis")[0])
    return g.node("Concat", [g.unsqueeze(v, [axis]) for v in x], axis=axis)


def _unstack(g, eqn, x):
    axis, parts = int(params(eqn, "axis")[0]), len(eqn.outvars)
    pieces = g.node("Split", [g.value(x[0]), g.value(np.ones(parts, np.int64))], outputs=parts, axis=axis)
    pieces = pieces if parts > 1 else [pieces]
    return [g.node("Squeeze", [p, g.value(_int64([axis]))]) for p in pieces]


def _split(g, eqn, x):
    sizes, axis = params(eqn, "sizes", "axis")
    outputs = g.node("Split", [g.value(x[0]), g.shape(sizes)], outputs=len(sizes), axis=int(axis))
    return outputs if len(sizes) > 1 else [outputs]


def _slice(g, eqn, x):
    starts, limits, strides = params(eqn, "start_indices", "limit_indices", "strides")
    axes = np.arange(len(starts), dtype=np.int64)
    inputs = [g.value(x[0]), g.shape(starts), g.shape(limits), g.value(axes)]
    if strides is not None:
        inputs.append(g.value(_int64(strides)))
    return g.node("Slice", inputs)


def _pad(g, eqn, x):
    (config,) = params(eqn, "padding_config")
    if any(interior or is_symbolic(lo) or is_symbolic(hi) or lo < 0 or hi < 0 for lo, hi, interior in config):
        raise UnsupportedForOnnx(f"to_onnx: pad with interior, negative or symbolic padding {config}")
    pads = _int64([lo for lo, _, _ in config] + [hi for _, hi, _ in config])
    return g.node("Pad", [g.value(x[0]), g.value(pads), g.value(x[1])], mode="constant")


def _iota(g, eqn, x):
    shape, axis, dtype = params(eqn, "shape", "dimension", "dtype")
    length = g.node("Squeeze", [g.dim(shape[axis])])
    values = g.node("Range", [g.value(np.array(0, np.int64)), length, g.value(np.array(1, np.int64))])
    values = g.cast(values, dtype)
    others = [i for i in range(len(shape)) if i != axis]
    if others:
        values = g.node("Expand", [g.unsqueeze(values, others), g.shape(shape)])
    return values


def _dim_as_value(g, eqn, x):
    (dim,) = params(eqn, "dim")
    return g.cast(g.node("Squeeze", [g.dim(dim)]), eqn.outvars[0].aval.dtype)


def _dynamic_slice(g, eqn, x):
    operand, starts = g.value(x[0]), x[1:]
    shape, (sizes,) = eqn.invars[0].aval.shape, params(eqn, "slice_sizes")
    clamped = []
    for start, dim, size in zip(starts, shape, sizes):  # lax clamps starts so the slice fits
        start = g.node("Reshape", [g.cast(start, np.int64), g.value(_int64([1]))])
        upper = g.node("Sub", [g.dim(dim), g.dim(size)])
        clamped.append(g.node("Min", [g.node("Max", [start, g.value(_int64([0]))]), upper]))
    begin = g.node("Concat", clamped, axis=0)
    end = g.node("Add", [begin, g.shape(sizes)])
    return g.node("Slice", [operand, begin, end, g.value(np.arange(len(shape), dtype=np.int64))])


# --------------------------------------------------------------------------- products


def _reshaped(g, x, dims: Sequence, target: Sequence):
    """`x` of shape `dims` reshaped to `target` (folded when constant, skipped when equal)."""
    if len(dims) == len(target) and all(same_dim(a, b) for a, b in zip(dims, target)):
        return x
    if isinstance(x, np.ndarray):
        return x.reshape([int(d) for d in target])
    return g.node("Reshape", [x, g.shape(target)])


def _product(dims: Sequence):
    return functools.reduce(operator.mul, dims, 1)


def _as_matmul(g, eqn, a, b, contract, batch):
    """dot_general as an ONNX `MatMul`: operands transposed and reshaped to
    `[batch..., M, K] @ [batch..., K, N]` (`[free..., K] @ [K, N]` without batch dimensions),
    the product reshaped to dot_general's `[batch..., lhs free..., rhs free...]`.
    None for an outer product (no contracting dimension)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = contract, batch
    lhs_shape, rhs_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    if not lhs_contract:
        return None
    lhs_free = [i for i in range(len(lhs_shape)) if i not in (*lhs_contract, *lhs_batch)]
    rhs_free = [i for i in range(len(rhs_shape)) if i not in (*rhs_contract, *rhs_batch)]
    batch_dims = [lhs_shape[i] for i in lhs_batch]
    lhs_order, rhs_order = [*lhs_batch, *lhs_free, *lhs_contract], [*rhs_batch, *rhs_contract, *rhs_free]
    lhs = g.transpose(a, lhs_order)
    rhs = g.transpose(b, rhs_order)
    k = _product([lhs_shape[i] for i in lhs_contract])
    n = _product([rhs_shape[i] for i in rhs_free])
    free = [lhs_shape[i] for i in lhs_free]
    lhs_rows = [*batch_dims, _product(free)] if lhs_batch else free
    lhs = _reshaped(g, lhs, [lhs_shape[i] for i in lhs_order], [*lhs_rows, k])
    rhs = _reshaped(g, rhs, [rhs_shape[i] for i in rhs_order], [*batch_dims, k, n])
    product = g.node("MatMul", [g.value(lhs), g.value(rhs)])
    return _reshaped(g, product, [*lhs_rows, n], eqn.outvars[0].aval.shape)


def _einsum(g, a, b, ranks, contract, batch):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = contract, batch
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(ranks[0])]
    rhs = [None] * ranks[1]
    for left, right in zip((*lhs_contract, *lhs_batch), (*rhs_contract, *rhs_batch)):
        rhs[right] = lhs[left]
    rhs = [r or next(letters) for r in rhs]
    out = ([lhs[i] for i in lhs_batch] + [lhs[i] for i in range(ranks[0]) if i not in (*lhs_contract, *lhs_batch)]
           + [rhs[i] for i in range(ranks[1]) if i not in (*rhs_contract, *rhs_batch)])
    return g.node("Einsum", [g.value(a), g.value(b)], equation=f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}")


def _dot_general(g, eqn, x):
    """`MatMul` for (batched) matrix products (fast in ONNX Runtime), `Einsum` for the rest."""
    (dimension_numbers,) = params(eqn, "dimension_numbers")
    contract, batch = dimension_numbers
    if eqn.invars[0].aval.dtype != eqn.invars[1].aval.dtype:
        raise UnsupportedForOnnx("to_onnx: dot_general of mixed dtypes")
    ranks = (len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape))
    result = _as_matmul(g, eqn, x[0], x[1], contract, batch)
    if result is None:
        result = _einsum(g, x[0], x[1], ranks, contract, batch)
    if eqn.outvars[0].aval.dtype != eqn.invars[0].aval.dtype:
        result = g.cast(result, eqn.outvars[0].aval.dtype)
    return result


def _conv_general_dilated(g, eqn, x):
    (lhs_spec, rhs_spec, out_spec), lhs_dilation, batch_groups, padding, strides, rhs_dilation, groups = params(
        eqn, "dimension_numbers", "lhs_dilation", "batch_group_count", "padding", "window_strides",
        "rhs_dilation", "feature_group_count")
    if any(d != 1 for d in lhs_dilation) or batch_groups != 1:
        raise UnsupportedForOnnx("to_onnx: transposed (lhs-dilated) or batch-grouped convolution")
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise UnsupportedForOnnx(f"to_onnx: negative convolution padding {padding}")
    image = g.transpose(g.value(x[0]), lhs_spec)  # -> [N, C, spatial...]
    kernel = g.transpose(x[1], rhs_spec)  # -> [O, I, spatial...], folded when constant
    pads = [lo for lo, _ in padding] + [hi for _, hi in padding]
    out = g.node("Conv", [image, g.value(kernel)], strides=list(strides), pads=pads,
                 dilations=list(rhs_dilation), group=int(groups))
    inverse = [0] * len(out_spec)
    for onnx_axis, jax_axis in enumerate(out_spec):
        inverse[jax_axis] = onnx_axis
    return g.transpose(out, inverse)


# --------------------------------------------------------------------------- indexing


def _in_bounds(g, indices, upper: Sequence) -> str:
    """bool `[...]`: every component of the index vectors `[..., n]` lies in [0, upper)."""
    inside = g.node("And", [g.node("GreaterOrEqual", [indices, g.value(np.zeros(len(upper), np.int64))]),
                            g.node("Less", [indices, g.shape(upper)])])
    all_inside = g.node("ReduceMin", [g.cast(inside, np.int64), g.value(_int64([-1]))], keepdims=0)
    return g.cast(all_inside, np.bool_)


def _slice_gather(g, operand, indices, dn, sizes, operand_shape):
    """A gather of one slice at runtime starts (clamped so the slice fits, as lax does)."""
    rank = len(operand_shape)
    starts = []
    for axis in range(rank):
        if axis in dn.start_index_map:
            i = dn.start_index_map.index(axis)
            start = g.node("Slice", [indices, g.value(_int64([i])), g.value(_int64([i + 1]))])
            upper = g.node("Sub", [g.dim(operand_shape[axis]), g.dim(sizes[axis])])
            start = g.node("Min", [g.node("Max", [start, g.value(_int64([0]))]), upper])
        else:
            start = g.value(_int64([0]))
        starts.append(start)
    starts = g.node("Concat", starts, axis=0)
    ends = g.node("Add", [starts, g.shape(sizes)])
    return g.node("Slice", [operand, starts, ends, g.value(np.arange(rank, dtype=np.int64))])


def _fill(g, eqn, out, valid, trailing):
    """Out-of-bounds entries (FILL_OR_DROP) set to the gather's fill value."""
    (fill_value,) = params(eqn, "fill_value")
    valid = g.unsqueeze(valid, trailing) if trailing else valid
    return g.node("Where", [valid, out, g.value(np.asarray(fill_value, eqn.outvars[0].aval.dtype))])


def _gather(g, eqn, x):
    """The three gathers jnp indexing makes here: a take along one axis (`Gather`), a take
    with leading batch dimensions (`GatherND`), and a slice at given starts (`Slice`)."""
    dn, sizes, mode = params(eqn, "dimension_numbers", "slice_sizes", "mode")
    operand_shape, indices_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    rank, batch_rank = len(operand_shape), len(indices_shape) - 1
    out_rank = len(eqn.outvars[0].aval.shape)
    k, m = len(dn.operand_batching_dims), len(dn.start_index_map)
    operand, indices = g.value(x[0]), g.cast(x[1], np.int64)
    fill, clip = mode == GatherScatterMode.FILL_OR_DROP, mode == GatherScatterMode.CLIP

    def full_except(axes):
        return all(same_dim(sizes[i], 1 if i in axes else operand_shape[i]) for i in range(rank))

    if not dn.collapsed_slice_dims and not k and batch_rank == 0 and tuple(dn.offset_dims) == tuple(range(rank)):
        if fill:
            raise UnsupportedForOnnx("to_onnx: slice-like gather in FILL_OR_DROP mode")
        return _slice_gather(g, operand, indices, dn, sizes, operand_shape)

    batch_dims, gathered_dims = tuple(range(k)), tuple(range(k, k + m))
    if (tuple(dn.operand_batching_dims) == batch_dims and tuple(dn.start_indices_batching_dims) == batch_dims
            and tuple(dn.collapsed_slice_dims) == gathered_dims and tuple(dn.start_index_map) == gathered_dims
            and full_except(batch_dims + gathered_dims)
            and tuple(dn.offset_dims) == tuple(range(batch_rank, out_rank))):
        upper = [operand_shape[i] for i in gathered_dims]
        valid = _in_bounds(g, indices, upper) if fill else None
        if clip or fill:
            last = g.node("Sub", [g.shape(upper), g.value(np.ones(m, np.int64))])
            indices = g.node("Max", [g.node("Min", [indices, last]), g.value(np.zeros(m, np.int64))])
        out = g.node("GatherND", [operand, indices], batch_dims=k)
        return _fill(g, eqn, out, valid, list(range(batch_rank, out_rank))) if fill else out

    if not k and m == 1 and tuple(dn.collapsed_slice_dims) == tuple(dn.start_index_map):
        axis = dn.start_index_map[0]
        if full_except((axis,)) and tuple(dn.offset_dims) == (*range(axis), *range(axis + batch_rank, out_rank)):
            flat = g.node("Squeeze", [indices, g.value(_int64([-1]))])
            valid = _in_bounds(g, indices, [operand_shape[axis]]) if fill else None
            if clip or fill:
                last = g.node("Sub", [g.dim(operand_shape[axis]), g.value(_int64([1]))])
                flat = g.node("Max", [g.node("Min", [flat, last]), g.value(_int64([0]))])
            out = g.node("Gather", [operand, flat], axis=int(axis))
            return _fill(g, eqn, out, valid, list(range(batch_rank, out_rank - axis))) if fill else out
    raise UnsupportedForOnnx(f"to_onnx: gather with dimension numbers {dn} and slice sizes {sizes}")


# --------------------------------------------------------------------------- control flow


def _scan(g, eqn, x):
    """`lax.scan` -> ONNX `Scan`: carries are its state, xs its scan inputs (axis 0);
    the body sees the scan's constants through the outer scope."""
    from onnx import helper

    parts = scan_parts(eqn, x)
    if not parts.xs:
        raise UnsupportedForOnnx("to_onnx: scan without scanned inputs (needs an ONNX Loop)")
    num_consts, num_carry = len(parts.consts), len(parts.carry)
    body = g.subgraph()
    state_avals = [v.aval for v in parts.body.invars[num_consts:]]
    input_names = [g.model.fresh("scan_in") for _ in state_avals]
    outs = body.convert(parts.body, parts.body_consts, [*parts.consts, *input_names])
    output_names = [body.node("Identity", [body.value(o)]) for o in outs]
    graph = helper.make_graph(
        body.nodes, g.model.fresh("scan_body"),
        [g.value_info(a, n) for a, n in zip(state_avals, input_names)],
        [g.value_info(v.aval, n) for v, n in zip(parts.body.outvars, output_names)])
    directions = {"scan_input_directions": [1] * len(parts.xs),
                  "scan_output_directions": [1] * (len(outs) - num_carry)} if parts.reverse else {}
    results = g.node("Scan", [g.value(v) for v in (*parts.carry, *parts.xs)], outputs=len(outs), body=graph,
                     num_scan_inputs=len(parts.xs), **directions)
    return results if len(outs) > 1 else [results]


RULES: dict[str, Callable] = {
    **{name: _elementwise(op) for name, op in _ELEMENTWISE.items()},
    **{name: _boolean(ops) for name, ops in _BOOLEAN.items()},
    **{name: _reduction(op) for name, op in _REDUCTIONS.items()},
    **{name: (lambda g, eqn, x: list(x)) for name in _PASS_THROUGH},
    **{name: _inline for name in _CALLS},
    "ne": _ne, "rem": _rem, "rsqrt": _rsqrt, "square": _square, "integer_pow": _integer_pow, "log1p": _log1p,
    "convert_element_type": _convert_element_type, "select_n": _select_n, "clamp": _clamp,
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "transpose": _transpose, "squeeze": _squeeze,
    "concatenate": _concatenate, "stack": _stack, "unstack": _unstack, "split": _split, "slice": _slice,
    "pad": _pad, "iota": _iota, "dim_as_value": _dim_as_value, "dot_general": _dot_general,
    "conv_general_dilated": _conv_general_dilated, "gather": _gather, "dynamic_slice": _dynamic_slice, "scan": _scan,
}
