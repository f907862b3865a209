"""Evaluation of an `emotion` workdir: is the target emotion there, and are lips, face and
pose kept? Judged on held-out synthetic speakers (the eval plan of `pipeline.synthetic_plan`).

For every held-out clip, `eval.frames` frames spread over it, and every target emotion
(intensity 1): the model's output crop, the input crop unchanged (the copy baseline) and the
ground truth (`synthetic.with_emotion` of the clip, cropped in the input's boxes).

The judge is an `emotion_cls` workdir trained apart (`eval.emotion_judge_workdir`,
configs/emotion_cls.py:judge); the classifier the model trained against
(`model.emotion_cls_workdir`) is refused. Figures, per method:
  target_acc        fraction of (frame, target) the judge calls the target emotion; also
                    `target_acc_<emotion>` per target
  lmd_mouth         mean distance of the 20 mouth landmarks to the input's, in jaw widths
                    (the landmark detector of data preparation on each crop, 4x upsampled)
  lmd_face          the same over the jaw and nose (17 + 9 points): identity and framing kept
  pose_err          |difference| of the eye-line angle to the input's, degrees
  mouth_open_corr   correlation over a clip's frames of the mouth opening with the input's:
                    lips kept in time (a keypoint proxy of sync kept)
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from t2v import checkpoint
from t2v import keypoints as kp
from t2v.data import pipeline, synthetic
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError
from t2v.evaluate import metrics
from t2v.evaluate.judges import _same_path, training_speakers

log = logging.getLogger(__name__)

MOUTH = np.arange(48, 68)
FACE = np.r_[0:17, 27:36]
DETECT_UPSAMPLE = 4


def load_emotion_judge(judge_workdir: str, model_workdir, model_config):
    """(the frozen judge, its provenance); InputError for the model's own loss classifier,
    no judge, or a workdir that is not an `emotion_cls` one."""
    from t2v.tasks.emotion_cls import load_classifier

    if not judge_workdir:
        raise InputError(f"{model_workdir}: t2v eval of an emotion model needs a judge: "
                         "--config.eval.emotion_judge_workdir=DIR (configs/emotion_cls.py:judge)")
    loss_workdir = str(model_config.model.get("emotion_cls_workdir", ""))
    if loss_workdir and _same_path(loss_workdir, judge_workdir):
        raise InputError(f"eval.emotion_judge_workdir={judge_workdir}: is the emotion classifier the model in "
                         f"{model_workdir} trained against (model.emotion_cls_workdir={loss_workdir}); a judge must "
                         f"never have been its loss: train one apart (configs/emotion_cls.py:judge)")
    try:
        judge_config = checkpoint.read_config(judge_workdir)
    except FileNotFoundError as error:
        raise InputError(f"eval.emotion_judge_workdir={judge_workdir}: no trained workdir there ({error})") from None
    if judge_config.task != "emotion_cls":
        raise InputError(f"eval.emotion_judge_workdir={judge_workdir}: task {judge_config.task!r}, "
                         f"expected an 'emotion_cls' workdir")
    first, last = training_speakers(judge_config)
    record = {"workdir": str(judge_workdir), "task": "emotion_cls", "seed": int(judge_config.seed),
              "train_speakers": [first, last], "loss_classifier": None, "disjoint_from_loss_classifier": True}
    if loss_workdir:
        loss_config = checkpoint.read_config(loss_workdir)
        loss_first, loss_last = training_speakers(loss_config)
        overlap = not (last < loss_first or loss_last < first)
        record["loss_classifier"] = {"workdir": loss_workdir, "seed": int(loss_config.seed),
                                     "train_speakers": [loss_first, loss_last]}
        record["disjoint_from_loss_classifier"] = bool(int(loss_config.seed) != int(judge_config.seed) and not overlap)
        if not record["disjoint_from_loss_classifier"]:
            log.warning("emotion judge %s shares a seed or speakers with the loss classifier %s", judge_workdir,
                        loss_workdir)
    return load_classifier(judge_workdir), record


def crop_landmarks(detector, crop: np.ndarray) -> np.ndarray | None:
    """68 landmarks of a crop (in its pixels), found on it upsampled; None without a face."""
    side = crop.shape[0] * DETECT_UPSAMPLE
    big = np.asarray(Image.fromarray(crop).resize((side, side), Image.BICUBIC))
    boxes = detector.detect(big)
    if not len(boxes):
        return None
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return detector.fit(big, boxes[int(np.argmax(areas))]) / DETECT_UPSAMPLE


def keep_figures(points: list, reference: list) -> dict[str, float]:
    """lmd_mouth, lmd_face, pose_err, mouth_open_corr of one clip's landmark sequences
    against the input's (frames where either has no face are left out)."""
    pairs = [(p, r) for p, r in zip(points, reference) if p is not None and r is not None]
    if not pairs:
        return {"detected": 0.0}
    p, r = (np.stack(x) for x in zip(*pairs))
    jaw = np.linalg.norm(r[:, 16] - r[:, 0], axis=-1)[:, None]

    def angle(x):
        eyes = x[:, 42:48].mean(1) - x[:, 36:42].mean(1)
        return np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))

    figures = {"lmd_mouth": float(np.mean(np.linalg.norm(p[:, MOUTH] - r[:, MOUTH], axis=-1) / jaw)),
               "lmd_face": float(np.mean(np.linalg.norm(p[:, FACE] - r[:, FACE], axis=-1) / jaw)),
               "pose_err": float(np.mean(np.abs(angle(p) - angle(r)))),
               "detected": len(pairs) / len(points)}
    if len(pairs) >= 3:
        figures["mouth_open_corr"] = float(metrics.pearson(kp.mouth_opening(p), kp.mouth_opening(r)))
    return figures


