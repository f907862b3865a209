"""The generic loop end to end on the toy task (outputs, resume, preemption, NaN guard), then\neach of its pieces alone: the update step, the state's layout, the evaluator, preemption, logs."""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec

import toy_task
from t2v import checkpoint as checkpoint_lib
from t2v import config as config_lib
from t2v import optim, parallel
from t2v import train as train_lib
from t2v.errors import InputError
from t2v.train import cost, dry_run
from t2v.train import train_and_evaluate


def read_jsonl(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def saved_state(workdir, step):
    """The raw train-state tree of a checkpoint, as host arrays."""
    manager = checkpoint_lib.Checkpointer(workdir).manager
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    manager.close()
    return jax.tree.map(np.asarray, restored["state"])


def test_train_writes_logs_checkpoints_samples_and_resumes(tmp_path, caplog):
    handler_before = signal.getsignal(signal.SIGTERM)
    final = train_and_evaluate(toy_task.toy_config(steps=8), tmp_path)

    assert final["step"] == 8 and final["nonfinite_total"] == 0
    assert {"eval/loss", "eval/mae", "train/loss", "train/mse", "train/steps_per_sec"} <= set(final)
    records = read_jsonl(tmp_path)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert {"loss", "lr", "steps_per_sec", "examples_per_sec", "metrics"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]
    assert [r["step"] for r in records if "eval" in r] == [4, 8]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "samples/step_8/predictions.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["config"]["train"]["steps"] == 8
    assert checkpoint_lib.Checkpointer(tmp_path).all_steps() == [4, 8]
    assert signal.getsignal(signal.SIGTERM) is handler_before

    # Asking for more steps continues from step 8, logging each new step once.
    with caplog.at_level(logging.INFO, logger="t2v.train"):
        final = train_and_evaluate(toy_task.toy_config(steps=10), tmp_path)
    assert "resumed from" in caplog.text and final["step"] == 10
    assert [r["step"] for r in read_jsonl(tmp_path) if "loss" in r] == list(range(1, 11))
    state = saved_state(tmp_path, 10)
    assert state["step"] == 10
    assert state["params"]["up"]["kernel"].dtype == np.float32


def test_killed_run_resumes_on_exactly_the_same_batches(tmp_path, caplog):
    settings = dict(steps=16, checkpoint_every=4, eval_every=8)
    train_and_evaluate(toy_task.toy_config(**settings), tmp_path / "uninterrupted")
    reference = toy_task.logged_losses(tmp_path / "uninterrupted")

    workdir = tmp_path / "killed"
    overrides = [f"--config.train.{k}={v}" for k, v in settings.items()]
    argv, env = toy_task.run_script(workdir, *overrides, "--config.toy.seconds_per_example=0.02")
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "checkpoints/4/_CHECKPOINT_METADATA").exists():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.02)
        process.kill()  # SIGKILL: no chance to clean up
    finally:
        process.wait()
    killed_at = checkpoint_lib.Checkpointer(workdir).latest_step()
    assert 4 <= killed_at < 16

    with caplog.at_level(logging.INFO, logger="t2v.train"):
        train_and_evaluate(toy_task.toy_config(**settings), workdir)
    assert f"at step {killed_at}" in caplog.text
    resumed = toy_task.logged_losses(workdir)
    assert sorted(resumed) == list(range(1, 17))
    np.testing.assert_allclose([resumed[s] for s in range(1, 17)], [reference[s] for s in range(1, 17)], atol=1e-6)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    argv, env = toy_task.run_script(
        tmp_path,
        "--config.train.steps=1000",
        "--config.train.checkpoint_every=1000",
        "--config.train.eval_every=0",
        "--config.toy.seconds_per_example=0.005",
    )
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((tmp_path / "metrics.jsonl").exists() and len(read_jsonl(tmp_path)) >= 3):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it was signalled"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    saved = checkpoint_lib.Checkpointer(tmp_path).latest_step()
    assert 3 <= saved < 1000
    assert saved == read_jsonl(tmp_path)[-1]["step"]  # the step it was at, no later, no earlier


