"""Outputs that appear all together or not at all: staged under hidden names beside their
destinations and renamed only when everything succeeded."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

OVERLAY_SUFFIX = "_keypoints"  # OUT.mp4 -> OUT_keypoints.mp4


class StagedOutputs:
    """Output files written under hidden names and moved into place together on `commit`.

    Leaving the `with` block without a commit (an exception) removes whatever was staged,
    so destinations keep their earlier contents.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def stage(self, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.staged")
        self._staged.append((staging, destination))
        return staging

    def commit(self) -> None:
        for staging, destination in self._staged:
            os.replace(staging, destination)
        self._staged = []

    def __exit__(self, *exc_info) -> None:
        for staging, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()


def overlay_path(out: str | os.PathLike) -> Path:
    """Where `overlay=True` writes the debug video: OUT.mp4 -> OUT_keypoints.mp4."""
    out = Path(out)
    return out.with_name(f"{out.stem}{OVERLAY_SUFFIX}{out.suffix or '.mp4'}")