def evaluate_emotion(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.landmarks import LandmarkDetector
    from t2v.tasks import get_task
    from t2v.tasks.emotion import clip_crops

    e = config.get("eval", {})
    judge, provenance = load_emotion_judge(str(e.get("emotion_judge_workdir", "")), workdir, config)
    config.model.emotion_cls_workdir = ""  # translating needs no classifier
    task = get_task(config)
    if judge.crop != task.crop:
        raise InputError(f"eval.emotion_judge_workdir: judges {judge.crop}-pixel crops, the model makes {task.crop}")
    plan = pipeline.synthetic_plan(config.data, "eval", settings["clips_seed"])
    if settings["max_clips"]:
        plan = plan[: settings["max_clips"]]
    per_clip = int(e.get("frames", 6))
    detector = LandmarkDetector()
    translate = jax.jit(task.translate)
    rows = {m: {t: [] for t in EMOTIONS} for m in ("model", "copy_input", "ground_truth")}
    keeps = {m: [] for m in rows}
    clips = []
    for kw in plan:
        clip = synthetic.make_clip(size=int(config.data.size), render=False, **kw)  # painted where judged
        indices = synthetic_indices(clip.num_frames, per_clip)
        source = clip_crops(clip, indices, task.crop)
        source_points = [crop_landmarks(detector, c) for c in source]
        for target_index, target in enumerate(EMOTIONS):
            out = np.asarray(translate(params, jnp.asarray(source, jnp.float32) / 255.0,
                                       jnp.full(len(source), target_index, jnp.int32),
                                       jnp.full(len(source), 0.0 if target == "neutral" else 1.0, jnp.float32)))
            outputs = {"model": (out * 255).round().astype(np.uint8), "copy_input": source,
                       "ground_truth": clip_crops(synthetic.with_emotion(clip, target, 1.0), indices, task.crop, clip)}
            for method, crops in outputs.items():
                called = np.argmax(judge.probabilities(crops), axis=-1)
                rows[method][target].append(called == target_index)
                if method == "copy_input":
                    points = source_points
                else:
                    points = [crop_landmarks(detector, c) for c in crops]
                if target != clip.emotion:  # keeping is measured where the emotion changed
                    keeps[method].append(keep_figures(points, source_points))
        clips.append({"clip_id": clip.clip_id, "speaker": clip.speaker, "language": clip.language,
                      "emotion": clip.emotion, "frames": indices})
    result = {m: summary(rows[m], keeps[m]) for m in rows}
    return {"model": result["model"], "baselines": {"copy_input": result["copy_input"]},
            "ground_truth": result["ground_truth"], "judges": {"emotion": provenance}, "clips": clips}


def synthetic_indices(num_frames: int, per_clip: int) -> list[int]:
    from t2v.tasks.emotion_cls import eval_frame_indices

    return eval_frame_indices(num_frames, per_clip)


def summary(rows: dict[str, list], keeps: list[dict]) -> dict[str, float]:
    """target_acc (all targets, and per target but the clip's own emotion counted too) and
    the averaged keep figures."""
    figures = {f"target_acc_{t}": float(np.mean(np.concatenate(v))) for t, v in rows.items() if v}
    figures["target_acc"] = float(np.mean(np.concatenate([np.concatenate(v) for v in rows.values() if v])))
    figures.update(metrics.average(keeps))
    return figures
