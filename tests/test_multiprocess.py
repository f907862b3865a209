"""Two local processes (4 fake devices each) train like one process with 8 devices."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import toy_task
from t2v.train import train_and_evaluate

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    settings = dict(steps=4, checkpoint_every=2, eval_every=2)
    # Each process takes every other example, so a global batch holds the same examples in
    # another order; per-example input noise would then differ, so it is turned off.
    overrides = [f"--config.train.{k}={v}" for k, v in settings.items()] + ["--config.toy.input_jitter=0.0"]
    argv, env = toy_task.run_script(tmp_path / "two", *overrides)
    launcher = [sys.executable, str(REPO / "launch/local.py"), "--processes", "2", "--devices-per-process", "4", "--"]
    result = subprocess.run(launcher + argv, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("FINAL") == 2  # both processes finished
    assert "[1] FINAL" in result.stdout

    config = toy_task.toy_config(**settings)
    config.toy.input_jitter = 0.0
    train_and_evaluate(config, tmp_path / "one")
    two, one = toy_task.logged_losses(tmp_path / "two"), toy_task.logged_losses(tmp_path / "one")
    assert sorted(two) == [1, 2, 3, 4]
    # Equal up to the rounding of a sum taken in another order.
    np.testing.assert_allclose([two[s] for s in two], [one[s] for s in two], rtol=0, atol=1e-5)
    assert (tmp_path / "two/checkpoints/4/data/process_1-of-2.json").exists()