def test_a_nonfinite_step_is_skipped_and_counted(tmp_path):
    config = toy_task.toy_config(steps=4, checkpoint_every=1, eval_every=0, keep=4)
    config.toy.nan_at_steps = [2]  # the third update
    final = train_and_evaluate(config, tmp_path)
    assert final["nonfinite_total"] == 1
    losses = toy_task.logged_losses(tmp_path)
    assert losses[3] is None and all(np.isfinite(losses[s]) for s in (1, 2, 4))

    before, skipped = saved_state(tmp_path, 2), saved_state(tmp_path, 3)
    for name in ("params", "opt_state", "ema_params"):
        jax.tree.map(np.testing.assert_array_equal, skipped[name], before[name])
    assert (skipped["step"], skipped["nonfinite_in_row"], skipped["nonfinite_total"]) == (3, 1, 1)
    assert saved_state(tmp_path, 4)["nonfinite_in_row"] == 0


def test_a_run_of_nonfinite_steps_stops_with_a_clear_error(tmp_path):
    config = toy_task.toy_config(steps=20, eval_every=0, max_nonfinite_in_row=3)
    config.toy.nan_from_step = 1
    with pytest.raises(FloatingPointError, match=r"^non-finite loss for 3 steps in a row at step 4: loss nan"):
        train_and_evaluate(config, tmp_path)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    losses = {}
    for accum in (1, 2):
        config = toy_task.toy_config(steps=3, eval_every=0)
        config.toy.input_jitter = 0.0  # micro-batches draw their own noise; without it they agree
        config.optimizer.grad_accum = accum
        train_and_evaluate(config, tmp_path / str(accum))
        losses[accum] = toy_task.logged_losses(tmp_path / str(accum))
    np.testing.assert_allclose([losses[2][s] for s in (1, 2, 3)], [losses[1][s] for s in (1, 2, 3)], atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32(tmp_path):
    losses = {}
    for dtype in ("float32", "bfloat16"):
        config = toy_task.toy_config(steps=3, eval_every=0, compute_dtype=dtype)
        train_and_evaluate(config, tmp_path / dtype)
        losses[dtype] = toy_task.logged_losses(tmp_path / dtype)
    np.testing.assert_allclose(losses["bfloat16"][3], losses["float32"][3], rtol=0.05)
    assert losses["bfloat16"][1] != losses["float32"][1]  # really computed in bfloat16
    assert saved_state(tmp_path / "bfloat16", 3)["params"]["down"]["kernel"].dtype == np.float32


def test_batch_that_does_not_split_over_the_mesh_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"train.batch_size=12: must split"):
        train_and_evaluate(toy_task.toy_config(batch_size=12), tmp_path)


# -- the pieces, each alone ------------------------------------------------------------------
def toy_pieces(**optimizer):
    config = toy_task.toy_config()
    config.toy.input_jitter = 0.0  # the loss then depends on the batch alone, not on the step's key
    config.optimizer.update(optimizer)
    task = toy_task.ToyTask(config)
    tx = optim.make_optimizer(config.optimizer, total_steps=config.train.steps)
    schedule = optim.learning_rate_schedule(config.optimizer, config.train.steps)
    return config, task, tx, schedule


def toy_batches(task, count, size=16, start=0):
    return [jax.tree.map(lambda *xs: np.stack(xs), *[task._example("train", start + b * size + i) for i in range(size)])
            for b in range(count)]


def fresh_state(task, tx, batch):
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(0))
    return jax.jit(partial(train_lib.create_train_state, task, tx))(init_rng, train_rng, batch)


def run_steps(train_step, state, batches):
    step = jax.jit(train_step)
    logged = []
    for batch in batches:
        state, metrics = step(state, batch)
        logged.append(jax.device_get(metrics))
    return state, logged


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def test_train_step_lowers_the_loss_and_skips_a_nonfinite_batch():
    config, task, tx, schedule = toy_pieces()
    train_step = train_lib.make_train_step(task, tx, schedule, ema_decay=0.9)
    batches = toy_batches(task, 6)
    state, logged = run_steps(train_step, fresh_state(task, tx, batches[0]), batches)
    assert logged[-1]["loss"] < logged[0]["loss"]
    assert int(state.step) == 6 and int(state.applied_updates) == 6

    poisoned = dict(batches[0], x=np.full_like(batches[0]["x"], np.nan))
    after, (metrics,) = run_steps(train_step, state, [poisoned])
    for name in ("params", "opt_state", "ema_params"):
        assert_trees_equal(getattr(after, name), getattr(state, name))
    assert (int(after.step), int(after.nonfinite_in_row), int(after.nonfinite_total)) == (7, 1, 1)
    assert not np.isfinite(metrics["loss"])


