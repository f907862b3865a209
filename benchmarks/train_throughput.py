"""Training throughput of the sync and motion tasks on this machine's CPU (or whatever JAX sees).

    python benchmarks/train_throughput.py                       # tiny and base, both tasks
    python benchmarks/train_throughput.py --variants tiny --steps 20

For each task and config variant it measures, on one process:
  input     examples/s of the Grain window pipeline alone (clips already cached)
  step      steps/s and examples/s of the jitted update (forward, backward, AdamW, EMA)
            on a fixed batch: the compute ceiling
  loop      steps/s and examples/s of input + update together, as `t2v.train` runs them
Base variants keep their model and batch size but read a small synthetic set (the
throughput of a step does not depend on the data set's size). Prints a table and writes
benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import write_record  # noqa: E402  (benchmarks/, the script's own folder)
from t2v import config as config_lib  # noqa: E402
from t2v import optim  # noqa: E402
from t2v.tasks import get_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(task_name: str, variant: str, steps: int, cache_dir: str) -> dict:
    config = config_lib.load(f"configs/{task_name}.py:{variant}", [
        "--config.data.train_clips=64", "--config.data.eval_clips=8", "--config.data.workers=0",
        f"--config.data.cache_dir={cache_dir}"])
    task = get_task(config)
    batches = task.dataset("train", seed=0, process_index=0, process_count=1)
    for _ in range(3):  # every clip prepared once (64 clips, the pipeline caches them)
        next(batches)
    batch_size = int(config.train.batch_size)

    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
    input_seconds = time.perf_counter() - start

    rng = jax.random.PRNGKey(0)
    params = nn.meta.unbox(task.init(rng, batch))
    tx = optim.make_optimizer(config.optimizer, total_steps=int(config.train.steps))
    opt_state = tx.init(params)
    ema = jax.tree.map(jnp.copy, params)  # its own buffers: all three are donated
    decay = float(config.optimizer.ema_decay)

    def update(params, opt_state, ema, batch, step):
        grads = jax.grad(lambda p: task.loss(p, batch, jax.random.fold_in(rng, step), step)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, optim.ema_update(ema, params, decay)

    update = jax.jit(update, donate_argnums=(0, 1, 2))
    compile_start = time.perf_counter()
    params, opt_state, ema = jax.block_until_ready(update(params, opt_state, ema, batch, jnp.int32(0)))
    compile_seconds = time.perf_counter() - compile_start

    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, ema = update(params, opt_state, ema, batch, jnp.int32(i + 1))
    jax.block_until_ready(params)
    step_seconds = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, ema = update(params, opt_state, ema, next(batches), jnp.int32(i + 1))
    jax.block_until_ready(params)
    loop_seconds = time.perf_counter() - start

    parameters = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return {
        "task": task_name, "variant": variant, "batch_size": batch_size, "window": int(config.data.window),
        "parameters": parameters, "steps": steps, "compile_s": compile_seconds,
        "input_examples_per_s": steps * batch_size / input_seconds,
        "step_steps_per_s": steps / step_seconds, "step_examples_per_s": steps * batch_size / step_seconds,
        "loop_steps_per_s": steps / loop_seconds, "loop_examples_per_s": steps * batch_size / loop_seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sync,motion")
    parser.add_argument("--variants", default="tiny,base")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (base uses max(2, steps // 5))")
    parser.add_argument("--cache-dir", default="", help="synthetic clip cache (default: ~/.cache/t2v)")
    parser.add_argument("--out", default=str(RESULTS / "train_throughput.json"))
    args = parser.parse_args(argv)

    rows = []
    for task_name in args.tasks.split(","):
        for variant in args.variants.split(","):
            steps = args.steps if variant == "tiny" else max(2, args.steps // 5)
            rows.append(measure(task_name, variant, steps, args.cache_dir))
            r = rows[-1]
            print(f"{r['task']:>6} {r['variant']:>4}  batch {r['batch_size']:>3}  params {r['parameters']:>9,}  "
                  f"input {r['input_examples_per_s']:8.0f} ex/s  step {r['step_steps_per_s']:7.2f} steps/s "
                  f"({r['step_examples_per_s']:7.0f} ex/s)  loop {r['loop_steps_per_s']:7.2f} steps/s "
                  f"({r['loop_examples_per_s']:7.0f} ex/s)", flush=True)
    write_record("train_throughput", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
