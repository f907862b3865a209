"""Evaluation metrics and baselines on hand-made sequences with known answers."""

import numpy as np
import pytest

from t2v import evaluate
from t2v import keypoints as kp


def reference():
    return kp.FRONTAL_TEMPLATE.astype(np.float32)


def talking(opening, pose=None):
    """The template with its mouth opened to `opening [T]` and moved by `pose [T, 4]`."""
    points = evaluate.open_mouth(reference(), opening)
    return points if pose is None else kp.compose_pose(pose.astype(np.float32), points)


def wavy(frames, period, phase=0.0, scale=1.0):
    return scale * np.sin(2 * np.pi * (np.arange(frames) / period + phase))


def test_open_mouth_reaches_the_asked_opening():
    opening = 0.05 + 0.1 * np.abs(wavy(40, 9))
    np.testing.assert_allclose(kp.mouth_opening(talking(opening)), opening, atol=1e-5)


def test_pearson_and_lag():
    x = wavy(100, 13)
    assert evaluate.pearson(x, 2 * x + 3) == pytest.approx(1.0)
    assert evaluate.pearson(x, -x) == pytest.approx(-1.0)
    assert evaluate.pearson(x, np.zeros(100)) == 0.0
    signal = np.random.default_rng(0).normal(size=120)
    late = np.concatenate([np.zeros(3), signal[:-3]])  # 3 frames late
    assert evaluate.best_lag(late, signal) == 3
    assert evaluate.best_lag(signal, signal) == 0


def test_clip_metrics_of_truth_and_of_the_static_baseline():
    frames = 60
    opening = 0.05 + 0.1 * np.abs(wavy(frames, 11))
    pose = np.stack([0.02 * wavy(frames, 40), 0.05 * wavy(frames, 30), 0.03 * wavy(frames, 50), np.zeros(frames)], -1)
    clip = {"keypoints": talking(opening, pose), "reference": reference(), "energy": opening}
    perfect = evaluate.clip_metrics(clip["keypoints"], clip)
    assert perfect["mouth_corr"] == pytest.approx(1.0) and perfect["lmd"] == 0.0 and perfect["mouth_lag"] == 0
    static = evaluate.clip_metrics(evaluate.static_baseline(clip), clip)
    assert static["mouth_corr"] == 0.0 and static["lmd_mouth"] > 0.01 and static["identity_err"] < 1e-6
    # lmd_mouth ignores head pose: the right lips on a still head score perfectly.
    still = evaluate.clip_metrics(talking(opening), clip)
    assert still["lmd_mouth"] < 1e-4 and still["lmd"] > 0.01 and still["mouth_corr"] == pytest.approx(1.0)


def test_energy_baseline_fits_the_training_clips():
    clips = []
    for i in range(3):
        energy = np.abs(wavy(50, 7 + i, phase=0.1 * i))
        clips.append({"keypoints": talking(0.3 * energy + 0.02), "reference": reference(), "energy": energy})
    a, b = evaluate.fit_energy_to_opening(clips)
    assert a == pytest.approx(0.3, abs=1e-3) and b == pytest.approx(0.02, abs=1e-3)
    generated = evaluate.energy_baseline(clips[0], (a, b))
    np.testing.assert_allclose(generated, clips[0]["keypoints"], atol=1e-4)


def test_pose_diversity_and_pose_follow():
    frames = 50
    opening = np.full(frames, 0.05)
    pose = np.stack([0.02 * wavy(frames, 20), 0.1 * wavy(frames, 17), 0.05 * wavy(frames, 23), 0.04 * wavy(frames, 29)], -1)
    source = talking(opening, pose)
    same = np.stack([source, source])
    assert evaluate.pose_diversity(same, reference()) == pytest.approx(0.0, abs=1e-7)
    varied = np.stack([source, talking(opening, -pose)])
    assert evaluate.pose_diversity(varied, reference()) > 0.01
    # Another face following the source's pose follows it perfectly; a still one not at all.
    other_reference = reference() * 1.1
    follower = kp.compose_pose(pose.astype(np.float32), np.repeat(other_reference[None], frames, 0))
    assert evaluate.pose_follow(follower, other_reference, source, reference()) == pytest.approx(1.0, abs=1e-3)
    assert evaluate.pose_follow(np.repeat(other_reference[None], frames, 0), other_reference,
                                source, reference()) == 0.0


def test_missing_workdir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluate.evaluate(tmp_path / "nothing")
