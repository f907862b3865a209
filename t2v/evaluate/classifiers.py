"""Evaluation of the classifier workdirs, `emotion_cls` and `au_cls`, against their labels.

A classifier is scored by the labels of pinned held-out clips (unseen speakers), not by a
judge: `judges` is empty, and `ground_truth` holds no figure (the labels score themselves
perfectly by definition), only where the labels come from.

emotion_cls: `data.eval_frames` frames spread over each held-out clip (the eval split of
`eval.clips_seed`), cropped as in training (`t2v.tasks.emotion_cls.face_crop`), never mirrored.
  acc             fraction of frames whose most probable emotion is the clip's
  balanced_acc    mean of acc_<emotion> over the emotions present in the held-out clips
  acc_<emotion>   per emotion (recall), for each emotion present
  loss            cross-entropy of the clip's emotion
  confusion       counts [true emotion][called emotion], in `classes` order
Baselines (their figures are exact expectations, no sampling):
  majority  always the most frequent emotion of the training clips
  prior     an emotion drawn from the training clips' label frequencies (add-one smoothed)
  chance    an emotion drawn uniformly

au_cls: every frame of each held-out clip of the keypoint eval split, its reference a
detected frame of the clip (as at inference), against `t2v.au.clip_speech_aus` labels.
  au_err, au_acc, au_f1, au_corr      `t2v.au.au_scores`, averaged over clips
  au_err_<AU>, au_corr_<AU>           per speech AU (`t2v.au.SPEECH_AUS`); au_corr_<AU> over
                                      the clips where that AU varies
Baselines: `mean_intensity` (every frame the training clips' mean of each AU) and `proxy`
(`t2v.au.speech_au_proxy`: a geometric reading, nothing learned). Clips without AU labels in
their record are labelled by that proxy (as in training); their count is in `ground_truth`, and
on them the proxy baseline is the label.
"""

from __future__ import annotations

import logging

import numpy as np

from t2v import au
from t2v.data import pipeline
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError
from t2v.evaluate import clip_entries, metrics

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- emotion_cls


