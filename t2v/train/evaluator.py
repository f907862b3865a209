"""Evaluation during training: the task's eval metrics averaged over the first
`train.eval_batches` eval batches, then the task's samples for a human to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from t2v import checkpoint as checkpoint_lib
from t2v import parallel
from t2v.errors import InputError


class Evaluator:
    """`evaluator(params, step)` -> {"eval/<name>": mean over the eval batches}.

    Every batch gets its own fixed key (fold_in(rng, batch index)), so two evaluations of
    the same parameters agree. The averages go to `writer` (if any); samples are written to
    `samples_dir/step_<step>/` by `task.write_samples` on every process (it gathers).
    """

    def __init__(self, task, eval_dataset: Callable[[], Iterator], mesh: jax.sharding.Mesh, param_shardings: Any,
                 rng: jax.Array, num_batches: int, samples_dir: Path, writer=None):
        self.task, self.eval_dataset, self.mesh = task, eval_dataset, mesh
        self.num_batches, self.samples_dir, self.writer = int(num_batches), checkpoint_lib.workdir_path(samples_dir), writer
        replicated = parallel.replicated(mesh)
        self.rngs = [jax.device_put(jax.random.fold_in(rng, i), replicated) for i in range(self.num_batches)]
        self.metrics_of_batch = jax.jit(
            lambda params, batch, key: jax.tree.map(lambda m: m.astype(jnp.float32),
                                                    task.eval_metrics(params, batch, key)),
            in_shardings=(param_shardings, parallel.batch_sharding(mesh), replicated),
            out_shardings=replicated,
        )

    def averaged_metrics(self, params) -> dict[str, float]:
        sums: dict[str, float] = {}
        batches = 0
        for key, local_batch in zip(self.rngs, self.eval_dataset()):
            batch = parallel.shard_batch(local_batch, self.mesh)
            for name, value in jax.device_get(self.metrics_of_batch(params, batch, key)).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
        if not batches:
            raise InputError(f"task {self.task.name!r}: the eval split yielded no whole batch "
                             "(data.eval_clips against train.batch_size)")
        return {f"eval/{name}": value / batches for name, value in sums.items()}

    def __call__(self, params, step: int) -> dict[str, float]:
        averaged = self.averaged_metrics(params)
        if self.writer:
            self.writer.write_eval(step, averaged)
        with jax.transfer_guard("allow"):  # task code on the host: plots, videos
            with checkpoint_lib.local_folder(self.samples_dir / f"step_{step}") as out:  # gs:// too
                self.task.write_samples(params, str(out), step)
        return averaged
