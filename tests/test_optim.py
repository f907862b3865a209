"""The optimizer: schedule shape, freezing, per-module multipliers, clipping, EMA."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from t2v import optim


def optimizer_config(**changes) -> ml_collections.ConfigDict:
    c = base.get_config().optimizer
    c.update(warmup_steps=0, weight_decay=0.0, clip_norm=0.0)
    c.update(changes)
    return c


def params():
    return {
        "encoder": {"conv1": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))}},
        "decoder": {"dense": {"kernel": jnp.ones((4, 2))}},
    }


def run(tx, steps=3):
    p = params()
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    for _ in range(steps):
        updates, state = tx.update(grads, state, p)
        p = optax.apply_updates(p, updates)
    return p, state


def test_parameter_paths_join_tree_keys_with_slashes():
    labels = optim.parameter_labels(params(), optimizer_config(freeze=["^encoder/conv1/bias$"]))
    assert labels["encoder"]["conv1"]["bias"] == "frozen"
    assert labels["encoder"]["conv1"]["kernel"] == "lr_x1.0"


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_end_fraction():
    schedule = optim.learning_rate_schedule(optimizer_config(lr=1.0, warmup_steps=10, end_lr_fraction=0.1), 110)
    lrs = np.array([schedule(s) for s in range(111)])
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 10, rtol=1e-6)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55, abs=1e-6)  # half way down the cosine
    assert lrs[110] == pytest.approx(0.1, abs=1e-6)
    assert np.all(np.diff(lrs[10:]) <= 1e-7)


def test_frozen_parameters_never_change_and_have_no_optimizer_state():
    tx = optim.make_optimizer(optimizer_config(freeze=["^encoder/"], clip_norm=1.0), total_steps=10)
    p, state = run(tx)
    for leaf in jax.tree.leaves(p["encoder"]):
        np.testing.assert_array_equal(leaf, 1.0)
    assert not np.allclose(p["decoder"]["dense"]["kernel"], 1.0)
    # Adam moments exist only for the trainable kernel: 2 moments x 8 values.
    moments = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    assert moments == 2 * 4 * 2


def test_frozen_gradients_do_not_count_towards_clipping():
    # Were the frozen kernel's huge gradient clipped together with the rest, the others
    # would shrink to ~1e-10 and Adam's epsilon would visibly damp their updates.
    tx = optim.make_optimizer(optimizer_config(freeze=["^encoder/conv1/kernel"], clip_norm=1.0, lr=1.0), 10)

    def first_update(frozen_gradient_scale):
        p = params()
        grads = jax.tree.map(jnp.ones_like, p)
        grads["encoder"]["conv1"]["kernel"] *= frozen_gradient_scale
        updates, _ = tx.update(grads, tx.init(p), p)
        return updates

    huge, small = first_update(1e8), first_update(1.0)
    np.testing.assert_array_equal(huge["encoder"]["conv1"]["kernel"], 0.0)
    np.testing.assert_allclose(huge["decoder"]["dense"]["kernel"], small["decoder"]["dense"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(huge["decoder"]["dense"]["kernel"], -1.0, rtol=1e-3)


def test_learning_rate_multiplier_scales_the_updates():
    tx = optim.make_optimizer(optimizer_config(lr_multipliers={"^decoder/": 0.1}), total_steps=10)
    p = params()
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, p), tx.init(p), p)
    encoder_step = np.asarray(updates["encoder"]["conv1"]["kernel"])
    decoder_step = np.asarray(updates["decoder"]["dense"]["kernel"])
    assert encoder_step[0, 0] < 0
    np.testing.assert_allclose(decoder_step, 0.1 * encoder_step[0, 0] * np.ones((4, 2)), rtol=1e-5)


def test_weight_decay_spares_biases():
    tx = optim.make_optimizer(optimizer_config(weight_decay=0.5, lr=0.1), total_steps=10)
    p = params()
    zero = jax.tree.map(jnp.zeros_like, p)
    updates, _ = tx.update(zero, tx.init(p), p)
    np.testing.assert_allclose(updates["encoder"]["conv1"]["kernel"], -0.1 * 0.5, rtol=1e-5)
    np.testing.assert_array_equal(updates["encoder"]["conv1"]["bias"], 0.0)


def test_ema_follows_its_formula():
    ema = {"w": jnp.array([1.0, 2.0])}
    new = {"w": jnp.array([3.0, 6.0])}
    np.testing.assert_allclose(optim.ema_update(ema, new, 0.9)["w"], 0.9 * np.array([1, 2]) + 0.1 * np.array([3, 6]))
    np.testing.assert_allclose(optim.ema_update(ema, new, 0.0)["w"], [3.0, 6.0])
