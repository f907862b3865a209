"""The motion model: a conditional sequential VAE over keypoint motion (after StyleTalker).

    audio  mel `[batch, 4T, 80]`  --AudioEncoder-->  a `[batch, T, D]`
    reference `[batch, 68, 2]`    --IdentityEncoder-->  e `[batch, E]`   (pose-invariant)
    keypoints `[batch, T, 68, 2]`, a  --posterior-->  q(z_t | ...) = N(mean, exp(logvar)), `[batch, T, Z]`
    z, a, e, reference  --decoder-->  keypoints `[batch, T, 68, 2]`
    p(z | a): FlowPrior (autoregressive conditional flow), for audio-driven sampling.

The decoder is split the way the paper's disentanglement needs: the mouth (points 48..67)
comes from the audio and the identity (plus at most `mouth_latent_dim` latent dims);
everything else (head pose, blinks, brows) comes from z and the identity, never from
the audio directly. Output keypoints are the reference plus per-point offsets, then moved
by a per-frame 2D pose (rotation, log-scale, translation about the reference centroid).

The decoder is per-frame and the audio encoder has a bounded receptive field, so
`generate_chunked` produces sequences of any length with bounded memory.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2v.keypoints import MOUTH, NUM_POINTS
from t2v.models import remat as remat_lib
from t2v.models.audio_encoder import MELS_PER_FRAME, AudioEncoder, check_mel_frames, chunk_spans
from t2v.models.flow import FlowPrior
from t2v.models.identity import IdentityEncoder
from t2v.models.layers import MLP, Dtype, TemporalConvBlock, dense, layer_norm

_NON_MOUTH = tuple(i for i in range(NUM_POINTS) if i not in MOUTH)
# Decoder branches emit [non-mouth points, mouth points]; this puts them back in iBUG order.
_BRANCH_ORDER = np.argsort(np.array(_NON_MOUTH + MOUTH))
POSE_PARAMS = 4  # angle (radians), log-scale, x and y translation


def apply_pose(points, pose, centre):
    """Similarity about `centre`: points `[..., N, 2]`, pose `[..., 4]`, centre `[..., 1, 2]`."""
    angle, log_scale, shift = pose[..., 0, None], pose[..., 1, None], pose[..., None, 2:4]
    cos, sin = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
    rel = points - centre
    x, y = rel[..., 0:1], rel[..., 1:2]
    rotated = jnp.concatenate([cos * x - sin * y, sin * x + cos * y], axis=-1)
    return centre + jnp.exp(log_scale)[..., None] * rotated + shift


class MotionVAE(nn.Module):
    """Posterior encoder and keypoint decoder; audio features and identity come from outside.

    Fields (filled from `config.model.vae`):
      latent_dim         Z, per-frame latent width (pose, blinks, expression)
      features           posterior width
      posterior_layers   dilated conv blocks in the posterior (dilations 1, 2, 4, ...)
      kernel_size        their kernel size
      decoder_hidden     widths of each decoder branch's MLP
      mouth_latent_dim   leading latent dims the mouth branch may see (0: audio only)
      offset_scale       initial scale of the predicted offsets
      remat              rematerialisation of each posterior block (`t2v.models.remat`)
    """

    latent_dim: int = 16
    features: int = 64
    posterior_layers: int = 3
    kernel_size: int = 3
    decoder_hidden: Sequence[int] = (128, 128)
    mouth_latent_dim: int = 0
    offset_scale: float = 0.1
    remat: str = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.posterior_in = dense(self.features, ("channels", "embed"), **kw)
        block = remat_lib.remat(TemporalConvBlock, self.remat)
        self.posterior_blocks = [
            block(2 * self.features, self.kernel_size, 2**i, **kw) for i in range(self.posterior_layers)]
        self.posterior_norm = layer_norm(**kw)
        self.posterior_out = dense(2 * self.latent_dim, ("embed", "channels"), **kw)
        hidden = tuple(self.decoder_hidden)
        self.mouth_head = MLP(hidden, len(MOUTH) * 2, out_scale=self.offset_scale, **kw)
        self.face_head = MLP(hidden, len(_NON_MOUTH) * 2, out_scale=self.offset_scale, **kw)
        self.pose_head = MLP(hidden, POSE_PARAMS, out_scale=0.0, **kw)  # starts at the reference pose

    @nn.nowrap
    def posterior_context_frames(self) -> tuple[int, int]:
        """Frames `(before, after)` of input one posterior frame depends on (bounded, so chunkable)."""
        per_side = sum(2**i * (self.kernel_size - 1) // 2 for i in range(self.posterior_layers))
        return per_side, per_side

    def encode(self, keypoints, reference, audio_feats):
        """q(z | keypoints, audio): keypoints `[batch, T, 68, 2]`, reference `[batch, 68, 2]`,
        audio `[batch, T, D]` -> (mean, logvar), each `[batch, T, Z]`, float32."""
        offsets = keypoints - reference[:, None]
        x = jnp.concatenate([offsets.reshape(*offsets.shape[:2], NUM_POINTS * 2), audio_feats], axis=-1)
        x = self.posterior_in(x.astype(self.dtype))
        for block in self.posterior_blocks:
            x = block(x)
        stats = self.posterior_out(self.posterior_norm(x)).astype(jnp.float32)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        return mean, logvar

    def decode(self, z, audio_feats, identity, reference):
        """p(keypoints | z, audio, identity), per frame.

        z `[batch, T, Z]`, audio `[batch, T, D]`, identity `[batch, E]`, reference
        `[batch, 68, 2]` -> {"keypoints": `[batch, T, 68, 2]`, "offsets": `[batch, T, 68, 2]`
        (pose-free, added to the reference), "pose": `[batch, T, 4]`}, float32.
        """
        batch, frames = z.shape[:2]
        identity = jnp.broadcast_to(identity[:, None], (batch, frames, identity.shape[-1]))
        mouth_in = [audio_feats, identity] + ([z[..., :self.mouth_latent_dim]] if self.mouth_latent_dim else [])
        mouth = self.mouth_head(jnp.concatenate(mouth_in, axis=-1).astype(self.dtype))
        face_in = jnp.concatenate([z, identity], axis=-1).astype(self.dtype)
        face = self.face_head(face_in)
        pose = self.pose_head(face_in).astype(jnp.float32)
        offsets = jnp.concatenate([face.reshape(batch, frames, len(_NON_MOUTH), 2),
                                   mouth.reshape(batch, frames, len(MOUTH), 2)], axis=2)
        offsets = offsets[:, :, _BRANCH_ORDER].astype(jnp.float32)
        reference = reference.astype(jnp.float32)
        centre = jnp.mean(reference, axis=-2, keepdims=True)[:, None]  # [batch, 1, 1, 2]
        keypoints = apply_pose(reference[:, None] + offsets, pose, centre)
        return {"keypoints": keypoints, "offsets": offsets, "pose": pose}

    def __call__(self, keypoints, reference, audio_feats, identity, sample_latent: bool = True):
        """Reconstruct: encode, draw z (rng stream "latent") or take the mean, decode."""
        mean, logvar = self.encode(keypoints, reference, audio_feats)
        z = mean
        if sample_latent:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("latent"), mean.shape)
        return {"mean": mean, "logvar": logvar, "z": z, **self.decode(z, audio_feats, identity, reference)}


class MotionModel(nn.Module):
    """The whole `motion` model: audio encoder, PIV identity encoder, VAE, flow prior.

    Build it with `build_motion_model`. Shapes: mel `[batch, 4T, 80]`, reference
    `[batch, 68, 2]`, keypoints `[batch, T, 68, 2]`.
    """

    audio_encoder: AudioEncoder
    identity_encoder: IdentityEncoder
    vae: MotionVAE
    prior: FlowPrior

    def encode_audio(self, mel):
        """mel `[batch, 4T, 80]` -> audio features `[batch, T, D]`."""
        return self.audio_encoder(mel)

    def embed_identity(self, reference):
        """reference `[batch, 68, 2]` -> identity `[batch, E]`."""
        return self.identity_encoder(reference)

    def encode(self, keypoints, reference, audio_feats):
        """Posterior (mean, logvar) `[batch, T, Z]` of a keypoint sequence and its reference."""
        return self.vae.encode(keypoints, reference, audio_feats)

    def decode(self, z, audio_feats, reference):
        """Keypoints from latents: see `MotionVAE.decode`; the identity is computed here."""
        return self.vae.decode(z, audio_feats, self.identity_encoder(reference), reference)

    def prior_log_prob(self, z, audio_feats):
        """Exact log p(z | audio) `[batch]` under the flow prior."""
        return self.prior.log_prob(z, audio_feats)

    def sample_prior(self, rng, audio_feats, temperature=1.0, carry=None):
        """z `[batch, T, Z]` ~ p(z | audio) and the prior's carry (see `FlowPrior.sample`)."""
        return self.prior.sample(rng, audio_feats, temperature, carry)

    def generate_from_features(self, rng, audio_feats, reference, temperature=1.0, carry=None):
        """Audio-driven generation from audio features: (decode outputs + {"z"}, prior carry)."""
        z, carry = self.prior.sample(rng, audio_feats, temperature, carry)
        return {"z": z, **self.decode(z, audio_feats, reference)}, carry

    def generate(self, rng, mel, reference, temperature=1.0, carry=None):
        """Audio-driven generation in one pass: mel `[batch, 4T, 80]` -> ({"keypoints", ...}, carry)."""
        return self.generate_from_features(rng, self.audio_encoder(mel), reference, temperature, carry)

    def __call__(self, mel, reference, keypoints, sample_latent: bool = True):
        """Training pass. Returns float32 arrays:

        audio_feats `[batch, T, D]`, identity `[batch, E]`, mean/logvar/z `[batch, T, Z]`,
        keypoints/offsets `[batch, T, 68, 2]` (reconstruction), pose `[batch, T, 4]`,
        prior_log_prob `[batch]` (log p(z | audio) of the drawn z). The KL term is
        `diagonal_gaussian_log_prob(z, mean, logvar).sum(-1) - prior_log_prob`
        (`t2v.models.flow`). Needs the rng stream "latent" when `sample_latent`.
        """
        audio_feats = self.audio_encoder(mel)
        identity = self.identity_encoder(reference)
        out = self.vae(keypoints, reference, audio_feats, identity, sample_latent)
        prior_log_prob = self.prior.log_prob(out["z"], audio_feats)
        return {**out, "audio_feats": audio_feats.astype(jnp.float32), "identity": identity.astype(jnp.float32),
                "prior_log_prob": prior_log_prob}


