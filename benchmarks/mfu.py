"""Model FLOPs utilisation of the real update step, and the input pipeline beside it.

    python benchmarks/mfu.py                                     # tiny sync, motion, render; fp32 and bf16
    python benchmarks/mfu.py --specs configs/render.py:base --dtypes bfloat16 --steps 20

For each config and compute dtype, on this process's devices (the config's mesh over all
of them), with the very step `t2v.train` runs (`t2v.train.compile_update`):
  flops     matmul + conv FLOPs of one step from the jaxpr (loops times their trip count),
            and XLA's cost analysis of the compiled per-device program beside it
  step      median seconds per step over --steps steps after --warmup, each step waited for
  mfu       flops per device / median step / the device's peak for the dtype
            (t2v.train.cost.DEVICE_PEAKS; on a CPU the peak is measured: the best FLOP/s
            of a large matmul in that dtype on one device, the nominal figure beside it)
  input     examples/s of the task's input pipeline alone (one process, data.workers
            as configured), beside the examples/s the step consumes
Prints a table and writes benchmarks/results/mfu.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import write_record  # noqa: E402  (benchmarks/, the script's own folder)
from t2v import config as config_lib  # noqa: E402
from t2v import parallel  # noqa: E402
from t2v.tasks import get_task  # noqa: E402
from t2v.train import cost  # noqa: E402
from t2v.train.loop import compile_update, process_dataset  # noqa: E402
from t2v.train.state import create_train_state, mesh_context  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SPECS = "configs/sync.py:tiny,configs/motion.py:tiny,configs/render.py:tiny"


def measured_matmul_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of a [size, size] @ [size, size] matmul in `dtype` on one device."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def device_peak(dtype: str, measured: dict) -> tuple[str, float | None, str]:
    """(table key, peak FLOP/s per device, where the figure comes from)."""
    key = cost.device_key(jax.devices()[0].device_kind) or "unknown"
    if key == "cpu":
        if dtype not in measured:
            measured[dtype] = measured_matmul_peak(dtype)
        return key, measured[dtype], "measured matmul"
    if key == "unknown":
        return key, None, "not in the table"
    return key, cost.peak_flops(key, dtype), "data sheet"


def input_throughput(task, config, batches: int) -> float:
    """Examples/s of the train pipeline alone, after one batch of warm-up."""
    iterator = process_dataset(task, config, "train")
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * int(config.train.batch_size) / (time.perf_counter() - start)


def measure(spec: str, dtype: str, *, steps: int, warmup: int, input_batches: int, overrides: list[str],
            measured_peaks: dict) -> dict:
    config = config_lib.load(spec, [f"--config.train.compute_dtype={dtype}", *overrides])
    task = get_task(config)
    mesh, rules = parallel.make_mesh(config.mesh), [tuple(rule) for rule in config.sharding_rules]
    batch = parallel.shard_batch(next(process_dataset(task, config, "train")), mesh)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)

    compile_start = time.perf_counter()
    update = compile_update(task, config, mesh, rules, abstract_batch)
    compile_seconds = time.perf_counter() - compile_start
    with mesh_context(mesh, rules):
        frozen_args = () if update.frozen is None else (update.frozen,)
        flops = cost.model_flops(jax.make_jaxpr(update.train_step)(update.abstract_state, abstract_batch,
                                                                   *frozen_args))
        init_rng, train_rng = jax.random.split(jax.random.PRNGKey(0))
        state = jax.jit(partial(create_train_state, task, update.tx), out_shardings=update.shardings)(
            init_rng, train_rng, batch)
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            state, metrics = update(state, batch)  # with the task's frozen constants, if any
            jax.block_until_ready((state, metrics))
            if i >= warmup:
                times.append(time.perf_counter() - start)
    step_seconds = statistics.median(times)

    devices = mesh.size
    device, peak, peak_source = device_peak(dtype, measured_peaks)
    flops_per_device = flops / devices
    batch_size = int(config.train.batch_size)
    return {
        "spec": spec, "compute_dtype": dtype, "devices": devices, "device": device, "batch_size": batch_size,
        "model_flops_per_step": flops, "xla_flops_per_device": cost.xla_cost(update.compiled)["flops"],
        "compile_s": compile_seconds, "steps": steps, "warmup": warmup, "median_step_s": step_seconds,
        "min_step_s": min(times), "achieved_flops_per_device": flops_per_device / step_seconds,
        "peak_flops_per_device": peak, "peak_source": peak_source,
        "nominal_peak_flops_per_device": cost.DEVICE_PEAKS.get(device, {}).get(
            "bfloat16" if dtype == "bfloat16" else "float32"),
        "mfu": flops_per_device / step_seconds / peak if peak else None,
        "step_examples_per_s": batch_size / step_seconds,
        "input_examples_per_s": input_throughput(task, config, input_batches),
    }


def print_row(r: dict) -> None:
    mfu = f"{r['mfu']:6.1%}" if r["mfu"] is not None else "   n/a"
    peak = f"{r['peak_flops_per_device'] / 1e12:7.3f}" if r["peak_flops_per_device"] else "    n/a"
    print(f"{r['spec']:<24} {r['compute_dtype']:<8} {r['devices']:>3} x {r['device']:<7} "
          f"{r['model_flops_per_step']:10.3e} {r['xla_flops_per_device']:10.3e} {r['median_step_s'] * 1e3:9.2f} "
          f"{r['achieved_flops_per_device'] / 1e12:8.4f} {peak} {mfu} "
          f"{r['step_examples_per_s']:9.1f} {r['input_examples_per_s']:9.1f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", default=DEFAULT_SPECS, help="comma-separated config specs")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--input-batches", type=int, default=10)
    parser.add_argument("--cache-dir", default="", help="synthetic clip cache (default: ~/.cache/t2v)")
    parser.add_argument("--out", default=str(RESULTS / "mfu.json"))
    args = parser.parse_args(argv)
    overrides = [f"--config.data.cache_dir={args.cache_dir}"] if args.cache_dir else []

    print(f"{'config':<24} {'dtype':<8} {'devices':<13} {'FLOP/step':>10} {'XLA/dev':>10} {'step ms':>9} "
          f"{'TFLOP/s':>8} {'peak':>7} {'MFU':>6} {'step ex/s':>9} {'input ex/s':>9}")
    rows, measured_peaks = [], {}
    for spec in args.specs.split(","):
        for dtype in args.dtypes.split(","):
            rows.append(measure(spec, dtype, steps=args.steps, warmup=args.warmup,
                                input_batches=args.input_batches, overrides=overrides,
                                measured_peaks=measured_peaks))
            print_row(rows[-1])
    write_record("mfu", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
