"""Evaluation of a `sync` workdir: the expert's offset search on the true mouths of held-out clips.

Model: the expert itself on the ground-truth mouth (`sync_offset_acc`, `sync_offset_err`,
`sync_auc`, and `sync_distance` / `sync_confidence`, see `t2v.evaluate.judges`). Baselines:
  chance  1 / (2M + 1) offset accuracy, scores that never prefer an offset
  energy  a detector without learning: the offset maximising the correlation of the mouth
          opening with the audio's frame energy, per window (the synthetic mouth opens with
          the speech envelope, so this can find the offset too)
"""

from __future__ import annotations

import numpy as np

from t2v import keypoints as kp
from t2v.data import pipeline
from t2v.evaluate import clip_entries, metrics
from t2v.evaluate.motion import load_eval_clips


def energy_offset_scores(clip: dict, window: int, max_shift: int) -> np.ndarray | None:
    """Correlation `[windows, 2M + 1]` of each judged window's mouth opening with the frame
    energy at offsets -M..M (the windows of `FrozenExpert.clip_offset_scores`)."""
    frames = len(clip["keypoints"])
    starts = list(range(max_shift, frames - window - max_shift + 1, window))
    if not starts:
        return None
    opening = np.asarray(kp.mouth_opening(clip["keypoints"]))
    energy = np.asarray(clip["energy"], np.float64)
    energy = np.pad(energy, (0, max(0, frames + max_shift - len(energy))), mode="edge")
    return np.asarray([[float(metrics.pearson(opening[s : s + window], energy[s + k : s + k + window]))
                        for k in range(-max_shift, max_shift + 1)] for s in starts])


def scored(scores_per_clip: list[np.ndarray], max_shift: int) -> dict[str, float]:
    from t2v.tasks.sync import offset_metrics

    windows = np.concatenate(scores_per_clip)
    result = {k: float(v) for k, v in offset_metrics(windows, max_shift).items()}
    pairs = [metrics.sync_distance_confidence(s) for s in scores_per_clip]
    result.update(sync_distance=float(np.mean([p[0] for p in pairs])),
                  sync_confidence=float(np.mean([p[1] for p in pairs])))
    return result


def evaluate_sync(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.tasks import get_task
    from t2v.tasks.sync import FrozenExpert

    task = get_task(config)
    expert = FrozenExpert(task, params, str(workdir))
    clips = load_eval_clips(workdir, config, settings)
    model, energy = [], []
    judged = []
    for clip in clips:
        scores = expert.clip_offset_scores(clip["mel"], clip["keypoints"], clip["reference"])
        if scores is None:
            continue
        judged.append(clip)
        model.append(scores)
        energy.append(energy_offset_scores(clip, task.window, task.max_shift))
    if not judged:
        from t2v.errors import InputError

        raise InputError(f"{workdir}: no held-out clip is long enough for one {task.window}-frame window "
                         f"with {task.max_shift} frames of audio either side")
    chance = 1.0 / (2 * task.max_shift + 1)
    flat = [np.zeros_like(s) for s in model]
    unseen = set(pipeline._languages(config.data.eval_langs))
    return {
        "model": {**scored(model, task.max_shift), "chance": chance},
        "baselines": {"energy": scored(energy, task.max_shift),
                      "chance": {**scored(flat, task.max_shift), "sync_offset_acc": chance}},
        "ground_truth": {},  # the expert's input is the truth: nothing else to score
        "judges": {},
        "clips": clip_entries(judged, unseen),
    }
