"""Serving export: trained models -> artifacts that run without t2v.

    t2v export --checkpoint /tmp/demo --out /tmp/serving
    export("/tmp/demo", "/tmp/serving")          # the same, from Python

For every serving function of every task the checkpoint holds, two artifacts:

  out/<task>/<function>.stablehlo   `jax.export` serialized StableHLO, lowered for CPU,
                                    CUDA and TPU; batch and length are symbolic. Load with
                                    `jax.export.deserialize(bytearray(data)).call(*inputs)`.
  out/<task>/<function>.onnx        the same graph for ONNX Runtime (opset 18), with the same
                                    symbolic dimensions, written by `to_onnx` below.
  out/manifest.json                 t2v version, each task's config, and per function its
                                    input and output names, dtypes and shapes (symbolic
                                    dimensions as strings, e.g. ["b", "4*t", 80]).

Parameters are baked in as constants (the EMA parameters of the latest checkpoint, in
float32), so a serving process needs only the artifact and its runtime.

Serving functions (float32 unless noted; shapes in the manifest):

  motion/generate   mel [b, 4t, 80], reference [b, 68, 2], noise [b, t, Z], temperature []
                    -> keypoints [b, t, 68, 2]
      Audio-driven generation in one pass: the flow prior maps `temperature * noise` to
      latents (noise ~ N(0, 1) from the caller, so the graph is deterministic), the
      decoder maps them to face-frame keypoints.
  motion/stream     mel [b, 4s, 80], reference, noise [b, t, Z], temperature,
                    first_frame int32 [], hidden [b, H], latent [b, Z]
                    -> keypoints [b, t, 68, 2], next_hidden, next_latent
      One chunk of any-length streaming: frames [first_frame, first_frame + t), counted
      from the start of the window, of a mel window of s >= t frames that includes the audio encoder's context either side
      (`audio_context_frames` in the manifest; clipped at the ends of the audio), and the
      prior's state carried from the previous chunk (zeros before the first). Chunks
      reproduce `generate` over the whole sequence exactly.
  render/encode_reference   image [b, S, S, 3] in [0, 1], keypoints [b, 68, 2] in [-1, 1]
                    image coordinates -> the reference tensors (`reference_*`), once per video
  render/render_frame       the reference tensors of ONE video (batch 1) and
                    target_keypoints [b, 68, 2] -> frame [b, S, S, 3] (and `refined` when the
                    model has the refinement stage): b frames of that video per call.

The ONNX side: jax2onnx 0.17, the maintained JAX -> ONNX converter, pins
orbax-checkpoint < 0.11.37 (t2v needs 0.12) and fails to trace these models under
jax 0.10 (its patched `jnp.arange` meets symbolic and even static lengths), so `to_onnx`
here converts the jaxpr of a serving function itself, primitive by primitive, for exactly
the primitives t2v's serving functions use (an unknown one raises, naming it). Symbolic
dimensions become runtime `Shape` arithmetic, `lax.scan` becomes an ONNX `Scan`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import export as jax_export
from jax.extend import core as jex_core

import t2v
from t2v import checkpoint
from t2v import keypoints as kp

log = logging.getLogger(__name__)

SERVING_PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 18
ONNX_IR_VERSION = 9  # readable by ONNX Runtime >= 1.16
EXPORTABLE_TASKS = ("motion", "render")


# --------------------------------------------------------------------------- serving functions


class UnsupportedForOnnx(ValueError):
    """The converter has no ONNX rule for a JAX construct a serving function uses."""


@dataclasses.dataclass(frozen=True)
class ServingFunction:
    """A pure function of positional arrays with parameters closed over, and its signature.

    `inputs` hold `jax.ShapeDtypeStruct`s whose dimensions may be symbolic
    (`jax.export.symbolic_shape`); `fn` returns a tuple with one array per output name.
    """

    name: str
    fn: Callable[..., tuple]
    input_names: tuple[str, ...]
    inputs: tuple[jax.ShapeDtypeStruct, ...]
    output_names: tuple[str, ...]


def _motion_chunk(model, mel, reference, noise, temperature, first_frame, hidden, latent):
    """Inside `MotionModel.apply`: frames [first_frame, first_frame + t) of the mel window."""
    feats = model.encode_audio(mel)
    feats = jax.lax.dynamic_slice_in_dim(feats, first_frame, noise.shape[1], axis=1)
    carry = {"hidden": hidden, "latent": latent, "frame": 0}  # the counter only seeds `sample`'s noise
    z, carry = model.prior.sample_from_noise(noise * temperature, feats, carry)
    return model.decode(z, feats, reference)["keypoints"], carry["hidden"], carry["latent"]


def motion_serving(model, params: Any) -> list[ServingFunction]:
    """`generate` and `stream` (module doc) of a `t2v.models.motion_vae.MotionModel`."""
    variables = {"params": params}
    latent_dim, hidden_dim = model.prior.latent_dim, model.prior.hidden_features
    f32 = jnp.float32

    def generate(mel, reference, noise, temperature):
        hidden = jnp.zeros((noise.shape[0], hidden_dim), f32)
        latent = jnp.zeros((noise.shape[0], latent_dim), f32)
        keypoints, _, _ = model.apply(variables, mel, reference, noise, temperature, 0, hidden, latent,
                                      method=_motion_chunk)
        return (keypoints,)

    def stream(mel, reference, noise, temperature, first_frame, hidden, latent):
        return model.apply(variables, mel, reference, noise, temperature, first_frame, hidden, latent,
                           method=_motion_chunk)

    def spec(*shape, dtype=f32):
        return jax.ShapeDtypeStruct(shape, dtype)

    mel_bins = model.audio_encoder.n_mels
    b, t = jax_export.symbolic_shape("b, t")
    generate_inputs = (spec(b, 4 * t, mel_bins), spec(b, kp.NUM_POINTS, 2), spec(b, t, latent_dim), spec())
    # A separate scope: the mel window has s >= t frames.
    b, t, s = jax_export.symbolic_shape("b, t, s", constraints=("s >= t",))
    stream_inputs = (spec(b, 4 * s, mel_bins), spec(b, kp.NUM_POINTS, 2), spec(b, t, latent_dim), spec(),
                     spec(dtype=jnp.int32), spec(b, hidden_dim), spec(b, latent_dim))
    return [
        ServingFunction("generate", generate, ("mel", "reference", "noise", "temperature"), generate_inputs,
                        ("keypoints",)),
        ServingFunction("stream", stream,
                        ("mel", "reference", "noise", "temperature", "first_frame", "hidden", "latent"),
                        stream_inputs, ("keypoints", "next_hidden", "next_latent")),
    ]


def render_serving(renderer, params: Any) -> list[ServingFunction]:
    """`encode_reference` and `render_frame` (module doc) of a `KeypointRenderer`."""
    from t2v.models.renderer import KeypointRenderer

    variables = {"params": params}
    size = renderer.spec.size
    (b,) = jax_export.symbolic_shape("b")
    f32 = jnp.float32
    image = jax.ShapeDtypeStruct((b, size, size, 3), f32)
    points = jax.ShapeDtypeStruct((b, kp.NUM_POINTS, 2), f32)
    reference_shapes = jax.eval_shape(
        lambda i, k: renderer.apply(variables, i, k, method=KeypointRenderer.encode_reference),
        jax.ShapeDtypeStruct((1, size, size, 3), f32), jax.ShapeDtypeStruct((1, kp.NUM_POINTS, 2), f32))
    reference_keys = tuple(sorted(reference_shapes))
    frame_keys = ("frame", "refined") if renderer.spec.refine else ("frame",)

    def encode_reference(image, keypoints):
        reference = renderer.apply(variables, image, keypoints, method=KeypointRenderer.encode_reference)
        return tuple(reference[k] for k in reference_keys)

    def render_frame(*args):
        reference = dict(zip(reference_keys, args[:-1]))
        out = renderer.apply(variables, reference, args[-1], method=KeypointRenderer.render_frame)
        return tuple(out[k] for k in frame_keys)

    reference_names = tuple(f"reference_{k}" for k in reference_keys)
    return [
        ServingFunction("encode_reference", encode_reference, ("image", "keypoints"), (image, points),
                        reference_names),
        ServingFunction("render_frame", render_frame, (*reference_names, "target_keypoints"),
                        (*(reference_shapes[k] for k in reference_keys), points), frame_keys),
    ]


# --------------------------------------------------------------------------- StableHLO


def to_stablehlo(function: ServingFunction) -> jax_export.Exported:
    """`jax.export` of a serving function, lowered for every platform in `SERVING_PLATFORMS`."""
    return jax_export.export(jax.jit(function.fn), platforms=SERVING_PLATFORMS)(*function.inputs)


# --------------------------------------------------------------------------- ONNX: jaxpr -> graph


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
    """A runtime dimension (int64 `[1]` tensor) with the arithmetic jax.export's dimension
    expressions evaluate with: `expr._evaluate({var: _Dim})` emits the ONNX nodes."""

    __array_ufunc__ = None  # numpy integers defer to the reflected operators below

    def __init__(self, graph: "_Graph", name: str):
        self.graph, self.name = graph, name

    def _op(self, op: str, other, reverse: bool = False) -> "_Dim":
        other = other.name if isinstance(other, _Dim) else self.graph.value(np.array([int(other)], np.int64))
        inputs = [other, self.name] if reverse else [self.name, other]
        return _Dim(self.graph, self.graph.node(op, inputs))

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

    def __divmod__(self, other):  # dimensions are non-negative: truncation is floor division
        return self._op("Div", other), self._op("Mod", other)

    def __rdivmod__(self, other):
        return self._op("Div", other, True), self._op("Mod", other, True)


def _symbolic(d) -> bool:
    return jax_export.is_symbolic_dim(d)


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an undecidable comparison of symbolic dimensions
        return False


class _Graph:
    """One ONNX graph (the model's, or a Scan body) under construction.

    Values are numpy arrays (constants, folded at conversion time) or tensor names.
    `dims` maps each dimension variable to an int64 `[1]` tensor of the main graph, which
    Scan bodies see through ONNX's outer scope.
    """

    def __init__(self, model: _Model, dims: dict[str, str]):
        self.model, self.dims = model, dims
        self.nodes: list = []

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> str | list[str]:
        from onnx import helper

        names = [self.model.fresh(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=self.model.fresh(f"n_{op}"), **attrs))
        return names[0] if outputs == 1 else names

    def value(self, x) -> str:
        return self.model.constant(x) if isinstance(x, np.ndarray) else x

    def dim(self, d) -> str:
        """int64 `[1]` tensor holding dimension `d` (an int or a symbolic expression)."""
        if not _symbolic(d):
            return self.value(np.array([int(d)], np.int64))
        env = {var: _Dim(self, name) for var, name in self.dims.items()}
        # jax.export's own (private) evaluator, run with `_Dim` arithmetic; jax is pinned < 0.11.
        result = d._evaluate(env)
        return result.name if isinstance(result, _Dim) else self.value(np.array([int(result)], np.int64))

    def shape(self, dims: Sequence) -> str:
        """int64 `[len(dims)]` tensor of a shape that may hold symbolic dimensions."""
        if not any(_symbolic(d) for d in dims):
            return self.value(np.array([int(d) for d in dims], np.int64))
        return self.node("Concat", [self.dim(d) for d in dims], axis=0)

    def transpose(self, x, perm: Sequence[int]):
        if isinstance(x, np.ndarray):
            return np.transpose(x, perm)
        return self.node("Transpose", [x], perm=list(perm))

    def cast(self, x, dtype) -> str:
        from onnx import helper

        return self.node("Cast", [self.value(x)], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))

    def unsqueeze(self, x, axes: Sequence[int]) -> str:
        return self.node("Unsqueeze", [self.value(x), self.value(np.array(list(axes), np.int64))])


def _onnx_type(aval, name: str):
    from onnx import helper

    shape = [str(d) if _symbolic(d) else int(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), shape)


def _subjaxpr(param) -> tuple[Any, list]:
    """(jaxpr, consts) of a ClosedJaxpr or Jaxpr parameter."""
    if hasattr(param, "consts"):
        return param.jaxpr, [np.asarray(c) for c in param.consts]
    return param, []


def _convert(graph: _Graph, jaxpr, consts: Sequence, args: Sequence) -> list:
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
        static_outputs = all(not _symbolic(d) for v in eqn.outvars for d in v.aval.shape)
        foldable = static_outputs and eqn.primitive.name != "dim_as_value"  # a symbolic dimension's value
        if foldable and all(isinstance(x, np.ndarray) for x in inputs):
            outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
            outputs = [np.asarray(o) for o in outputs]
        else:
            rule = _RULES.get(eqn.primitive.name)
            if rule is None:
                raise UnsupportedForOnnx(f"to_onnx: no ONNX rule for the JAX primitive {eqn.primitive.name!r} "
                                          f"({eqn})")
            outputs = rule(graph, eqn, inputs)
            outputs = outputs if isinstance(outputs, list) else [outputs]
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]


_ELEMENTWISE = {
    "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "pow": "Pow",
    "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid", "sin": "Sin", "cos": "Cos",
    "sqrt": "Sqrt", "abs": "Abs", "neg": "Neg", "floor": "Floor", "ceil": "Ceil", "sign": "Sign", "erf": "Erf",
    "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual", "eq": "Equal", "not": "Not",
}
_BOOLEAN = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr")}
_REDUCTIONS = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin"}
_PASS_THROUGH = ("stop_gradient", "copy", "copy_p", "optimization_barrier", "reduce_precision")


def _elementwise(op):
    return lambda g, eqn, x: g.node(op, [g.value(v) for v in x])


def _boolean(ops):
    def rule(g, eqn, x):
        return g.node(ops[0] if eqn.outvars[0].aval.dtype == np.bool_ else ops[1], [g.value(v) for v in x])
    return rule


def _reduction(op):
    def rule(g, eqn, x):
        return g.node(op, [g.value(x[0]), g.value(np.array(eqn.params["axes"], np.int64))], keepdims=0)
    return rule


def _inline(param_name):
    def rule(g, eqn, x):
        jaxpr, consts = _subjaxpr(eqn.params[param_name])
        return _convert(g, jaxpr, consts, x)
    return rule


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
    y, v = eqn.params["y"], g.value(x[0])
    if y == 2:
        return g.node("Mul", [v, v])
    return g.node("Pow", [v, g.value(np.asarray(y, eqn.invars[0].aval.dtype))])


def _log1p(g, eqn, x):
    return g.node("Log", [g.node("Add", [g.value(x[0]), g.value(np.asarray(1, eqn.invars[0].aval.dtype))])])


def _convert_element_type(g, eqn, x):
    return g.cast(x[0], eqn.params["new_dtype"])


def _select_n(g, eqn, x):
    if len(x) != 3:
        raise UnsupportedForOnnx(f"to_onnx: select_n with {len(x) - 1} cases (only 2 are supported)")
    predicate = x[0] if eqn.invars[0].aval.dtype == np.bool_ else g.cast(x[0], np.bool_)
    return g.node("Where", [g.value(predicate), g.value(x[2]), g.value(x[1])])


def _clamp(g, eqn, x):
    low, value, high = (g.value(v) for v in x)
    return g.node("Min", [g.node("Max", [value, low]), high])


def _broadcast_in_dim(g, eqn, x):
    shape, kept = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    operand = g.value(x[0])
    new_axes = [i for i in range(len(shape)) if i not in kept]
    if new_axes:
        operand = g.unsqueeze(operand, new_axes)
    operand_shape = iter(eqn.invars[0].aval.shape)
    unsqueezed = [1 if i in new_axes else next(operand_shape) for i in range(len(shape))]
    if all(_same(a, b) for a, b in zip(unsqueezed, shape)):
        return operand
    return g.node("Expand", [operand, g.shape(shape)])


def _reshape(g, eqn, x):
    if eqn.params.get("dimensions") is not None:
        raise UnsupportedForOnnx("to_onnx: reshape with `dimensions`")
    return g.node("Reshape", [g.value(x[0]), g.shape(eqn.params["new_sizes"])])


def _transpose(g, eqn, x):
    return g.transpose(g.value(x[0]), eqn.params["permutation"])


def _squeeze(g, eqn, x):
    return g.node("Squeeze", [g.value(x[0]), g.value(np.array(eqn.params["dimensions"], np.int64))])


def _concatenate(g, eqn, x):
    return g.node("Concat", [g.value(v) for v in x], axis=int(eqn.params["dimension"]))


def _stack(g, eqn, x):
    axis = int(eqn.params["axis"])
    return g.node("Concat", [g.unsqueeze(v, [axis]) for v in x], axis=axis)


def _unstack(g, eqn, x):
    axis, parts = int(eqn.params["axis"]), len(eqn.outvars)
    pieces = g.node("Split", [g.value(x[0]), g.value(np.ones(parts, np.int64))], outputs=parts, axis=axis)
    pieces = pieces if parts > 1 else [pieces]
    return [g.node("Squeeze", [p, g.value(np.array([axis], np.int64))]) for p in pieces]


def _split(g, eqn, x):
    sizes, axis = eqn.params["sizes"], int(eqn.params["axis"])
    outputs = g.node("Split", [g.value(x[0]), g.shape(sizes)], outputs=len(sizes), axis=axis)
    return outputs if len(sizes) > 1 else [outputs]


def _slice(g, eqn, x):
    p = eqn.params
    axes = np.arange(len(p["start_indices"]), dtype=np.int64)
    inputs = [g.value(x[0]), g.shape(p["start_indices"]), g.shape(p["limit_indices"]), g.value(axes)]
    if p["strides"] is not None:
        inputs.append(g.value(np.array(p["strides"], np.int64)))
    return g.node("Slice", inputs)


def _pad(g, eqn, x):
    config = eqn.params["padding_config"]
    if any(interior or _symbolic(lo) or _symbolic(hi) or lo < 0 or hi < 0 for lo, hi, interior in config):
        raise UnsupportedForOnnx(f"to_onnx: pad with interior, negative or symbolic padding {config}")
    pads = np.array([lo for lo, _, _ in config] + [hi for _, hi, _ in config], np.int64)
    return g.node("Pad", [g.value(x[0]), g.value(pads), g.value(x[1])], mode="constant")


def _iota(g, eqn, x):
    p = eqn.params
    shape, axis = p["shape"], p["dimension"]
    length = g.node("Squeeze", [g.dim(shape[axis])])
    values = g.node("Range", [g.value(np.array(0, np.int64)), length, g.value(np.array(1, np.int64))])
    values = g.cast(values, p["dtype"])
    others = [i for i in range(len(shape)) if i != axis]
    if others:
        values = g.node("Expand", [g.unsqueeze(values, others), g.shape(shape)])
    return values


def _dim_as_value(g, eqn, x):
    return g.cast(g.node("Squeeze", [g.dim(eqn.params["dim"])]), eqn.outvars[0].aval.dtype)


def _dot_general(g, eqn, x):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs_rank, rhs_rank = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in range(lhs_rank)]
    rhs = [None] * rhs_rank
    for left, right in zip((*lhs_contract, *lhs_batch), (*rhs_contract, *rhs_batch)):
        rhs[right] = lhs[left]
    rhs = [r or next(letters) for r in rhs]
    out = ([lhs[i] for i in lhs_batch] + [lhs[i] for i in range(lhs_rank) if i not in (*lhs_contract, *lhs_batch)]
           + [rhs[i] for i in range(rhs_rank) if i not in (*rhs_contract, *rhs_batch)])
    a, b = (g.value(v) for v in x)
    if eqn.invars[0].aval.dtype != eqn.invars[1].aval.dtype:
        raise UnsupportedForOnnx("to_onnx: dot_general of mixed dtypes")
    result = g.node("Einsum", [a, b], equation=f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}")
    if eqn.outvars[0].aval.dtype != eqn.invars[0].aval.dtype:
        result = g.cast(result, eqn.outvars[0].aval.dtype)
    return result


def _conv_general_dilated(g, eqn, x):
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise UnsupportedForOnnx("to_onnx: transposed (lhs-dilated) or batch-grouped convolution")
    if any(lo < 0 or hi < 0 for lo, hi in p["padding"]):
        raise UnsupportedForOnnx(f"to_onnx: negative convolution padding {p['padding']}")
    image = g.transpose(g.value(x[0]), lhs_spec)  # -> [N, C, spatial...]
    kernel = g.transpose(x[1], rhs_spec)  # -> [O, I, spatial...], folded when constant
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    out = g.node("Conv", [image, g.value(kernel)], strides=list(p["window_strides"]), pads=pads,
                 dilations=list(p["rhs_dilation"]), group=int(p["feature_group_count"]))
    inverse = [0] * len(out_spec)
    for onnx_axis, jax_axis in enumerate(out_spec):
        inverse[jax_axis] = onnx_axis
    return g.transpose(out, inverse)


def _in_bounds(g, indices, upper: Sequence) -> str:
    """bool `[...]`: every component of the index vectors `[..., n]` lies in [0, upper)."""
    inside = g.node("And", [g.node("GreaterOrEqual", [indices, g.value(np.zeros(len(upper), np.int64))]),
                            g.node("Less", [indices, g.shape(upper)])])
    all_inside = g.node("ReduceMin", [g.cast(inside, np.int64), g.value(np.array([-1], np.int64))], keepdims=0)
    return g.cast(all_inside, np.bool_)


def _gather(g, eqn, x):
    """The three gathers jnp indexing makes here: a take along one axis (`Gather`), a take
    with leading batch dimensions (`GatherND`), and a slice at given starts (`Slice`)."""
    from jax.lax import GatherScatterMode

    p = eqn.params
    dn, sizes, mode = p["dimension_numbers"], p["slice_sizes"], p["mode"]
    operand_shape, indices_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    rank, batch_rank = len(operand_shape), len(indices_shape) - 1
    out_rank = len(eqn.outvars[0].aval.shape)
    k, m = len(dn.operand_batching_dims), len(dn.start_index_map)
    operand, indices = g.value(x[0]), g.cast(x[1], np.int64)
    fill = mode == GatherScatterMode.FILL_OR_DROP

    def full_except(axes):
        return all(_same(sizes[i], 1 if i in axes else operand_shape[i]) for i in range(rank))

    if not dn.collapsed_slice_dims and not k and batch_rank == 0 and tuple(dn.offset_dims) == tuple(range(rank)):
        if fill:
            raise UnsupportedForOnnx("to_onnx: slice-like gather in FILL_OR_DROP mode")
        starts = []
        for axis in range(rank):
            if axis in dn.start_index_map:
                start = g.node("Slice", [indices, *(g.value(np.array([v], np.int64))
                                                    for v in (dn.start_index_map.index(axis),
                                                              dn.start_index_map.index(axis) + 1))])
                upper = g.node("Sub", [g.dim(operand_shape[axis]), g.dim(sizes[axis])])
                start = g.node("Min", [g.node("Max", [start, g.value(np.array([0], np.int64))]), upper])
            else:
                start = g.value(np.array([0], np.int64))
            starts.append(start)
        starts = g.node("Concat", starts, axis=0)
        ends = g.node("Add", [starts, g.shape(sizes)])
        return g.node("Slice", [operand, starts, ends, g.value(np.arange(rank, dtype=np.int64))])

    batch_dims = tuple(range(k))
    gathered_dims = tuple(range(k, k + m))
    batched = (tuple(dn.operand_batching_dims) == batch_dims and tuple(dn.start_indices_batching_dims) == batch_dims
               and tuple(dn.collapsed_slice_dims) == gathered_dims and tuple(dn.start_index_map) == gathered_dims
               and full_except(batch_dims + gathered_dims)
               and tuple(dn.offset_dims) == tuple(range(batch_rank, out_rank)))
    if batched:
        upper = [operand_shape[i] for i in gathered_dims]
        valid = _in_bounds(g, indices, upper) if fill else None
        if mode == GatherScatterMode.CLIP or fill:
            indices = g.node("Max", [g.node("Min", [indices, g.node("Sub", [g.shape(upper), g.value(
                np.ones(m, np.int64))])]), g.value(np.zeros(m, np.int64))])
        out = g.node("GatherND", [operand, indices], batch_dims=k)
        if fill:
            trailing = list(range(batch_rank, out_rank))
            valid = g.unsqueeze(valid, trailing) if trailing else valid
            out = g.node("Where", [valid, out, g.value(np.asarray(p["fill_value"], eqn.outvars[0].aval.dtype))])
        return out

    if not k and m == 1 and tuple(dn.collapsed_slice_dims) == tuple(dn.start_index_map):
        axis = dn.start_index_map[0]
        if full_except((axis,)) and tuple(dn.offset_dims) == (
                *range(axis), *range(axis + batch_rank, out_rank)):
            flat = g.node("Squeeze", [indices, g.value(np.array([-1], np.int64))])
            valid = _in_bounds(g, indices, [operand_shape[axis]]) if fill else None
            if mode == GatherScatterMode.CLIP or fill:
                last = g.node("Sub", [g.dim(operand_shape[axis]), g.value(np.array([1], np.int64))])
                flat = g.node("Max", [g.node("Min", [flat, last]), g.value(np.array([0], np.int64))])
            out = g.node("Gather", [operand, flat], axis=int(axis))
            if fill:
                trailing = list(range(batch_rank, out_rank - axis))
                valid = g.unsqueeze(valid, trailing) if trailing else valid
                out = g.node("Where", [valid, out, g.value(np.asarray(p["fill_value"], eqn.outvars[0].aval.dtype))])
            return out
    raise UnsupportedForOnnx(f"to_onnx: gather with dimension numbers {dn} and slice sizes {sizes}")


def _dynamic_slice(g, eqn, x):
    operand, starts = g.value(x[0]), x[1:]
    shape, sizes = eqn.invars[0].aval.shape, eqn.params["slice_sizes"]
    clamped = []
    for start, dim, size in zip(starts, shape, sizes):  # lax clamps starts so the slice fits
        start = g.node("Reshape", [g.cast(start, np.int64), g.value(np.array([1], np.int64))])
        upper = g.node("Sub", [g.dim(dim), g.dim(size)])
        clamped.append(g.node("Min", [g.node("Max", [start, g.value(np.array([0], np.int64))]), upper]))
    begin = g.node("Concat", clamped, axis=0)
    end = g.node("Add", [begin, g.shape(sizes)])
    return g.node("Slice", [operand, begin, end, g.value(np.arange(len(shape), dtype=np.int64))])


def _scan(g, eqn, x):
    """`lax.scan` -> ONNX `Scan`: carries are its state, xs its scan inputs (axis 0);
    the body sees the scan's constants through the outer scope."""
    from onnx import helper

    p = eqn.params
    body_jaxpr, body_consts = _subjaxpr(p["jaxpr"])
    num_consts, num_carry = p["num_consts"], p["num_carry"]
    consts, carry, xs = x[:num_consts], x[num_consts:num_consts + num_carry], x[num_consts + num_carry:]
    if not xs:
        raise UnsupportedForOnnx("to_onnx: scan without scanned inputs (needs an ONNX Loop)")
    body = _Graph(g.model, g.dims)
    carry_avals = [v.aval for v in body_jaxpr.invars[num_consts:num_consts + num_carry]]
    x_avals = [v.aval for v in body_jaxpr.invars[num_consts + num_carry:]]
    input_names = [g.model.fresh("scan_in") for _ in carry_avals + x_avals]
    outs = _convert(body, body_jaxpr, body_consts, [*consts, *input_names])
    output_names = [body.node("Identity", [body.value(o)]) for o in outs]
    graph = helper.make_graph(
        body.nodes, g.model.fresh("scan_body"),
        [_onnx_type(a, n) for a, n in zip(carry_avals + x_avals, input_names)],
        [_onnx_type(v.aval, n) for v, n in zip(body_jaxpr.outvars, output_names)])
    directions = {"scan_input_directions": [1] * len(xs),
                  "scan_output_directions": [1] * (len(outs) - num_carry)} if p["reverse"] else {}
    results = g.node("Scan", [g.value(v) for v in (*carry, *xs)], outputs=len(outs), body=graph,
                     num_scan_inputs=len(xs), **directions)
    return results if len(outs) > 1 else [results]


_RULES: dict[str, Callable] = {
    **{name: _elementwise(op) for name, op in _ELEMENTWISE.items()},
    **{name: _boolean(ops) for name, ops in _BOOLEAN.items()},
    **{name: _reduction(op) for name, op in _REDUCTIONS.items()},
    **{name: (lambda g, eqn, x: list(x)) for name in _PASS_THROUGH},
    "jit": _inline("jaxpr"), "pjit": _inline("jaxpr"), "closed_call": _inline("call_jaxpr"),
    "checkpoint": _inline("jaxpr"), "custom_jvp_call": _inline("call_jaxpr"),
    "custom_vjp_call": _inline("call_jaxpr"),
    "ne": _ne, "rem": _rem, "rsqrt": _rsqrt, "square": _square, "integer_pow": _integer_pow, "log1p": _log1p,
    "convert_element_type": _convert_element_type, "select_n": _select_n, "clamp": _clamp,
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "transpose": _transpose, "squeeze": _squeeze,
    "concatenate": _concatenate, "stack": _stack, "unstack": _unstack, "split": _split, "slice": _slice,
    "pad": _pad, "iota": _iota, "dim_as_value": _dim_as_value, "dot_general": _dot_general,
    "conv_general_dilated": _conv_general_dilated, "gather": _gather, "dynamic_slice": _dynamic_slice, "scan": _scan,
}


def _solve_dims(graph: _Graph, function: ServingFunction) -> None:
    """Each dimension variable as a runtime value read off an input's shape: from an axis of
    size `v` if there is one, else from one of size `k*v` (divided by k)."""
    scaled = re.compile(r"^(\d+)\*([A-Za-z_]\w*)$")
    for pass_scaled in (False, True):
        for name, spec in zip(function.input_names, function.inputs):
            for axis, d in enumerate(spec.shape):
                if not _symbolic(d):
                    continue
                match = scaled.match(str(d)) if pass_scaled else None
                var, factor = (match.group(2), int(match.group(1))) if match else (str(d), 1)
                if var.isidentifier() and var not in graph.dims and (match or not pass_scaled):
                    size = graph.node("Shape", [name], start=axis, end=axis + 1)
                    if factor != 1:
                        size = graph.node("Div", [size, graph.value(np.array([factor], np.int64))])
                    graph.dims[var] = size


def to_onnx(function: ServingFunction):
    """An `onnx.ModelProto` computing `function`, with its symbolic dimensions kept symbolic."""
    import onnx
    from onnx import helper

    closed = jax.make_jaxpr(function.fn)(*function.inputs)
    model = _Model()
    graph = _Graph(model, {})
    _solve_dims(graph, function)
    outputs = _convert(graph, closed.jaxpr, [np.asarray(c) for c in closed.consts], list(function.input_names))
    for value, name in zip(outputs, function.output_names):
        graph.nodes.append(helper.make_node("Identity", [graph.value(value)], [name], name=model.fresh("n_output")))
    onnx_graph = helper.make_graph(
        graph.nodes, function.name,
        [_onnx_type(spec, name) for name, spec in zip(function.input_names, function.inputs)],
        [_onnx_type(v.aval, name) for v, name in zip(closed.jaxpr.outvars, function.output_names)],
        initializer=model.initializers)
    proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="t2v", producer_version=t2v.__version__)
    proto.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(proto)
    return proto


