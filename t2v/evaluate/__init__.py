"""`t2v eval`: one harness for every task workdir, scored on pinned held-out clips.

    result = evaluate("/tmp/motion")      # writes /tmp/motion/eval/metrics.json and report.html

`DIR/eval/metrics.json`:
  model         the workdir's model's metrics
  baselines     {name: metrics}: methods that can win (`t2v.evaluate.baselines` for keypoints)
  ground_truth  the same metrics of the held-out truth, scored by the same judges
  judges        {name: provenance}: models that scored it and never served as its loss
  strongest_baseline  {metric: baseline}: the best baseline on each metric with a direction
  headline      the task's headline metric and whether the model beats every baseline on it
  clips         the pinned list of held-out clips (unseen speakers, unseen sentences, and the
                unseen language `data.eval_langs`), in order, with each reference frame
  config        what the evaluation ran with (temperature, samples, reference, judge, ...)
  step, num_clips

Held out: the eval split of `t2v.data.pipeline` (deterministic for the data config), whole
clips, not windows. The references are always taken as inference takes them: a pinned frame
of each clip (`data.reference = "detected"`), whatever the model trained with. Metrics are
defined once, in `t2v.evaluate.metrics`; per task:
  motion  `t2v.evaluate.motion`: lips, head pose, blinks, identity, judged sync
  a2k, pose_lstm  `t2v.evaluate.keypoint_tasks`: the same, without a motion-controllable mode
  sync    `t2v.evaluate.sync`: offset search on the true mouth vs an audio-energy detector
  render  `t2v.evaluate.render`: PSNR, SSIM, L1, mouth L1 vs copying the reference frame
  emotion `t2v.evaluate.emotion`: target emotion by an independent judge; lips, face, pose kept
  au      `t2v.evaluate.au`: speech AUs by an AU judge trained apart, and a geometric proxy
  emotion_cls, au_cls  `t2v.evaluate.classifiers`: accuracy / AU error against held-out labels
          vs majority, prior and chance (emotions) or mean intensity and the proxy (AUs)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import ml_collections

from t2v import checkpoint
from t2v.au import SPEECH_AUS
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError
from t2v.evaluate.baselines import energy_baseline, fit_energy_to_opening, open_mouth, static_baseline  # noqa: F401
from t2v.evaluate.metrics import average, best_lag, mouth_metrics, pearson, pose_diversity, pose_follow  # noqa: F401

log = logging.getLogger(__name__)

EVALUATED_TASKS = ("motion", "sync", "render", "a2k", "pose_lstm", "emotion")
HIGHER_IS_BETTER = {"mouth_corr", "mouth_corr_unseen_language", "sync_offset_acc", "sync_confidence", "sync_auc",
                    "pose_follow", "psnr", "ssim", "target_acc"}
LOWER_IS_BETTER = {"lmd", "lmd_mouth", "mouth_lag", "sync_distance", "sync_offset_err", "identity_err", "l1",
                   "mouth_l1", "lmd_face", "pose_err"}
HEADLINE = {"motion": "mouth_corr", "sync": "sync_offset_acc", "render": "ssim", "a2k": "mouth_corr",
            "pose_lstm": "mouth_corr", "emotion": "target_acc"}


# The au task (`t2v.evaluate.au`): speech action units read by an AU judge trained apart.
EVALUATED_TASKS += ("au",)
HIGHER_IS_BETTER |= {"au_acc", "au_f1", "au_corr", "proxy_au_acc", "proxy_au_f1", "proxy_au_corr"}
LOWER_IS_BETTER |= {"au_err", "proxy_au_err"}
HEADLINE["au"] = "au_corr"

# The classifiers (`t2v.evaluate.classifiers`): scored against their held-out labels.
EVALUATED_TASKS += ("emotion_cls", "au_cls")
HIGHER_IS_BETTER |= {"acc", "balanced_acc"} | {f"acc_{e}" for e in EMOTIONS} | {f"au_corr_{a}" for a in SPEECH_AUS}
LOWER_IS_BETTER |= {"loss"} | {f"au_err_{a}" for a in SPEECH_AUS}
HEADLINE.update(emotion_cls="acc", au_cls="au_corr")


def evaluate(workdir: str | Path, config: ml_collections.ConfigDict | None = None, *,
             sync_judge_workdir: str | None = None, max_clips: int | None = None, seed: int = 0,
             report: bool = True) -> dict:
    """Evaluates the workdir's model (its latest EMA parameters) and writes `eval/metrics.json`
    (and `eval/report.html` with `report`); returns the same dict. `config` defaults to the
    workdir's; `sync_judge_workdir` overrides `config.eval.sync_judge_workdir`."""
    from t2v.evaluate import emotion, keypoint_tasks, motion, render, sync

    workdir = checkpoint.workdir_path(workdir)  # gs:// too
    config = checkpoint.read_config(workdir) if config is None else config
    config = ml_collections.ConfigDict(config.to_dict())
    settings = eval_settings(config, sync_judge_workdir, max_clips)
    if config.task not in EVALUATED_TASKS:
        raise InputError(f"{workdir / 'config.json'}: t2v eval knows the tasks {EVALUATED_TASKS}, not {config.task!r}")
    params = checkpoint.load_params(workdir)
    step = checkpoint.saved_steps(workdir)[-1]
    evaluator = {"motion": motion.evaluate_motion, "sync": sync.evaluate_sync, "render": render.evaluate_render,
                 "a2k": keypoint_tasks.evaluate_keypoint_task, "pose_lstm": keypoint_tasks.evaluate_keypoint_task,
                 "emotion": emotion.evaluate_emotion}
    if config.task == "au":
        from t2v.evaluate import au as au_evaluation

        evaluator["au"] = au_evaluation.evaluate_au
    if config.task in ("emotion_cls", "au_cls"):
        from t2v.evaluate import classifiers

        evaluator.update(emotion_cls=classifiers.evaluate_emotion_cls, au_cls=classifiers.evaluate_au_cls)
    result = evaluator[config.task](workdir, config, params, settings, seed)
    traces = result.pop("traces", [])  # curves and frames for the report, kept out of metrics.json
    result = {"step": step, "num_clips": len(result["clips"]), "task": config.task, **result,
              "config": {**settings, "seed": seed, "task": config.task},
              "clips_sha1": hashlib.sha1(json.dumps(result["clips"], sort_keys=True).encode()).hexdigest()}
    result.update(compare(result, HEADLINE[config.task]))
    out = workdir / "eval" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    (out.parent / "traces.json").write_text(json.dumps(traces, default=float) + "\n")
    log.info("wrote %s", out)
    if report:
        from t2v.evaluate import report as report_lib

        report_lib.write_report(workdir, result, traces)
    return result


