"""The train state: one pytree that an update reads and writes and a checkpoint holds whole.

    abstract, shardings = abstract_train_state(task, tx, abstract_batch, mesh, rules)
    state = jax.jit(partial(create_train_state, task, tx), out_shardings=shardings)(
        init_rng, train_rng, batch)
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from t2v import checkpoint as checkpoint_lib
from t2v import optim, parallel


@flax.struct.dataclass
class TrainState:
    """Everything an update reads and writes; one pytree, checkpointed as a whole."""

    step: jax.Array  # int32 []: steps taken, skipped non-finite ones included (= batches consumed)
    params: Any  # float32 master parameters
    opt_state: Any
    ema_params: Any  # exponential moving average of params (groups with ema=False left out), for evaluation
    rng: jax.Array  # uint32 [2] base key; step s uses fold_in(rng, s)
    nonfinite_in_row: jax.Array  # int32 []: consecutive skipped updates
    nonfinite_total: jax.Array  # int32 []: all skipped updates

    @property
    def applied_updates(self) -> jax.Array:
        """int32 []: the updates really applied, the count the learning-rate schedule follows."""
        return self.step - self.nonfinite_total


@contextlib.contextmanager
def mesh_context(mesh: jax.sharding.Mesh, rules):
    """The mesh and the logical-axis rules, so tasks may use nn.with_logical_constraint."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def create_train_state(task, tx: optax.GradientTransformation, init_rng: jax.Array, train_rng: jax.Array,
                       batch: Any) -> TrainState:
    """A fresh state: the task's parameters (unboxed) from `init_rng`, their optimizer state,
    EMA = the averaged part of params (`optim.averaged_params` of the task's
    `config.optimizer`), and `train_rng` as the base of every step's key. Pure; jit it
    with the shardings of `abstract_train_state` so the parameters are born sharded."""
    params = nn.meta.unbox(task.init(init_rng, batch))
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params), ema_params=averaged(task, params),
                      rng=train_rng, nonfinite_in_row=zero, nonfinite_total=zero)


def averaged(task, params: Any) -> Any:
    """The part of `params` (or of a tree shaped like them) the EMA keeps."""
    optimizer_config = getattr(getattr(task, "config", None), "optimizer", None)
    return params if optimizer_config is None else optim.averaged_params(params, optimizer_config)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any, param_shardings: Any,
                        replicated) -> Any:
    """The optimizer state's shardings: its copies of the parameter tree (moments) like the
    parameters, everything else (counts, norms) replicated.

    Freezing, multipliers and groups go through `optax.multi_transform`, whose per-label
    states hold masked copies of the tree (`optax.MaskedNode` where a label owns nothing);
    those nodes stay as they are rather than meeting a parameter's sharding."""
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    return optax.tree_map_params(
        tx, lambda value, sharding: value if masked(value) else sharding, abstract_opt_state, param_shardings,
        transform_non_params=lambda _: replicated, is_leaf=masked,
    )


def abstract_train_state(task, tx: optax.GradientTransformation, abstract_batch: Any, mesh: jax.sharding.Mesh,
                         rules) -> tuple[TrainState, TrainState]:
    """(the state's ShapeDtypeStructs carrying their shardings, the shardings alone).

    Parameters (and the EMA) are laid out by their logical axis names through `rules`; the
    optimizer moments mirror the parameters and are sharded like them; counts, the key and
    the counters are replicated.
    """
    replicated = parallel.replicated(mesh)
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))  # raw uint32 [2]: Orbax saves it like any array
    with mesh_context(mesh, rules):
        boxed_params = jax.eval_shape(task.init, key, abstract_batch)
    param_shardings = parallel.logical_to_sharding(boxed_params, mesh, rules)
    abstract_opt_state = jax.eval_shape(tx.init, nn.meta.unbox(boxed_params))
    shardings = TrainState(step=replicated, params=param_shardings,
                           opt_state=opt_state_shardings(tx, abstract_opt_state, param_shardings, replicated),
                           ema_params=averaged(task, param_shardings), rng=replicated,
                           nonfinite_in_row=replicated, nonfinite_total=replicated)
    abstract = jax.eval_shape(partial(create_train_state, task, tx), key, key, abstract_batch)
    return checkpoint_lib.abstract_like(abstract, shardings), shardings
