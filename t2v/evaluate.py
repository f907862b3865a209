"""Evaluation of a trained `motion` (or `sync`) workdir on held-out clips, against baselines.

    metrics = evaluate("/tmp/motion")        # also writes /tmp/motion/eval/metrics.json

Held out: the eval split of `t2v.data.pipeline` (unseen speakers, unseen sentences, and
`data.eval_langs`, a language never trained on), whole clips, not windows. Keypoints are
compared in the reference's face frame (face units: the jaw spans about [-1, 1]).

Metrics of a motion model (audio-driven mode: latents from the prior at
`sample.temperature`, unless said otherwise), each also computed for every baseline:
  mouth_corr        Pearson r of generated vs true mouth opening over a clip, mean over clips
  mouth_corr_unseen_language   the same over the clips in `data.eval_langs` only
  lmd               mean distance of all 68 points, face units, head pose included (a
                    sampled head pose that differs from the true one counts as error)
  lmd_mouth         mean distance of the 20 mouth points with each face's head pose
                    removed (`pipeline.pose_free_mouth`): the lips, not the head
  mouth_lag         mean |lag| in frames (within +-`LAG_SEARCH`) maximising the correlation
                    of generated and true mouth opening: 0 = in time
  sync_offset_acc   a trained sync expert (`model.sync_workdir`, or `sync_workdir=`) finds
                    the true audio offset of the generated mouth among +-M frames (chance
                    1 / (2M + 1)); absent when there is no expert: the model is never
                    scored by itself
  pose_diversity    std of head pose (split_pose: log-scale, angle, tx, ty) across
                    `SAMPLES` prior samples for the same audio, mean over frames, components
  identity_err      mean distance of the generated face's pose-free mean shape (eyes, brows,
                    nose, jaw: not the mouth) to the reference, face units
  pose_follow       motion-controllable mode: latents encoded from another held-out clip
                    (the motion source), decoded with this clip's audio and reference:
                    Pearson r of generated vs source head pose, mean over components, clips
Baselines (`baselines`):
  static   the reference keypoints, every frame
  energy   the reference with its mouth opened by a * frame_energy + b, (a, b) fit by
           least squares on the training clips
`ground_truth` holds the metrics a perfect model would get where they are not trivial
(sync_offset_acc, pose_diversity, identity_err): the ceiling of the expert and the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2v import checkpoint
from t2v import keypoints as kp
from t2v.data import pipeline
from t2v.tasks.motion import landmark_distance, pearson  # numpy here, jax in the task's eval step

log = logging.getLogger(__name__)

SAMPLES = 3  # prior samples per clip for pose_diversity
LAG_SEARCH = 10  # frames either way for mouth_lag
BUCKET_FRAMES = 32  # clip lengths are padded (with silence) to a multiple of this: fewer compilations
NON_MOUTH_INDEX = np.asarray([i for i in range(kp.NUM_POINTS) if i not in kp.MOUTH])
LOWER_LIP = np.asarray([55, 56, 57, 58, 59, 65, 66, 67])  # move down to open the mouth


# --------------------------------------------------------------------------- metric functions


def best_lag(generated: np.ndarray, target: np.ndarray, search: int = LAG_SEARCH) -> int:
    """The shift (frames; > 0: generated late) maximising the correlation of two `[T]` signals."""
    scores = []
    for lag in range(-search, search + 1):
        a = generated[max(lag, 0) : len(generated) + min(lag, 0)]
        b = target[max(-lag, 0) : len(target) + min(-lag, 0)]
        scores.append(float(pearson(a, b)) if len(a) > 2 else -np.inf)
    return int(np.argmax(scores)) - search


def head_pose(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`[..., T, 68, 2]`, reference `[68, 2]` -> `[..., T, 4]` (log-scale, angle, tx, ty)."""
    return np.asarray(kp.split_pose(points, reference)[0])


def identity_error(points: np.ndarray, reference: np.ndarray) -> float:
    """Distance of the mean pose-free non-mouth shape of `points [T, 68, 2]` to the reference."""
    mean_shape = np.asarray(kp.split_pose(points, reference)[1]).mean(0)
    return float(landmark_distance(mean_shape, reference)[NON_MOUTH_INDEX].mean())


def clip_metrics(generated: np.ndarray, clip: dict) -> dict[str, float]:
    """The per-clip metrics of one generated sequence `[T, 68, 2]` against the clip's truth."""
    truth, reference = clip["keypoints"], clip["reference"]
    generated_mouth, true_mouth = kp.mouth_opening(generated), kp.mouth_opening(truth)
    mouth_shapes = [pipeline.pose_free_mouth(points, reference) for points in (generated, truth)]
    return {
        "mouth_corr": float(pearson(generated_mouth, true_mouth)),
        "lmd": float(landmark_distance(generated, truth).mean()),
        "lmd_mouth": float(np.sqrt(((mouth_shapes[0] - mouth_shapes[1]) ** 2).sum(-1)).mean()),
        "mouth_lag": abs(best_lag(generated_mouth, true_mouth)),
        "identity_err": identity_error(generated, reference),
    }


def pose_diversity(samples: np.ndarray, reference: np.ndarray) -> float:
    """Std of head pose across samples `[S, T, 68, 2]`, mean over frames and pose components."""
    return float(head_pose(samples, reference).std(axis=0).mean())


