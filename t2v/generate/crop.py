"""Crop geometry: the similarity taking photo pixels to an S x S face crop, as data
preparation crops (`data_pipelines/align.py`), and the canonical face it places.

    crop = FaceCrop.fit(landmarks, size)   # landmarks [68, 2] or [T, 68, 2] photo pixels
    crop.to_crop(points), crop.to_photo(points), crop.crop(photo)  # -> uint8 [S, S, 3]
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from t2v import keypoints

# The canonical face in the crop, as data preparation places it (data_pipelines/align.py,
# which t2v may not import; tests/test_generate.py checks the two agree).
FACE_SCALE = 0.36  # crop pixels per face unit, over the crop size
FACE_CENTRE = (0.5, 0.52)  # where the face-frame origin sits, as fractions of the crop
_STABLE = np.asarray(keypoints.STABLE)


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """The similarity taking photo pixels to an S x S face crop, as data preparation crops.

    `crop = photo @ A.T + b` with `matrix = [A | b]` `[2, 3]`; pixel centres at integers. The
    face's STABLE landmarks are fit onto the canonical face (`canonical_face`) by least
    squares; for several frames, the mean of their similarities (the fixed window of data
    preparation's `stabilise_seconds=None`), so head motion stays in the crop.
    """

    matrix: np.ndarray
    size: int

    @classmethod
    def fit(cls, landmarks: np.ndarray, size: int) -> "FaceCrop":
        """The crop of landmarks `[68, 2]` (a photo) or `[T, 68, 2]` (a clip), in pixels."""
        landmarks = np.asarray(landmarks, np.float64).reshape(-1, keypoints.NUM_POINTS, 2)
        target = np.broadcast_to(canonical_face(size)[_STABLE], landmarks[:, _STABLE].shape).astype(np.float64)
        # Fit crop -> photo: the window's scale, angle and centre are what may be averaged.
        scale, rotation, translation = keypoints.umeyama(target, landmarks[:, _STABLE])
        angle = np.unwrap(np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0]))
        centre = scale[:, None] * (rotation @ np.array([size / 2, size / 2])) + translation
        log_scale, angle, centre = np.log(scale).mean(), angle.mean(), centre.mean(0)
        cos, sin = np.cos(angle), np.sin(angle)
        to_crop = np.array([[cos, sin], [-sin, cos]]) / np.exp(log_scale)
        offset = np.array([size / 2, size / 2]) - to_crop @ centre
        return cls(np.concatenate([to_crop, offset[:, None]], axis=1), int(size))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels `[..., 2]` -> crop pixels."""
        return (np.asarray(points, np.float64) @ self.matrix[:, :2].T + self.matrix[:, 2]).astype(np.float32)

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels `[..., 2]` -> photo pixels."""
        inverse = np.linalg.inv(self.matrix[:, :2])
        return ((np.asarray(points, np.float64) - self.matrix[:, 2]) @ inverse.T).astype(np.float32)

    @property
    def photo_pixels_per_crop_pixel(self) -> float:
        return float(1.0 / np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The crop of uint8 `image [H, W, 3]`: uint8 `[S, S, 3]`, black outside the photo.

        A photo much larger than the crop is first box-filtered down by an integer factor,
        so that the bilinear warp does not alias (as data preparation does).
        """
        factor = max(1, int(self.photo_pixels_per_crop_pixel / 1.5))
        source = Image.fromarray(image)
        if factor > 1:
            source = source.reduce(factor)
        # Crop pixel -> pixel of the reduced photo, whose pixel r is centred on photo pixel
        # r * factor + (factor - 1) / 2.
        inverse = np.linalg.inv(self.matrix[:, :2])
        crop_to_source = np.concatenate([inverse, -(inverse @ self.matrix[:, 2:])], axis=1) / factor
        crop_to_source[:, 2] -= (factor - 1) / (2 * factor)
        # PIL maps output pixel centres (x + 0.5, y + 0.5) and reads input centres at +0.5.
        (a, b, c), (d, e, f) = crop_to_source
        c += 0.5 - 0.5 * (a + b)
        f += 0.5 - 0.5 * (d + e)
        warped = source.transform((self.size, self.size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
        return np.asarray(warped)


def canonical_face(size: int) -> np.ndarray:
    """The template face `[68, 2]` in the pixels of a `size x size` crop (data preparation's)."""
    return (keypoints.FRONTAL_TEMPLATE * (FACE_SCALE * size) + np.array(FACE_CENTRE) * size).astype(np.float32)
