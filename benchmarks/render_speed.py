"""Renderer speed: frames per second of `render_frame` and GFLOP per frame.

    python benchmarks/render_speed.py                       # 128 and 256 px, batch 1 and 8
    python benchmarks/render_speed.py --sizes 256 --batches 1 --seconds 5

The renderer is `configs/render.py:base` at each size, with random weights (speed does not
depend on them). As in generation, the reference is encoded once per video and every
frame runs `render_frame` alone; batch B renders B frames of one video at once. FLOPs
come from XLA's cost analysis of the compiled programs. Prints a table and writes
`benchmarks/results/render_speed.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2v import config as config_lib  # noqa: E402
from t2v.tasks.render import build_renderer  # noqa: E402


def gflops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"]) / 1e9


def measure(size: int, batch: int, refine: bool, seconds: float) -> dict:
    config = config_lib.load("configs/render.py:base", [f"--config.data.size={size}", f"--config.model.refine={refine}"])
    model = build_renderer(config)
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.uniform(size=(1, size, size, 3)), jnp.float32)
    reference_keypoints = jnp.asarray(rng.uniform(-0.5, 0.5, size=(1, 68, 2)), jnp.float32)
    targets = reference_keypoints + jnp.asarray(0.02 * rng.normal(size=(batch, 68, 2)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), image, reference_keypoints, reference_keypoints)

    encode = jax.jit(lambda v, i, k: model.apply(v, i, k, method=model.encode_reference)).lower(
        variables, image, reference_keypoints).compile()
    reference = encode(variables, image, reference_keypoints)
    output = "refined" if refine else "frame"
    render = jax.jit(lambda v, r, k: model.apply(v, r, k, method=model.render_frame)[output]).lower(
        variables, reference, targets).compile()
    jax.block_until_ready(render(variables, reference, targets))

    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        jax.block_until_ready(render(variables, reference, targets))
        calls += 1
    elapsed = time.perf_counter() - start
    encode_start = time.perf_counter()
    jax.block_until_ready(encode(variables, image, reference_keypoints))
    return {
        "size": size, "batch": batch, "refine": refine,
        "frames_per_sec": calls * batch / elapsed,
        "ms_per_call": 1e3 * elapsed / calls,
        "gflop_per_frame": gflops(render) / batch,
        "encode_reference_ms": 1e3 * (time.perf_counter() - encode_start),
        "encode_reference_gflop": gflops(encode),
        "parameters": int(sum(x.size for x in jax.tree.leaves(variables))),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--refine", default="off,on", help="off, on, or off,on")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--out", default="", help="JSON path (default benchmarks/results/render_speed.json)")
    args = parser.parse_args(argv)

    rows = [measure(size, batch, refine == "on", args.seconds)
            for refine in args.refine.split(",") for size in map(int, args.sizes.split(","))
            for batch in map(int, args.batches.split(","))]

    print(f"{'size':>5} {'refine':>6} {'batch':>5} {'frames/s':>9} {'ms/call':>8} {'GFLOP/frame':>11} "
          f"{'encode ms':>9} {'encode GFLOP':>12}")
    for r in rows:
        print(f"{r['size']:>5} {'on' if r['refine'] else 'off':>6} {r['batch']:>5} {r['frames_per_sec']:>9.1f} "
              f"{r['ms_per_call']:>8.1f} {r['gflop_per_frame']:>11.3f} {r['encode_reference_ms']:>9.1f} "
              f"{r['encode_reference_gflop']:>12.3f}")

    device = jax.devices()[0]
    out = Path(args.out or ROOT / "benchmarks" / "results" / "render_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "render_speed", "config": "configs/render.py:base",
        "device": f"{device.platform}: {device.device_kind}", "devices": jax.device_count(),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
