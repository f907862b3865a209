"""Mesh, logical-axis shardings, batch sharding, and one result on every mesh."""

import subprocess

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

import toy_task
from t2v import parallel
from t2v.train import train_and_evaluate


def test_make_mesh_fills_the_minus_one_axis_and_uses_auto_axes():
    mesh = parallel.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    assert dict(parallel.make_mesh({"fsdp": 8, "data": 1}).shape) == {"data": 1, "fsdp": 8, "tensor": 1}


@pytest.mark.parametrize(
    "mesh_config, message",
    [
        ({"data": -1, "fsdp": 3}, "does not divide the 8 devices"),
        ({"data": 2, "fsdp": 2}, "uses 4 devices, but there are 8"),
        ({"data": -1, "fsdp": -1}, "at most one axis may be -1"),
        ({"data": -1, "pipeline": 2}, "unknown axes"),
    ],
)
def test_make_mesh_rejects_sizes_that_do_not_fit(mesh_config, message):
    with pytest.raises(ValueError, match=message):
        parallel.make_mesh(mesh_config)


def test_logical_rules_decide_parameter_shardings():
    config = toy_task.toy_config()
    task = toy_task.ToyTask(config)
    batch = {"x": np.zeros((8, 16), np.float32)}
    boxed = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
    rules = [tuple(r) for r in config.sharding_rules]  # embed -> fsdp, mlp -> tensor

    fsdp = parallel.logical_to_sharding(boxed, parallel.make_mesh({"fsdp": -1}), rules)
    assert fsdp["up"]["kernel"].spec == PartitionSpec("fsdp", "tensor")
    assert fsdp["up"]["kernel"].shard_shape((16, 32)) == (2, 32)
    assert fsdp["down"]["bias"].shard_shape((16,)) == (2,)

    mixed = parallel.logical_to_sharding(boxed, parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}), rules)
    assert mixed["up"]["kernel"].shard_shape((16, 32)) == (8, 16)
    replicated = parallel.logical_to_sharding(boxed, parallel.make_mesh({"data": -1}), rules)
    assert replicated["up"]["kernel"].shard_shape((16, 32)) == (16, 32)


def test_shard_batch_splits_the_leading_axis_over_data_and_fsdp():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    local = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3), "id": np.arange(8)}
    batch = parallel.shard_batch(local, mesh)
    assert batch["x"].shape == (8, 3)
    assert batch["x"].sharding.spec == PartitionSpec(("data", "fsdp"))
    assert batch["x"].sharding.shard_shape((8, 3)) == (2, 3)
    np.testing.assert_array_equal(np.asarray(batch["x"]), local["x"])


@pytest.mark.slow
def test_training_gives_the_same_losses_on_one_device_and_on_every_8_device_mesh(tmp_path):
    steps = ["--config.train.steps=4", "--config.train.eval_every=0"]
    # One device: a fresh process that sees a single CPU device.
    argv, env = toy_task.run_script(tmp_path / "one", *steps, devices=1)
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    reference = toy_task.logged_losses(tmp_path / "one")
    assert sorted(reference) == [1, 2, 3, 4]

    for name, mesh in {
        "data8": dict(data=8, fsdp=1, tensor=1),
        "fsdp8": dict(data=1, fsdp=8, tensor=1),
        "d2f2t2": dict(data=2, fsdp=2, tensor=2),
    }.items():
        config = toy_task.toy_config(steps=4, eval_every=0)
        config.mesh = mesh
        train_and_evaluate(config, tmp_path / name)
        losses = toy_task.logged_losses(tmp_path / name)
        np.testing.assert_allclose(
            [losses[s] for s in reference], [reference[s] for s in reference], rtol=0, atol=1e-5, err_msg=name
        )