def build_motion_model(audio: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
                       vae: Mapping[str, Any] | None = None, prior: Mapping[str, Any] | None = None,
                       dtype: Dtype = jnp.float32, remat: str = "none") -> MotionModel:
    """A `MotionModel` from the field dicts of `config.model.{audio, identity, vae, prior}`.

    Missing fields take the module defaults (tiny sizes); `prior.latent_dim` follows `vae`.
    `remat` (`config.model.remat`, a `t2v.models.remat` policy) rematerialises the audio
    encoder as a whole and each posterior block: the activations that grow with the clip.
    """
    audio_fields, identity_fields, vae_fields, prior_fields = (
        _hashable(fields) for fields in (audio, identity, vae, prior))
    latent_dim = vae_fields.get("latent_dim", MotionVAE.latent_dim)
    if prior_fields.setdefault("latent_dim", latent_dim) != latent_dim:
        raise ValueError(f"build_motion_model: prior.latent_dim {prior_fields['latent_dim']} "
                         f"!= vae.latent_dim {latent_dim}")
    return MotionModel(
        audio_encoder=remat_lib.remat(AudioEncoder, remat)(**audio_fields, dtype=dtype),
        identity_encoder=IdentityEncoder(**identity_fields, dtype=dtype),
        vae=MotionVAE(**vae_fields, remat=remat, dtype=dtype),
        prior=FlowPrior(**prior_fields, dtype=dtype))


