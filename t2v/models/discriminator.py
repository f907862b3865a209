"""Multi-scale patch discriminator (pix2pixHD style) for the renderer's GAN terms.

    discriminator = MultiScalePatchDiscriminator(widths=(32, 64, 128), scales=2)
    outputs = discriminator.apply(v, images, condition)   # one (features, logits) per scale

`images [B, S, S, 3]` in [0, 1] and an optional `condition [B, S, S, C]` (e.g. a target
keypoint map) are judged at full resolution and at each halving, each scale by its own
fully convolutional patch critic, so both texture and layout are judged. The
intermediate feature maps are returned for the feature-matching loss.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2v.models.layers import conv2d, downsample, leaky_relu


class PatchDiscriminator(nn.Module):
    """`[B, H, W, C]` -> (feature maps, logits `[B, H / 2^n, W / 2^n, 1]`), n = len(widths) - 1."""

    widths: Sequence[int]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = []
        axis_in = "channels"
        for i, width in enumerate(self.widths):
            axis_out = "embed" if i % 2 == 0 else "mlp"
            stride = 2 if i < len(self.widths) - 1 else 1
            x = leaky_relu(conv2d(width, 4, (axis_in, axis_out), stride=stride, dtype=self.dtype, name=f"conv_{i}")(x))
            features.append(x)
            axis_in = axis_out
        logits = conv2d(1, 3, (axis_in, "channels"), dtype=self.dtype, name="logits")(x)
        return features, logits


class MultiScalePatchDiscriminator(nn.Module):
    """One `PatchDiscriminator` per scale (full, 1/2, 1/4, ...): a list of (features, logits)."""

    widths: Sequence[int] = (32, 64, 128)
    scales: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, condition: jax.Array | None = None) -> list[tuple[list[jax.Array], jax.Array]]:
        x = images.astype(self.dtype)
        if condition is not None:
            x = jnp.concatenate([x, condition.astype(self.dtype)], axis=-1)
        outputs = []
        for scale in range(self.scales):
            if scale:
                x = downsample(x, 2)
            outputs.append(PatchDiscriminator(self.widths, self.dtype, name=f"scale_{scale}")(x))
        return outputs
