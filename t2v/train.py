"""The one training loop, for every task: `train_and_evaluate(config, workdir)`.

A task (t2v.tasks) says what is different: its data, parameters, loss and eval metrics.
This file does the rest, top to bottom: mesh, input, init, sharding, update step,
checkpoint, loop. The same program runs on one CPU, on 8 fake devices, on several local
processes (launch/local.py) and on a multi-host slice (launch/README.md).

Written to `workdir` (by process 0, except the checkpoints every process takes part in):
    config.json  checkpoints/<step>/  metrics.jsonl  tensorboard/  samples/step_<N>/

Steps count optimizer updates: "step N" in logs and checkpoints means N updates done,
and the input iterator stands at batch N.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm
from jax.experimental import multihost_utils

from t2v import checkpoint as checkpoint_lib
from t2v import optim, parallel
from t2v.tasks import get_task

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    """Everything an update reads and writes; one pytree, checkpointed as a whole."""

    step: jax.Array  # int32 []: optimizer updates done (skipped non-finite ones included)
    params: Any  # float32 master parameters
    opt_state: Any
    ema_params: Any  # exponential moving average of params, used for evaluation
    rng: jax.Array  # uint32 [2] base key; step s uses fold_in(rng, s)
    nonfinite_in_row: jax.Array  # int32 []: consecutive skipped updates
    nonfinite_total: jax.Array  # int32 []: all skipped updates


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains `config.task` for `config.train.steps` steps, resuming from `workdir` if it
    holds a checkpoint. Returns the final metrics ("step", "train/...", "eval/...")."""
    parallel.initialize_distributed()
    workdir = Path(workdir)
    tc = config.train
    is_main = jax.process_index() == 0
    task = get_task(config)
    checkpoint_lib.write_config(config, workdir)

    # -- mesh --------------------------------------------------------------------------
    mesh = parallel.make_mesh(config.mesh)
    rules = [tuple(rule) for rule in config.sharding_rules]
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    micro_batch_size, remainder = divmod(tc.batch_size, config.optimizer.grad_accum)
    if remainder or micro_batch_size % batch_devices or tc.batch_size % jax.process_count():
        raise ValueError(
            f"train.batch_size={tc.batch_size}: must split into optimizer.grad_accum="
            f"{config.optimizer.grad_accum} micro-batches divisible by data x fsdp = {batch_devices} "
            f"devices, and over {jax.process_count()} processes"
        )
    replicated = parallel.replicated(mesh)
    batch_sharding = parallel.batch_sharding(mesh)

    # -- input -------------------------------------------------------------------------
    # Each process reads its own share; the global batch is their concatenation.
    def dataset(split: str) -> Iterator:
        return task.dataset(
            split, seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count()
        )

    train_iter = dataset("train")
    # Peek at one batch for shapes without moving the iterator (resume must not skip it).
    start_position = train_iter.get_state()
    example_batch = parallel.shard_batch(next(train_iter), mesh)
    train_iter.set_state(start_position)
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding), example_batch
    )

    # -- init and sharding -------------------------------------------------------------
    # A raw uint32 key, not a typed one: a plain array that Orbax saves like any other.
    init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    tx = optim.make_optimizer(config.optimizer, total_steps=tc.steps)
    schedule = optim.learning_rate_schedule(config.optimizer, tc.steps)
    ema_decay = float(config.optimizer.ema_decay)

    @contextlib.contextmanager
    def in_mesh_context():
        # Lets tasks use nn.with_logical_constraint on activations with the same rules.
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            yield

    with in_mesh_context():
        boxed_params = jax.eval_shape(task.init, init_rng, abstract_batch)
    param_shardings = parallel.logical_to_sharding(boxed_params, mesh, rules)
    abstract_params = nn.meta.unbox(boxed_params)
    abstract_opt_state = jax.eval_shape(tx.init, abstract_params)
    # Optimizer moments mirror the parameters and are sharded like them; counts are replicated.
    opt_state_shardings = optax.tree_map_params(
        tx,
        lambda _, sharding: sharding,
        abstract_opt_state,
        param_shardings,
        transform_non_params=lambda _: replicated,
    )
    state_shardings = TrainState(
        step=replicated,
        params=param_shardings,
        opt_state=opt_state_shardings,
        ema_params=param_shardings,
        rng=replicated,
        nonfinite_in_row=replicated,
        nonfinite_total=replicated,
    )

    def create_state(rng, batch) -> TrainState:
        params = nn.meta.unbox(task.init(rng, batch))
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            step=zero,
            params=params,
            opt_state=tx.init(params),
            ema_params=params,
            rng=train_rng,
            nonfinite_in_row=zero,
            nonfinite_total=zero,
        )

    abstract_state = checkpoint_lib.abstract_like(
        jax.eval_shape(create_state, init_rng, abstract_batch), state_shardings
    )

    # -- update step -------------------------------------------------------------------
    compute_dtype = jnp.dtype(tc.compute_dtype)

    def to_compute_dtype(tree):
        # Forward/backward in compute_dtype; gradients flow back to the float32 masters.
        return jax.tree.map(
            lambda x: x.astype(compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
        )

    def loss_and_grads(params, batch, rng, step):
        def loss_fn(params):
            loss, metrics = task.loss(to_compute_dtype(params), to_compute_dtype(batch), rng, step)
            return loss.astype(jnp.float32), jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, metrics, grads

    accum = int(config.optimizer.grad_accum)

    def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        if accum == 1:
            loss, metrics, grads = loss_and_grads(state.params, batch, step_rng, state.step)
        else:
            # [batch, ...] -> [accum, batch / accum, ...]: micro-batch i takes every
            # accum-th example, so each device's rows split evenly over micro-batches.
            def split(x):
                x = jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)
                return jax.lax.with_sharding_constraint(
                    x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.BATCH_AXES))
                )

            def accumulate(carry, micro):
                index, micro_batch = micro
                loss, metrics, grads = loss_and_grads(
                    state.params, micro_batch, jax.random.fold_in(step_rng, index), state.step
                )
                return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

            zeros = jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype),
                jax.eval_shape(loss_and_grads, state.params, jax.tree.map(lambda x: split(x)[0], batch), step_rng, state.step),
            )
            summed, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(accum), jax.tree.map(split, batch)))
            loss, metrics, grads = jax.tree.map(lambda x: x / accum, summed)

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = optim.ema_update(state.ema_params, params, ema_decay)

        # A non-finite loss or gradient skips the update: everything but the counters stays.
        def unless_nonfinite(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        in_row = jnp.where(finite, 0, state.nonfinite_in_row + 1)
        total = state.nonfinite_total + jnp.where(finite, 0, 1)
        new_state = state.replace(
            step=state.step + 1,
            params=unless_nonfinite(params, state.params),
            opt_state=unless_nonfinite(opt_state, state.opt_state),
            ema_params=unless_nonfinite(ema_params, state.ema_params),
            nonfinite_in_row=in_row,
            nonfinite_total=total,
        )
        out = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": schedule(state.step),
            "nonfinite_in_row": in_row,
            "nonfinite_total": total,
        }
        return new_state, out

    update = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )
    with in_mesh_context():
        compiled_update = update.lower(abstract_state, abstract_batch).compile()
    if is_main:
        log.info("update step memory: %s", compiled_update.memory_analysis())

    def eval_step(params, batch, rng):
        return jax.tree.map(lambda m: m.astype(jnp.float32), task.eval_metrics(params, batch, rng))

    evaluate_batch = jax.jit(
        eval_step, in_shardings=(param_shardings, batch_sharding, replicated), out_shardings=replicated
    )
    eval_rngs = [jax.device_put(jax.random.fold_in(eval_rng, i), replicated) for i in range(tc.eval_batches)]

    # -- checkpoint: resume if the workdir has one ---------------------------------------
    checkpointer = checkpoint_lib.Checkpointer(
        workdir, keep=tc.keep, best_metric=tc.best_metric, best_mode=tc.best_mode
    )
    start_step = checkpointer.latest_step()
    if start_step is None:
        with in_mesh_context():
            state = jax.jit(create_state, out_shardings=state_shardings)(init_rng, example_batch)
        start_step = 0
    else:
        state, iterator_state, _ = checkpointer.restore(start_step, abstract_state)
        train_iter.set_state(iterator_state)
        if is_main:
            log.info("resumed from %s at step %d", checkpointer.directory, start_step)
    del example_batch

    # -- logging (process 0) -----------------------------------------------------------
    writer = _MetricWriter(workdir, resume_step=start_step) if is_main else None
    progress = tqdm.tqdm(
        total=tc.steps, initial=start_step, desc=f"{config.task} train", disable=not is_main, dynamic_ncols=True
    )

    def run_eval(step: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        batches = 0
        for index, local_batch in zip(range(tc.eval_batches), dataset("eval")):
            batch = parallel.shard_batch(local_batch, mesh)
            metrics = jax.device_get(evaluate_batch(state.ema_params, batch, eval_rngs[index]))
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
        if not batches:
            raise ValueError(f"task {config.task!r}: the eval split yielded no batches")
        averaged = {f"eval/{name}": value / batches for name, value in sums.items()}
        if writer:
            writer.write_eval(step, averaged)
        with jax.transfer_guard("allow"):  # task code on the host: plots, videos
            task.write_samples(state.ema_params, str(workdir / "samples" / f"step_{step}"), step)
        return averaged

    def check_finite(step: int, metrics: dict) -> None:
        in_row = int(metrics["nonfinite_in_row"])
        if in_row >= tc.max_nonfinite_in_row:
            raise FloatingPointError(
                f"non-finite loss for {in_row} steps in a row at step {step}: loss {float(metrics['loss'])}, "
                f"grad_norm {float(metrics['grad_norm'])}; the last checkpoint is step "
                f"{checkpointer.latest_step()} in {checkpointer.directory}"
            )

    # -- preemption: SIGTERM saves a checkpoint at the current step and ends the run ----
    stop_requested = False

    def on_sigterm(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    multi_process = jax.process_count() > 1
    # Several processes must agree on the step to save at: jax's preemption service
    # (it catches SIGTERM itself) does that; one process just sets a flag.
    previous_handler = None if multi_process else signal.signal(signal.SIGTERM, on_sigterm)

    def preempted(step: int) -> bool:
        if multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return stop_requested

    # -- loop --------------------------------------------------------------------------
    step = start_step
    final: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    was_preempted = False
    unchecked: tuple[int, dict] | None = None  # the previous step's metrics, still on device
    window_start, window_steps = time.perf_counter(), 0
    try:
        # Nothing moves between host and device unless asked for: the batch goes up with
        # shard_batch (device_put), metrics come down with jax.device_get.
        with jax.transfer_guard("disallow"), in_mesh_context():
            while step < tc.steps:
                if preempted(step):
                    was_preempted = True
                    log.warning("preempted at step %d: saving a checkpoint and stopping", step)
                    break
                batch = parallel.shard_batch(next(train_iter), mesh)
                state, metrics = compiled_update(state, batch)
                step += 1
                window_steps += 1
                progress.update(1)

                # Check the previous step's counter, not this one's: that keeps one step in
                # flight instead of waiting for each to finish.
                if unchecked is not None:
                    check_finite(unchecked[0], jax.device_get({k: unchecked[1][k] for k in ("nonfinite_in_row", "loss", "grad_norm")}))
                unchecked = (step, metrics)

                if step % tc.log_every == 0 or step == tc.steps:
                    host_metrics = jax.device_get(metrics)
                    check_finite(step, host_metrics)
                    elapsed = time.perf_counter() - window_start
                    steps_per_sec = window_steps / elapsed
                    final = {f"train/{k}": float(v) for k, v in host_metrics.items()}
                    final["train/steps_per_sec"] = steps_per_sec
                    if writer:
                        writer.write_train(step, host_metrics, steps_per_sec, steps_per_sec * tc.batch_size)
                    progress.set_postfix(
                        loss=f"{float(host_metrics['loss']):.4g}",
                        steps_per_s=f"{steps_per_sec:.2f}",
                        examples_per_s=f"{steps_per_sec * tc.batch_size:.0f}",
                    )
                    window_start, window_steps = time.perf_counter(), 0

                evaluated = tc.eval_every > 0 and (step % tc.eval_every == 0 or step == tc.steps)
                if evaluated:
                    eval_metrics = run_eval(step)
                saving = step % tc.checkpoint_every == 0 or step == tc.steps or (evaluated and tc.best_metric)
                if saving:
                    with jax.transfer_guard("allow"):  # Orbax copies the state to the host
                        checkpointer.save(
                            step, state, train_iter.get_state(), config, metrics=eval_metrics if evaluated else None
                        )
                if evaluated or saving:  # steps/s measures training alone
                    window_start, window_steps = time.perf_counter(), 0
        if unchecked is not None:
            check_finite(unchecked[0], jax.device_get(unchecked[1]))
        # A preempted run, or one resumed at its end, still leaves a checkpoint at `step`.
        checkpointer.save(step, state, train_iter.get_state(), config)
        if not eval_metrics and tc.eval_every > 0 and tc.eval_batches > 0 and not was_preempted:
            eval_metrics = run_eval(step)
        checkpointer.wait_until_finished()
    finally:
        checkpointer.close()
        progress.close()
        if writer:
            writer.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)

    return {"step": step, **final, **eval_metrics, "nonfinite_total": float(jax.device_get(state.nonfinite_total))}


class _MetricWriter:
    """metrics.jsonl (one JSON object per logged step) and TensorBoard event files."""

    def __init__(self, workdir: Path, resume_step: int):
        from tensorboardX import SummaryWriter

        self.jsonl = workdir / "metrics.jsonl"
        # A run killed after its last checkpoint logged steps the resumed run repeats:
        # drop them so every step appears once.
        if self.jsonl.exists():
            kept = [line for line in self.jsonl.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            self.jsonl.write_text("".join(line + "\n" for line in kept))
        self.file = self.jsonl.open("a")
        self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def _append(self, record: dict) -> None:
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()

    def write_train(self, step: int, metrics: dict, steps_per_sec: float, examples_per_sec: float) -> None:
        values = {k: _json_number(v) for k, v in metrics.items()}
        self._append(
            {
                "step": step,
                "loss": values.pop("loss"),
                "lr": values.pop("lr"),
                "steps_per_sec": steps_per_sec,
                "examples_per_sec": examples_per_sec,
                "metrics": values,
            }
        )
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name if name == "lr" else f"train/{name}", float(value), step)
        self.tensorboard.add_scalar("train/steps_per_sec", steps_per_sec, step)
        self.tensorboard.add_scalar("train/examples_per_sec", examples_per_sec, step)

    def write_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._append({"step": step, "eval": {k: _json_number(v) for k, v in metrics.items()}})
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        self.file.close()
        self.tensorboard.close()


def _json_number(value) -> float | None:
    """A float, or None (JSON null) for nan/inf, which strict JSON cannot hold."""
    value = float(value)
    return value if math.isfinite(value) else None