def emotion_figures(calls: np.ndarray, labels: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """The figures of `calls [N, K]` against `labels [N]`: each row what one frame is called,
    one-hot for a classifier, a random guesser's distribution over EMOTIONS for a baseline
    (acc and confusion are then exact expectations). `loss` is the cross-entropy of
    `probabilities [N, K]` where given and positive on every label."""
    calls, labels = np.asarray(calls, np.float64), np.asarray(labels, np.int64)
    k = len(EMOTIONS)
    if calls.shape != (len(labels), k) or not len(labels):
        raise ValueError(f"emotion_figures: calls {calls.shape} for {len(labels)} labels")
    confusion = np.zeros((k, k))
    np.add.at(confusion, labels, calls)
    present = [c for c in range(k) if (labels == c).any()]
    per_class = {EMOTIONS[c]: float(confusion[c, c] / confusion[c].sum()) for c in present}
    figures = {"acc": float(np.trace(confusion) / len(labels)), "balanced_acc": float(np.mean(list(per_class.values()))),
               **{f"acc_{name}": value for name, value in per_class.items()},
               "confusion": confusion.tolist()}
    if probabilities is not None:
        picked = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
        if (picked > 0).all():
            figures["loss"] = float(-np.mean(np.log(picked)))
    return figures


def emotion_labels(config, split: str, seed: int, *, limit: int = 0) -> tuple[list[dict], object]:
    """(the clips of `split` with frames (JPEG bytes, not decoded) and an emotion of EMOTIONS,
    the FrameMaker that read them and counted the others)."""
    from t2v.tasks.emotion_cls import FrameMaker

    source = pipeline.record_source(pipeline.shard_paths(config, split, seed, render=True))
    maker = FrameMaker(int(config.data.crop), flip=False)
    clips = []
    for index in range(len(source)):
        if limit and len(clips) >= limit:
            break
        clip = maker.decode(source[index], f"record {index} of {pipeline.source_name(config, split)}")
        if clip is not None:
            clips.append(clip)
    if maker.skip_reasons:
        log.info("%s: skipped %s", pipeline.source_name(config, split), maker.skip_summary())
    return clips, maker


def evaluate_emotion_cls(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.tasks.emotion_cls import EMOTION_INDEX, EmotionClsTask, FrozenClassifier, eval_frame_indices

    classifier = FrozenClassifier(EmotionClsTask(config), params, str(workdir))
    clips, maker = emotion_labels(config, "eval", settings["clips_seed"], limit=settings["max_clips"])
    if not clips:
        raise InputError(f"{workdir}: the eval split ({pipeline.source_name(config, 'eval')}) has no clip with frames "
                         f"and an emotion label ({maker.skip_summary()})")
    crops, labels, entries = [], [], []
    for clip in clips:
        indices = eval_frame_indices(len(clip["frames"]), int(config.data.eval_frames))
        for index in indices:
            crops.append(maker.example(clip, index)["image"])
            labels.append(EMOTION_INDEX[clip["emotion"]])
        entries.append({"clip_id": clip.get("clip_id"), "speaker": clip.get("speaker"),
                        "language": clip.get("language"), "emotion": clip["emotion"], "frames": indices})
    labels = np.asarray(labels)
    training, _ = emotion_labels(config, "train", int(config.seed))
    counts = np.bincount([EMOTION_INDEX[c["emotion"]] for c in training], minlength=len(EMOTIONS)).astype(np.float64)
    prior = (counts + 1) / (counts.sum() + len(EMOTIONS))
    n, k = len(labels), len(EMOTIONS)
    guesses = {"majority": np.eye(k)[np.full(n, int(np.argmax(counts)))], "prior": np.repeat(prior[None], n, 0),
               "chance": np.full((n, k), 1.0 / k)}
    probabilities = classifier.probabilities(np.stack(crops))
    train_speakers = sorted({c.get("speaker") for c in training} - {None})
    eval_speakers = {c.get("speaker") for c in clips} - {None}
    return {
        "model": emotion_figures(np.eye(k)[np.argmax(probabilities, axis=1)], labels, probabilities),
        "baselines": {name: emotion_figures(rows, labels, rows) for name, rows in guesses.items()},
        "ground_truth": {"label_source": label_source(config, "emotion"), "scored": False,
                         "note": "the labels themselves: perfect by definition, no figure measured"},
        "judges": {},
        "clips": entries,
        "classes": list(EMOTIONS),
        "frames_scored": n,
        "training_label_counts": dict(zip(EMOTIONS, counts.astype(int).tolist())),
        "speakers_seen_in_training": len(eval_speakers & set(train_speakers)),
        "traces": [],
    }


def label_source(config, what: str) -> str:
    if config.data.source == "synthetic":
        return f"t2v.data.synthetic: the {what} each held-out clip was generated with"
    return f"the records' {what} labels (data.eval_path={config.data.get('eval_path', '')})"


# --------------------------------------------------------------------------- au_cls


def per_au_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """au_err_<AU> for every speech AU, au_corr_<AU> where the truth varies over the clip."""
    row = {}
    for a, name in enumerate(au.SPEECH_AUS):
        p, t = np.asarray(predicted[:, a], np.float64), np.asarray(truth[:, a], np.float64)
        row[f"au_err_{name}"] = float(np.abs(p - t).mean())
        if t.std() > 1e-3:
            row[f"au_corr_{name}"] = 0.0 if p.std() < 1e-9 else float(np.corrcoef(p, t)[0, 1])
    return row


def au_row(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {**au.au_scores(predicted, truth), **per_au_scores(predicted, truth)}


def evaluate_au_cls(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.evaluate.motion import load_eval_clips
    from t2v.tasks.au_cls import AUClassifierTask, FrozenClassifier

    classifier = FrozenClassifier(AUClassifierTask(config), params, str(workdir))
    clips = load_eval_clips(workdir, config, settings)
    training = pipeline.load_clips(config, "train")
    if not training:
        raise InputError(f"{workdir}: the train split ({pipeline.source_name(config, 'train')}) has no readable clips")
    mean_intensity = np.concatenate([au.clip_speech_aus(c) for c in training]).mean(0)
    rows = {name: [] for name in ("model", "mean_intensity", "proxy")}
    for clip in clips:
        truth = au.clip_speech_aus(clip)
        rows["model"].append(au_row(classifier.clip_aus(clip["keypoints"], clip["reference"]), truth))
        rows["mean_intensity"].append(au_row(np.repeat(mean_intensity[None], len(truth), 0), truth))
        rows["proxy"].append(au_row(np.asarray(au.speech_au_proxy(clip["keypoints"], clip["reference"])), truth))
    labelled = sum(c.get("aus") is not None for c in clips)
    if labelled < len(clips):
        log.warning("%d of %d held-out clips have no AU labels: the proxy labels them", len(clips) - labelled,
                    len(clips))
    unseen = set(pipeline._languages(config.data.eval_langs))
    return {
        "model": metrics.average(rows["model"]),
        "baselines": {name: metrics.average(r) for name, r in rows.items() if name != "model"},
        "ground_truth": {"label_source": label_source(config, "action-unit intensity"), "scored": False,
                         "clips_with_record_labels": int(labelled), "clips_labelled_by_proxy": len(clips) - labelled,
                         "note": "the labels themselves: perfect by definition, no figure measured"},
        "judges": {},
        "clips": clip_entries(clips, unseen),
        "speech_aus": list(au.SPEECH_AUS),
        "training_mean_intensity": dict(zip(au.SPEECH_AUS, np.round(mean_intensity, 4).tolist())),
        "traces": [],
    }

