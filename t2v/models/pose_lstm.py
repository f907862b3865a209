"""MFCC -> LSTM -> expression coefficients and 3-D head pose (after Yi et al. 2020).

    features `[batch, T, F]` (normalised MFCC, 4 rows per video frame stacked: F = 4 * n_mfcc)
      --front end (one temporal convolution, `lookahead` frames either side)-->  `[batch, T, H]`
      + the reference `[batch, 68, 2]`, its in-plane pose removed (`canonical_shape`), projected
        to `[batch, H]` and added to every frame: a reference taken from a frame of the clip
        may be mid-speech, and the coefficients are relative to it
      --LSTM layers (carry in, carry out)-->  `[batch, T, H]`
      --heads-->  expression `[batch, T, K]`, pose `[batch, T, 6]` (both normalised units)

The front end sees a bounded window and the LSTM hands its state from chunk to chunk,
so `generate_chunked` equals one pass for a sequence of any length, in bounded memory.
What the coefficients mean (a learned expression basis, the pose parametrisation) is the
task's business (`t2v.tasks.pose_lstm`); this module only maps features to them.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v.keypoints import NUM_POINTS
from t2v.models.audio_encoder import chunk_spans
from t2v.models.identity import canonical_shape
from t2v.models.layers import Dtype, conv1d, conv_padding, dense, layer_norm

POSE_PARAMS = 6  # yaw, pitch, roll (radians), log-scale, tx, ty (face units)
Carry = list  # per LSTM layer: (cell [batch, H], hidden [batch, H]), float32


class LSTMLayer(nn.Module):
    """One LSTM over `[batch, T, in]` -> `[batch, T, H]` with an explicit carry.

    Input projections for all frames are one matmul; only the recurrence is scanned.
    Gates (input, forget, candidate, output); the forget bias starts at 1.
    """

    hidden: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, carry):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        projected = dense(4 * self.hidden, ("embed", "mlp"), name="input", **kw)(x).astype(jnp.float32)
        forget_bias = jnp.zeros(4 * self.hidden).at[self.hidden:2 * self.hidden].set(1.0)
        recurrent = self.param("recurrent", nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, "mlp")),
                               (self.hidden, 4 * self.hidden), self.param_dtype)

        def step(state, inputs):
            cell, hidden = state
            gates = inputs + forget_bias + hidden @ recurrent.astype(jnp.float32)
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
            hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
            return (cell, hidden), hidden

        carry, out = jax.lax.scan(step, carry, jnp.swapaxes(projected, 0, 1))
        return jnp.swapaxes(out, 0, 1).astype(self.dtype), carry


class PoseLSTM(nn.Module):
    """Fields (filled from `config.model.lstm`):
      hidden        H, the LSTM and front-end width
      num_layers    stacked LSTM layers
      lookahead     frames of future (and past) audio the front end sees per frame
      expression_dim  K, expression coefficients per frame
    """

    hidden: int = 128
    num_layers: int = 2
    lookahead: int = 2
    expression_dim: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.nowrap
    def context_frames(self) -> tuple[int, int]:
        """Frames `(before, after)` of input the front end reads around each frame."""
        return conv_padding(2 * self.lookahead + 1)

    @nn.nowrap
    def initial_carry(self, batch: int) -> Carry:
        zeros = jnp.zeros((batch, self.hidden), jnp.float32)
        return [(zeros, zeros) for _ in range(self.num_layers)]

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.front = conv1d(self.hidden, 2 * self.lookahead + 1, ("channels", "embed"),
                            padding=self.context_frames(), name="front", **kw)
        self.reference_in = dense(self.hidden, ("channels", "embed"), name="reference", **kw)
        self.layers = [LSTMLayer(self.hidden, name=f"lstm_{i}", **kw) for i in range(self.num_layers)]
        self.norm = layer_norm(name="out_norm", **kw)
        self.expression_head = dense(self.expression_dim, ("embed", "channels"), name="expression", **kw)
        self.pose_head = dense(POSE_PARAMS, ("embed", "channels"), name="pose", **kw)

    def front_end(self, features, reference):
        """`[batch, T, F]`, reference `[batch, 68, 2]` -> `[batch, T, H]` (bounded context:
        chunk with `context_frames`)."""
        shape = canonical_shape(reference.astype(jnp.float32)).reshape(-1, NUM_POINTS * 2)
        code = self.reference_in(shape.astype(self.dtype))
        return nn.gelu(self.front(features.astype(self.dtype)) + code[:, None])

    def recur(self, front, carry=None):
        """`[batch, T, H]` front-end output -> ({"expression", "pose"} float32, carry)."""
        carry = self.initial_carry(front.shape[0]) if carry is None else carry
        x, new_carry = front, []
        for layer, layer_carry in zip(self.layers, carry):
            x, layer_carry = layer(x, layer_carry)
            new_carry.append(layer_carry)
        x = self.norm(x)
        return {"expression": self.expression_head(x).astype(jnp.float32),
                "pose": self.pose_head(x).astype(jnp.float32)}, new_carry

    def __call__(self, features, reference, carry=None):
        """One pass: features `[batch, T, F]`, reference `[batch, 68, 2]` ->
        ({"expression" `[batch, T, K]`, "pose" `[batch, T, 6]`}, carry)."""
        return self.recur(self.front_end(features, reference), carry)


def generate_chunked(model: PoseLSTM, variables: Any, features, reference, chunk_frames: int) -> dict[str, np.ndarray]:
    """`model.apply(variables, features, reference)[0]` for a sequence of any length, chunk by chunk.

    features `[batch, T, F]`, reference `[batch, 68, 2]` -> {"expression", "pose"} host arrays; each chunk's front end
    reads `context_frames()` real frames either side and the LSTM carries its state over.
    """
    num_frames = features.shape[1]
    carry = model.initial_carry(features.shape[0])
    parts = []
    for c in chunk_spans(num_frames, chunk_frames, model.context_frames()):
        front = _front_end(model, variables, features[:, c.lo:c.hi], reference)
        out, carry = _recur(model, variables, front[:, c.start - c.lo:c.stop - c.lo], carry)
        parts.append(jax.device_get(out))
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


@functools.partial(jax.jit, static_argnums=0)
def _front_end(model: PoseLSTM, variables, features, reference):
    return model.apply(variables, features, reference, method=PoseLSTM.front_end)


@functools.partial(jax.jit, static_argnums=0)
def _recur(model: PoseLSTM, variables, front, carry):
    return model.apply(variables, front, carry, method=PoseLSTM.recur)
