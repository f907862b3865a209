"""Baselines a learned keypoint model must beat, each `[T, 68, 2]` in the clip's face frame.

  static        the reference keypoints, every frame
  energy        the reference with its mouth opened by a * frame_energy + b, (a, b) fit by
                least squares on the training clips
  retrieval     nearest-neighbour retrieval: for every frame, the training frame whose audio
                (log-mel, +-`RETRIEVAL_CONTEXT` frames, standardised) is closest; its pose-free
                mouth motion is copied onto the reference. A strong baseline: it speaks with
                real mouths of the training data, in time with the audio
  source_pose   the energy mouth, moved by the head pose of the motion source clip: what
                `pose_follow` (motion-controllable mode) must be compared with; it copies the
                source's pose exactly, so it scores ~1 there

The reference is always the clip's, taken as inference takes it (`t2v.data.references`).
"""

from __future__ import annotations

import numpy as np

from t2v import keypoints as kp
from t2v.audio import MELS_PER_FRAME

LOWER_LIP = np.asarray([55, 56, 57, 58, 59, 65, 66, 67])  # move down to open the mouth
MOUTH_INDEX = np.asarray(kp.MOUTH)
RETRIEVAL_CONTEXT = 2  # video frames of audio either side of the retrieved frame
RETRIEVAL_QUERY_BLOCK = 512  # query frames per distance matrix: bounded memory


def static_baseline(clip: dict) -> np.ndarray:
    """The reference keypoints for every frame: `[T, 68, 2]`."""
    return np.repeat(clip["reference"][None], len(clip["keypoints"]), axis=0)


def fit_energy_to_opening(clips: list[dict]) -> tuple[float, float]:
    """(a, b) minimising sum (a * energy + b - mouth_opening)^2 over all frames of `clips`."""
    energy = np.concatenate([c["energy"][: len(c["keypoints"])] for c in clips])
    opening = np.concatenate([kp.mouth_opening(c["keypoints"])[: len(energy)] for c in clips])
    design = np.stack([energy, np.ones_like(energy)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, opening[: len(design)], rcond=None)
    return float(a), float(b)


def open_mouth(reference: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """The reference `[68, 2]` with its lower lip moved down to each `opening [T]` -> `[T, 68, 2]`."""
    points = np.repeat(reference[None], len(opening), axis=0).astype(np.float32)
    delta = (opening - kp.mouth_opening(reference)) * kp.face_size(reference)
    points[:, LOWER_LIP, 1] += delta[:, None]  # face frame: y points down the upright reference
    return points


def energy_baseline(clip: dict, fit: tuple[float, float]) -> np.ndarray:
    a, b = fit
    frames = len(clip["keypoints"])
    return open_mouth(clip["reference"], a * clip["energy"][:frames] + b)


def source_pose_baseline(clip: dict, fit: tuple[float, float], source: dict) -> np.ndarray:
    """The energy mouth moved by the source clip's head pose (relative to its own reference),
    over the frames both clips have: `[min(T, T_source), 68, 2]`."""
    frames = min(len(clip["keypoints"]), len(source["keypoints"]))
    pose, _ = kp.split_pose(source["keypoints"][:frames], source["reference"])
    return np.asarray(kp.compose_pose(np.asarray(pose, np.float32), energy_baseline(clip, fit)[:frames]))


def audio_frame_features(mel: np.ndarray, frames: int, context: int = RETRIEVAL_CONTEXT) -> np.ndarray:
    """Per video frame, the mean log-mel of its 4 mel rows and of `context` frames either side
    (edges repeated): mel `[4T', 80]` -> `[frames, (2 context + 1) * 80]`."""
    usable = min(frames, len(mel) // MELS_PER_FRAME)
    per_frame = mel[: usable * MELS_PER_FRAME].reshape(usable, MELS_PER_FRAME, -1).mean(1)
    if usable < frames:  # audio shorter than the keypoints: repeat the last frame's
        per_frame = np.concatenate([per_frame, np.repeat(per_frame[-1:], frames - usable, 0)])
    padded = np.pad(per_frame, ((context, context), (0, 0)), mode="edge")
    return np.concatenate([padded[i : i + frames] for i in range(2 * context + 1)], axis=1).astype(np.float32)


class RetrievalBaseline:
    """Nearest-neighbour retrieval of mouth motion by audio, over every frame of the training clips."""

    def __init__(self, training_clips: list[dict]):
        features = [audio_frame_features(c["mel"], len(c["keypoints"])) for c in training_clips]
        self.mouths = np.concatenate([c["mouth"] for c in training_clips]).astype(np.float32)  # [N, 20, 2]
        features = np.concatenate(features)
        self.mean, self.std = features.mean(0), features.std(0) + 1e-6
        self.features = (features - self.mean) / self.std
        self.squared_norms = (self.features**2).sum(1)

    def nearest(self, mel: np.ndarray, frames: int) -> np.ndarray:
        """Index `[frames]` of the closest training frame for each frame of the query audio."""
        query = (audio_frame_features(mel, frames) - self.mean) / self.std
        found = []
        for lo in range(0, frames, RETRIEVAL_QUERY_BLOCK):
            block = query[lo : lo + RETRIEVAL_QUERY_BLOCK]
            distances = self.squared_norms[None] - 2.0 * block @ self.features.T  # + |q|^2: same argmin
            found.append(np.argmin(distances, axis=1))
        return np.concatenate(found)

    def __call__(self, clip: dict) -> np.ndarray:
        """The clip's reference with the retrieved mouth motion: `[T, 68, 2]` (no head motion)."""
        frames = len(clip["keypoints"])
        points = np.repeat(clip["reference"][None], frames, axis=0).astype(np.float32)
        points[:, MOUTH_INDEX] += self.mouths[self.nearest(clip["mel"], frames)]
        return points
