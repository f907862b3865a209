"""The knobs of `t2v export` (serving artifacts); paths stay flags.

    t2v export --checkpoint DIR --out DIR --config.export.onnx=false

`--no-onnx` is a shorthand for `--config.export.onnx=false`.
"""

import ml_collections

from t2v.errors import InputError


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.export = dict(
        onnx=True,  # also convert every serving function to ONNX beside its StableHLO
        platforms="cpu,cuda,tpu",  # what the StableHLO is lowered for (of cpu, cuda, rocm, tpu)
        external_data_threshold=1 << 30,  # bytes of weights past which ONNX tensors go to <name>.onnx.data
    )
    if arg not in (None, ""):
        raise InputError(f"configs/export.py: unknown variant {arg!r}")
    return c
