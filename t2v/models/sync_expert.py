"""Contrastive lip-sync expert (StyleTalker's sync discriminator, Wav2Lip's SyncNet).

Two (optionally three) towers embed a window of W video frames onto the unit sphere:
  audio:        mel `[batch, 4W, 80]`            -> `[batch, E]`
  mouth:        mouth keypoints `[batch, W, 20, 2]` (pose-normalised by the caller) -> `[batch, E]`
  mouth image:  `[batch, W, h, w, 3]` in [0, 1]    -> `[batch, E]`   (only when `use_image`)
In-sync pairs should score high under `similarity`, a cosine scaled by a learned
temperature; the InfoNCE loss over a batch's similarity matrix lives in the `sync` task.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from t2v.keypoints import MOUTH
from t2v.models.layers import Dtype, TemporalConvBlock, conv1d, conv2d, dense, layer_norm

_MELS_PER_FRAME = 4
_MAX_LOG_SCALE = math.log(100.0)  # CLIP's cap: keeps the logits from blowing up early


def _unit(x):
    x = x.astype(jnp.float32)
    return x / jnp.sqrt(jnp.sum(x**2, axis=-1, keepdims=True) + 1e-12)


class _TemporalHead(nn.Module):
    """`[batch, W, width]` -> unit embedding `[batch, features]`: conv blocks, then the whole window."""

    features: int
    num_layers: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.num_layers):
            x = TemporalConvBlock(2 * x.shape[-1], kernel_size=3, name=f"block_{i}", **kw)(x)
        x = layer_norm(name="norm", **kw)(x)
        # Flattening keeps the frame order, which is what synchrony is about.
        x = x.reshape(x.shape[0], -1)
        return _unit(dense(self.features, ("channels", "embed"), name="out", **kw)(x))


class SyncExpert(nn.Module):
    """Audio / mouth embeddings for lip-sync scoring.

    Fields (filled from `config.model`):
      window               W, video frames per window (5 typical; 16 works too)
      features             E, the embedding width
      width                tower width
      num_layers           temporal conv blocks per tower
      use_image            add the mouth-image tower
      image_channels       its stride-2 conv widths
      initial_temperature  softmax temperature at init (CLIP: 0.07)
      n_mels               mel bins (80)
    """

    window: int = 5
    features: int = 64
    width: int = 64
    num_layers: int = 2
    use_image: bool = False
    image_channels: Sequence[int] = (16, 32, 64)
    initial_temperature: float = 0.07
    n_mels: int = 80
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # Audio: two stride-2 convs fold each video frame's 4 mel frames into one step.
        self.audio_stem = [
            conv1d(self.width, 4, ("channels", "embed"), stride=2, padding=(1, 1), **kw),
            conv1d(self.width, 4, ("embed", "mlp"), stride=2, padding=(1, 1), **kw)]
        self.audio_head = _TemporalHead(self.features, self.num_layers, **kw)
        self.mouth_in = dense(self.width, ("channels", "embed"), **kw)
        self.mouth_head = _TemporalHead(self.features, self.num_layers, **kw)
        if self.use_image:
            self.image_convs = [conv2d(c, 3, ("channels", "mlp"), stride=2, **kw) for c in self.image_channels]
            self.image_in = dense(self.width, ("mlp", "embed"), **kw)
            self.image_head = _TemporalHead(self.features, self.num_layers, **kw)
        self.log_scale = self.param(
            "log_scale", nn.with_logical_partitioning(nn.initializers.constant(-math.log(self.initial_temperature)),
                                                      ()), (), self.param_dtype)

    def embed_audio(self, mel):
        """mel `[batch, 4W, n_mels]` -> unit embedding `[batch, E]` (float32)."""
        if mel.ndim != 3 or mel.shape[1:] != (_MELS_PER_FRAME * self.window, self.n_mels):
            raise ValueError(f"SyncExpert: mel must be [batch, {_MELS_PER_FRAME * self.window}, {self.n_mels}] "
                             f"for window {self.window}, got {tuple(mel.shape)}")
        x = mel.astype(self.dtype)
        for conv in self.audio_stem:
            x = nn.gelu(conv(x))
        return self.audio_head(x)

    def embed_mouth(self, mouth):
        """mouth keypoints `[batch, W, 20, 2]` -> unit embedding `[batch, E]` (float32)."""
        if mouth.ndim != 4 or mouth.shape[1:] != (self.window, len(MOUTH), 2):
            raise ValueError(f"SyncExpert: mouth must be [batch, {self.window}, {len(MOUTH)}, 2], "
                             f"got {tuple(mouth.shape)}")
        x = mouth.reshape(*mouth.shape[:2], -1).astype(self.dtype)
        return self.mouth_head(nn.gelu(self.mouth_in(x)))

    def embed_mouth_image(self, images):
        """mouth crops `[batch, W, h, w, 3]` -> unit embedding `[batch, E]` (float32)."""
        if not self.use_image:
            raise ValueError("SyncExpert: embed_mouth_image needs use_image=True")
        if images.ndim != 5 or images.shape[1] != self.window or images.shape[-1] != 3:
            raise ValueError(f"SyncExpert: mouth images must be [batch, {self.window}, h, w, 3], "
                             f"got {tuple(images.shape)}")
        batch, window = images.shape[:2]
        x = images.reshape(batch * window, *images.shape[2:]).astype(self.dtype)
        for conv in self.image_convs:
            x = nn.gelu(conv(x))
        x = jnp.mean(x, axis=(1, 2)).reshape(batch, window, -1)
        return self.image_head(nn.gelu(self.image_in(x)))

    def logit_scale(self):
        """exp(learned log-scale), capped at 100: the inverse softmax temperature."""
        return jnp.exp(jnp.minimum(self.log_scale, _MAX_LOG_SCALE))

    def similarity(self, audio_emb, mouth_emb):
        """Scaled cosine logits `[batch_a, batch_m]` between unit embeddings `[batch, E]`."""
        return self.logit_scale() * jnp.einsum("ae,me->am", audio_emb.astype(jnp.float32),
                                               mouth_emb.astype(jnp.float32))

    def __call__(self, mel, mouth, mouth_image=None):
        """{"audio", "mouth"[, "image"]} unit embeddings `[batch, E]` and "logit_scale" `[]`."""
        out = {"audio": self.embed_audio(mel), "mouth": self.embed_mouth(mouth), "logit_scale": self.logit_scale()}
        if self.use_image:
            if mouth_image is None:
                raise ValueError("SyncExpert: use_image=True needs mouth_image [batch, W, h, w, 3]")
            out["image"] = self.embed_mouth_image(mouth_image)
        return out