def eval_settings(config: ml_collections.ConfigDict, sync_judge_workdir: str | None, max_clips: int | None) -> dict:
    """The evaluation's own settings: `config.eval` (absent keys take their defaults), with the
    references as at inference."""
    e = config.get("eval", ml_collections.ConfigDict())
    judge = str(e.get("sync_judge_workdir", "")) if sync_judge_workdir is None else str(sync_judge_workdir)
    clips = int(e.get("max_clips", 0)) if max_clips is None else int(max_clips)
    trained = str(config.data.get("reference", "neutral")) if "data" in config else None
    if "data" in config:
        config.data.reference = "detected"  # always: inference never sees a privileged neutral face
    return {"sync_judge_workdir": judge, "max_clips": clips, "samples": int(e.get("samples", 3)),
            "reference": "detected", "trained_reference": trained,
            # The held-out list does not move with the training seed: every seed of a sweep is
            # scored on the same clips (synthetic data: the eval plan of this data seed).
            "clips_seed": int(e.get("clips_seed", 0))}


def clip_entries(clips: list[dict], unseen_languages: set[str]) -> list[dict]:
    """The pinned list of evaluated clips, as written into metrics.json."""
    return [{"clip_id": c.get("clip_id", f"#{i}"), "speaker": c.get("speaker"), "language": c.get("language"),
             "frames": int(len(c["keypoints"])), "reference_frame": c.get("reference_frame"),
             "unseen_language": c.get("language") in unseen_languages} for i, c in enumerate(clips)]


def compare(result: dict, headline: str) -> dict:
    """The strongest baseline on each metric with a direction, and whether the model beats it
    on the task's headline metric."""
    strongest = {}
    for metric in sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER):
        scored = {name: m[metric] for name, m in result.get("baselines", {}).items() if metric in m}
        if scored:
            pick = max if metric in HIGHER_IS_BETTER else min
            strongest[metric] = pick(scored, key=scored.get)
    model = result["model"].get(headline)
    best_name = strongest.get(headline)
    beats = None
    if model is not None and best_name is not None:
        best = result["baselines"][best_name][headline]
        beats = bool(model > best if headline in HIGHER_IS_BETTER else model < best)
    return {"strongest_baseline": strongest,
            "headline": {"metric": headline, "strongest_baseline": best_name, "model_beats_it": beats}}
