"""Evaluation of the audio-driven keypoint tasks other than `motion`: `a2k` and `pose_lstm`.

The same pinned held-out clips, references, baselines, ground truth, judge and per-clip
metrics as `t2v.evaluate.motion` (`sequence_metrics`), so the three tasks compare in one
table. What differs: neither task has a motion-controllable mode, so the model has no
`pose_follow` (the baselines keep theirs); `pose_diversity` is the std of head pose across
`eval.samples` samples (a2k's noise; 0 for the deterministic pose_lstm).
"""

from __future__ import annotations

import jax
import numpy as np

from t2v.data import pipeline
from t2v.evaluate import baselines, judges, metrics
from t2v.evaluate.motion import load_eval_clips, assemble_result, sample_model, sequence_metrics

BASELINES = ("static", "energy", "retrieval", "source_pose")


def evaluate_keypoint_task(workdir, config, params, settings: dict, seed: int) -> dict:
    """metrics.json's model / baselines / ground truth for an `a2k` or `pose_lstm` workdir."""
    from t2v.tasks import get_task

    task = get_task(config)
    clips = load_eval_clips(workdir, config, settings)
    judge, judge_record = None, None
    if settings["sync_judge_workdir"]:
        judge, judge_record = judges.load_sync_judge(settings["sync_judge_workdir"], workdir, config)
    training_clips = pipeline.load_clips(config, "train")
    fit = baselines.fit_energy_to_opening(training_clips)
    retrieval = baselines.RetrievalBaseline(training_clips)
    unseen = set(pipeline._languages(config.data.eval_langs))
    rng = jax.random.PRNGKey(seed)

    rows: dict[str, list[dict]] = {name: [] for name in ("model", *BASELINES, "ground_truth")}
    traces = []
    for index, clip in enumerate(clips):
        source = clips[(index + 1) % len(clips)]
        samples = sample_model(task, params, config, clip, jax.random.fold_in(rng, index), settings["samples"])
        outputs = {"model": samples[0], "static": baselines.static_baseline(clip),
                   "energy": baselines.energy_baseline(clip, fit), "retrieval": retrieval(clip),
                   "source_pose": baselines.source_pose_baseline(clip, fit, source), "ground_truth": clip["keypoints"]}
        for name, generated in outputs.items():
            row = sequence_metrics(generated, clip, judge, unseen)
            if name == "model":
                row["pose_diversity"] = metrics.pose_diversity(samples, clip["reference"])
            elif name != "ground_truth":
                frames = min(len(generated), len(source["keypoints"]))
                row["pose_diversity"] = 0.0
                row["pose_follow"] = metrics.pose_follow(generated[:frames], clip["reference"],
                                                         source["keypoints"][:frames], source["reference"])
            rows[name].append(row)
        if index < 2:
            traces.append({"clip_id": clip.get("clip_id"), **{k: np.asarray(v) for k, v in outputs.items()},
                           "reference": clip["reference"]})
    return assemble_result(rows, judge_record, clips, unseen, fit, config, traces)