def test_skipped_steps_do_not_move_the_learning_rate_schedule():
    # warmup 4: each update's rate differs, so an update taken at the wrong count shows.
    config, task, tx, schedule = toy_pieces(warmup_steps=4)
    train_step = train_lib.make_train_step(task, tx, schedule, ema_decay=0.9)
    good = toy_batches(task, 2)
    poisoned = dict(good[0], x=np.full_like(good[0]["x"], np.nan))
    start = fresh_state(task, tx, good[0])
    with_skip, logged_with_skip = run_steps(train_step, start, [good[0], poisoned, poisoned, good[1]])
    without, logged_without = run_steps(train_step, start, good)
    assert int(with_skip.step) == 4 and int(with_skip.applied_updates) == 2
    for name in ("params", "opt_state", "ema_params"):
        assert_trees_equal(getattr(with_skip, name), getattr(without, name))
    assert logged_with_skip[3]["lr"] == logged_without[1]["lr"] == pytest.approx(float(schedule(1)))


def test_skipped_steps_move_no_groups_schedule_and_the_ema_leaves_out_its_groups():
    # Two groups, "down" warming up over 8 updates at its own rate: a count moved by a
    # skipped step would show in either group's rate.
    config, task, tx, schedule = toy_pieces(
        warmup_steps=4, groups={"down": dict(params="^down/", lr=3e-3, warmup_steps=8, ema=False)})
    train_step = train_lib.make_train_step(task, tx, schedule, ema_decay=0.9)
    good = toy_batches(task, 2)
    poisoned = dict(good[0], x=np.full_like(good[0]["x"], np.nan))
    start = fresh_state(task, tx, good[0])
    assert set(start.ema_params) == {"up"}  # a group with ema=False has no EMA
    with_skip, logged_with_skip = run_steps(train_step, start, [good[0], poisoned, good[1]])
    without, logged_without = run_steps(train_step, start, good)
    for name in ("params", "opt_state", "ema_params"):
        assert_trees_equal(getattr(with_skip, name), getattr(without, name))
    down = optim.learning_rate_schedule(optim.group_settings(config.optimizer)["down"], config.train.steps)
    assert logged_with_skip[2]["lr/down"] == logged_without[1]["lr/down"] == pytest.approx(float(down(1)))
    assert logged_with_skip[2]["lr/main"] == logged_with_skip[2]["lr"] == pytest.approx(float(schedule(1)))
    assert logged_with_skip[2]["lr/down"] != logged_with_skip[2]["lr/main"]
    assert not np.isfinite(logged_with_skip[1]["grad_norm/down"])  # the skipped step's own norm, logged


