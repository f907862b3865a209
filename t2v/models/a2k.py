"""Audio2Keypoint (Manocha et al.): a GAN generator of keypoint sequences and its temporal critic.

    audio  mel `[batch, 4T, 80]`  --AudioEncoder-->  a `[batch, T, D]`
    reference `[batch, 68, 2]`    --IdentityEncoder-->  e `[batch, E]`   (pose-invariant, PIV)
    a, e, noise `[batch, T, N]`   --KeypointUNet-->  offsets `[batch, T, 68, 2]`
    keypoints = reference + offsets (head pose, in-plane and out-of-plane, is in the offsets)

`KeypointUNet` is a 1-D U-Net over time: per level a residual temporal convolution, an
average-pool halving, and on the way up a nearest-neighbour doubling joined with the skip.
It is fully convolutional with a bounded receptive field, so `generate_chunked` makes a
sequence of any length chunk by chunk and equals one pass, when chunks start on the
U-Net's pooling grid (multiples of `2^levels` frames; `KeypointUNet.context_frames()` is
such a multiple). The per-frame noise of global frame t is `normal(fold_in(rng, t))`, so
it too is the same chunked or not.

`TemporalDiscriminator` judges keypoint motion: `[batch, T, C]` (positions relative to the
reference and their frame-to-frame velocity, optionally with the audio features) through
stride-2 temporal convolutions to one logit per time patch `[batch, T / 2^n, 1]`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v.keypoints import NUM_POINTS
from t2v.models.audio_encoder import MELS_PER_FRAME, AudioEncoder, check_mel_frames, chunk_spans
from t2v.models.identity import IdentityEncoder
from t2v.models.layers import Dtype, TemporalConvBlock, conv1d, dense, layer_norm, leaky_relu


def frame_noise(rng, first_frame, frames: int, batch: int, dim: int):
    """`[batch, frames, dim]` standard normal noise; global frame t draws from `fold_in(rng, t)`."""
    index = first_frame + jnp.arange(frames, dtype=jnp.int32)
    return jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(rng, t), (batch, dim)), out_axes=1)(index)


class KeypointUNet(nn.Module):
    """`[batch, T, C]` per-frame conditioning -> keypoint offsets `[batch, T, 68, 2]`, any T.

    Fields (filled from `config.model.unet`):
      widths        channels per level, fine to coarse; len(widths) - 1 halvings
      kernel_size   temporal kernel of every block
      blocks        residual blocks per level and side
      offset_scale  initial scale of the output (small: start near the reference)
    """

    widths: Sequence[int] = (64, 96, 128)
    kernel_size: int = 3
    blocks: int = 1
    offset_scale: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def levels(self) -> int:
        return len(self.widths) - 1

    @nn.nowrap
    def context_frames(self) -> int:
        """Frames either side one output frame may depend on, rounded up to the pooling grid."""
        half = (self.kernel_size - 1) // 2
        span = 0
        for level in range(len(self.widths)):
            sides = 1 if level == self.levels() else 2  # the bottleneck has no decoder side
            span += sides * self.blocks * half * 2**level
            if level < self.levels():
                span += 2 * 2 ** (level + 1)  # pooling and upsampling shift by up to one coarse frame
        grid = 2 ** self.levels()
        return grid * math.ceil(span / grid)

    def _block(self, x, width: int, name: str):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.blocks):
            x = TemporalConvBlock(2 * width, self.kernel_size, name=f"{name}_{i}", **kw)(x)
        return x

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, frames = x.shape[:2]
        grid = 2 ** self.levels()
        x = jnp.pad(x.astype(self.dtype), ((0, 0), (0, -frames % grid), (0, 0)))  # whole coarse frames
        x = dense(self.widths[0], ("channels", "embed"), name="in", **kw)(x)
        skips = []
        for level, width in enumerate(self.widths[:-1]):
            x = self._block(x, width, f"down_{level}")
            skips.append(x)
            x = x.reshape(batch, x.shape[1] // 2, 2, width).mean(2)
            x = dense(self.widths[level + 1], ("embed", "mlp"), name=f"down_{level}_widen", **kw)(x)
            x = nn.gelu(layer_norm("mlp", name=f"down_{level}_norm", **kw)(x))
        x = self._block(x, self.widths[-1], "bottleneck")
        for level in reversed(range(self.levels())):
            x = jnp.repeat(x, 2, axis=1)
            x = jnp.concatenate([x, skips[level]], axis=-1)
            x = dense(self.widths[level], ("channels", "embed"), name=f"up_{level}_merge", **kw)(x)
            x = self._block(x, self.widths[level], f"up_{level}")
        x = layer_norm(name="out_norm", **kw)(x)
        init = nn.initializers.variance_scaling(self.offset_scale**2, "fan_in", "truncated_normal")
        out = dense(NUM_POINTS * 2, ("embed", "channels"), kernel_init=init, name="out", **kw)(x)
        return out[:, :frames].astype(jnp.float32).reshape(batch, frames, NUM_POINTS, 2)


class Audio2KeypointGenerator(nn.Module):
    """Audio encoder + PIV identity encoder + temporal U-Net. Shapes as in the module docstring."""

    audio_encoder: AudioEncoder
    identity_encoder: IdentityEncoder
    unet: KeypointUNet
    noise_dim: int = 4

    def encode_audio(self, mel):
        """mel `[batch, 4T, 80]` -> audio features `[batch, T, D]`."""
        return self.audio_encoder(mel)

    def embed_identity(self, reference):
        """keypoints `[batch, 68, 2]` -> identity `[batch, E]`."""
        return self.identity_encoder(reference)

    def decode(self, audio_feats, reference, noise):
        """audio `[batch, T, D]`, reference `[batch, 68, 2]`, noise `[batch, T, N]` ->
        {"keypoints", "offsets"} `[batch, T, 68, 2]` float32."""
        batch, frames = audio_feats.shape[:2]
        identity = self.identity_encoder(reference)
        identity = jnp.broadcast_to(identity[:, None], (batch, frames, identity.shape[-1]))
        parts = [audio_feats, identity.astype(audio_feats.dtype)]
        if self.noise_dim:
            parts.append(noise.astype(audio_feats.dtype))
        offsets = self.unet(jnp.concatenate(parts, axis=-1))
        return {"keypoints": reference[:, None].astype(jnp.float32) + offsets, "offsets": offsets}

    def __call__(self, rng, mel, reference, temperature=1.0):
        """One pass: mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` -> decode outputs plus
        "audio_feats" and "identity" (float32)."""
        audio_feats = self.audio_encoder(mel)
        batch, frames = audio_feats.shape[:2]
        noise = temperature * frame_noise(rng, 0, frames, batch, max(self.noise_dim, 1))
        out = self.decode(audio_feats, reference, noise)
        return {**out, "audio_feats": audio_feats.astype(jnp.float32),
                "identity": self.identity_encoder(reference).astype(jnp.float32)}


class TemporalDiscriminator(nn.Module):
    """Keypoint motion `[batch, T, C]` -> (feature maps, logits `[batch, ceil(T / 2^n), 1]`).

    Fields (filled from `config.model.discriminator`): `widths`, one stride-2 convolution
    each (kernel 4) but the last, which keeps the length.
    """

    widths: Sequence[int] = (64, 128, 128)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        features = []
        axis_in = "channels"
        for i, width in enumerate(self.widths):
            axis_out = "embed" if i % 2 == 0 else "mlp"
            stride = 2 if i < len(self.widths) - 1 else 1
            padding = (1, 2) if stride == 2 else (1, 1)
            kernel = 4 if stride == 2 else 3
            x = leaky_relu(conv1d(width, kernel, (axis_in, axis_out), stride=stride, padding=padding,
                                  name=f"conv_{i}", **kw)(x))
            features.append(x)
            axis_in = axis_out
        logits = conv1d(1, 3, (axis_in, "channels"), padding=(1, 1), name="logits", **kw)(x)
        return features, logits.astype(jnp.float32)


def motion_features(keypoints, reference):
    """What the discriminator sees of a sequence: keypoints `[batch, T, 68, 2]` relative to the
    reference `[batch, 68, 2]` and their velocity (0 at frame 0) -> `[batch, T, 272]`."""
    offsets = keypoints - reference[:, None]
    velocity = jnp.concatenate([jnp.zeros_like(offsets[:, :1]), jnp.diff(offsets, axis=1)], axis=1)
    batch, frames = keypoints.shape[:2]
    return jnp.concatenate([offsets.reshape(batch, frames, -1), velocity.reshape(batch, frames, -1)], axis=-1)


def build_a2k_generator(audio: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
                        unet: Mapping[str, Any] | None = None, noise_dim: int = 4,
                        dtype: Dtype = jnp.float32) -> Audio2KeypointGenerator:
    """The generator from the field dicts of `config.model.{audio, identity, unet}` (hashable:
    lists become tuples, so the module can be a static argument of a jitted function)."""
    fields = [{k: tuple(v) if isinstance(v, list) else v for k, v in (f or {}).items()} for f in (audio, identity, unet)]
    return Audio2KeypointGenerator(AudioEncoder(**fields[0], dtype=dtype), IdentityEncoder(**fields[1], dtype=dtype),
                                   KeypointUNet(**fields[2], dtype=dtype), noise_dim=int(noise_dim))


def generate_chunked(model: Audio2KeypointGenerator, variables: Any, rng, mel, reference, chunk_frames: int,
                     temperature: float = 1.0) -> dict[str, np.ndarray]:
    """One pass of `model` for a sequence of any length, chunk by chunk, with bounded memory.

    mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` -> {"keypoints", "offsets"} host
    arrays `[batch, T, 68, 2]`. `chunk_frames` is rounded up to the U-Net's pooling grid.
    Each chunk's U-Net input spans `unet.context_frames()` frames either side (a multiple
    of the grid, so every span starts on it), and each span's audio features are encoded
    with the audio encoder's own context of real audio: the result equals one pass.
    """
    check_mel_frames(mel, "a2k generate_chunked")
    num_frames = mel.shape[1] // MELS_PER_FRAME
    grid = 2 ** model.unet.levels()
    chunk_frames = grid * math.ceil(chunk_frames / grid)
    context = model.unet.context_frames()
    audio_before, audio_after = model.audio_encoder.context_frames()
    parts = []
    for c in chunk_spans(num_frames, chunk_frames, (context, context)):
        lo, hi = max(0, c.lo - audio_before), min(num_frames, c.hi + audio_after)
        feats = _encode_audio(model, variables, mel[:, MELS_PER_FRAME * lo:MELS_PER_FRAME * hi])
        out = _decode_span(model, variables, rng, feats[:, c.lo - lo:c.hi - lo], reference, c.lo, temperature)
        parts.append(jax.device_get({k: v[:, c.start - c.lo:c.stop - c.lo] for k, v in out.items()}))
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


@functools.partial(jax.jit, static_argnums=0)
def _encode_audio(model: Audio2KeypointGenerator, variables, mel):
    return model.apply(variables, mel, method=Audio2KeypointGenerator.encode_audio)


@functools.partial(jax.jit, static_argnums=0)
def _decode_span(model: Audio2KeypointGenerator, variables, rng, audio_feats, reference, first_frame, temperature):
    batch, frames = audio_feats.shape[:2]
    noise = temperature * frame_noise(rng, first_frame, frames, batch, max(model.noise_dim, 1))
    return model.apply(variables, audio_feats, reference, noise, method=Audio2KeypointGenerator.decode)
