"""Serving export: trained models -> artifacts that run without t2v (docs/export.md).

    t2v export --checkpoint /tmp/demo --out /tmp/serving
    export("/tmp/demo", "/tmp/serving")          # the same, from Python

`serving` defines the serving functions, `artifacts` writes them (StableHLO, ONNX, manifest),
`onnx` and `onnx_rules` convert a jaxpr to ONNX, `jax_adapter` holds the jax internals that
conversion reads.
"""

from t2v.export.artifacts import KNOWN_PLATFORMS, export, export_functions
from t2v.export.onnx import EXTERNAL_DATA_THRESHOLD, ONNX_OPSET, save_onnx, to_onnx
from t2v.export.onnx_rules import UnsupportedForOnnx
from t2v.export.serving import (EXPORTABLE_TASKS, SERVING_PLATFORMS, ServingFunction, motion_serving,
                                render_serving, serving_functions, to_stablehlo)

__all__ = ["EXPORTABLE_TASKS", "EXTERNAL_DATA_THRESHOLD", "KNOWN_PLATFORMS", "ONNX_OPSET", "SERVING_PLATFORMS",
           "ServingFunction", "UnsupportedForOnnx", "export", "export_functions", "motion_serving",
           "render_serving", "save_onnx", "serving_functions", "to_onnx", "to_stablehlo"]
