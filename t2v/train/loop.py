"""`train_and_evaluate(config, workdir)`: a run from top to bottom (mesh, data, state,
compile, checkpoint, loop). The pieces live beside it: the state (state.py), the update
step (step.py), evaluation (evaluator.py), logging (metric_writer.py), preemption."""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import optax

from t2v import checkpoint as checkpoint_lib
from t2v import optim, parallel
from t2v.data import pipeline
from t2v.errors import InputError
from t2v.progress import progress
from t2v.tasks import get_task
from t2v.train.evaluator import Evaluator
from t2v.train.metric_writer import MetricWriter
from t2v.train.preemption import Preemption
from t2v.train.state import TrainState, abstract_train_state, create_train_state, mesh_context
from t2v.train.step import make_train_step

log = logging.getLogger("t2v.train")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains `config.task` for `config.train.steps` steps, resuming from `workdir` if it
    holds a checkpoint. Returns the final metrics ("step", "train/...", "eval/...")."""
    parallel.initialize_distributed()
    workdir, tc = checkpoint_lib.workdir_path(workdir), config.train  # gs:// stays a URL
    is_main = jax.process_index() == 0
    task = get_task(config)
    checkpoint_lib.write_config(config, workdir)

    # -- mesh ----------------------------------------------------------------------------
    mesh, rules = parallel.make_mesh(config.mesh), [tuple(rule) for rule in config.sharding_rules]
    check_batch_split(config, mesh)

    # -- data: each process reads its own share; the global batch is their concatenation --
    train_iter = process_dataset(task, config, "train")
    example_batch = peek_batch(train_iter, mesh)
    abstract_batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), example_batch)

    # -- state and the compiled update step ------------------------------------------------
    # A raw uint32 key, not a typed one: a plain array that Orbax saves like any other.
    init_rng, train_rng, eval_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    update = compile_update(task, config, mesh, rules, abstract_batch)
    if is_main:
        log.info("update step memory: %s", update.compiled.memory_analysis())

    # -- checkpoint: resume if the workdir has one, else initialise ------------------------
    checkpointer = checkpoint_lib.Checkpointer(workdir, keep=tc.keep, best_metric=tc.best_metric,
                                               best_mode=tc.best_mode)
    start_step = checkpointer.latest_step()
    if start_step is None:
        with mesh_context(mesh, rules):
            state = jax.jit(partial(create_train_state, task, update.tx), out_shardings=update.shardings)(
                init_rng, train_rng, example_batch)
        start_step = 0
    else:
        state, iterator_state, _ = checkpointer.restore(start_step, update.abstract_state)
        train_iter.set_state(iterator_state)
        if is_main:
            log.info("resumed from %s at step %d", checkpointer.directory, start_step)
    del example_batch

    # -- evaluation and logging (files: process 0) ----------------------------------------
    writer = MetricWriter(workdir, resume_step=start_step) if is_main else None
    evaluator = Evaluator(task, lambda: process_dataset(task, config, "eval"), mesh, update.shardings.ema_params,
                          eval_rng, tc.eval_batches, workdir / "samples", writer)
    train_log = TrainLog(writer, progress(tc.steps, initial=start_step, desc=f"{config.task} train",
                                          unit="step", disable=not is_main), tc.batch_size)

    # -- loop ------------------------------------------------------------------------------
    try:
        with Preemption() as preemption:
            state, step, eval_metrics = run_loop(
                config, state, start_step, update, train_iter, mesh, rules, checkpointer, evaluator,
                train_log, preemption)
        checkpointer.wait_until_finished()
    finally:
        checkpointer.close()
        train_log.close()
    return {"step": step, **train_log.final, **eval_metrics,
            "nonfinite_total": float(jax.device_get(state.nonfinite_total))}


# -- the pieces, in the order a run uses them ---------------------------------------------
def check_batch_split(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
    """The global batch must split into grad_accum micro-batches over the batch devices,
    and over the processes."""
    batch_size, accum = config.train.batch_size, config.optimizer.grad_accum
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    micro_batch_size, remainder = divmod(batch_size, accum)
    if remainder or micro_batch_size % batch_devices:
        raise InputError(
            f"train.batch_size={batch_size}: must split into optimizer.grad_accum={accum} micro-batches "
            f"divisible by data x fsdp = {batch_devices} devices")
    pipeline.local_batch_size(batch_size, jax.process_count())  # the one per-process split


def process_dataset(task, config: ml_collections.ConfigDict, split: str) -> Iterator:
    """This process's share of `split`, seeded by the run's seed."""
    return task.dataset(split, seed=config.seed, process_index=jax.process_index(),
                        process_count=jax.process_count())


def peek_batch(train_iter, mesh: jax.sharding.Mesh) -> Any:
    """The next global batch (for shapes and init) without moving the iterator: resume
    must not skip it."""
    position = train_iter.get_state()
    batch = parallel.shard_batch(next(train_iter), mesh)
    train_iter.set_state(position)
    return batch


@dataclasses.dataclass(frozen=True)
class CompiledUpdate:
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: TrainState  # ShapeDtypeStructs with their shardings
    shardings: TrainState
    compiled: Any  # jax.stages.Compiled: (state, batch[, frozen]) -> (state, metrics), the state donated
    train_step: Any  # the same step, uncompiled (for counting its FLOPs from the jaxpr)
    frozen: Any = None  # the task's trained constants on the mesh (`task.frozen_params()`), or None

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        """One update: the compiled step with the frozen constants when the task has them."""
        if self.frozen is None:
            return self.compiled(state, batch)
        return self.compiled(state, batch, self.frozen)


def compile_update(task, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, rules,
                   abstract_batch: Any) -> CompiledUpdate:
    """The optimizer, the state's layout and the update step compiled ahead of time for
    `abstract_batch` (ShapeDtypeStructs with the batch sharding) on `mesh`."""
    tc, oc = config.train, config.optimizer
    tx = optim.make_optimizer(oc, total_steps=tc.steps)
    schedule = optim.learning_rate_schedule(oc, tc.steps)
    train_step = make_train_step(task, tx, schedule, ema_decay=oc.ema_decay, grad_accum=oc.grad_accum,
                                 compute_dtype=tc.compute_dtype, mesh=mesh)
    replicated = parallel.replicated(mesh)
    abstract_state, shardings = abstract_train_state(task, tx, abstract_batch, mesh, rules)
    frozen, frozen_args = place_frozen(task, mesh, rules)
    in_shardings = (shardings, parallel.batch_sharding(mesh)) + tuple(jax.tree.map(lambda x: x.sharding, frozen_args))
    with mesh_context(mesh, rules):
        update = jax.jit(train_step, in_shardings=in_shardings, out_shardings=(shardings, replicated),
                         donate_argnums=0)
        compiled = update.lower(abstract_state, abstract_batch, *frozen_args).compile()
    return CompiledUpdate(tx, schedule, abstract_state, shardings, compiled, train_step, frozen)


def place_frozen(task, mesh: jax.sharding.Mesh, rules) -> tuple[Any, tuple]:
    """The task's frozen constants (`task.frozen_params()`, e.g. motion's sync expert) put on
    `mesh` with the shardings their logical axes get from `rules`, and the step's extra
    arguments for them: `(frozen,)`, or `()` when the task has none."""
    frozen = task.frozen_params() if hasattr(task, "frozen_params") else None
    if frozen is None:
        return None, ()
    shardings = task.frozen_shardings(mesh, rules)
    # The constants are the same on every process (one checkpoint): each process builds
    # its own shards of them from its host copy.
    def place(value, sharding):
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    with jax.transfer_guard("allow"):
        frozen = jax.tree.map(place, frozen, shardings)
    return frozen, (frozen,)


class TrainLog:
    """Training metrics to the writer and the progress line, with steps/s measured over
    training alone (the window restarts after evals and saves)."""

    def __init__(self, writer: MetricWriter | None, bar, batch_size: int):
        self.writer, self.bar, self.batch_size = writer, bar, batch_size
        self.final: dict[str, float] = {}
        self.restart_window()

    def restart_window(self) -> None:
        self.window_start, self.window_steps = time.perf_counter(), 0

    def step_done(self) -> None:
        self.window_steps += 1
        self.bar.update(1)

    def write(self, step: int, host_metrics: dict) -> None:
        steps_per_sec = self.window_steps / (time.perf_counter() - self.window_start)
        examples_per_sec = steps_per_sec * self.batch_size
        self.final = {f"train/{k}": float(v) for k, v in host_metrics.items()}
        self.final["train/steps_per_sec"] = steps_per_sec
        if self.writer:
            self.writer.write_train(step, host_metrics, steps_per_sec, examples_per_sec)
        self.bar.set_postfix(loss=f"{float(host_metrics['loss']):.4g}", steps_per_s=f"{steps_per_sec:.2f}",
                             examples_per_s=f"{examples_per_sec:.0f}")
        self.restart_window()

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()


def check_finite(step: int, metrics: dict, max_in_row: int, checkpointer: checkpoint_lib.Checkpointer) -> None:
    """Stops the run once `max_in_row` steps in a row were skipped as non-finite."""
    in_row = int(metrics["nonfinite_in_row"])
    if in_row >= max_in_row:
        raise FloatingPointError(
            f"non-finite loss for {in_row} steps in a row at step {step}: loss {float(metrics['loss'])}, "
            f"grad_norm {float(metrics['grad_norm'])}; the last checkpoint is step "
            f"{checkpointer.latest_step()} in {checkpointer.directory}")


def run_loop(config, state, step: int, compiled_update, train_iter, mesh, rules, checkpointer, evaluator,
             train_log: TrainLog, preemption: Preemption) -> tuple[TrainState, int, dict[str, float]]:
    """Steps from `step` to train.steps (or a preemption), evaluating, logging and saving
    on the config's schedule, then a last checkpoint at the step it stopped at.
    Returns (state, step, the last eval metrics)."""
    tc = config.train
    eval_metrics: dict[str, float] = {}
    was_preempted = False
    unchecked: tuple[int, dict] | None = None  # the previous step's metrics, still on device
    # Nothing moves between host and device unless asked for: the batch goes up with
    # shard_batch (device_put), metrics come down with jax.device_get.
    with jax.transfer_guard("disallow"), mesh_context(mesh, rules):
        while step < tc.steps:
            if preemption.reached(step):
                was_preempted = True
                log.warning("preempted at step %d: saving a checkpoint and stopping", step)
                break
            state, metrics = compiled_update(state, parallel.shard_batch(next(train_iter), mesh))
            step += 1
            train_log.step_done()
            # Check the previous step's counter, not this one's: that keeps one step in
            # flight instead of waiting for each to finish.
            if unchecked is not None:
                check_finite(unchecked[0], jax.device_get(
                    {k: unchecked[1][k] for k in ("nonfinite_in_row", "loss", "grad_norm")}),
                    tc.max_nonfinite_in_row, checkpointer)
            unchecked = (step, metrics)

            if step % tc.log_every == 0 or step == tc.steps:
                host_metrics = jax.device_get(metrics)
                check_finite(step, host_metrics, tc.max_nonfinite_in_row, checkpointer)
                train_log.write(step, host_metrics)
            evaluated = tc.eval_every > 0 and (step % tc.eval_every == 0 or step == tc.steps)
            if evaluated:
                eval_metrics = evaluator(state.ema_params, step)
            saving = step % tc.checkpoint_every == 0 or step == tc.steps or (evaluated and tc.best_metric)
            if saving:
                with jax.transfer_guard("allow"):  # Orbax copies the state to the host
                    checkpointer.save(step, state, train_iter.get_state(), config,
                                      metrics=eval_metrics if evaluated else None)
            if evaluated or saving:  # steps/s measures training alone
                train_log.restart_window()
    if unchecked is not None:
        check_finite(unchecked[0], jax.device_get(unchecked[1]), tc.max_nonfinite_in_row, checkpointer)
    # A preempted run, or one resumed at its end, still leaves a checkpoint at `step`.
    checkpointer.save(step, state, train_iter.get_state(), config)
    if not eval_metrics and tc.eval_every > 0 and tc.eval_batches > 0 and not was_preempted:
        eval_metrics = evaluator(state.ema_params, step)
    return state, step, eval_metrics
