"""What a step costs, and what the hardware offers.

    flops = model_flops(jax.make_jaxpr(train_step)(state, batch))   # the whole global batch
    xla = xla_cost(compiled)                                       # per device, from XLA
    peak = peak_flops("h100", "bfloat16")                           # FLOP/s of one device

Two FLOP counts, because each misses something:
- `model_flops` walks the jaxpr and counts matrix multiplies and convolutions (2 per
  multiply-add), loop bodies times their trip count: the "model FLOPs" MFU is defined by
  (elementwise work is not counted).
- `xla_cost` is XLA's own cost analysis of the compiled per-device program: elementwise
  work included, but the body of a loop (`lax.scan`, grad_accum's micro-batches, the
  flow prior's steps) counted once.
"""

from __future__ import annotations

import math
from typing import Any

from jax.extend import core as jax_core

# Dense peak FLOP/s per device (no structured sparsity) and memory per device, from the
# vendors' data sheets. TPUs have no separate float32 matmul peak: XLA's default
# precision runs float32 matmuls as bfloat16 passes, so float32 is given as None.
DEVICE_PEAKS: dict[str, dict[str, float | None]] = {
    "h100": {"bfloat16": 989e12, "float32": 67e12, "memory_gb": 80},    # SXM5
    "h200": {"bfloat16": 989e12, "float32": 67e12, "memory_gb": 141},   # SXM, H100's compute, more HBM
    "a100": {"bfloat16": 312e12, "float32": 19.5e12, "memory_gb": 80},  # SXM4 80 GB
    "tpu_v5e": {"bfloat16": 197e12, "float32": None, "memory_gb": 16},
    "tpu_v5p": {"bfloat16": 459e12, "float32": None, "memory_gb": 95},
    "tpu_v6e": {"bfloat16": 918e12, "float32": None, "memory_gb": 32},
    # Nominal, per core: AVX2, 2 FMA units x 8 float32 lanes x 2 FLOPs at 3 GHz. XLA's CPU
    # backend computes bfloat16 in float32, so both get the same figure. benchmarks/mfu.py
    # measures the machine's own instead.
    "cpu": {"bfloat16": 96e9, "float32": 96e9, "memory_gb": None},
}

# What `jax.devices()[0].device_kind` says -> the table's key.
_KIND_ALIASES = {"h100": "h100", "h200": "h200", "a100": "a100", "v5 lite": "tpu_v5e", "v5e": "tpu_v5e",
                 "v5p": "tpu_v5p", "v5": "tpu_v5p", "v6 lite": "tpu_v6e", "v6e": "tpu_v6e", "cpu": "cpu"}


def device_key(device_kind: str) -> str | None:
    """A device's `device_kind` ("NVIDIA H100 80GB HBM3", "TPU v5 lite", "cpu") -> a
    DEVICE_PEAKS key, or None if the table does not know it."""
    kind = device_kind.lower()
    if kind in DEVICE_PEAKS:
        return kind
    for alias in sorted(_KIND_ALIASES, key=len, reverse=True):
        if alias in kind:
            return _KIND_ALIASES[alias]
    return None


def peak_flops(device: str, dtype: str) -> float | None:
    """Peak FLOP/s of one `device` (a DEVICE_PEAKS key) for matmuls in `dtype`."""
    return DEVICE_PEAKS[device]["bfloat16" if str(dtype) == "bfloat16" else "float32"]


def _dot_general_flops(eqn) -> float:
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval
    return 2.0 * eqn.outvars[0].aval.size * math.prod(lhs.shape[d] for d in lhs_contracting)


def _conv_flops(eqn) -> float:
    # Each output element sums over the kernel's input features and spatial taps (the
    # kernel's input-feature axis is already divided by feature_group_count).
    rhs = eqn.invars[1].aval
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
    taps = math.prod(rhs.shape[d] for d in rhs_spec[2:])
    return 2.0 * eqn.outvars[0].aval.size * rhs.shape[rhs_spec[1]] * taps


def model_flops(jaxpr: Any) -> float:
    """Matmul and convolution FLOPs of a (closed) jaxpr, scan bodies times their length,
    the costlier branch of a cond; a while loop's body (trip count unknown) once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * model_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max(model_flops(branch) for branch in eqn.params["branches"])
        else:
            total += sum(model_flops(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
    return total


def xla_cost(compiled) -> dict[str, float]:
    """XLA's cost analysis of a compiled (per-device) program: "flops", "bytes accessed"."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    return {"flops": float(analysis.get("flops", 0.0)), "bytes accessed": float(analysis.get("bytes accessed", 0.0))}


def memory_per_device(compiled) -> dict[str, int]:
    """Bytes one device holds while the step runs: its arguments (state and batch shards),
    outputs not aliased to donated arguments, and XLA's temporaries."""
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
            "aliased": int(m.alias_size_in_bytes), "temporaries": int(m.temp_size_in_bytes), "total": int(total)}
