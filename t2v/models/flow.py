"""Autoregressive normalizing-flow prior over motion latents, conditioned on audio.

    p(z_1..T | a_1..T) = prod_t p(z_t | z_<t, a_t)

A GRU runs over the past latents and the audio, `h_t = GRU(h_t-1, [z_t-1, a_t])`, and a
stack of conditional affine couplings (RealNVP, alternating even/odd masks) maps each
latent to standard-normal noise given `c_t = [h_t, a_t]`:

    eps_t, logdet_t = forward(z_t, c_t)        log p(z_t | ...) = log N(eps_t) + logdet_t
    z_t = inverse(eps_t, c_t)                  (sampling)

so the log-likelihood is exact. `forward` is the normalising direction (latent -> noise).

Streaming: `sample`, `sample_from_noise` and `frame_log_prob` take and return a carry
(GRU state, last latent, frame counter). The noise of frame t is drawn from
`fold_in(rng, t)` with the *global* frame index t from the carry, so passing the same
`rng` to every chunk gives exactly the latents of one pass over the whole sequence.
`sample_from_noise` takes the noise from the caller instead (serving graphs, `t2v.export`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v.models.layers import MLP, Dtype, default_kernel_init

Carry = dict[str, Any]  # {"hidden": [batch, H], "latent": [batch, Z], "frame": int32 []}


def standard_normal_log_prob(x):
    """log N(x; 0, I) summed over the last axis: `[..., Z] -> [...]`."""
    return -0.5 * jnp.sum(x**2 + math.log(2 * math.pi), axis=-1)


def diagonal_gaussian_log_prob(x, mean, logvar):
    """log N(x; mean, diag(exp(logvar))) summed over the last axis: `[..., Z] -> [...]`."""
    return -0.5 * jnp.sum((x - mean) ** 2 * jnp.exp(-logvar) + logvar + math.log(2 * math.pi), axis=-1)


class AffineCoupling(nn.Module):
    """`y = x * exp(s(x_kept, c)) + t(x_kept, c)` on the dims not kept; kept dims pass.

    Kept dims are those with index parity `parity`. The log-scale is soft-clipped to
    +-`scale_limit` and the conditioner's last layer starts at zero, so a fresh coupling
    is the identity.
    """

    latent_dim: int
    parity: int
    hidden_features: Sequence[int] = (64, 64)
    scale_limit: float = 2.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.conditioner = MLP(tuple(self.hidden_features), 2 * self.latent_dim, out_scale=0.0,
                               dtype=self.dtype, param_dtype=self.param_dtype)
        self.kept = jnp.asarray(np.arange(self.latent_dim) % 2 == self.parity, jnp.float32)

    def _scale_and_shift(self, kept_values, cond):
        raw = self.conditioner(jnp.concatenate([kept_values, cond.astype(kept_values.dtype)], axis=-1))
        log_scale, shift = jnp.split(raw.astype(jnp.float32), 2, axis=-1)
        log_scale = self.scale_limit * jnp.tanh(log_scale / self.scale_limit)
        return log_scale * (1 - self.kept), shift * (1 - self.kept)

    def forward(self, x, cond):
        """x `[..., Z]`, cond `[..., C]` -> (y `[..., Z]`, log|det dy/dx| `[...]`)."""
        log_scale, shift = self._scale_and_shift(x * self.kept, cond)
        return x * jnp.exp(log_scale) + shift, jnp.sum(log_scale, axis=-1)

    def inverse(self, y, cond):
        log_scale, shift = self._scale_and_shift(y * self.kept, cond)  # kept dims: y == x
        return (y - shift) * jnp.exp(-log_scale)

    def __call__(self, x, cond):
        return self.forward(x, cond)


class ConditionalFlow(nn.Module):
    """A stack of `num_couplings` affine couplings with alternating masks, `[..., Z]` + `[..., C]`."""

    latent_dim: int
    num_couplings: int = 4
    hidden_features: Sequence[int] = (64, 64)
    scale_limit: float = 2.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.couplings = [
            AffineCoupling(self.latent_dim, i % 2, tuple(self.hidden_features), self.scale_limit,
                           dtype=self.dtype, param_dtype=self.param_dtype)
            for i in range(self.num_couplings)]

    def forward(self, x, cond):
        """latent x `[..., Z]` -> (noise `[..., Z]`, log|det d noise / dx| `[...]`), float32."""
        x = x.astype(jnp.float32)
        logdet = jnp.zeros(x.shape[:-1], jnp.float32)
        for coupling in self.couplings:
            x, step_logdet = coupling.forward(x, cond)
            logdet = logdet + step_logdet
        return x, logdet

    def inverse(self, y, cond):
        """noise `[..., Z]` -> latent `[..., Z]`, the exact inverse of `forward`."""
        y = y.astype(jnp.float32)
        for coupling in reversed(self.couplings):
            y = coupling.inverse(y, cond)
        return y

    def __call__(self, x, cond):
        return self.forward(x, cond)


class FlowPrior(nn.Module):
    """p(z_t | z_<t, a_t): GRU context + conditional flow. z `[batch, T, Z]`, a `[batch, T, D]`.

    Fields (filled from `config.model.prior`):
      latent_dim        Z, must equal the VAE's latent width
      hidden_features   GRU width H
      num_couplings     affine couplings in the flow
      coupling_hidden   widths of each coupling's conditioner MLP
      scale_limit       soft bound on each coupling's log-scale
    The flow's condition is `c_t = [h_t, a_t]`, width H + D.
    """

    latent_dim: int = 16
    hidden_features: int = 64
    num_couplings: int = 4
    coupling_hidden: Sequence[int] = (64, 64)
    scale_limit: float = 2.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.cell = nn.GRUCell(
            self.hidden_features, dtype=self.dtype, param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, ("channels", "mlp")),
            recurrent_kernel_init=nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)))
        self.flow = ConditionalFlow(self.latent_dim, self.num_couplings, tuple(self.coupling_hidden),
                                    self.scale_limit, dtype=self.dtype, param_dtype=self.param_dtype)

    @nn.nowrap
    def initial_carry(self, batch_size: int) -> Carry:
        """The state before frame 0: zero GRU state, zero previous latent."""
        return {"hidden": jnp.zeros((batch_size, self.hidden_features), jnp.float32),
                "latent": jnp.zeros((batch_size, self.latent_dim), jnp.float32),
                "frame": jnp.zeros((), jnp.int32)}

    def _advance(self, hidden, latent_prev, audio_t):
        """One GRU step: (h_t-1, z_t-1, a_t) -> (h_t, c_t)."""
        hidden, _ = self.cell(hidden, jnp.concatenate([latent_prev, audio_t.astype(jnp.float32)], -1))
        hidden = hidden.astype(jnp.float32)
        return hidden, jnp.concatenate([hidden, audio_t.astype(jnp.float32)], axis=-1)

    def forward(self, x, cond):
        """The flow alone: latent `[..., Z]`, cond `[..., H + D]` -> (noise, logdet `[...]`)."""
        return self.flow.forward(x, cond)

    def inverse(self, y, cond):
        """The flow alone: noise `[..., Z]`, cond `[..., H + D]` -> latent `[..., Z]`."""
        return self.flow.inverse(y, cond)

    def to_noise(self, z, audio_feats, carry: Carry | None = None):
        """The normalising direction for a whole sequence, teacher-forced.

        z `[batch, T, Z]`, audio `[batch, T, D]` -> (noise `[batch, T, Z]`, logdet `[batch, T]`,
        carry after the last frame). `sample` is its exact inverse for the same carry.
        """
        self._check(z, audio_feats)
        carry = self.initial_carry(z.shape[0]) if carry is None else carry
        z = z.astype(jnp.float32)
        latent_prev = jnp.concatenate([carry["latent"][:, None], z[:, :-1]], axis=1)

        def step(module, hidden, inputs):
            return module._advance(hidden, *inputs)

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        hidden, cond = scan(self, carry["hidden"], (latent_prev, audio_feats))
        noise, logdet = self.flow.forward(z, cond)
        return noise, logdet, {"hidden": hidden, "latent": z[:, -1], "frame": carry["frame"] + z.shape[1]}

    def frame_log_prob(self, z, audio_feats, carry: Carry | None = None):
        """log p(z_t | z_<t, a_t) per frame: -> (`[batch, T]`, carry after the last frame)."""
        noise, logdet, carry = self.to_noise(z, audio_feats, carry)
        return standard_normal_log_prob(noise) + logdet, carry

    def log_prob(self, z, audio_feats):
        """Exact log p(z | audio), summed over frames: z `[batch, T, Z]`, a `[batch, T, D]` -> `[batch]`."""
        return jnp.sum(self.frame_log_prob(z, audio_feats)[0], axis=1)

    def sample(self, rng, audio_feats, temperature: float = 1.0, carry: Carry | None = None):
        """Draw z `[batch, T, Z]` given audio `[batch, T, D]`; returns (z, carry).

        Noise for global frame t is `temperature * normal(fold_in(rng, t))`: give every
        chunk of one sequence the same `rng` and the carry of the previous chunk.
        """
        batch, frames = audio_feats.shape[:2]
        carry = self.initial_carry(batch) if carry is None else carry
        frame_index = carry["frame"] + jnp.arange(frames, dtype=jnp.int32)
        noise = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(rng, t), (batch, self.latent_dim)),
                         out_axes=1)(frame_index)
        return self.sample_from_noise(noise * temperature, audio_feats, carry)

    def sample_from_noise(self, noise, audio_feats, carry: Carry | None = None):
        """The sampling direction with the noise given (deterministic, as a serving graph needs).

        noise `[batch, T, Z]` (standard normal times the temperature), audio `[batch, T, D]`
        -> (z `[batch, T, Z]`, carry after the last frame). The exact inverse of `to_noise`.
        """
        carry = self.initial_carry(noise.shape[0]) if carry is None else carry

        def step(module, state, inputs):
            hidden, latent_prev = state
            audio_t, noise_t = inputs
            hidden, cond = module._advance(hidden, latent_prev, audio_t)
            latent = module.flow.inverse(noise_t, cond)
            return (hidden, latent), latent

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
        (hidden, latent), z = scan(self, (carry["hidden"], carry["latent"]), (audio_feats, noise))
        return z, {"hidden": hidden, "latent": latent, "frame": carry["frame"] + noise.shape[1]}

    def __call__(self, z, audio_feats):
        return self.log_prob(z, audio_feats)

    def _check(self, z, audio_feats):
        if z.ndim != 3 or z.shape[-1] != self.latent_dim or z.shape[:2] != audio_feats.shape[:2]:
            raise ValueError(f"FlowPrior: z must be [batch, T, {self.latent_dim}] matching audio "
                             f"[batch, T, D]; got {tuple(z.shape)} and {tuple(audio_feats.shape)}")