def pose_follow(generated: np.ndarray, reference: np.ndarray, source: np.ndarray, source_reference: np.ndarray) -> float:
    """Mean over pose components of Pearson r between generated and source head pose over time."""
    return float(pearson(head_pose(generated, reference), head_pose(source, source_reference), axis=0).mean())


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for row in rows for k in row})
    return {k: float(np.mean([row[k] for row in rows if k in row])) for k in keys}


# --------------------------------------------------------------------------- baselines


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


# --------------------------------------------------------------------------- evaluation


def evaluate(workdir: str | Path, config: ml_collections.ConfigDict | None = None, *,
             sync_workdir: str | None = None, max_clips: int | None = None, seed: int = 0) -> dict:
    """Metrics of the workdir's model and the baselines on the held-out clips.

    Writes `workdir/eval/metrics.json` and returns the same dict: the model's metrics at
    the top level, `baselines: {static: {...}, energy: {...}}`, `ground_truth: {...}`,
    and `step`, `num_clips`, `sync_expert`.
    """
    from t2v.tasks import get_task

    workdir = Path(workdir)
    config = checkpoint.read_config(workdir) if config is None else config
    task = get_task(config)
    params = checkpoint.load_params(workdir)
    step = checkpoint.saved_steps(workdir)[-1]
    clips = pipeline.load_clips(config, "eval")[:max_clips]
    if not clips:
        raise ValueError(f"{workdir}: the eval split has no readable clips")
    if config.task == "sync":
        result = evaluate_sync(task, params, clips)
    elif config.task == "motion":
        result = evaluate_motion(task, params, config, clips, sync_workdir, seed)
    else:
        raise ValueError(f"{workdir}: t2v.evaluate knows the tasks 'motion' and 'sync', not {config.task!r}")
    result = {"step": step, "num_clips": len(clips), **result}
    out = workdir / "eval" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    log.info("wrote %s", out)
    return result


def evaluate_sync(task, params, clips: list[dict]) -> dict:
    """A sync expert on held-out clips: offset search on the true mouth, and chance."""
    from t2v.tasks.sync import FrozenExpert

    expert = FrozenExpert(task, params, "")
    rows = [expert.offset_accuracy(c["mel"], c["keypoints"], c["reference"]) for c in clips]
    return {**average([r for r in rows if r]), "chance": 1.0 / (2 * task.max_shift + 1)}


def evaluate_motion(task, params, config, clips: list[dict], sync_workdir: str | None, seed: int) -> dict:
    sync_workdir = config.model.get("sync_workdir", "") if sync_workdir is None else sync_workdir
    expert = None
    if sync_workdir:
        from t2v.tasks.sync import load_expert

        expert = load_expert(sync_workdir)

    training_clips = pipeline.load_clips(config, "train")
    fit = fit_energy_to_opening(training_clips)
    unseen = set(pipeline._languages(config.data.eval_langs))
    chunk = int(config.sample.get("chunk_frames", 256))
    rng = jax.random.PRNGKey(seed)

    methods = {"model": [], "static": [], "energy": [], "ground_truth": []}
    for index, clip in enumerate(clips):
        frames = len(clip["keypoints"])
        mel, reference = padded_mel(clip["mel"], frames)[None], clip["reference"][None]
        samples = np.stack([
            task.generate_audio_driven(params, jax.random.fold_in(rng, index * SAMPLES + s), mel, reference,
                                       chunk_frames=chunk)["keypoints"][0, :frames]
            for s in range(SAMPLES)])
        outputs = {"model": samples[0], "static": static_baseline(clip), "energy": energy_baseline(clip, fit),
                   "ground_truth": clip["keypoints"]}
        source = clips[(index + 1) % len(clips)]
        for name, generated in outputs.items():
            row = clip_metrics(generated, clip)
            if clip.get("language") in unseen:
                row["mouth_corr_unseen_language"] = row["mouth_corr"]
            if expert is not None:
                row.update({k: v for k, v in expert.offset_accuracy(clip["mel"], generated, clip["reference"]).items()
                            if k == "sync_offset_acc"})
            row["pose_diversity"] = pose_diversity(samples, clip["reference"]) if name == "model" else 0.0
            if name == "model":
                row["pose_follow"] = controlled_pose_follow(task, params, clip, source)
            elif name != "ground_truth":
                frames = min(len(clip["keypoints"]), len(source["keypoints"]))
                row["pose_follow"] = pose_follow(generated[:frames], clip["reference"],
                                                 source["keypoints"][:frames], source["reference"])
            methods[name].append(row)

    truth = average(methods["ground_truth"])
    return {
        **average(methods["model"]),
        "baselines": {"static": average(methods["static"]), "energy": average(methods["energy"])},
        "ground_truth": {k: truth[k] for k in ("sync_offset_acc", "identity_err") if k in truth},
        "energy_fit": {"a": fit[0], "b": fit[1]},
        "sync_expert": str(sync_workdir) if expert is not None else None,
        "temperature": float(config.sample.temperature),
    }


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
    return pose_follow(np.asarray(generated), clip["reference"], source["keypoints"][:frames], source["reference"])