# --------------------------------------------------------------------------- checkpoints -> artifacts


def _checked_params(workdir: Path, params: Any, expected: Any) -> Any:
    """`params` in float32 if they are `expected`'s tree and shapes, else a one-line error."""
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), checkpoint.checked_params(workdir, params, expected))


def serving_functions(config: ml_collections.ConfigDict, params: Any,
                      workdir: Path | str = "") -> list[ServingFunction]:
    """The serving functions of a task's config and (unboxed) parameters, built in float32."""
    workdir = Path(workdir)
    if config.task == "motion":
        from t2v.models.motion_vae import build_motion_model

        m = config.model
        model = build_motion_model(m.audio.to_dict(), m.identity.to_dict(), m.vae.to_dict(), m.prior.to_dict())
        frames = 4
        shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
            {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(0)},
            jnp.zeros((1, 4 * frames, model.audio_encoder.n_mels)), jnp.zeros((1, kp.NUM_POINTS, 2)),
            jnp.zeros((1, frames, kp.NUM_POINTS, 2)))["params"]))
        return motion_serving(model, _checked_params(workdir, params, shapes))
    if config.task == "render":
        from t2v.tasks.render import build_renderer

        renderer = build_renderer(config)
        size = renderer.spec.size
        points = jnp.zeros((1, kp.NUM_POINTS, 2))
        shapes = jax.eval_shape(lambda: nn.meta.unbox(renderer.init(
            jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), points, points)["params"]))
        renderer_params = params.get("renderer") if isinstance(params, dict) else None
        if renderer_params is None:
            raise ValueError(f"{workdir}: the checkpoint has no 'renderer' parameters")
        return render_serving(renderer, _checked_params(workdir, renderer_params, shapes))
    raise ValueError(f"{workdir}: task {config.task!r} has nothing to serve "
                     f"(exportable: {', '.join(EXPORTABLE_TASKS)})")


