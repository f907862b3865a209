"""Preemption: a SIGTERM (what a cloud scheduler sends before taking the machine) asks
the loop to save a checkpoint at the current step and stop.

    with Preemption() as preemption:
        while ...:
            if preemption.reached(step): break
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

log = logging.getLogger("t2v.train")


class Preemption:
    """One process: a SIGTERM handler sets a flag, and the previous handler comes back on
    exit. Several processes must agree on the step to stop at: jax's preemption service
    (started by jax.distributed.initialize; it catches SIGTERM itself and tells every
    process) decides, through `reached_preemption_sync_point`."""

    def __init__(self):
        self.multi_process = jax.process_count() > 1
        self.requested = False
        self._previous_handler = None
        self._synced = self.multi_process and jax.distributed.is_initialized()

    def _on_sigterm(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "Preemption":
        if self.multi_process:
            if not self._synced:
                # Processes set up without jax.distributed.initialize have no service to
                # agree on a step, and stopping at different steps would hang them.
                log.warning("%d processes without jax.distributed: a SIGTERM will not save a checkpoint",
                            jax.process_count())
        elif threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        else:  # Python takes signal handlers from the main thread only
            log.warning("training outside the main thread: a SIGTERM will not save a checkpoint")
        return self

    def __exit__(self, *exc) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def reached(self, step: int) -> bool:
        """True when the run should save at `step` and stop (every process agrees)."""
        if self.multi_process:
            return self._synced and multihost_utils.reached_preemption_sync_point(step)
        return self.requested
