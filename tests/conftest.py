"""Every test process sees 8 fake CPU devices, so sharding tests need nothing special."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The 8 fake devices are 8 threads meeting at every collective. On a loaded 2-core machine
# one of them can arrive minutes late, and XLA's CPU runtime then aborts the whole process
# (a "crashed worker" in CI, motion on d2f2t2 once). Late is not stuck here: wait long.
if "collective_call_terminate" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += (" --xla_cpu_collective_call_warn_stuck_timeout_seconds=600"
                                " --xla_cpu_collective_call_terminate_timeout_seconds=3600"
                                " --xla_cpu_collective_timeout_seconds=3600")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# numba (inside librosa, used by some tests as a reference) writes its JIT cache next to
# the installed package; parallel test workers on a fresh install would race on it.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="t2v-numba-"))


@pytest.fixture
def train_as_a_user_would():
    """`(spec, workdir, overrides=())`: trains in a fresh process on one CPU device, as `t2v`
    runs on a laptop; the 8 fake devices of the test process would make a 2-core machine
    several times slower."""

    def train(spec, workdir, overrides=()):
        code = ("import sys; from t2v import config, train; "
                "train.train_and_evaluate(config.load(sys.argv[1], sys.argv[3:]), sys.argv[2])")
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        subprocess.run([sys.executable, "-c", code, spec, str(workdir), *overrides], env=env, check=True,
                       cwd=Path(__file__).resolve().parent.parent)

    return train
