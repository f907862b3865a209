"""Audio encoder: log-mel `[batch, 4T, 80]` -> one feature per video frame `[batch, T, D]`.

Two stride-2 convolutions fold the 4 mel frames of each video frame into one, then a
small pre-LN transformer with *local* self-attention (each frame sees at most `window`
frames either side, or only the past when `causal`) mixes them over time. Position enters
only through a learned relative-offset bias, never an absolute index.

Why bounded and not recurrent: the output at frame t depends only on the mel frames of
video frames [t - left, t + right] (`AudioEncoder.context_frames()`), so a sequence of
any length can be encoded chunk by chunk, each chunk padded with that much real audio
on either side, and give the same features as one pass over the whole sequence
(`encode_in_chunks`). The motion model's decoder is per-frame and its prior is a
recurrence with an explicit carry, so the whole generator streams with bounded memory
(`t2v.models.motion_vae.generate_chunked`). The non-causal encoder (default) costs
`right` frames of look-ahead latency; `causal=True` makes it zero.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v.models.layers import Dtype, FeedForward, MultiAxisDense, conv1d, layer_norm

MELS_PER_FRAME = 4  # 16 kHz, 10 ms hop, 25 fps
_STEM_KERNEL = 4
_STEM_STRIDE = 2  # twice: 4 mel frames -> 1 video frame


class LocalSelfAttention(nn.Module):
    """Multi-head self-attention over `[batch, time, embed]` restricted to a band.

    Query t attends to keys t - window .. t + window (t - window .. t when causal), plus a
    learned bias per head and relative offset. Softmax runs in float32.
    """

    num_heads: int
    head_dim: int
    window: int
    causal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        length, width = x.shape[1:]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def project(name):
            return MultiAxisDense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), name=name, **kw)(x)

        query, key, value = project("query"), project("key"), project("value")
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) / math.sqrt(self.head_dim)

        offset = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]  # key - query, [T, T]
        visible = jnp.abs(offset) <= self.window
        if self.causal:
            visible &= offset <= 0
        relative_bias = self.param(
            "relative_bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, "heads")),
            (2 * self.window + 1, self.num_heads), self.param_dtype)
        bias = relative_bias[jnp.clip(offset + self.window, 0, 2 * self.window)]  # [T, T, heads]
        logits = logits + jnp.transpose(bias, (2, 0, 1)).astype(jnp.float32)
        logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)

        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return MultiAxisDense((width,), ("heads", "kv", "embed"), in_dims=2, use_bias=True, name="out",
                              **kw)(attended)


class AudioEncoder(nn.Module):
    """log-mel `[batch, 4T, n_mels]` -> per-frame audio features `[batch, T, features]`.

    Fields (filled from `config.model.audio`):
      features     D, the output width (tiny ~32-64, base ~256-512)
      num_layers   transformer blocks after the convolutional stem
      num_heads    attention heads (features must divide by it)
      window       attention radius in video frames, per block
      mlp_ratio    feed-forward width = mlp_ratio * features
      causal       only past audio: zero look-ahead, for live streaming
      n_mels       mel bins (80)
    """

    features: int = 64
    num_layers: int = 2
    num_heads: int = 4
    window: int = 8
    mlp_ratio: int = 4
    causal: bool = False
    n_mels: int = 80
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def _stem_padding(self) -> tuple[int, int]:
        span = _STEM_KERNEL - _STEM_STRIDE  # keeps length / 2 exactly
        return (span, 0) if self.causal else (span // 2, span - span // 2)

    @nn.nowrap
    def context_frames(self) -> tuple[int, int]:
        """Video frames `(before, after)` of audio that one output frame depends on.

        Encoding frames [a, b) of a longer sequence from the mel of frames
        [a - before, b + after) (clipped to the sequence) reproduces the full pass exactly.
        """
        pad = self._stem_padding()[0]
        k, s = _STEM_KERNEL, _STEM_STRIDE
        # Output frame t of the two-conv stem reads mel [4t - (s*pad + pad), 4t + 3 + extra].
        mels_before = s * pad + pad
        mels_after = s * (k - 1 - pad) - pad + (k - 1) - (MELS_PER_FRAME - 1)
        attention = self.window * self.num_layers
        return (math.ceil(mels_before / MELS_PER_FRAME) + attention,
                math.ceil(mels_after / MELS_PER_FRAME) + (0 if self.causal else attention))

    @nn.compact
    def __call__(self, mel):
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels or mel.shape[1] % MELS_PER_FRAME:
            raise ValueError(f"AudioEncoder: mel must be [batch, {MELS_PER_FRAME}*frames, {self.n_mels}], "
                             f"got {tuple(mel.shape)}")
        if self.features % self.num_heads:
            raise ValueError(f"AudioEncoder: features {self.features} must divide by num_heads {self.num_heads}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = mel.astype(self.dtype)
        x = conv1d(self.features, _STEM_KERNEL, ("channels", "embed"), stride=_STEM_STRIDE,
                   padding=self._stem_padding(), name="stem_0", **kw)(x)
        x = nn.gelu(x)
        x = conv1d(self.features, _STEM_KERNEL, ("embed", "mlp"), stride=_STEM_STRIDE,
                   padding=self._stem_padding(), name="stem_1", **kw)(x)
        x = nn.gelu(x)
        for i in range(self.num_layers):
            y = layer_norm(name=f"block_{i}_attention_norm", **kw)(x)
            x = x + LocalSelfAttention(self.num_heads, self.features // self.num_heads, self.window,
                                       self.causal, name=f"block_{i}_attention", **kw)(y)
            y = layer_norm(name=f"block_{i}_mlp_norm", **kw)(x)
            x = x + FeedForward(self.mlp_ratio * self.features, name=f"block_{i}_mlp", **kw)(y)
        return layer_norm(name="out_norm", **kw)(x)  # [batch, T, features]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) of a sequence, computed from the padded span [lo, hi)."""

    start: int
    stop: int
    lo: int
    hi: int


