"""Progress that suits where it is written.

On a terminal: a tqdm bar. Anywhere else (a cloud job's log, CI, `> log`): one plain line
every `interval` seconds and one at the end, never carriage-return frames.
"""

from __future__ import annotations

import sys
import time

import tqdm


class _LineProgress:
    """The part of tqdm's interface t2v uses, printing a line every `interval` seconds."""

    def __init__(self, total=None, initial=0, desc="", unit="it", interval=10.0, file=None, disable=False, **_):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.interval, self.file, self.disable = interval, file or sys.stderr, disable
        self.postfix: dict = {}
        self._start = self._last = time.monotonic()
        self._start_n = initial
        self._closed = False

    def update(self, n=1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print()

    def set_postfix(self, **kwargs) -> None:
        self.postfix = kwargs

    def _print(self) -> None:
        if self.disable:
            return
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {done} {self.unit} ({rate:.2f} {self.unit}/s, {elapsed:.0f} s){extra}",
              file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):  # tqdm(iterable) is not used through this class
        raise TypeError("progress() wraps counts, not iterables; call update()")


def progress(total=None, *, desc="", unit="it", initial=0, disable=False, interval=10.0, file=None, **kwargs):
    """A progress bar on a terminal, otherwise a line every `interval` seconds."""
    stream = file or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                         dynamic_ncols=True, **kwargs)
    return _LineProgress(total=total, initial=initial, desc=desc, unit=unit, interval=interval, file=stream,
                         disable=disable)


def track(iterable, total=None, **kwargs):
    """Yields `iterable`'s items under `progress(...)`: `for x in track(xs, desc=...)`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress(total, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1)
