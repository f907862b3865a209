"""Checkpoints: round trip onto another mesh, iterator state, meta, keep-N plus best."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

import toy_task
from t2v import checkpoint as checkpoint_lib
from t2v import parallel
from t2v.errors import InputError


def sharded_state(mesh):
    """Toy parameters laid out by the base rules on `mesh`, plus a replicated counter."""
    config = toy_task.toy_config()
    task = toy_task.ToyTask(config)
    batch = {"x": np.zeros((8, 16), np.float32)}
    boxed = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
    shardings = parallel.logical_to_sharding(boxed, mesh, [tuple(r) for r in config.sharding_rules])
    init = jax.jit(lambda rng: nn.meta.unbox(task.init(rng, batch)), out_shardings=shardings)
    state = {"params": init(jax.random.PRNGKey(0)), "step": jax.device_put(np.int32(7), parallel.replicated(mesh))}
    return config, state, {"params": shardings, "step": parallel.replicated(mesh)}


def test_restore_onto_a_different_mesh(tmp_path):
    config, saved, _ = sharded_state(parallel.make_mesh({"fsdp": 8, "data": 1}))
    assert saved["params"]["up"]["kernel"].sharding.shard_shape((16, 32)) == (2, 32)
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=2)
    iterator_state = {"next_index": 12, "note": "any JSON"}
    checkpointer.save(7, saved, iterator_state, config)
    checkpointer.wait_until_finished()

    new_mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
    _, like, new_shardings = sharded_state(new_mesh)
    target = checkpoint_lib.abstract_like(like, new_shardings)
    restored, restored_iterator, meta = checkpoint_lib.Checkpointer(tmp_path, keep=2).restore(7, target)

    for got, want, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), jax.tree.leaves(new_shardings)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding == sharding
    assert restored["params"]["up"]["kernel"].sharding.shard_shape((16, 32)) == (4, 32)
    assert restored_iterator == iterator_state
    assert meta["step"] == 7 and meta["config"]["task"] == "toy" and meta["t2v_version"]
    assert json.loads((tmp_path / "checkpoints/7/data/process_0-of-1.json").read_text()) == iterator_state


def test_keeps_the_latest_n_and_the_best_even_when_it_is_old(tmp_path):
    config, state, _ = sharded_state(parallel.make_mesh({"data": -1}))
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=2, best_metric="eval/loss", best_mode="min")
    for step, loss in [(1, 5.0), (2, 1.0), (3, 4.0), (4, 3.0), (5, 6.0)]:
        checkpointer.save(step, state, {"i": step}, config, metrics={"eval/loss": loss, "eval/mae": 0.0})
    checkpointer.save(6, state, {"i": 6}, config)  # no eval at this step
    checkpointer.wait_until_finished()
    assert checkpointer.all_steps() == [2, 5, 6]
    assert checkpointer.best_step() == 2
    assert checkpointer.latest_step() == 6
    assert not checkpointer.save(6, state, {"i": 6}, config)  # already there: nothing to do
    checkpointer.close()

    with pytest.raises(InputError, match="best_metric='eval/loss' is not among"):
        checkpoint_lib.Checkpointer(tmp_path / "other", keep=1, best_metric="eval/loss").save(
            1, state, {}, config, metrics={"eval/mae": 1.0}
        )


def test_max_mode_keeps_the_highest(tmp_path):
    config, state, _ = sharded_state(parallel.make_mesh({"data": -1}))
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=1, best_metric="eval/acc", best_mode="max")
    for step, accuracy in [(1, 0.2), (2, 0.9), (3, 0.5), (4, 0.1)]:
        checkpointer.save(step, state, {}, config, metrics={"eval/acc": accuracy})
    checkpointer.wait_until_finished()
    assert checkpointer.all_steps() == [2, 4]


def test_config_json_sits_beside_the_checkpoints(tmp_path):
    config = toy_task.toy_config()
    path = checkpoint_lib.write_config(config, tmp_path)
    record = json.loads(path.read_text())
    assert path == tmp_path / "config.json"
    assert record["config"]["task"] == "toy" and "t2v_version" in record


def test_a_finished_workdir_gives_its_config_and_latest_ema_params_on_one_device(tmp_path):
    config, state, _ = sharded_state(parallel.make_mesh({"fsdp": 8, "data": 1}))
    checkpoint_lib.write_config(config, tmp_path)
    checkpointer = checkpoint_lib.Checkpointer(tmp_path, keep=2)
    scaled = jax.tree.map(lambda x: 2 * x, state["params"])
    for step in (3, 5):
        checkpointer.save(step, {"params": state["params"], "ema_params": scaled, "step": state["step"]}, {}, config)
    checkpointer.wait_until_finished()

    assert checkpoint_lib.read_config(tmp_path).task == "toy"
    assert checkpoint_lib.saved_steps(tmp_path) == [3, 5]
    ema, raw = checkpoint_lib.load_params(tmp_path), checkpoint_lib.load_params(tmp_path, step=3, ema=False)
    for got_ema, got_raw, want in zip(jax.tree.leaves(ema), jax.tree.leaves(raw), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(got_ema), 2 * np.asarray(want))
        np.testing.assert_array_equal(np.asarray(got_raw), np.asarray(want))
        assert len(got_ema.sharding.device_set) == 1
    with pytest.raises(InputError, match=r"no checkpoint for step 4 \(have \[3, 5\]\)"):
        checkpoint_lib.load_params(tmp_path, step=4)

    # One home for "the checkpoint is the config's model": generation and export both use it.
    assert jax.tree.structure(checkpoint_lib.load_checked_params(tmp_path, state["params"])) == \
        jax.tree.structure(state["params"])
    with pytest.raises(InputError, match="holds no renderer parameters"):
        checkpoint_lib.load_checked_params(tmp_path, state["params"], part="renderer")
    wrong = jax.tree.map(lambda x: jax.ShapeDtypeStruct((*x.shape, 2), x.dtype), state["params"])
    with pytest.raises(InputError, match=r"does not match config.json's model \(.* is \("):
        checkpoint_lib.load_checked_params(tmp_path, wrong)


def test_a_workdir_without_config_or_checkpoints_is_named(tmp_path):
    # Bad input (one line at the CLI), and still a FileNotFoundError for callers that fall back.
    with pytest.raises(InputError, match="config.json: no such file") as error:
        checkpoint_lib.read_config(tmp_path / "nothing")
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(InputError, match="no such directory"):
        checkpoint_lib.task_workdirs(tmp_path / "nothing")
    with pytest.raises(InputError, match="keep at least one"):
        checkpoint_lib.Checkpointer(tmp_path / "c", keep=0)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(InputError, match="checkpoints: no checkpoints"):
        checkpoint_lib.load_params(tmp_path)