def test_frozen_parameters_keep_their_values_in_a_sharded_state():
    # Freezing once broke abstract_train_state: optax.MaskedNode met a parameter's sharding.
    # Weight decay would move the frozen kernel were it only cut off from its gradient.
    config, task, tx, schedule = toy_pieces(freeze=["^up/"], weight_decay=0.5)
    mesh = parallel.make_mesh(dict(data=2, fsdp=4, tensor=1))
    batches = [parallel.shard_batch(b, mesh) for b in toy_batches(task, 3)]
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batches[0])
    _, shardings = train_lib.abstract_train_state(task, tx, abstract_batch, mesh, config.sharding_rules)
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(0))
    start = jax.jit(partial(train_lib.create_train_state, task, tx), out_shardings=shardings)(
        init_rng, train_rng, batches[0])
    step = jax.jit(train_lib.make_train_step(task, tx, schedule, ema_decay=0.9),
                   out_shardings=(shardings, parallel.replicated(mesh)))
    state = start
    for batch in batches:
        state, _ = step(state, batch)
    assert int(state.applied_updates) == 3
    assert_trees_equal(state.params["up"], start.params["up"])
    moved = jax.device_get(state.params["down"]["kernel"]) - jax.device_get(start.params["down"]["kernel"])
    assert np.abs(moved).max() > 0
    assert state.params["up"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")


def test_accumulated_micro_batches_equal_one_big_batch():
    config, task, tx, schedule = toy_pieces()
    batches = toy_batches(task, 2)
    start = fresh_state(task, tx, batches[0])
    states = {}
    for accum in (1, 4):
        step = train_lib.make_train_step(task, tx, schedule, ema_decay=0.9, grad_accum=accum)
        states[accum], _ = run_steps(step, start, batches)
    jax.tree.map(partial(np.testing.assert_allclose, atol=2e-6), jax.device_get(states[4].params),
                 jax.device_get(states[1].params))


class DtypeSpy(toy_task.ToyTask):
    """The toy task, recording the dtypes its loss is traced with."""

    seen: dict = {}

    def loss(self, params, batch, rng, step):
        prediction = self._predict(params, batch["x"])
        loss = jnp.mean(jnp.square(prediction - batch["y"]))  # promoted to float32 by the target
        DtypeSpy.seen = {"x": batch["x"].dtype, "y": batch["y"].dtype, "prediction": prediction.dtype,
                         "loss": loss.dtype, "kernel": params["up"]["kernel"].dtype}
        return loss, {}


def test_bfloat16_compute_keeps_float32_targets_and_losses():
    config = toy_task.toy_config()
    task = DtypeSpy(config)
    tx = optim.make_optimizer(config.optimizer, total_steps=config.train.steps)
    schedule = optim.learning_rate_schedule(config.optimizer, config.train.steps)
    batch = toy_batches(task, 1)[0]
    train_step = train_lib.make_train_step(task, tx, schedule, ema_decay=0.9, compute_dtype="bfloat16")
    state, _ = run_steps(train_step, fresh_state(task, tx, batch), [batch])
    assert DtypeSpy.seen == {"x": jnp.bfloat16, "y": jnp.float32, "prediction": jnp.bfloat16,
                             "loss": jnp.float32, "kernel": jnp.bfloat16}
    assert state.params["up"]["kernel"].dtype == jnp.float32


def test_train_state_is_born_sharded_by_the_rules():
    config, task, tx, _ = toy_pieces()
    mesh = parallel.make_mesh(dict(data=2, fsdp=4, tensor=1))
    batch = parallel.shard_batch(toy_batches(task, 1)[0], mesh)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
    abstract, shardings = train_lib.abstract_train_state(task, tx, abstract_batch, mesh, config.sharding_rules)
    assert shardings.params["up"]["kernel"].spec == PartitionSpec("fsdp", "tensor")  # ("embed", "mlp")
    assert abstract.params["up"]["kernel"].sharding == shardings.params["up"]["kernel"]
    assert shardings.step.spec == PartitionSpec()
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(0))
    state = jax.jit(partial(train_lib.create_train_state, task, tx), out_shardings=shardings)(
        init_rng, train_rng, batch)
    assert state.params["up"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")


def test_evaluator_averages_the_eval_batches_and_writes_samples(tmp_path):
    config, task, tx, _ = toy_pieces()
    mesh = parallel.make_mesh(dict(data=-1))
    batches = toy_batches(task, 3)
    params = jax.device_get(fresh_state(task, tx, batches[0]).params)
    shardings = jax.tree.map(lambda _: parallel.replicated(mesh), params)
    written = []

    class Writer:
        def write_eval(self, step, metrics):
            written.append((step, metrics))

    evaluator = train_lib.Evaluator(task, lambda: iter(batches), mesh, shardings, jax.random.PRNGKey(1),
                                    num_batches=2, samples_dir=tmp_path, writer=Writer())
    metrics = evaluator(params, step=7)
    expected = np.mean([task.eval_metrics(params, b, None)["loss"] for b in batches[:2]])
    assert metrics["eval/loss"] == pytest.approx(float(expected), rel=1e-5)
    assert written == [(7, metrics)]
    assert (tmp_path / "step_7/predictions.json").exists()


def test_preemption_flags_sigterm_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with train_lib.Preemption() as preemption:
        assert not preemption.reached(0)
        signal.raise_signal(signal.SIGTERM)
        assert preemption.reached(1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_metric_writer_drops_repeated_steps_and_a_torn_last_line(tmp_path, caplog):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')  # cut by SIGKILL
    with caplog.at_level(logging.WARNING):
        writer = train_lib.MetricWriter(tmp_path, resume_step=2)
    writer.write_train(3, {"loss": np.float32(0.5), "lr": 0.1, "mse": np.nan}, 2.0, 32.0)
    writer.close()
    records = read_jsonl(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["loss"] == 0.5 and records[-1]["metrics"] == {"mse": None}
    assert "torn" in caplog.text


def test_a_torn_metrics_line_does_not_break_the_resume(tmp_path):
    train_and_evaluate(toy_task.toy_config(steps=4, eval_every=0), tmp_path)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 0.')  # what a SIGKILL mid-write leaves
    final = train_and_evaluate(toy_task.toy_config(steps=6, eval_every=0), tmp_path)
    assert final["step"] == 6
    assert [r["step"] for r in read_jsonl(tmp_path)] == list(range(1, 7))


# -- cost and the dry run ---------------------------------------------------------------------
def test_model_flops_count_matmuls_and_convs_and_every_loop_iteration():
    def f(x, kernel):
        y, _ = jax.lax.scan(lambda c, _: (c @ c, None), x, None, length=3)
        return jax.lax.conv_general_dilated(y[None, None], kernel, (1, 1), "SAME").sum()

    x, kernel = jnp.ones((8, 8)), jnp.ones((4, 1, 3, 3))
    assert cost.model_flops(jax.make_jaxpr(f)(x, kernel)) == 3 * 2 * 8**3 + 2 * (4 * 8 * 8) * 9
    # XLA's cost analysis counts the loop body once.
    assert cost.xla_cost(jax.jit(f).lower(x, kernel).compile())["flops"] < 2 * 2 * 8**3 + 2 * (4 * 8 * 8) * 9
    assert cost.device_key("NVIDIA H100 80GB HBM3") == "h100" and cost.device_key("TPU v5 lite") == "tpu_v5e"


def test_dry_run_reports_memory_flops_and_step_time_and_catches_out_of_memory():
    assert jax.device_count() == 8  # conftest's fake CPU devices: the dry run compiles in this process
    config = config_lib.load("configs/sync.py:tiny", ["--config.train.batch_size=64"])
    report = dry_run.analyse(config, "sync tiny", 8, target="a100")
    printed = "\n".join(report.lines())
    assert "on 8 devices (data=8 x fsdp=1 x tensor=1), global batch 64" in printed
    assert "memory per device:" in printed and "expected step time on a100" in printed
    assert report.memory["total"] > report.memory["arguments"] > 0
    # The sync expert has no loops: the jaxpr's matmul count and XLA's agree to a few percent.
    assert report.xla_flops_per_device == pytest.approx(report.flops_per_device, rel=0.1)
    assert report.step_seconds == pytest.approx(report.flops_per_device / (19.5e12 * 0.4))
    dry_run.check_fits(report)
    with pytest.raises(InputError, match=r"^sync tiny: the update step needs .* GiB per device on 8 devices"):
        dry_run.check_fits(dataclasses.replace(report, device_memory_gb=1e-4))


@pytest.mark.slow  # a fresh process compiling for 16 fake devices: ~40 s on a loaded 2-core machine
def test_dry_run_reruns_itself_with_enough_fake_devices(tmp_path):
    argv = [sys.executable, "-m", "t2v.cli", "train", "--config", "configs/sync.py:tiny", "--workdir",
            str(tmp_path / "never"), "--dry-run", "--devices", "16", "--device-memory-gb", "0.0001"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "on 16 devices (data=16 x fsdp=1 x tensor=1)" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("t2v train --dry-run: error: configs/sync.py:tiny: ")
    assert not (tmp_path / "never").exists()
