"""What a run logs (process 0): workdir/metrics.jsonl, one JSON object per logged step,
and TensorBoard event files in workdir/tensorboard/.

    {"step": 50, "loss": 0.12, "lr": 1e-3, "steps_per_sec": 9.1, "examples_per_sec": 291, "metrics": {...}}
    {"step": 500, "eval": {"eval/loss": 0.1, ...}}

Non-finite values are written as null (strict JSON holds no nan).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from etils import epath

log = logging.getLogger(__name__)


def records_up_to(jsonl: Path, step: int) -> list[str]:
    """The lines of `jsonl` for steps <= `step`.

    A run killed after its last checkpoint logged steps the resumed run repeats: they are
    dropped, so every step appears once. A line that does not parse is what SIGKILL leaves
    when it cuts a write short; it is dropped too, with a warning.
    """
    kept = []
    for number, line in enumerate(jsonl.read_text().splitlines(), 1):
        try:
            record_step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s:%d: skipping a torn or unreadable line: %.80r", jsonl, number, line)
            continue
        if record_step <= step:
            kept.append(line)
    return kept


class MetricWriter:
    """Appends train and eval records to metrics.jsonl and TensorBoard, from `resume_step` on."""

    def __init__(self, workdir: Path, resume_step: int):
        from tensorboardX import SummaryWriter

        self.jsonl = epath.Path(workdir) / "metrics.jsonl"
        kept = records_up_to(self.jsonl, resume_step) if self.jsonl.exists() else []
        self.jsonl.write_text("".join(line + "\n" for line in kept))
        # Cloud storage has no append: there the whole (small) file is rewritten per record.
        self.lines = kept if "://" in str(workdir) else None
        self.file = self.jsonl.open("a") if self.lines is None else None
        self.tensorboard = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def _append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True)
        if self.lines is not None:
            self.lines.append(line)
            self.jsonl.write_text("".join(x + "\n" for x in self.lines))
            return
        self.file.write(line + "\n")
        self.file.flush()

    def write_train(self, step: int, metrics: dict, steps_per_sec: float, examples_per_sec: float) -> None:
        values = {k: json_number(v) for k, v in metrics.items()}
        self._append({
            "step": step,
            "loss": values.pop("loss"),
            "lr": values.pop("lr"),
            "steps_per_sec": steps_per_sec,
            "examples_per_sec": examples_per_sec,
            "metrics": values,
        })
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name if name == "lr" else f"train/{name}", float(value), step)
        self.tensorboard.add_scalar("train/steps_per_sec", steps_per_sec, step)
        self.tensorboard.add_scalar("train/examples_per_sec", examples_per_sec, step)

    def write_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._append({"step": step, "eval": {k: json_number(v) for k, v in metrics.items()}})
        for name, value in metrics.items():
            self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tensorboard.close()


def json_number(value) -> float | None:
    """A float, or None (JSON null) for nan/inf, which strict JSON cannot hold."""
    value = float(value)
    return value if math.isfinite(value) else None
