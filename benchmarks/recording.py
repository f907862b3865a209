"""One record format for every benchmark: the rows plus when and where they were measured."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def write_record(benchmark: str, rows: list[dict], out: str | os.PathLike) -> Path:
    """Writes `{"benchmark", "time", "devices", "machine", ..., "results": rows}` to `out` as JSON."""
    import jax

    record = {
        "benchmark": benchmark,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "devices": [str(d) for d in jax.devices()],
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "jax": jax.__version__,
        "results": rows,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out
