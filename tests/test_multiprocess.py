"""Two local processes (fake CPU devices each) train like one process with 8 devices, and a
SIGTERM to one of them stops both at one step, saved once, from which a rerun resumes."""

import json
import re
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import toy_task
from t2v import checkpoint as checkpoint_lib
from t2v.train import Preemption, train_and_evaluate

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


def launcher(devices_per_process: int) -> list[str]:
    return [sys.executable, str(REPO / "launch/local.py"), "--processes", "2",
            "--devices-per-process", str(devices_per_process), "--"]


def child_with_process_id(parent: int, process_id: int) -> int:
    """The pid of the launcher's child that runs as T2V_PROCESS_ID=`process_id`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone, or not ours
        if ppid == parent and f"T2V_PROCESS_ID={process_id}".encode() in environ:
            return int(stat.parent.name)
    raise AssertionError(f"no child of {parent} with T2V_PROCESS_ID={process_id}")


def logged_steps(workdir: Path) -> list[int]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the launcher's children in /proc")
def test_sigterm_to_one_process_saves_once_on_both_and_the_rerun_resumes_to_the_same_end(tmp_path):
    settings = dict(steps=40, checkpoint_every=1000, eval_every=0, log_every=1)
    overrides = [f"--config.train.{k}={v}" for k, v in settings.items()] + ["--config.toy.input_jitter=0.0"]
    workdir = tmp_path / "two"
    # Slow input (0.08 s a step) so the signal lands mid-run.
    argv, env = toy_task.run_script(workdir, *overrides, "--config.toy.seconds_per_example=0.01")
    run = subprocess.Popen(launcher(2) + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not ((workdir / "metrics.jsonl").exists() and len(logged_steps(workdir)) >= 3):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
        time.sleep(0.05)
    # Only process 1 is told, as when one host of a slice gets the maintenance notice:
    # jax's preemption service passes it on, and both stop at the same step.
    pid = child_with_process_id(run.pid, 1)
    subprocess.run(["kill", "-TERM", str(pid)], check=True)
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output[-3000:]
    stops = re.findall(r"^\[(\d)\] .*preempted at step (\d+)", output, re.M)
    assert sorted(p for p, _ in stops) == ["0", "1"], output[-3000:]  # each process once
    stopped = int(stops[0][1])
    assert stops[1][1] == str(stopped) and 3 <= stopped < settings["steps"]
    assert output.count("FINAL") == 2
    assert checkpoint_lib.saved_steps(workdir) == [stopped]  # the one save, at the agreed step
    saved_data = {p.name for p in (workdir / "checkpoints" / str(stopped) / "data").iterdir()}
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= saved_data  # both input positions
    assert logged_steps(workdir) == list(range(1, stopped + 1))
    before = (workdir / "metrics.jsonl").read_text()

    resumed = subprocess.run(launcher(2) + argv, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    # Resumed, not restarted: the first run's lines (their timings too) are kept as they were.
    assert (workdir / "metrics.jsonl").read_text().startswith(before)
    assert logged_steps(workdir) == list(range(1, settings["steps"] + 1))  # no step twice, none missing
    assert checkpoint_lib.saved_steps(workdir)[-1] == settings["steps"]

    config = toy_task.toy_config(**settings)
    config.toy.input_jitter = 0.0
    train_and_evaluate(config, tmp_path / "one")
    two, one = toy_task.logged_losses(workdir), toy_task.logged_losses(tmp_path / "one")
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(two)], rtol=0, atol=1e-5)
    for ema in (False, True):
        np.testing.assert_allclose(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(checkpoint_lib.load_params(workdir, ema=ema))]),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(checkpoint_lib.load_params(tmp_path / "one", ema=ema))]),
            rtol=0, atol=1e-5)


def test_preemption_off_the_main_thread_warns_instead_of_failing(caplog):
    outcome = []

    def train():  # signal.signal would raise ValueError here
        with Preemption() as preemption:
            outcome.append(preemption.reached(0))

    with caplog.at_level(logging.WARNING, logger="t2v.train"):
        thread = threading.Thread(target=train)
        thread.start()
        thread.join()
    assert outcome == [False] and "outside the main thread" in caplog.text


def test_preemption_of_processes_without_jax_distributed_warns_and_never_stops(monkeypatch, caplog):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="t2v.train"), Preemption() as preemption:
        assert not preemption.reached(0)
        assert signal.getsignal(signal.SIGTERM) is before  # no handler of its own: steps would disagree
    assert "without jax.distributed" in caplog.text
