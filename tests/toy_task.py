"""A tiny real task for the training-loop tests: an MLP regressing y = A x + noise.

Registered as "toy". Its parameters carry the logical axes ("embed", "mlp"), its data
is a deterministic Grain pipeline sharded by process, and a few config knobs let tests
provoke what the loop must survive: NaN losses at chosen steps, and a slow input
pipeline (so a test can kill a run part-way through).

Run as a script it trains, which is how tests start runs in subprocesses:

    python tests/toy_task.py WORKDIR --config.train.steps=20 ...
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `configs` when run as a script

# Tests compile the same small programs in many runs and subprocesses: share them.
jax.config.update("jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / "t2v-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from configs import base  # noqa: E402
from t2v import config as config_lib  # noqa: E402
from t2v.tasks import Task, register  # noqa: E402


def toy_config(**train) -> ml_collections.ConfigDict:
    """The base config with task "toy", sized to run in seconds on CPU."""
    c = base.get_config()
    c.task = "toy"
    c.toy = dict(
        dim=16,              # x and y: [batch, dim]
        hidden=32,           # the MLP's hidden width (logical axis "mlp")
        train_examples=512,
        eval_examples=64,
        noise=0.05,          # label noise of y = A x + noise
        input_jitter=0.01,   # x + jitter * normal(rng): makes the loss use the step's rng
        nan_at_steps=[],     # steps whose loss is NaN
        nan_from_step=-1,    # every step from this one on has a NaN loss (-1: never)
        seconds_per_example=0.0,  # sleep in the input pipeline, to make a run slow
    )
    c.optimizer.update(lr=1e-2, warmup_steps=2, ema_decay=0.9)
    c.train.update(
        steps=8, batch_size=16, log_every=1, eval_every=4, eval_batches=2, checkpoint_every=4, keep=2
    )
    c.train.update(train)
    return c


class ToyMLP(nn.Module):
    """[batch, dim] -> [batch, dim]."""

    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        def dense(features, axes, name):
            return nn.Dense(
                features,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, axes[1:]),
                name=name,
            )

        h = nn.gelu(dense(self.hidden, ("embed", "mlp"), "up")(x))
        return dense(self.dim, ("mlp", "embed"), "down")(h)


@register("toy")
class ToyTask(Task):
    compute_inputs = ("x",)  # the MLP has no dtype of its own: bf16 inputs make it compute in bf16

    def __init__(self, config):
        super().__init__(config)
        self.settings = config.toy
        self.model = ToyMLP(dim=self.settings.dim, hidden=self.settings.hidden)
        # The ground truth does not depend on the run's seed: every run fits the same A.
        self.true_matrix = np.random.default_rng(1234).normal(size=(self.settings.dim,) * 2).astype(np.float32)
        self.true_matrix /= np.sqrt(self.settings.dim)

    def _example(self, split: str, index: int) -> dict[str, np.ndarray]:
        time.sleep(self.settings.seconds_per_example)
        rng = np.random.default_rng([0 if split == "train" else 1, index])
        x = rng.normal(size=self.settings.dim).astype(np.float32)
        y = self.true_matrix @ x + self.settings.noise * rng.normal(size=self.settings.dim).astype(np.float32)
        return {"x": x, "y": y.astype(np.float32)}

    def dataset(self, split, *, seed, process_index, process_count):
        global_batch = self.config.train.batch_size
        if global_batch % process_count:
            raise ValueError(f"train.batch_size={global_batch} does not split over {process_count} processes")
        if split == "train":
            ds = grain.MapDataset.range(self.settings.train_examples).shuffle(seed).repeat()
        elif split == "eval":
            ds = grain.MapDataset.range(self.settings.eval_examples)
        else:
            raise ValueError(f"toy task: unknown split {split!r}")
        ds = ds[process_index::process_count].map(lambda i: self._example(split, int(i)))
        return iter(ds.batch(global_batch // process_count, drop_remainder=True))

    def init(self, rng, batch):
        return self.model.init(rng, batch["x"])["params"]

    def _predict(self, params, x):
        return self.model.apply({"params": params}, x)

    def loss(self, params, batch, rng, step):
        x = batch["x"] + self.settings.input_jitter * jax.random.normal(rng, batch["x"].shape, batch["x"].dtype)
        mse = jnp.mean(jnp.square(self._predict(params, x).astype(jnp.float32) - batch["y"].astype(jnp.float32)))
        poisoned = jnp.isin(step, jnp.asarray(list(self.settings.nan_at_steps) or [-1]))
        if self.settings.nan_from_step >= 0:
            poisoned |= step >= self.settings.nan_from_step
        loss = jnp.where(poisoned, jnp.nan, mse)
        return loss, {"mse": mse}

    def eval_metrics(self, params, batch, rng):
        error = self._predict(params, batch["x"]) - batch["y"]
        return {"loss": jnp.mean(jnp.square(error)), "mae": jnp.mean(jnp.abs(error))}

    def write_samples(self, params, out_dir, step):
        x = np.stack([self._example("eval", i)["x"] for i in range(2)])
        prediction = multihost_utils.process_allgather(jax.jit(self._predict)(params, x), tiled=True)
        if jax.process_index() == 0:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "predictions.json").write_text(json.dumps(np.asarray(prediction).tolist()))


def logged_losses(workdir) -> dict[int, float | None]:
    """step -> training loss, from a run's metrics.jsonl."""
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def run_script(workdir, *overrides, devices: int = 8, env: dict | None = None):
    """argv and environment that train the toy task in a fresh Python process."""
    import os

    environment = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
    return [sys.executable, __file__, str(workdir), *overrides], environment


if __name__ == "__main__":
    import logging

    from t2v.train import train_and_evaluate

    logging.basicConfig(level=logging.INFO)
    workdir, *overrides = sys.argv[1:]
    final = train_and_evaluate(config_lib.apply_overrides(toy_config(), overrides), workdir)
    print("FINAL", json.dumps(final, sort_keys=True))
