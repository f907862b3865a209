"""Action-unit driven talking heads (the `au` task) and the AU classifier (`au_cls`).

    mel `[batch, 4T, 80]`        --AudioEncoder-->  a `[batch, T, D]`
    a                            --AudioToAU-->     u `[batch, T, 9]`  speech AUs in [0, 1]
    reference `[batch, 68, 2]`   --IdentityEncoder--> e `[batch, E]`
    a, u, e                      --FusionNetwork--> offsets `[batch, T, 68, 2]`
    keypoints = reference + offsets

`FusionNetwork` mixes its inputs over time with dilated non-causal temporal convolutions
then local self-attention (`LocalSelfAttention`, a band of `window` frames): a bounded
receptive field (`context_frames`), so `generate_chunked` makes any length chunk by chunk
and equals one pass. Without AU driving (`au_driving=False`, the ablation) the fusion sees
only audio and identity.

`AUClassifier`: keypoints `[batch, T, 68, 2]` + reference -> speech-AU intensities
`[batch, T, 9]` (logits); its input is the pose-free face in the template's upright frame
and its displacement from the reference's, through a few temporal convolutions.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v import keypoints as kp
from t2v.au import NUM_AUS
from t2v.models.audio_encoder import MELS_PER_FRAME, AudioEncoder, LocalSelfAttention, check_mel_frames, chunk_spans
from t2v.models.identity import IdentityEncoder
from t2v.models.layers import Dtype, FeedForward, TemporalConvBlock, dense, layer_norm


class AudioToAU(nn.Module):
    """Audio features `[batch, T, D]` -> speech-AU logits `[batch, T, 9]` (one conv: +-1 frame)."""

    hidden: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    CONTEXT = 1  # frames either side (the kernel-3 block)

    @nn.compact
    def __call__(self, audio_feats):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.gelu(dense(self.hidden, ("embed", "mlp"), name="in", **kw)(audio_feats))
        x = TemporalConvBlock(2 * self.hidden, 3, name="block", **kw)(x)
        x = layer_norm("mlp", name="norm", **kw)(x)
        return dense(NUM_AUS, ("mlp", "channels"), name="out", **kw)(x).astype(jnp.float32)


class FusionNetwork(nn.Module):
    """Per-frame conditioning `[batch, T, C]` -> keypoint offsets `[batch, T, 68, 2]`, any T.

    Fields (filled from `config.model.fusion`): `features`, `dilations` (one residual
    kernel-`kernel_size` block each), `attention_layers`, `num_heads`, `window` (attention
    radius, frames), `offset_scale` (initial output scale: start near the reference).
    """

    features: int = 64
    dilations: Sequence[int] = (1, 2, 4, 8)
    kernel_size: int = 3
    attention_layers: int = 1
    num_heads: int = 4
    window: int = 8
    offset_scale: float = 0.01
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def context_frames(self) -> int:
        """Frames either side one output frame depends on."""
        return sum(d * (self.kernel_size - 1) // 2 for d in self.dilations) + self.attention_layers * self.window

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, frames = x.shape[:2]
        x = dense(self.features, ("channels", "embed"), name="in", **kw)(x.astype(self.dtype))
        for i, dilation in enumerate(self.dilations):
            x = TemporalConvBlock(2 * self.features, self.kernel_size, dilation, name=f"conv_{i}", **kw)(x)
        for i in range(self.attention_layers):
            y = layer_norm(name=f"attention_{i}_norm", **kw)(x)
            x = x + LocalSelfAttention(self.num_heads, self.features // self.num_heads, self.window,
                                       name=f"attention_{i}", **kw)(y)
            y = layer_norm(name=f"mlp_{i}_norm", **kw)(x)
            x = x + FeedForward(2 * self.features, name=f"mlp_{i}", **kw)(y)
        x = layer_norm(name="out_norm", **kw)(x)
        init = nn.initializers.variance_scaling(self.offset_scale**2, "fan_in", "truncated_normal")
        out = dense(kp.NUM_POINTS * 2, ("embed", "channels"), kernel_init=init, name="out", **kw)(x)
        return out.astype(jnp.float32).reshape(batch, frames, kp.NUM_POINTS, 2)


class AUTalkingHead(nn.Module):
    """Audio encoder + audio-to-AU + identity + fusion. Shapes as in the module docstring."""

    audio_encoder: AudioEncoder
    identity_encoder: IdentityEncoder
    au_head: AudioToAU
    fusion: FusionNetwork
    au_driving: bool = True

    def encode_audio(self, mel):
        return self.audio_encoder(mel)

    def embed_identity(self, reference):
        return self.identity_encoder(reference)

    def decode(self, audio_feats, reference):
        """audio `[batch, T, D]`, reference `[batch, 68, 2]` -> {"keypoints", "offsets"
        `[batch, T, 68, 2]`, "au_logits", "au" `[batch, T, 9]`} float32."""
        batch, frames = audio_feats.shape[:2]
        logits = self.au_head(audio_feats)
        aus = jax.nn.sigmoid(logits)
        identity = self.identity_encoder(reference)
        parts = [audio_feats, jnp.broadcast_to(identity[:, None], (batch, frames, identity.shape[-1])).astype(audio_feats.dtype)]
        if self.au_driving:
            parts.append(aus.astype(audio_feats.dtype))
        offsets = self.fusion(jnp.concatenate(parts, axis=-1))
        return {"keypoints": reference[:, None].astype(jnp.float32) + offsets, "offsets": offsets,
                "au_logits": logits, "au": aus}

    def __call__(self, mel, reference):
        return self.decode(self.audio_encoder(mel), reference)

    @nn.nowrap
    def decode_context(self) -> int:
        """Frames of audio features either side one decoded frame depends on."""
        return self.fusion.context_frames() + AudioToAU.CONTEXT  # the AU output needs it either way


def build_au_model(audio: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
                   au_head: Mapping[str, Any] | None = None, fusion: Mapping[str, Any] | None = None,
                   au_driving: bool = True, dtype: Dtype = jnp.float32) -> AUTalkingHead:
    """The model from the field dicts of `config.model.*` (lists become tuples: hashable)."""
    fields = [{k: tuple(v) if isinstance(v, list) else v for k, v in (f or {}).items()}
              for f in (audio, identity, au_head, fusion)]
    return AUTalkingHead(AudioEncoder(**fields[0], dtype=dtype), IdentityEncoder(**fields[1], dtype=dtype),
                         AudioToAU(**fields[2], dtype=dtype), FusionNetwork(**fields[3], dtype=dtype),
                         au_driving=bool(au_driving))


def generate_chunked(model: AUTalkingHead, variables: Any, mel, reference, chunk_frames: int) -> dict[str, np.ndarray]:
    """One pass of `model` over a sequence of any length, chunk by chunk, bounded memory.

    mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` -> {"keypoints", "offsets", "au"} host
    arrays. Each chunk is decoded from the audio features of `decode_context()` frames
    either side, each encoded with the audio encoder's own context: equal to one pass.
    """
    check_mel_frames(mel, "au generate_chunked")
    num_frames = mel.shape[1] // MELS_PER_FRAME
    context = model.decode_context()
    audio_before, audio_after = model.audio_encoder.context_frames()
    parts = []
    for c in chunk_spans(num_frames, max(int(chunk_frames), 1), (context, context)):
        lo, hi = max(0, c.lo - audio_before), min(num_frames, c.hi + audio_after)
        feats = _encode_audio(model, variables, mel[:, MELS_PER_FRAME * lo:MELS_PER_FRAME * hi])
        out = _decode(model, variables, feats[:, c.lo - lo:c.hi - lo], reference)
        parts.append(jax.device_get({k: out[k][:, c.start - c.lo:c.stop - c.lo] for k in ("keypoints", "offsets", "au")}))
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


@functools.partial(jax.jit, static_argnums=0)
def _encode_audio(model: AUTalkingHead, variables, mel):
    return model.apply(variables, mel, method=AUTalkingHead.encode_audio)


@functools.partial(jax.jit, static_argnums=0)
def _decode(model: AUTalkingHead, variables, audio_feats, reference):
    return model.apply(variables, audio_feats, reference, method=AUTalkingHead.decode)


# --------------------------------------------------------------------------- the AU classifier


def classifier_features(points, reference):
    """keypoints `[batch, T, 68, 2]`, reference `[batch, 68, 2]` -> `[batch, T, 272]`: the pose-free
    face in the template's upright frame and its displacement from the reference's (traceable)."""
    neutral = kp.split_pose(reference)[1]
    face = kp.split_pose(points, neutral[:, None])[1]
    batch, frames = points.shape[:2]
    return jnp.concatenate([face.reshape(batch, frames, -1), (face - neutral[:, None]).reshape(batch, frames, -1)], -1)


class AUClassifier(nn.Module):
    """keypoints `[batch, T, 68, 2]` + reference `[batch, 68, 2]` -> speech-AU logits `[batch, T, 9]`.

    Fields (from `config.model.classifier`): `features`, `dilations` (temporal blocks).
    """

    features: int = 64
    dilations: Sequence[int] = (1, 2)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, points, reference):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = classifier_features(points.astype(jnp.float32), reference.astype(jnp.float32))
        x = nn.gelu(dense(self.features, ("channels", "embed"), name="in", **kw)(x.astype(self.dtype)))
        for i, dilation in enumerate(self.dilations):
            x = TemporalConvBlock(2 * self.features, 3, dilation, name=f"conv_{i}", **kw)(x)
        x = layer_norm(name="out_norm", **kw)(x)
        return dense(NUM_AUS, ("embed", "channels"), name="out", **kw)(x).astype(jnp.float32)


def receptive_frames(dilations: Sequence[int]) -> int:
    """Frames either side one AU estimate of `AUClassifier` depends on."""
    return int(sum(dilations))