def _hashable(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Module fields with lists (as config.json gives them) as tuples: a hashable module can be
    a static argument of a jitted function."""
    return {name: tuple(value) if isinstance(value, list) else value for name, value in (fields or {}).items()}


def generate_chunked(model: MotionModel, variables: Any, rng, mel, reference, chunk_frames: int,
                     temperature: float = 1.0) -> dict[str, np.ndarray]:
    """`model.generate` for a sequence of any length, chunk by chunk, with bounded memory.

    mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` -> {"keypoints" `[batch, T, 68, 2]`,
    "offsets", "pose" `[batch, T, 4]`, "z" `[batch, T, Z]`} as host arrays. Each chunk's
    audio is encoded with `model.audio_encoder.context_frames()` of real audio either side,
    the prior carries its state from chunk to chunk and the decoder is per-frame, so the
    result equals one pass of `model.generate` with the same `rng`. Time is linear in T.
    The two steps are compiled once per model and chunk shape (the model is hashable:
    `build_motion_model` makes its fields tuples), not once per call.
    """
    check_mel_frames(mel, "generate_chunked")
    num_frames = mel.shape[1] // MELS_PER_FRAME
    carry = model.prior.initial_carry(mel.shape[0])
    parts: list[dict[str, np.ndarray]] = []
    for c in chunk_spans(num_frames, chunk_frames, model.audio_encoder.context_frames()):
        feats = _encode_audio(model, variables, mel[:, MELS_PER_FRAME * c.lo:MELS_PER_FRAME * c.hi])
        out, carry = _generate_step(model, variables, rng, feats[:, c.start - c.lo:c.stop - c.lo], reference,
                                    temperature, carry)
        parts.append(jax.device_get(out))
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


@functools.partial(jax.jit, static_argnums=0)
def _encode_audio(model: MotionModel, variables, mel):
    return model.apply(variables, mel, method=MotionModel.encode_audio)


@functools.partial(jax.jit, static_argnums=0)
def _generate_step(model: MotionModel, variables, rng, audio_feats, reference, temperature, carry):
    return model.apply(variables, rng, audio_feats, reference, temperature, carry,
                       method=MotionModel.generate_from_features)
