"""Similarity alignment of a clip to the canonical face and its square crop.

A crop transform maps source-frame pixels to crop pixels: `crop = points @ A.T + b`,
stored as `[T, 2, 3]` matrices `[A | b]`. It is the least-squares similarity (scale,
rotation, translation; never a reflection) taking the face's STABLE landmarks (jaw
ends, nose, eye corners: they barely move with expression) onto the canonical face,
`t2v.keypoints.FRONTAL_TEMPLATE` placed in the crop by `t2v.keypoints.canonical_face`.

How much head motion survives the crop is set by `stabilise_seconds`:
  * None: one transform for the whole clip (the mean of the per-frame ones): the crop
    is a fixed window of the source, so all head motion stays in the crop;
  * s > 0: per-frame transforms smoothed over time with a Gaussian of s seconds: slow
    drift is followed, faster head motion stays;
  * 0: every frame aligned on its own: the face is pinned, head motion is removed.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from PIL import Image

from t2v import keypoints as kp
from t2v.keypoints import FACE_CENTRE, FACE_SCALE  # noqa: F401 - the crop's framing, shared with t2v.generate

CROP_SIZE = 224
_STABLE = np.array(kp.STABLE)


def canonical_face(size: int = CROP_SIZE) -> np.ndarray:
    """The template face `[68, 2]` in the pixels of a `size x size` crop (`t2v.keypoints.canonical_face`)."""
    return kp.canonical_face(size)


def crop_transforms(
    landmarks: np.ndarray, size: int = CROP_SIZE, stabilise_seconds: float | None = None, fps: float = 25.0
) -> np.ndarray:
    """Source-to-crop similarities `[T, 2, 3]` for landmarks `[T, 68, 2]` (no NaN)."""
    target = np.broadcast_to(canonical_face(size)[_STABLE], landmarks[:, _STABLE].shape)
    # Fit the inverse (crop -> source): its parameters, the crop window's size, rotation
    # and centre in the source, are what may be averaged and smoothed meaningfully.
    scale, rotation, translation = kp.umeyama(target.astype(np.float64), landmarks[:, _STABLE].astype(np.float64))
    angle = np.unwrap(np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0]))
    window_centre = scale[:, None] * (rotation @ np.array([size / 2, size / 2])) + translation
    parameters = np.stack([np.log(scale), angle, window_centre[:, 0], window_centre[:, 1]], axis=1)
    if stabilise_seconds is None:
        parameters = np.broadcast_to(parameters.mean(0), parameters.shape)
    elif stabilise_seconds > 0:
        parameters = scipy.ndimage.gaussian_filter1d(parameters, stabilise_seconds * fps, axis=0, mode="nearest")
    elif stabilise_seconds < 0:
        raise ValueError(f"stabilise_seconds must be None or >= 0, got {stabilise_seconds}")
    log_scale, angle, centre_x, centre_y = parameters.T
    # Crop -> source: source = s R crop + t with the window centred at (centre_x, centre_y).
    s, cos, sin = np.exp(log_scale), np.cos(angle), np.sin(angle)
    inverse_rotation = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) / s[:, None, None]
    forward_translation = np.array([size / 2, size / 2]) - (inverse_rotation @ np.stack([centre_x, centre_y], -1)[..., None])[..., 0]
    return np.concatenate([inverse_rotation, forward_translation[..., None]], axis=2).astype(np.float32)


def transform_points(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Applies `[T, 2, 3]` transforms to points `[T, N, 2]`."""
    return (points @ np.swapaxes(transforms[:, :, :2], 1, 2) + transforms[:, None, :, 2]).astype(np.float32)


def crop_frames(frames: np.ndarray, transforms: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Warps frames `[T, H, W, 3]` into crops uint8 `[T, size, size, 3]` (black outside the source).

    A source much larger than the crop is first box-filtered down by an integer factor,
    so that the bilinear warp does not alias.
    """
    crops = np.empty((len(frames), size, size, 3), np.uint8)
    for index, (frame, transform) in enumerate(zip(frames, transforms)):
        source_pixels_per_crop_pixel = 1.0 / np.sqrt(abs(np.linalg.det(transform[:, :2])))
        factor = max(1, int(source_pixels_per_crop_pixel / 1.5))
        image = Image.fromarray(frame)
        if factor > 1:
            image = image.reduce(factor)
        # Crop pixel -> source pixel, pixel centres at integers; pixel r of the reduced
        # image is centred on source pixel r * factor + (factor - 1) / 2.
        crop_to_source = _inverse(transform) / factor
        crop_to_source[:, 2] -= (factor - 1) / (2 * factor)
        # PIL maps output pixel centres (x + 0.5, y + 0.5) through (a, b, c, d, e, f) and
        # reads input pixel centres at +0.5 too: shift the offsets by half a pixel.
        a, b, c = crop_to_source[0]
        d, e, f = crop_to_source[1]
        c += 0.5 - 0.5 * (a + b)
        f += 0.5 - 0.5 * (d + e)
        crop = image.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
        crops[index] = np.asarray(crop)
    return crops


def _inverse(transform: np.ndarray) -> np.ndarray:
    """The inverse of one `[2, 3]` affine."""
    linear = np.linalg.inv(transform[:, :2].astype(np.float64))
    return np.concatenate([linear, -(linear @ transform[:, 2:].astype(np.float64))], axis=1)
