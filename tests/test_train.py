"""The generic loop end to end on the toy task: outputs, resume, preemption, NaN guard."""

import json
import logging
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import toy_task
from t2v import checkpoint as checkpoint_lib
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