def check_mel_frames(mel, where: str) -> None:
    """Chunked helpers slice mel by video frame, so it must hold whole frames."""
    if mel.ndim != 3 or mel.shape[1] == 0 or mel.shape[1] % MELS_PER_FRAME:
        raise ValueError(f"{where}: mel must be [batch, {MELS_PER_FRAME}*frames, bins] with frames > 0, "
                         f"got {tuple(mel.shape)}")


def chunk_spans(num_frames: int, chunk_frames: int, context: tuple[int, int]) -> list[Chunk]:
    """Split `num_frames` into chunks of `chunk_frames`, each with `context` frames either side."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_spans: chunk_frames must be positive, got {chunk_frames}")
    before, after = context
    return [Chunk(start, min(start + chunk_frames, num_frames), max(0, start - before),
                  min(num_frames, start + chunk_frames + after))
            for start in range(0, num_frames, chunk_frames)]


def encode_in_chunks(encoder: AudioEncoder, variables: Any, mel, chunk_frames: int) -> np.ndarray:
    """The features of `encoder.apply(variables, mel)` computed chunk by chunk.

    mel `[batch, 4T, n_mels]` -> `[batch, T, features]`; memory is bounded by the chunk
    size, so T can be arbitrarily long; only the few distinct chunk shapes get compiled.
    """
    check_mel_frames(mel, "encode_in_chunks")
    parts = []
    for c in chunk_spans(mel.shape[1] // MELS_PER_FRAME, chunk_frames, encoder.context_frames()):
        feats = _encode(encoder, variables, mel[:, MELS_PER_FRAME * c.lo:MELS_PER_FRAME * c.hi])
        parts.append(np.asarray(feats[:, c.start - c.lo:c.stop - c.lo]))
    return np.concatenate(parts, axis=1)


@functools.partial(jax.jit, static_argnums=0)  # compiled once per encoder and chunk shape
def _encode(encoder: AudioEncoder, variables, mel):
    return encoder.apply(variables, mel)
