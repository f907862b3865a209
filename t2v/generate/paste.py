"""Paste-back: rendered S x S faces into the photo through the crop's inverse warp, blended
by a feathered mask; pixels outside the mask keep the photo's values exactly."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from t2v.errors import InputError
from t2v.generate.crop import FaceCrop

# The pasted region, in crop units from the crop's centre: opaque out to 0.40 (the jaw and
# chin lie within 0.37), fading smoothly to nothing at 0.48, inside the crop's edges.
MASK_OPAQUE_RADIUS = 0.40
MASK_CLEAR_RADIUS = 0.48


def crop_mask(crop_points: np.ndarray, size: int) -> np.ndarray:
    """The paste-back weight at crop positions `[..., 2]` (pixels): 1 over the face, a smooth
    fall to 0 at `MASK_CLEAR_RADIUS` crop sizes from the centre."""
    radius = np.linalg.norm(np.asarray(crop_points, np.float64) - (size - 1) / 2, axis=-1) / size
    t = np.clip((MASK_CLEAR_RADIUS - radius) / (MASK_CLEAR_RADIUS - MASK_OPAQUE_RADIUS), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible edge at either end


@jax.jit
def _paste(faces, taps, tap_weights, mask, photo_region):
    """faces `[B, S, S, 3]` in [0, 1] -> uint8 `[B, P, 3]`: the P region pixels, each the
    photo's blended towards the face bilinearly sampled at its 4 `taps` `[4, P]`."""
    batch, size = faces.shape[0], faces.shape[1]
    flat = faces.reshape(batch, size * size, 3).astype(jnp.float32)
    sampled = sum(tap_weights[k][None, :, None] * flat[:, taps[k]] for k in range(4))
    blended = photo_region + mask * (255.0 * sampled - photo_region)
    return jnp.clip(jnp.round(blended), 0, 255).astype(jnp.uint8)


class PasteBack:
    """Puts rendered S x S faces back into the photo, through the crop's inverse warp.

    Everything that does not change from frame to frame is computed once: the photo region
    the face can touch (`box`), each region pixel's 4 bilinear taps in the crop and their
    weights, and the feathered mask. Pixels outside the mask keep the photo's values exactly.

        paste = PasteBack(photo, crop)
        for frame in paste.frames(paste.regions(faces)):   # faces [B, S, S, 3] in [0, 1]
            writer.write(frame)          # uint8 [H, W, 3]: the photo with the face in
    """

    def __init__(self, photo: np.ndarray, crop: FaceCrop):
        self.photo = np.ascontiguousarray(photo, np.uint8)
        height, width = self.photo.shape[:2]
        size = crop.size
        # The region: the photo pixels the mask's circle covers, clipped to the photo.
        centre = crop.to_photo(np.array([(size - 1) / 2, (size - 1) / 2]))
        reach = MASK_CLEAR_RADIUS * size * crop.photo_pixels_per_crop_pixel + 2
        x0, y0 = np.maximum(np.floor(centre - reach).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(centre + reach).astype(int) + 1, (width, height))
        if x0 >= x1 or y0 >= y1:
            raise InputError("the face crop lies outside the photo")
        self.box = (int(y0), int(y1), int(x0), int(x1))
        ys, xs = np.mgrid[y0:y1, x0:x1]
        at = crop.to_crop(np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64))
        mask = crop_mask(at, size)
        # Bilinear taps in the crop (clamped at its edges, where the mask is 0 anyway).
        x, y = np.clip(at[:, 0], 0, size - 1), np.clip(at[:, 1], 0, size - 1)
        left = np.minimum(np.floor(x), size - 2).astype(np.int32)
        top = np.minimum(np.floor(y), size - 2).astype(np.int32)
        wx, wy = (x - left).astype(np.float32), (y - top).astype(np.float32)
        self._taps = jnp.asarray(np.stack([top * size + left, top * size + left + 1,
                                           (top + 1) * size + left, (top + 1) * size + left + 1]))
        self._tap_weights = jnp.asarray(np.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]))
        self._mask = jnp.asarray(mask[:, None])
        self._photo_region = jnp.asarray(self.photo[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32))
        self._canvas = self.photo.copy()

    def regions(self, faces: jax.Array) -> jax.Array:
        """Faces `[B, S, S, 3]` in [0, 1] -> the pasted region of each frame, uint8 `[B, h, w, 3]`."""
        y0, y1, x0, x1 = self.box
        pasted = _paste(faces, self._taps, self._tap_weights, self._mask, self._photo_region)
        return pasted.reshape(faces.shape[0], y1 - y0, x1 - x0, 3)

    def frames(self, regions: np.ndarray) -> Iterator[np.ndarray]:
        """Whole frames uint8 `[H, W, 3]` for pasted regions `[B, h, w, 3]`, one at a time.

        Each frame is the same buffer, valid until the next one is made: write it or copy it.
        """
        y0, y1, x0, x1 = self.box
        for region in np.asarray(regions):
            self._canvas[y0:y1, x0:x1] = region
            yield self._canvas
