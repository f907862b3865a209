"""The update step: forward/backward in the compute dtype, micro-batch accumulation,
clipping and AdamW through the optimizer, EMA, and skipping non-finite updates.

    train_step = make_train_step(task, tx, schedule, ema_decay=0.999, grad_accum=1,
                                 compute_dtype="bfloat16", mesh=mesh)
    state, metrics = jax.jit(train_step, donate_argnums=0)(state, batch)

One call is one step and at most one optimizer update. A step whose loss or gradient
norm is not finite leaves params, optimizer state and EMA exactly as they were and only
counts itself (`nonfinite_in_row`, `nonfinite_total`). The learning-rate schedule follows
the updates applied (`TrainState.applied_updates`): optax keeps its counts in the
optimizer state, which a skipped step leaves untouched, and the logged `lr` is read at
the same count.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from t2v import optim, parallel
from t2v.train.state import TrainState


def to_compute_dtype(tree: Any, dtype) -> Any:
    """Floating leaves cast to `dtype`; others (integers, keys) as they are."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def cast_compute_inputs(task, batch: dict, dtype) -> dict:
    """The batch the task's loss sees: the entries it names in `task.compute_inputs` in
    `dtype`, everything else (targets above all) as the input pipeline made it."""
    names = set(getattr(task, "compute_inputs", ()))
    return {name: to_compute_dtype(value, dtype) if name in names else value for name, value in batch.items()}


def make_loss_and_grads(task, compute_dtype) -> Callable:
    """(params, batch, rng, step, frozen=None) -> (loss, metrics, grads), loss and metrics in float32.

    The task sees params in `compute_dtype`; gradients flow back through the cast to the
    float32 masters, so `grads` are float32 like them. `frozen` (a task's trained
    constants, e.g. a frozen expert: `task.frozen_params()`) reaches `task.loss` as its
    `frozen` keyword as they are stored and gets no gradient.
    """
    compute_dtype = jnp.dtype(compute_dtype)

    def loss_fn(params, batch, rng, step, frozen):
        extra = {} if frozen is None else {"frozen": frozen}  # as stored: the constants' own dtype
        loss, metrics = task.loss(to_compute_dtype(params, compute_dtype), cast_compute_inputs(task, batch, compute_dtype),
                                  rng, step, **extra)
        return loss.astype(jnp.float32), jax.tree.map(lambda m: m.astype(jnp.float32), metrics)

    def loss_and_grads(params, batch, rng, step, frozen=None):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng, step, frozen)
        return loss, metrics, grads

    return loss_and_grads


def accumulated(loss_and_grads: Callable, grad_accum: int, mesh: jax.sharding.Mesh | None) -> Callable:
    """`loss_and_grads` over `grad_accum` micro-batches scanned one after another, averaged.

    Micro-batch i takes every grad_accum-th example ([batch, ...] -> [accum, batch / accum, ...]),
    so each device's rows split evenly over the micro-batches and nothing moves between
    devices; micro-batch i draws its randomness from fold_in(rng, i).
    """
    if grad_accum == 1:
        return loss_and_grads

    def split(x):
        x = jnp.swapaxes(x.reshape(x.shape[0] // grad_accum, grad_accum, *x.shape[1:]), 0, 1)
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, parallel.BATCH_AXES)))

    def over_micro_batches(params, batch, rng, step, frozen=None):
        micro_batches = jax.tree.map(split, batch)

        def add(carry, micro):
            index, micro_batch = micro
            out = loss_and_grads(params, micro_batch, jax.random.fold_in(rng, index), step, frozen)
            return jax.tree.map(jnp.add, carry, out), None

        first = jax.tree.map(lambda x: x[0], micro_batches)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(loss_and_grads, params, first, rng, step, frozen))
        summed, _ = jax.lax.scan(add, zeros, (jnp.arange(grad_accum), micro_batches))
        return jax.tree.map(lambda x: x / grad_accum, summed)

    return over_micro_batches


def make_train_step(task, tx: optax.GradientTransformation, schedule: optax.Schedule, *, ema_decay: float,
                    grad_accum: int = 1, compute_dtype="float32",
                    mesh: jax.sharding.Mesh | None = None) -> Callable[..., tuple[TrainState, dict]]:
    """(state, batch, frozen=None) -> (state, metrics): one step of `task` with optimizer `tx`.

    `schedule` is the one `tx` was built with; it is only read for the logged `lr`.
    `batch` is the global batch (`[batch_size, ...]` per entry); `mesh`, when given, keeps
    micro-batches split over its batch axes. Metrics are float32 scalars: the task's, plus
    loss, grad_norm, lr, nonfinite_in_row and nonfinite_total. `frozen`: the task's
    trained constants (`task.frozen_params()`), passed in rather than closed over so they
    are sharded like any input.
    """
    loss_and_grads = accumulated(make_loss_and_grads(task, compute_dtype), int(grad_accum), mesh)
    ema_decay = float(ema_decay)

    def train_step(state: TrainState, batch, frozen=None) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        loss, metrics, grads = loss_and_grads(state.params, batch, step_rng, state.step, frozen)
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
        return new_state, {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            **optim.group_metrics(opt_state),  # grad_norm/<group>, lr/<group> when the optimizer has groups
            "lr": schedule(state.applied_updates),  # the rate this step's update used
            "nonfinite_in_row": in_row,
            "nonfinite_total": total,
        }

    return train_step
