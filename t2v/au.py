"""Speech-related facial action units (FACS): the set t2v models, their labels and scores.

`SPEECH_AUS` are the nine lower-face action units that articulation moves (the `au` task's
targets), a subset of `t2v.keypoints.AU_NAMES`:

  AU10 upper lip raiser    AU12 lip corner puller   AU14 dimpler
  AU15 lip corner depressor AU17 chin raiser        AU20 lip stretcher
  AU23 lip tightener       AU25 lips part           AU26 jaw drop

Intensities are in [0, 1] (1 = a strong activation, FACS level E). Where they come from:
  * synthetic clips: the generator's own expression parameters (`Clip.aus`), ground truth;
  * prepared clips: `kp.au_proxies` of the crop's landmarks against the template face
    (`data_pipelines`), written into the record's `aus`;
  * a record without `aus`: `speech_au_proxy` of its keypoints against the clip's reference
    (the pipeline's fallback), an estimate.

`speech_au_proxy` is a documented geometric estimate (`kp.au_proxies`: landmark
displacements from the neutral face in its upright frame, over a full-scale displacement);
it is not learned, so it can score any keypoints, never having been anyone's loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from t2v import keypoints as kp

SPEECH_AUS = ("AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26")
NUM_AUS = len(SPEECH_AUS)
SPEECH_AU_INDEX = np.asarray([kp.AU_NAMES.index(name) for name in SPEECH_AUS])
ACTIVE = 0.2  # an AU counts as present (for accuracy and F1) above this intensity (~FACS level B)


def speech_aus(aus: Any) -> Any:
    """All-AU labels `[..., 13]` (`kp.AU_NAMES` order) -> the speech AUs `[..., 9]`."""
    if aus.shape[-1] != len(kp.AU_NAMES):
        raise ValueError(f"speech_aus: expected [..., {len(kp.AU_NAMES)}] labels, got {tuple(aus.shape)}")
    return aus[..., SPEECH_AU_INDEX]


def speech_au_proxy(points: Any, reference: Any = None) -> Any:
    """Keypoints `[..., 68, 2]` (any frame: pose is removed) against the neutral face
    `reference [..., 68, 2]` (default: the frontal template) -> estimated intensities
    `[..., 9]` in [0, 1]. numpy or jax. Mouth open -> AU25 and AU26 up; corners up -> AU12."""
    proxies = kp.au_proxies(points, reference)
    return proxies[..., SPEECH_AU_INDEX].clip(0.0, 1.0)


def clip_speech_aus(clip: dict) -> np.ndarray:
    """A prepared clip's (`t2v.data.pipeline.prepare_clip`) speech-AU intensities `[T, 9]`:
    its record's labels when it has them, else `speech_au_proxy` of its keypoints against its
    reference (both in the face frame)."""
    if clip.get("aus") is not None:
        return np.asarray(speech_aus(np.asarray(clip["aus"])), np.float32)
    return np.asarray(speech_au_proxy(clip["keypoints"], clip["reference"]), np.float32)


def au_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well intensities `[T, 9]` match the truth `[T, 9]` over one clip:
      au_err   mean absolute intensity error
      au_acc   fraction of (frame, AU) whose presence (> ACTIVE) is right
      au_f1    F1 of presence, pooled over frames and AUs
      au_corr  mean over AUs that vary in the truth of the Pearson correlation over frames
    """
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape:
        raise ValueError(f"au_scores: predicted {predicted.shape} and truth {truth.shape} differ")
    present, said = truth > ACTIVE, predicted > ACTIVE
    hits = float((present & said).sum())
    f1 = 2 * hits / max(float(present.sum() + said.sum()), 1.0)
    correlations = []
    for a in range(truth.shape[-1]):
        if truth[:, a].std() > 1e-3:
            p = predicted[:, a]
            correlations.append(0.0 if p.std() < 1e-9 else float(np.corrcoef(p, truth[:, a])[0, 1]))
    return {"au_err": float(np.abs(predicted - truth).mean()), "au_acc": float((present == said).mean()),
            "au_f1": float(f1), "au_corr": float(np.mean(correlations)) if correlations else 0.0}
