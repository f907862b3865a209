"""Evaluation of the audio-driven keypoint tasks other than `motion`: `a2k` and `pose_lstm`.

The same pinned held-out clips, references, baselines, ground truth, judge and per-clip
metrics as `t2v.evaluate.motion` (`sequence_metrics`), so the three tasks compare in one
table. What differs: neither task has a motion-controllable mode, so the model has no
`pose_follow` (the baselines keep theirs); `pose_diversity` is the std of head pose across
`eval.samples` samples (a2k's noise; 0 for the deterministic pose_lstm).
"""

from __future__ import annotations

from t2v.evaluate.motion import evaluate_audio_driven


def evaluate_keypoint_task(workdir, config, params, settings: dict, seed: int) -> dict:
    """metrics.json's model / baselines / ground truth for an `a2k` or `pose_lstm` workdir."""
    return evaluate_audio_driven(workdir, config, params, settings, seed, controllable=False)