def _spec_json(names: Sequence[str], avals: Sequence) -> list[dict]:
    return [{"name": n, "dtype": np.dtype(a.dtype).name,
             "shape": [str(d) if _symbolic(d) else int(d) for d in a.shape]} for n, a in zip(names, avals)]


def export_functions(functions: Sequence[ServingFunction], out_dir: str | Path, onnx: bool = True) -> dict:
    """Write `<name>.stablehlo` (and `<name>.onnx`) per function into `out_dir`; their manifest entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for function in functions:
        exported = to_stablehlo(function)
        (out_dir / f"{function.name}.stablehlo").write_bytes(exported.serialize())
        entry = {"stablehlo": f"{function.name}.stablehlo", "platforms": list(exported.platforms),
                 "inputs": _spec_json(function.input_names, exported.in_avals),
                 "outputs": _spec_json(function.output_names, exported.out_avals)}
        if onnx:
            (out_dir / f"{function.name}.onnx").write_bytes(to_onnx(function).SerializeToString())
            entry["onnx"] = f"{function.name}.onnx"
        entries[function.name] = entry
    return entries


def export(checkpoint_dir: str | Path, out_dir: str | Path, *, onnx: bool = True) -> dict:
    """Export every servable task under `checkpoint_dir` (module doc) into `out_dir`; returns the manifest.

    `checkpoint_dir` is one task's workdir or a demo workdir whose subfolders are task
    workdirs; the latest checkpoint's EMA parameters are used. Tasks with nothing to serve
    (e.g. `sync`, a training-only loss) are listed under "skipped" in a demo workdir.
    """
    workdirs = checkpoint.task_workdirs(checkpoint_dir)
    single = len(workdirs) == 1 and Path(checkpoint_dir) in workdirs.values()
    manifest: dict[str, Any] = {"t2v_version": t2v.__version__, "jax_version": jax.__version__,
                                "onnx_opset": ONNX_OPSET if onnx else None, "tasks": {}, "skipped": {}}
    for task, workdir in workdirs.items():
        if task not in EXPORTABLE_TASKS:
            if single:
                raise ValueError(f"{workdir}: task {task!r} has nothing to serve "
                                 f"(exportable: {', '.join(EXPORTABLE_TASKS)})")
            manifest["skipped"][task] = "nothing to serve"
            continue
        config = checkpoint.read_config(workdir)
        functions = serving_functions(config, checkpoint.load_params(workdir), workdir)
        log.info("exporting %s from %s", task, workdir)
        entry = {"workdir": str(workdir.absolute()), "config": config.to_dict(),
                 "functions": export_functions(functions, Path(out_dir) / task, onnx)}
        if task == "motion":
            entry["audio_context_frames"] = list(_motion_context(config))
        manifest["tasks"][task] = {k: entry[k] for k in sorted(entry)}
    path = Path(out_dir) / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


def _motion_context(config) -> tuple[int, int]:
    from t2v.models.audio_encoder import AudioEncoder

    return AudioEncoder(**config.model.audio.to_dict()).context_frames()
