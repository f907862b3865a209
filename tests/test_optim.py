"""The optimizer: schedule shape, freezing, per-module multipliers, clipping, EMA."""

from functools import partial

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


# -- parameter groups: a GAN's two players, each with its own clip, schedule and EMA -----------
def grouped_config(**decoder_group):
    """Two groups: "decoder/" with its own settings, the rest as the main group "encoder"."""
    return optimizer_config(lr=1.0, clip_norm=1.0, main_group="encoder",
                            groups={"decoder": dict(params="^decoder/", **decoder_group)})


def test_groups_own_their_parameters_and_inherit_unset_settings():
    config = grouped_config(lr=0.5, ema=False)
    assert optim.parameter_groups(params(), config) == {
        "encoder": {"conv1": {"kernel": "encoder", "bias": "encoder"}}, "decoder": {"dense": {"kernel": "decoder"}}}
    settings = optim.group_settings(config)
    assert settings["decoder"]["lr"] == 0.5 and settings["decoder"]["b1"] == settings["encoder"]["b1"] == 0.9
    assert not settings["decoder"]["ema"] and settings["encoder"]["ema"]
    labels = optim.parameter_labels(params(), config)
    assert labels["decoder"]["dense"]["kernel"] == "decoder_lr_x1.0"
    with pytest.raises(ValueError, match=r"groups.decoder.params='\^decoder/' matches no parameter"):
        optim.parameter_groups({"encoder": params()["encoder"]}, config)
    with pytest.raises(ValueError, match=r"groups.decoder: unknown setting 'learning_rate'"):
        optim.group_settings(grouped_config(learning_rate=0.1))


def test_each_group_is_clipped_by_its_own_norm_and_logs_it():
    tx = optim.make_optimizer(grouped_config(), total_steps=10)

    def first_update(decoder_gradient_scale):
        p = params()
        grads = jax.tree.map(jnp.ones_like, p)
        grads["decoder"]["dense"]["kernel"] *= decoder_gradient_scale
        return tx.update(grads, tx.init(p), p)

    (huge, huge_state), (small, _) = first_update(1e6), first_update(1.0)
    # A joint clip would shrink the encoder's gradient ~1e6 times; its own clip leaves it.
    jax.tree.map(partial(np.testing.assert_allclose, rtol=1e-6), huge["encoder"], small["encoder"])
    metrics = optim.group_metrics(huge_state)
    assert metrics["grad_norm/encoder"] == pytest.approx(4.0)  # 16 ones, before clipping
    assert metrics["grad_norm/decoder"] == pytest.approx(1e6 * np.sqrt(8), rel=1e-5)
    assert set(metrics) == {"grad_norm/encoder", "grad_norm/decoder", "lr/encoder", "lr/decoder"}
    assert optim.group_metrics(optim.make_optimizer(optimizer_config(), 10).init(params())) == {}


def test_groups_follow_their_own_schedules():
    # The decoder warms up over 4 updates and peaks at 0.1; the encoder has neither.
    tx = optim.make_optimizer(grouped_config(lr=0.1, warmup_steps=4), total_steps=100)
    p, state = params(), None
    state = tx.init(p)
    grads = jax.tree.map(jnp.ones_like, p)
    rates = []
    for _ in range(3):
        _, state = tx.update(grads, state, p)
        metrics = optim.group_metrics(state)
        rates.append((float(metrics["lr/encoder"]), float(metrics["lr/decoder"])))
    decoder_schedule = optim.learning_rate_schedule(optim.group_settings(grouped_config(lr=0.1, warmup_steps=4))
                                                    ["decoder"], 100)
    encoder_schedule = optim.learning_rate_schedule(grouped_config(), 100)
    np.testing.assert_allclose(rates, [(encoder_schedule(s), decoder_schedule(s)) for s in range(3)], rtol=1e-6)
    assert rates[0][1] == pytest.approx(0.025) and rates[0][0] == pytest.approx(1.0)
    counts = {path: int(x) for path, x in jax.tree_util.tree_leaves_with_path(state)
              if jax.tree_util.keystr(path).endswith(".count")}
    assert set(counts.values()) == {3}  # every group's schedule and Adam count: 3 updates


def test_the_ema_keeps_only_the_averaged_groups():
    config = grouped_config(ema=False)
    kept = optim.averaged_params(params(), config)
    assert jax.tree.structure(kept) == jax.tree.structure({"encoder": params()["encoder"]})
    everything = params()
    assert optim.averaged_params(everything, grouped_config()) is everything  # no group left out
    new = jax.tree.map(lambda x: 3 * x, params())
    ema = optim.ema_update(kept, new, 0.5)
    np.testing.assert_allclose(ema["encoder"]["conv1"]["kernel"], 2.0)
    assert "decoder" not in ema
