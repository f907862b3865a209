"""Preemption: a SIGTERM (what a cloud scheduler sends before taking the machine) asks
the loop to save a checkpoint at the current step and stop.

    with Preemption() as preemption:
        while ...:
            if preemption.reached(step): break
"""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils


class Preemption:
    """One process: a SIGTERM handler sets a flag, and the previous handler comes back on
    exit. Several processes must agree on the step to stop at: jax's preemption service
    (which catches SIGTERM itself) decides, through `reached_preemption_sync_point`."""

    def __init__(self):
        self.multi_process = jax.process_count() > 1
        self.requested = False
        self._previous_handler = None

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "Preemption":
        if not self.multi_process:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def reached(self, step: int) -> bool:
        """True when the run should save at `step` and stop (every process agrees)."""
        if self.multi_process:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested
