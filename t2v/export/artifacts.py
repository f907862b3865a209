"""Checkpoints -> serving artifacts on disk and their manifest.

    out/<task>/<function>.stablehlo   jax.export, lowered for `platforms`
    out/<task>/<function>.onnx        ONNX (opset 18); tensors in <function>.onnx.data past the threshold
    out/manifest.json                 versions, each task's config, every input and output's name,
                                      dtype and shape (symbolic dimensions as strings: ["b", "4*t", 80])

Layout and loading: docs/export.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

import t2v
from t2v import checkpoint
from t2v.errors import InputError
from t2v.export.onnx import EXTERNAL_DATA_THRESHOLD, ONNX_OPSET, save_onnx, to_onnx
from t2v.export.onnx_rules import is_symbolic
from t2v.export.serving import (EXPORTABLE_TASKS, SERVING_PLATFORMS, ServingFunction, nothing_to_serve,
                                serving_functions, to_stablehlo)

log = logging.getLogger(__name__)

# What jax.export can lower for; `platforms` must be among them.
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def _spec_json(names: Sequence[str], avals: Sequence) -> list[dict]:
    return [{"name": n, "dtype": np.dtype(a.dtype).name,
             "shape": [str(d) if is_symbolic(d) else int(d) for d in a.shape]} for n, a in zip(names, avals)]


def export_functions(functions: Sequence[ServingFunction], out_dir: str | Path, onnx: bool = True, *,
                     platforms: Sequence[str] = SERVING_PLATFORMS,
                     external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> dict:
    """Write `<name>.stablehlo` (and `<name>.onnx`) per function into `out_dir`; their manifest entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for function in functions:
        exported = to_stablehlo(function, platforms)
        (out_dir / f"{function.name}.stablehlo").write_bytes(exported.serialize())
        entry = {"stablehlo": f"{function.name}.stablehlo", "platforms": list(exported.platforms),
                 "inputs": _spec_json(function.input_names, exported.in_avals),
                 "outputs": _spec_json(function.output_names, exported.out_avals)}
        if onnx:
            side_file = save_onnx(to_onnx(function, check=False), out_dir / f"{function.name}.onnx",
                                  external_data_threshold)
            entry["onnx"] = f"{function.name}.onnx"
            if side_file:
                entry["onnx_external_data"] = side_file
        entries[function.name] = entry
    return entries


def _checked_options(out_dir: Path, platforms: Sequence[str], external_data_threshold: int) -> None:
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown or not platforms:
        raise InputError(f"export.platforms={list(platforms)}: expected some of {', '.join(KNOWN_PLATFORMS)}")
    if isinstance(external_data_threshold, bool) or not isinstance(external_data_threshold, int) \
            or external_data_threshold < 0:
        raise InputError(f"export.external_data_threshold={external_data_threshold!r}: expected bytes, an int >= 0")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")


def export(checkpoint_dir: str | Path, out_dir: str | Path, *, onnx: bool = True,
           platforms: Sequence[str] = SERVING_PLATFORMS,
           external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> dict:
    """Export every servable task under `checkpoint_dir` into `out_dir`; returns the manifest.

    `checkpoint_dir` is one task's workdir or a demo workdir whose subfolders are task
    workdirs; the latest checkpoint's EMA parameters are used. Tasks with nothing to serve
    (e.g. `sync`, a training-only loss) are listed under "skipped" in a demo workdir.
    `onnx`: also write ONNX; `platforms`: what the StableHLO is lowered for;
    `external_data_threshold`: bytes of weights past which ONNX tensors go to a side file.
    """
    if checkpoint.is_remote(out_dir):  # gs:// etc.: written locally (ONNX knows local files), then copied
        with checkpoint.local_folder(out_dir) as local_out:
            return export(checkpoint_dir, local_out, onnx=onnx, platforms=platforms,
                          external_data_threshold=external_data_threshold)
    checkpoint_dir, out_dir = checkpoint.workdir_path(checkpoint_dir), Path(out_dir)
    platforms = tuple(platforms)
    _checked_options(out_dir, platforms, external_data_threshold)
    workdirs = checkpoint.task_workdirs(checkpoint_dir)
    single = len(workdirs) == 1 and checkpoint_dir in workdirs.values()
    manifest: dict[str, Any] = {"t2v_version": t2v.__version__, "jax_version": jax.__version__,
                                "onnx_opset": ONNX_OPSET if onnx else None, "tasks": {}, "skipped": {}}
    for task, workdir in workdirs.items():
        if task not in EXPORTABLE_TASKS:
            if single:
                raise nothing_to_serve(workdir, task)
            manifest["skipped"][task] = "nothing to serve"
            continue
        config = checkpoint.read_config(workdir)
        params = checkpoint.load_params(workdir)
        functions = serving_functions(config, params, workdir)
        log.info("exporting %s from %s", task, workdir)
        entry = {"workdir": str(checkpoint.workdir_path(workdir)), "config": config.to_dict(),
                 "functions": export_functions(functions, out_dir / task, onnx, platforms=platforms,
                                               external_data_threshold=external_data_threshold)}
        if task == "motion":
            entry["audio_context_frames"] = list(_motion_context(config))
        manifest["tasks"][task] = {k: entry[k] for k in sorted(entry)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


def _motion_context(config) -> tuple[int, int]:
    from t2v.models.audio_encoder import AudioEncoder

    return AudioEncoder(**config.model.audio.to_dict()).context_frames()
