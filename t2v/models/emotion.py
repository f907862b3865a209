"""Emotion models: a face-crop classifier and a conditional U-Net that translates a face
crop to a target emotion (Wav2Lip-Emotion's generator, small). Images are `[B, S, S, 3]`
in [0, 1]; S divides by 2 ** len(widths)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from t2v.models.layers import conv2d, dense, leaky_relu, upsample


class EmotionClassifier(nn.Module):
    """Face crop -> emotion logits `[B, num_emotions]`: strided convolutions, global pooling."""

    num_emotions: int
    widths: Sequence[int] = (16, 32, 64)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = (images.astype(self.dtype) - 0.5) * 2.0
        for i, width in enumerate(self.widths):
            x = leaky_relu(conv2d(width, 3, ("channels" if i == 0 else "embed", "embed"), dtype=self.dtype)(x))
            x = leaky_relu(conv2d(width, 3, ("embed", "embed"), stride=2, dtype=self.dtype)(x))
        x = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
        x = leaky_relu(dense(self.widths[-1], ("embed", "mlp"), dtype=self.dtype)(x))
        return dense(self.num_emotions, ("mlp", "channels"), dtype=self.dtype)(x).astype(jnp.float32)


class _Film(nn.Module):
    """Scales and shifts a feature map by the condition (FiLM), starting as the identity."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, condition):
        width = x.shape[-1]
        gamma_beta = dense(2 * width, ("mlp", "embed"), dtype=self.dtype, kernel_init=nn.initializers.zeros_init())(
            condition)
        gamma, beta = jnp.split(gamma_beta[:, None, None, :], 2, axis=-1)
        return x * (1 + gamma) + beta


class EmotionTranslator(nn.Module):
    """Face crop + target emotion (+ intensity in [0, 1]) -> the crop with that emotion.

    A U-Net whose every level is FiLM-conditioned on a learned emotion embedding times the
    intensity (intensity 0 is the neutral condition). It predicts a residual on the input,
    so an untrained translator copies its input: lips, identity and pose start kept.
    """

    num_emotions: int
    widths: Sequence[int] = (16, 32, 64)
    embed: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, emotion, intensity):
        emb = nn.Embed(self.num_emotions, self.embed, dtype=self.dtype,
                       embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "mlp")))(emotion)
        condition = leaky_relu(dense(self.embed, (None, "mlp"), dtype=self.dtype)(
            emb * intensity.astype(self.dtype)[:, None]))
        x = (images.astype(self.dtype) - 0.5) * 2.0
        skips = []
        for i, width in enumerate(self.widths):
            x = leaky_relu(conv2d(width, 3, ("channels" if i == 0 else "embed", "embed"), dtype=self.dtype)(x))
            x = _Film(self.dtype)(x, condition)
            skips.append(x)
            x = leaky_relu(conv2d(width, 3, ("embed", "embed"), stride=2, dtype=self.dtype)(x))
        x = leaky_relu(conv2d(self.widths[-1], 3, ("embed", "embed"), dtype=self.dtype)(x))
        x = _Film(self.dtype)(x, condition)
        for width, skip in zip(reversed(self.widths), reversed(skips)):
            x = jnp.concatenate([upsample(x), skip], axis=-1)
            x = leaky_relu(conv2d(width, 3, ("embed", "embed"), dtype=self.dtype)(x))
        residual = conv2d(3, 3, ("embed", "channels"), dtype=self.dtype, kernel_init=nn.initializers.zeros_init())(x)
        return jnp.clip(images.astype(jnp.float32) + residual.astype(jnp.float32), 0.0, 1.0)
