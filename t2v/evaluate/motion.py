"""Evaluation of a `motion` workdir: audio-driven and motion-controllable keypoints vs baselines.

Per held-out clip, the model in audio-driven mode (latents from the prior at
`sample.temperature`; `eval.samples` samples, the first one scored), every baseline
(`t2v.evaluate.baselines`) and the ground truth get the same metrics:
  mouth_corr, mouth_corr_unseen_language, lmd, lmd_mouth, mouth_lag, identity_err
                   (`t2v.evaluate.metrics.mouth_metrics`)
  sync_offset_acc, sync_distance, sync_confidence   from the sync judge (`t2v.evaluate.judges`),
                   when `eval.sync_judge_workdir` names one
  audio_pose_corr  frame energy vs head-motion speed; blink_rate  blinks per minute
  pose_follow      head pose vs that of a motion source (the next held-out clip): the model in
                   motion-controllable mode, the baselines as they are
  pose_diversity   std of head pose across the model's prior samples (0 for every baseline)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from t2v.data import pipeline
from t2v.evaluate import baselines, clip_entries, judges, metrics

BUCKET_FRAMES = 32  # clip lengths are padded (with silence) to a multiple of this: fewer compilations


def evaluate_motion(workdir, config, params, settings: dict, seed: int) -> dict:
    return evaluate_audio_driven(workdir, config, params, settings, seed, controllable=True)


def evaluate_audio_driven(workdir, config, params, settings: dict, seed: int, controllable: bool) -> dict:
    """metrics.json's model / baselines / ground truth for any audio-driven keypoint task.

    `controllable`: the task has a motion-controllable mode (`generate_from_source`), which
    scores the model's `pose_follow`; without one the model has none (the baselines keep theirs).
    """
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

    rows: dict[str, list[dict]] = {name: [] for name in ("model", "static", "energy", "retrieval", "source_pose",
                                                         "ground_truth")}
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
                if controllable:
                    row["pose_follow"] = controlled_pose_follow(task, params, clip, source)
            elif name != "ground_truth":
                row["pose_diversity"] = 0.0
                row["pose_follow"] = follow(generated, clip, source)
            rows[name].append(row)
        if index < 2:
            traces.append({"clip_id": clip.get("clip_id"), **{k: np.asarray(v) for k, v in outputs.items()},
                           "reference": clip["reference"]})
    return assemble_result(rows, judge_record, clips, unseen, fit, config, traces)


def assemble_result(rows: dict, judge_record, clips, unseen: set[str], fit, config, traces: list[dict]) -> dict:
    """metrics.json's body from the per-clip rows of the model, the baselines and the truth."""
    rows = dict(rows)
    truth = metrics.average(rows.pop("ground_truth"))
    model = metrics.average(rows.pop("model"))
    return {
        "model": model,
        "baselines": {name: metrics.average(r) for name, r in rows.items()},
        "ground_truth": truth,
        "judges": {"sync": judge_record} if judge_record else {},
        "clips": clip_entries(clips, unseen),
        "energy_fit": {"a": fit[0], "b": fit[1]},
        "temperature": float(config.sample.temperature),
        "traces": trace_summary(traces),
    }


def load_eval_clips(workdir, config, settings: dict) -> list[dict]:
    clips = pipeline.load_clips(config, "eval", seed=settings["clips_seed"])
    if settings["max_clips"]:
        clips = clips[: settings["max_clips"]]
    if not clips:
        from t2v.errors import InputError

        raise InputError(f"{workdir}: the eval split ({pipeline.source_name(config, 'eval')}) has no readable clips")
    return clips


def sequence_metrics(points: np.ndarray, clip: dict, judge, unseen: set[str]) -> dict[str, float]:
    """Every per-clip metric of a sequence `[T', 68, 2]` (T' <= T: frames past it are not scored)."""
    frames = len(points)
    truth = {**clip, "keypoints": clip["keypoints"][:frames], "mel": clip["mel"][: 4 * frames]}
    row = metrics.mouth_metrics(points, truth["keypoints"], clip["reference"])
    if clip.get("language") in unseen:
        row["mouth_corr_unseen_language"] = row["mouth_corr"]
    row["audio_pose_corr"] = metrics.audio_pose_correlation(points, clip["reference"], clip["energy"][:frames])
    row["blink_rate"] = metrics.blink_rate(points)
    if judge is not None:
        row.update(judges.judge_clip(judge, truth, points))
    return row


def follow(generated: np.ndarray, clip: dict, source: dict) -> float:
    frames = min(len(generated), len(source["keypoints"]))
    return metrics.pose_follow(generated[:frames], clip["reference"], source["keypoints"][:frames], source["reference"])


def sample_model(task, params, config, clip: dict, rng, count: int) -> np.ndarray:
    """`count` audio-driven samples `[count, T, 68, 2]` for the clip's audio and reference."""
    frames = len(clip["keypoints"])
    mel, reference = padded_mel(clip["mel"], frames)[None], clip["reference"][None]
    chunk = int(config.sample.get("chunk_frames", 256))
    return np.stack([task.generate_audio_driven(params, jax.random.fold_in(rng, s), mel, reference,
                                                chunk_frames=chunk)["keypoints"][0, :frames]
                     for s in range(max(count, 1))])


def padded_mel(mel: np.ndarray, frames: int) -> np.ndarray:
    """The first `frames` frames of mel, then silence up to a multiple of `BUCKET_FRAMES`:
    what log_mel gives for the wave followed by silence. Clips of similar length then
    share one compilation; outputs past `frames` are dropped."""
    return pipeline.mel_span(mel[: 4 * frames], 0, -(-frames // BUCKET_FRAMES) * BUCKET_FRAMES)


def controlled_pose_follow(task, params, clip: dict, source: dict) -> float:
    """Motion-controllable mode on one clip: head pose from `source`, lips from the clip's audio."""
    frames = min(len(clip["keypoints"]), len(source["keypoints"]))
    padding = -frames % BUCKET_FRAMES
    source_points = np.pad(source["keypoints"][:frames], ((0, padding), (0, 0), (0, 0)), mode="edge")
    generated = task.generate_from_source(
        params, jnp.asarray(padded_mel(clip["mel"], frames)[None]), jnp.asarray(clip["reference"][None]),
        jnp.asarray(padded_mel(source["mel"], frames)[None]), jnp.asarray(source_points[None]),
        jnp.asarray(source["reference"][None]))["keypoints"][0, :frames]
    return follow(np.asarray(generated), clip, source)


def trace_summary(traces: list[dict]) -> list[dict]:
    """For the report: mouth opening and head pose over time of the first clips, per method."""
    from t2v import keypoints as kp

    out = []
    for trace in traces:
        methods = [k for k in trace if k not in ("clip_id", "reference")]
        out.append({
            "clip_id": trace["clip_id"],
            "mouth_opening": {m: np.round(np.asarray(kp.mouth_opening(trace[m])), 4).tolist() for m in methods},
            "head_pose": {m: np.round(metrics.head_pose(trace[m], trace["reference"]), 4).tolist() for m in methods},
            "keypoints": {m: np.round(trace[m][:: max(1, len(trace[m]) // 4)][:4], 4).tolist()
                          for m in ("model", "ground_truth")},
        })
    return out
