"""Every test process sees 8 fake CPU devices, so sharding tests need nothing special."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# numba (inside librosa, used by some tests as a reference) writes its JIT cache next to
# the installed package; parallel test workers on a fresh install would race on it.
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="t2v-numba-"))
