"""Pose-invariant identity encoder (PIV, after Audio2Keypoint).

reference keypoints `[batch, 68, 2]` -> identity embedding `[batch, E]`.

In-plane pose is removed by construction before any parameter is applied: the shape is
centred on its centroid, scaled to unit RMS radius and rotated so that its face axes
point along x and y (`canonical_shape`). Any rotation, scale and translation of the
reference therefore gives the same embedding, at any parameter values. Out-of-plane pose
(yaw, pitch) is not a 2D similarity; invariance to it is what the task's PIV loss trains.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from t2v.keypoints import MOUTH, NUM_POINTS, REGIONS
from t2v.models.layers import MLP, Dtype

_RIGHT_EYE = REGIONS["right_eye"]  # subject's right, image left
_LEFT_EYE = REGIONS["left_eye"]


def canonical_shape(points):
    """Remove the 2D similarity (translation, scale, in-plane rotation) from face shapes.

    points `[..., 68, 2]` -> `[..., 68, 2]`: centroid at the origin, unit RMS distance
    from it, and the face turned upright: the orientation is the average of the eye line
    (right eye centre -> left eye centre, along +x when upright) and the eyes-to-mouth
    line turned by -90 degrees (+y, down, when upright), so it rests on 32 points and
    stays defined for any face-like shape.
    """
    centred = points - jnp.mean(points, axis=-2, keepdims=True)
    radius = jnp.sqrt(jnp.mean(jnp.sum(centred**2, axis=-1), axis=-1))[..., None, None]
    unit = centred / radius

    def centre_of(indices):
        return jnp.mean(unit[..., jnp.asarray(indices), :], axis=-2)

    def normalised(v):
        return v / jnp.linalg.norm(v, axis=-1, keepdims=True)

    right_eye, left_eye, mouth = centre_of(_RIGHT_EYE), centre_of(_LEFT_EYE), centre_of(MOUTH)
    eye_line = normalised(left_eye - right_eye)
    down = normalised(mouth - (left_eye + right_eye) / 2)
    down_turned = jnp.stack([down[..., 1], -down[..., 0]], axis=-1)  # rotate by -90 degrees
    direction = normalised(eye_line + down_turned)
    cos, sin = direction[..., None, 0:1], direction[..., None, 1:2]
    x, y = unit[..., 0:1], unit[..., 1:2]
    return jnp.concatenate([cos * x + sin * y, cos * y - sin * x], axis=-1)  # rotate by -angle


class IdentityEncoder(nn.Module):
    """reference keypoints `[batch, 68, 2]` -> identity embedding `[batch, features]`.

    Fields (filled from `config.model.identity`):
      features         E, the embedding width
      hidden_features  widths of the MLP over the canonical shape
    """

    features: int = 64
    hidden_features: Sequence[int] = (128, 128)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, reference):
        if reference.shape[-2:] != (NUM_POINTS, 2):
            raise ValueError(f"IdentityEncoder: reference must be [batch, {NUM_POINTS}, 2], "
                             f"got {tuple(reference.shape)}")
        shape = canonical_shape(reference.astype(jnp.float32))
        flat = shape.reshape(*shape.shape[:-2], NUM_POINTS * 2).astype(self.dtype)
        return MLP(tuple(self.hidden_features), self.features, in_axis="channels", out_axis="embed",
                   dtype=self.dtype, param_dtype=self.param_dtype, name="mlp")(flat)
