"""Which keypoints a clip's reference is: as inference takes it, or the privileged neutral face.

At inference the reference is the photo's detected landmarks: posed, perhaps mid-word, perhaps
smiling. Training and evaluation take it the same way by default (`data.reference = "detected"`):
one frame of the clip, as its keypoints were detected (for prepared datasets, the landmark
detector's; for synthetic clips, the rendered face's). The frame is pinned by the clip id, so
every process, epoch and evaluation picks the same one. `"neutral"` (the speaker's frontal
neutral face, which only a synthetic clip knows) stays as an ablation.
"""

from __future__ import annotations

import zlib

import numpy as np

REFERENCE_MODES = ("detected", "neutral")


def reference_frame_index(clip_id: str | None, num_frames: int) -> int:
    """The pinned frame of a clip that serves as its detected reference: a hash of the clip id
    (the middle frame when the clip has none), so it is anywhere in the clip, speech included."""
    if num_frames <= 0:
        raise ValueError(f"clip {clip_id!r}: no frames to take a reference from")
    if not clip_id:
        return num_frames // 2
    return zlib.crc32(str(clip_id).encode()) % num_frames


def reference_keypoints(clip: dict, points_px: np.ndarray, mode: str) -> tuple[np.ndarray, int | None]:
    """The reference of a decoded clip, in pixels `[68, 2]`, and the frame it came from.

    `points_px [T, 68, 2]` are the clip's keypoints. "detected": the pinned frame
    (`reference_frame_index`); "neutral": the clip's `neutral_keypoints`, or the median of its
    frames when it has none (frame None).
    """
    if mode == "detected":
        index = reference_frame_index(clip.get("clip_id"), len(points_px))
        return np.asarray(points_px[index], np.float32), index
    if mode == "neutral":
        neutral = clip.get("neutral_keypoints")
        if neutral is None:
            neutral = np.median(points_px, axis=0)
        return np.asarray(neutral, np.float32), None
    raise ValueError(f"data.reference={mode!r}: expected one of {REFERENCE_MODES}")
