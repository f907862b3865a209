"""Evaluation of an `au` workdir: speech action units and keypoints vs baselines, under a judge.

Per held-out clip, the model (deterministic), the keypoint baselines (`t2v.evaluate.baselines`:
static, energy, retrieval) and the ground-truth keypoints get the same metrics:
  mouth_corr, mouth_corr_unseen_language, lmd, lmd_mouth, mouth_lag, identity_err
                   (`t2v.evaluate.metrics.mouth_metrics`)
  au_err, au_acc, au_f1, au_corr
                   the speech AUs (`t2v.au.SPEECH_AUS`) read from the keypoints by the AU judge
                   (`eval.au_judge_workdir`, an `au_cls` workdir trained apart:
                   configs/au.py:judge) against the clip's AU labels (`t2v.au.au_scores`)
  proxy_au_err, proxy_au_acc, proxy_au_f1, proxy_au_corr
                   the same with the geometric proxy (`t2v.au.speech_au_proxy`, against the
                   clip's reference): no learned judge at all
The model also reports au_head_* : its own audio-to-AU predictions against the labels, and
the `au_prior` baseline (every frame the training clips' mean AUs) has the au_head_* ones too.

`load_au_judge` refuses, in one line, the AU classifier the model trained against
(`model.au_classifier_workdir`); a judge sharing a seed or training speakers with it is
scored but marked (`disjoint_from_loss_classifier: false`).
"""

from __future__ import annotations

import logging

import jax
import numpy as np

from t2v import au, checkpoint
from t2v.data import pipeline
from t2v.errors import InputError
from t2v.evaluate import baselines, clip_entries, judges, metrics
from t2v.evaluate.motion import load_eval_clips, padded_mel

log = logging.getLogger(__name__)


def load_au_judge(judge_workdir: str, model_workdir, model_config):
    """(the frozen AU judge, its provenance) for scoring the model of `model_workdir`."""
    from t2v.tasks.au_cls import load_classifier

    loss_workdir = str(model_config.model.get("au_classifier_workdir", ""))
    if loss_workdir and judges._same_path(loss_workdir, judge_workdir):
        raise InputError(f"eval.au_judge_workdir={judge_workdir}: is the AU classifier the model in {model_workdir} "
                         f"trained against (model.au_classifier_workdir={loss_workdir}); a judge must never have "
                         f"been its loss: train one apart (configs/au.py:judge)")
    try:
        judge_config = checkpoint.read_config(judge_workdir)
    except FileNotFoundError as error:
        raise InputError(f"eval.au_judge_workdir={judge_workdir}: no trained workdir there ({error})") from None
    if judge_config.task != "au_cls":
        raise InputError(f"eval.au_judge_workdir={judge_workdir}: task {judge_config.task!r}, expected an 'au_cls' workdir")
    first, last = judges.training_speakers(judge_config)
    record = {"workdir": str(judge_workdir), "task": "au_cls", "seed": int(judge_config.seed),
              "step": checkpoint.saved_steps(judge_workdir)[-1], "train_speakers": [first, last],
              "train_clips": int(judge_config.data.train_clips), "loss_classifier": None,
              "disjoint_from_loss_classifier": True}
    if loss_workdir:
        loss_config = checkpoint.read_config(loss_workdir)
        loss_first, loss_last = judges.training_speakers(loss_config)
        overlap = not (last < loss_first or loss_last < first)
        record["loss_classifier"] = {"workdir": loss_workdir, "seed": int(loss_config.seed),
                                     "train_speakers": [loss_first, loss_last]}
        record["disjoint_from_loss_classifier"] = bool(int(loss_config.seed) != int(judge_config.seed) and not overlap)
        if not record["disjoint_from_loss_classifier"]:
            log.warning("AU judge %s shares a seed or training speakers with the loss classifier %s",
                        judge_workdir, loss_workdir)
    return load_classifier(judge_workdir), record


def prefixed(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {prefix + name: value for name, value in scores.items()}


def sequence_metrics(points: np.ndarray, clip: dict, truth_aus: np.ndarray, judge, unseen: set[str]) -> dict:
    """Keypoint and AU metrics of one sequence `[T, 68, 2]` of the clip."""
    row = metrics.mouth_metrics(points, clip["keypoints"], clip["reference"])
    if clip.get("language") in unseen:
        row["mouth_corr_unseen_language"] = row["mouth_corr"]
    row.update(prefixed("proxy_", au.au_scores(np.asarray(au.speech_au_proxy(points, clip["reference"])), truth_aus)))
    if judge is not None:
        row.update(au.au_scores(judge.clip_aus(points, clip["reference"]), truth_aus))
    return row


def evaluate_au(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.tasks import get_task

    task = get_task(config)
    clips = load_eval_clips(workdir, config, settings)
    judge_workdir = str(config.eval.get("au_judge_workdir", ""))
    judge, judge_record = load_au_judge(judge_workdir, workdir, config) if judge_workdir else (None, None)
    training_clips = pipeline.load_clips(config, "train")
    fit = baselines.fit_energy_to_opening(training_clips)
    retrieval = baselines.RetrievalBaseline(training_clips)
    prior = np.concatenate([au.clip_speech_aus(c) for c in training_clips]).mean(0)
    unseen = set(pipeline._languages(config.data.eval_langs))
    chunk = int(config.sample.get("chunk_frames", 256))
    rows: dict[str, list[dict]] = {name: [] for name in ("model", "static", "energy", "retrieval", "ground_truth")}
    prior_rows = []
    for index, clip in enumerate(clips):
        frames = len(clip["keypoints"])
        truth_aus = au.clip_speech_aus(clip)
        out = task.generate_audio_driven(params, jax.random.PRNGKey(seed), padded_mel(clip["mel"], frames)[None],
                                         clip["reference"][None], chunk_frames=chunk)
        outputs = {"model": out["keypoints"][0, :frames], "static": baselines.static_baseline(clip),
                   "energy": baselines.energy_baseline(clip, fit), "retrieval": retrieval(clip),
                   "ground_truth": clip["keypoints"]}
        for name, points in outputs.items():
            rows[name].append(sequence_metrics(points, clip, truth_aus, judge, unseen))
        rows["model"][-1].update(prefixed("au_head_", au.au_scores(out["au"][0, :frames], truth_aus)))
        prior_rows.append(prefixed("au_head_", au.au_scores(np.repeat(prior[None], frames, 0), truth_aus)))
    model, truth = metrics.average(rows.pop("model")), metrics.average(rows.pop("ground_truth"))
    return {
        "model": model,
        "baselines": {**{name: metrics.average(r) for name, r in rows.items()}, "au_prior": metrics.average(prior_rows)},
        "ground_truth": truth,
        "judges": {"au": judge_record} if judge_record else {},
        "clips": clip_entries(clips, unseen),
        "speech_aus": list(au.SPEECH_AUS),
        "au_driving": bool(config.model.au_driving),
        "traces": [],
    }
