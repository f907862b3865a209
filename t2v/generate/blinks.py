"""Blinks the output shows even when the motion model's keypoints hardly blink.

    points, closure = add_blinks(points, seed=0)   # [T, 68, 2] -> [T, 68, 2], closure [T] in [0, 1]

If the keypoints already blink at least `MIN_BLINKS_PER_MINUTE` times a minute they are
returned untouched; otherwise blinks are scheduled at random intervals of
`INTERVAL_SECONDS` (from `seed`: the same seed, the same blinks) and each closes and
opens the lids over 150-250 ms (a fast close, a brief hold, a slower opening, as real
blinks do), giving 10-20 blinks a minute.
"""

from __future__ import annotations

import numpy as np

from t2v import audio, keypoints

MIN_BLINKS_PER_MINUTE = 10.0
INTERVAL_SECONDS = (2.0, 6.0)  # between blink onsets; the mean, 4 s, is 15 blinks a minute
DURATION_SECONDS = (0.15, 0.25)
_CLOSE, _HOLD = 0.35, 0.15  # fractions of a blink spent closing and closed; the rest opens
_SEED_STREAM = 0xB1  # blinks draw from their own stream of the seed, apart from the motion's
# (upper lid point, lower lid point below it) of each eye, and where they meet: a little
# above the lower lid, since the upper lid does most of the travel.
_LID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))
_MEET = 0.2  # of the way from the lower lid to the upper one
_CLOSED_FRACTION = 0.5  # a frame whose aperture is below this share of the open level is closed


def count_blinks(points: np.ndarray) -> int:
    """Blink onsets in keypoints `[T, 68, 2]`: the mean eye aperture falling below half
    its open level (the clip's 90th percentile)."""
    aperture = np.asarray(keypoints.eye_aperture(np.asarray(points, np.float32))).mean(-1)
    closed = aperture < _CLOSED_FRACTION * max(float(np.percentile(aperture, 90)), 1e-6)
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def blink_closure(frames: int, seed: int, fps: int = audio.FPS) -> np.ndarray:
    """Lid closure `[frames]` in [0, 1] of blinks scheduled from `seed`.

    Each blink is fully closed on one frame (its peak lies on a frame, so no blink is
    lost between two frames): closing over 35% of its length, closed for 15%, opening
    over the remaining 50%, with smooth (smoothstep) transitions.
    """
    rng = np.random.default_rng([_SEED_STREAM, seed])
    closure = np.zeros(frames)
    times = np.arange(frames) / fps
    t = rng.uniform(0.5, INTERVAL_SECONDS[0])  # the first comes soon, as a person's would
    while t < frames / fps:
        length = rng.uniform(*DURATION_SECONDS)
        closed_at = np.round((t + _CLOSE * length) * fps) / fps
        start, opened = closed_at - _CLOSE * length, closed_at + _HOLD * length
        end = opened + (1 - _CLOSE - _HOLD) * length
        rise = np.clip((times - start) / (closed_at - start), 0, 1)
        fall = np.clip((end - times) / (end - opened), 0, 1)
        shape = np.where(times < closed_at, rise, np.where(times <= opened, 1.0, fall))
        closure = np.maximum(closure, shape * shape * (3 - 2 * shape))
        t += rng.uniform(*INTERVAL_SECONDS)
    return closure.astype(np.float32)


def close_lids(points: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Keypoints `[T, 68, 2]` with each eye's lids moved towards each other by `closure [T]`."""
    points = np.array(points, np.float32, copy=True)
    c = np.asarray(closure, np.float32)[:, None]
    for upper, lower in _LID_PAIRS:
        meet = points[:, lower] + _MEET * (points[:, upper] - points[:, lower])
        points[:, upper] += c * (meet - points[:, upper])
        points[:, lower] += c * (meet - points[:, lower])
    return points


def add_blinks(points: np.ndarray, seed: int = 0, fps: int = audio.FPS,
               min_per_minute: float = MIN_BLINKS_PER_MINUTE) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints `[T, 68, 2]` that blink, the closure `[T]` added: zeros when the keypoints
    already blinked `min_per_minute` times a minute or more)."""
    points = np.asarray(points, np.float32)
    frames = len(points)
    minutes = frames / fps / 60
    if frames == 0 or count_blinks(points) >= min_per_minute * minutes:
        return points, np.zeros(frames, np.float32)
    closure = blink_closure(frames, seed, fps)
    return close_lids(points, closure), closure
