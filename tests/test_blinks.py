"""The blink controller (`t2v.generate.blinks`): how often, how long, deterministic, and
untouched keypoints when they already blink."""

import numpy as np

from t2v import generate, keypoints


def still_face(frames: int) -> np.ndarray:
    return np.broadcast_to(keypoints.FRONTAL_TEMPLATE * 40 + 100, (frames, 68, 2)).astype(np.float32)


def test_blinks_are_added_at_a_natural_rate_and_shape():
    frames = 25 * 60
    points, closure = generate.add_blinks(still_face(frames), seed=3)
    count = generate.count_blinks(points)
    assert 10 <= count <= 30, count
    # Each blink is closed on at least one frame and lasts 150-250 ms (4-7 frames at 25 fps).
    closed = closure > 0
    starts = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    ends = np.flatnonzero(closed[:-1] & ~closed[1:]) + 1
    lengths = ends[: len(starts)] - starts[: len(ends)]
    assert lengths.min() >= 3 and lengths.max() <= 7, lengths
    assert np.all([closure[s:e].max() > 0.99 for s, e in zip(starts, ends)])
    gaps = np.diff(starts) / 25
    assert gaps.min() >= 1.7 and gaps.max() <= 6.1, gaps
    aperture = np.asarray(keypoints.eye_aperture(points)).mean(-1)
    assert aperture.min() < 0.05 < 0.25 < aperture.max()  # fully closed, and open otherwise


def test_the_seed_decides_the_blinks():
    first = generate.blink_closure(500, seed=1)
    np.testing.assert_array_equal(generate.blink_closure(500, seed=1), first)
    assert not np.array_equal(generate.blink_closure(500, seed=2), first)


def test_keypoints_that_blink_enough_are_left_alone():
    face = still_face(25 * 20)
    blinking = generate.close_lids(face, generate.blink_closure(len(face), seed=0))
    assert generate.count_blinks(blinking) >= 4
    points, closure = generate.add_blinks(blinking, seed=5)
    np.testing.assert_array_equal(points, blinking)
    assert not closure.any()
