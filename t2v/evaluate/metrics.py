"""Every metric t2v reports, in one place: pure numpy (or jax) functions of arrays.

Keypoints are face-frame `[..., 68, 2]` (face units: the jaw spans about [-1, 1]); images
are float `[H, W, 3]` in [0, 1]. The task files use `pearson` and `landmark_distance` in
their traced eval steps, so those two take numpy or jax arrays alike.

  landmark_distance   per-point Euclidean distance                     (LMD; `lmd`, `lmd_mouth`)
  pearson             correlation along an axis                        (`mouth_corr`, `pose_follow`)
  best_lag            the shift maximising a correlation                (`mouth_lag`)
  identity_error      pose-free non-mouth mean shape vs the reference   (`identity_err`)
  pose_diversity      std of head pose across prior samples             (`pose_diversity`)
  pose_follow         head pose correlation with a motion source        (`pose_follow`)
  audio_pose_correlation  frame energy vs head-motion speed             (`audio_pose_corr`)
  blink_rate          eye closures per minute                           (`blink_rate`)
  sync_distance_confidence  a sync judge's offset scores -> LSE-D / LSE-C analogues
  psnr, ssim          images (SSIM as scikit-image's Gaussian-window SSIM)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from t2v import keypoints as kp

FPS = 25
LAG_SEARCH = 10  # frames either way for mouth_lag
NON_MOUTH_INDEX = np.asarray([i for i in range(kp.NUM_POINTS) if i not in kp.MOUTH])
BLINK_CLOSED_FRACTION = 0.5  # an eye is closed below half of the clip's open aperture


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def pearson(x, y, axis=-1):
    """Pearson correlation along `axis` (0 where either side is constant); numpy or jax."""
    xp = _xp(x, y)
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    denominator = xp.sqrt((x**2).sum(axis=axis) * (y**2).sum(axis=axis))
    return xp.where(denominator > 1e-12, (x * y).sum(axis=axis) / xp.maximum(denominator, 1e-12), 0.0)


def landmark_distance(prediction, target):
    """Euclidean distance per point in face units: `[..., 68, 2]` -> `[..., 68]`; numpy or jax."""
    xp = _xp(prediction, target)
    return xp.sqrt(((prediction - target) ** 2).sum(-1))


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


def pose_diversity(samples: np.ndarray, reference: np.ndarray) -> float:
    """Std of head pose across samples `[S, T, 68, 2]`, mean over frames and pose components."""
    return float(head_pose(samples, reference).std(axis=0).mean())


def pose_follow(generated: np.ndarray, reference: np.ndarray, source: np.ndarray, source_reference: np.ndarray) -> float:
    """Mean over pose components of Pearson r between generated and source head pose over time."""
    return float(pearson(head_pose(generated, reference), head_pose(source, source_reference), axis=0).mean())


def audio_pose_correlation(points: np.ndarray, reference: np.ndarray, energy: np.ndarray) -> float:
    """Pearson r of frame energy `[T]` and head-motion speed (norm of the frame-to-frame change
    of angle and translation) of `points [T, 68, 2]`: does the head move with the speech?"""
    pose = head_pose(points, reference)[:, 1:]
    speed = np.sqrt((np.diff(pose, axis=0) ** 2).sum(-1))
    frames = min(len(speed), len(energy) - 1)
    return float(pearson(speed[:frames], np.asarray(energy, np.float64)[1 : frames + 1]))


def blink_rate(points: np.ndarray, fps: int = FPS) -> float:
    """Blinks per minute of `[T, 68, 2]`: onsets of the mean eye aperture falling below
    `BLINK_CLOSED_FRACTION` of the clip's open level (its 90th percentile)."""
    aperture = np.asarray(kp.eye_aperture(points)).mean(-1)
    open_level = np.percentile(aperture, 90)
    closed = aperture < BLINK_CLOSED_FRACTION * max(open_level, 1e-6)
    onsets = int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])
    return 60.0 * fps * onsets / max(len(points), 1)


def sync_distance_confidence(scores: np.ndarray) -> tuple[float, float]:
    """A clip's LSE-D / LSE-C analogues from a sync judge's cosine scores `[windows, 2M + 1]`
    (offsets -M..M): distance d(offset) = 1 - mean cosine over the windows; returns
    (min d, median d - min d), as SyncNet's evaluation does with its embedding distances."""
    distance = 1.0 - np.asarray(scores, np.float64).mean(axis=0)
    return float(distance.min()), float(np.median(distance) - distance.min())


def mouth_metrics(generated: np.ndarray, truth: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The keypoint metrics of one generated sequence `[T, 68, 2]` against the truth."""
    from t2v.data.pipeline import pose_free_mouth

    generated_mouth, true_mouth = kp.mouth_opening(generated), kp.mouth_opening(truth)
    mouth_shapes = [pose_free_mouth(points, reference) for points in (generated, truth)]
    return {
        "mouth_corr": float(pearson(generated_mouth, true_mouth)),
        "lmd": float(landmark_distance(generated, truth).mean()),
        "lmd_mouth": float(np.sqrt(((mouth_shapes[0] - mouth_shapes[1]) ** 2).sum(-1)).mean()),
        "mouth_lag": abs(best_lag(generated_mouth, true_mouth)),
        "identity_err": identity_error(generated, reference),
    }


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each key over the rows that have it."""
    keys = sorted({k for row in rows for k in row})
    return {k: float(np.mean([row[k] for row in rows if k in row])) for k in keys}


# --------------------------------------------------------------------------- images


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of two images of the same shape."""
    mse = float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # scikit-image's gaussian_weights=True window


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two `[H, W, C]` images with an 11-tap Gaussian window (sigma 1.5), the
    population covariance, borders of 5 pixels excluded: what scikit-image's
    `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False,
    channel_axis=-1, data_range=...)` computes (checked in tests/test_evaluate.py)."""
    x, y = (np.asarray(a, np.float64) for a in (prediction, target))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)

    def blur(image):
        return ndimage.gaussian_filter(image, sigma=(SSIM_SIGMA, SSIM_SIGMA, 0), truncate=SSIM_TRUNCATE,
                                       mode="nearest")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(index[pad:-pad, pad:-pad].mean())
