"""The `motion` task: audio + reference keypoints -> keypoint motion (StyleTalker, Audio2Keypoint).

Model (`t2v.models.motion_vae.MotionModel`): audio encoder, pose-invariant identity
encoder, conditional sequential VAE over keypoints and an autoregressive flow prior
p(z | audio). The mouth is decoded from audio and identity; head pose, blinks and brows
from the latents, so:
  * audio-driven mode: z ~ p(z | audio) at a temperature (`generate_audio_driven`);
  * motion-controllable mode: z = the posterior mean of a motion *source* clip, decoded
    with the target's audio and reference (`generate_from_source`).

Training loss, per window (`config.loss`):
  recon     L1 keypoint error in face units, mouth points weighted `mouth_weight`
  mouth_shape  L1 error of the pose-free mouth (`pipeline.pose_free_mouth`), the lips
            without the head pose the latents carry
  velocity  L1 error of frame-to-frame keypoint differences (smooth, not lagging motion)
  kl        E_q[log q(z) - log p(z | audio)] per frame, with the flow's exact log-likelihood
            of the posterior sample (a one-sample ELBO); weight ramps up over `kl_warmup_steps`
  piv       PIV identity: the embedding of another frame of the same clip (other head pose,
            other expression), randomly rotated, scaled and shifted, must equal the
            reference's embedding (relative squared error)
  sync      optional: 1 - cosine score of a frozen lip-sync expert (`model.sync_workdir`)
            between the audio and the reconstructed mouth; skipped when the path is empty
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2v import keypoints as kp
from t2v.data import pipeline
from t2v.models.flow import diagonal_gaussian_log_prob
from t2v.models.audio_encoder import MELS_PER_FRAME, chunk_spans
from t2v.models.motion_vae import MotionModel, build_motion_model
from t2v.tasks import Task, register

MOUTH_INDEX = np.asarray(kp.MOUTH)


def point_weights(mouth_weight: float) -> np.ndarray:
    """`[68]` loss weights: 1 everywhere, `mouth_weight` on the MOUTH points, mean 1."""
    weights = np.ones(kp.NUM_POINTS, np.float32)
    weights[MOUTH_INDEX] = mouth_weight
    return weights / weights.mean()


def pearson(x, y, axis=-1):
    """Pearson correlation along `axis` (0 where either side is constant); numpy or jax."""
    xp = jnp if isinstance(x, jax.Array) or isinstance(y, jax.Array) else np
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    denominator = xp.sqrt((x**2).sum(axis=axis) * (y**2).sum(axis=axis))
    return xp.where(denominator > 1e-12, (x * y).sum(axis=axis) / xp.maximum(denominator, 1e-12), 0.0)


def random_similarity(rng, points, max_angle=0.3, max_log_scale=0.2, max_shift=0.2):
    """Each `[batch, 68, 2]` shape moved by its own random in-plane rotation, scale and shift."""
    angle_rng, scale_rng, shift_rng = jax.random.split(rng, 3)
    batch = points.shape[0]
    angle = jax.random.uniform(angle_rng, (batch,), minval=-max_angle, maxval=max_angle)
    log_scale = jax.random.uniform(scale_rng, (batch,), minval=-max_log_scale, maxval=max_log_scale)
    shift = jax.random.uniform(shift_rng, (batch, 2), minval=-max_shift, maxval=max_shift)
    pose = jnp.concatenate([log_scale[:, None], angle[:, None], shift], axis=-1)
    return kp.compose_pose(pose, points)


@register("motion")
class MotionTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.model: MotionModel = build_motion_model(
            m.audio.to_dict(), m.identity.to_dict(), m.vae.to_dict(), m.prior.to_dict(),
            dtype=jnp.dtype(config.train.compute_dtype))
        self.weights = jnp.asarray(point_weights(float(config.loss.mouth_weight)))
        self.sync_expert = None
        if config.model.get("sync_workdir", ""):
            from t2v.tasks import sync  # a frozen expert: its parameters are constants here

            self.sync_expert = sync.load_expert(config.model.sync_workdir)
            if self.sync_expert.window > config.data.window:
                raise ValueError(f"model.sync_workdir={config.model.sync_workdir}: the expert's window "
                                 f"{self.sync_expert.window} is longer than data.window={config.data.window}")

    # -- data ------------------------------------------------------------------------------
    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    # -- model -----------------------------------------------------------------------------
    def init(self, rng, batch):
        params_rng, latent_rng = jax.random.split(rng)
        with _without_global_mesh():
            variables = self.model.init({"params": params_rng, "latent": latent_rng},
                                        batch["mel"], batch["reference"], batch["keypoints"])
        return variables["params"]

    def apply(self, params, *args, method=None, **kwargs):
        with _without_global_mesh():
            return self.model.apply({"params": params}, *args, method=method, **kwargs)

    def loss(self, params, batch, rng, step):
        lc = self.config.loss
        latent_rng, piv_rng, frame_rng = jax.random.split(rng, 3)
        target, reference = batch["keypoints"], batch["reference"]
        out = self.apply(params, batch["mel"], reference, target, rngs={"latent": latent_rng})
        frames = target.shape[1]

        recon = self.weighted_l1(out["keypoints"], target)
        # The lips once more without head pose: what lip sync (and lmd_mouth) is about.
        mouth_shape = jnp.mean(jnp.abs(pipeline.pose_free_mouth(out["keypoints"], reference[:, None]) - batch["mouth"]))
        velocity = self.weighted_l1(jnp.diff(out["keypoints"], axis=1), jnp.diff(target, axis=1))
        log_q = diagonal_gaussian_log_prob(out["z"], out["mean"], out["logvar"]).sum(-1)
        kl = jnp.mean(log_q - out["prior_log_prob"]) / frames  # nats per frame
        kl_weight = float(lc.kl_weight) * jnp.minimum(1.0, (step + 1) / max(int(lc.kl_warmup_steps), 1))

        # PIV: another frame of the same clip (other pose, other expression), moved in-plane.
        pick = jax.random.randint(frame_rng, (target.shape[0],), 0, frames)
        other = random_similarity(piv_rng, target[jnp.arange(target.shape[0]), pick])
        other_identity = self.apply(params, other, method=MotionModel.embed_identity).astype(jnp.float32)
        piv = jnp.mean((other_identity - out["identity"]) ** 2) / (
            jax.lax.stop_gradient(jnp.mean(out["identity"] ** 2)) + 1e-6)

        total = (recon + float(lc.mouth_shape_weight) * mouth_shape + float(lc.velocity_weight) * velocity
                 + kl_weight * kl + float(lc.piv_weight) * piv)
        metrics = {"recon": recon, "mouth_shape": mouth_shape, "velocity": velocity, "kl": kl, "kl_weight": kl_weight, "piv": piv,
                   "lmd": landmark_distance(out["keypoints"], target).mean()}
        if self.sync_expert is not None:
            score = self.sync_expert.score(batch["mel"], out["keypoints"], reference)
            sync_loss = jnp.mean(1.0 - score)
            total = total + float(lc.sync_weight) * sync_loss
            metrics["sync_score"] = jnp.mean(score)
        return total, metrics

    def weighted_l1(self, prediction, target):
        """Mean L1 over x, y and frames, points weighted by `self.weights`: `[..., 68, 2]` -> []."""
        return jnp.mean(jnp.abs(prediction - target).mean(-1) * self.weights)

    def eval_metrics(self, params, batch, rng):
        target, reference = batch["keypoints"], batch["reference"]
        recon = self.apply(params, batch["mel"], reference, target, sample_latent=False)
        generated, _ = self.apply(params, rng, batch["mel"], reference, float(self.config.sample.temperature),
                                  method=MotionModel.generate)
        # As in t2v.evaluate: lmd with head pose, lmd_mouth on the pose-free lips.
        mouths = [pipeline.pose_free_mouth(points, reference[:, None]) for points in (generated["keypoints"], target)]
        return {
            "recon_lmd": landmark_distance(recon["keypoints"], target).mean(),
            "lmd": landmark_distance(generated["keypoints"], target).mean(),
            "lmd_mouth": jnp.sqrt(((mouths[0] - mouths[1]) ** 2).sum(-1)).mean(),
            "mouth_corr": pearson(kp.mouth_opening(generated["keypoints"]), kp.mouth_opening(target)).mean(),
        }

    # -- generation (host side, used by t2v.evaluate and t2v.generate) -----------------------------
    def generate_audio_driven(self, params, rng, mel, reference, temperature=None, chunk_frames=256):
        """Audio-driven generation of any length, chunk by chunk with bounded memory.

        mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` -> {"keypoints" `[batch, T, 68, 2]`,
        "offsets", "pose", "z"} host arrays; equals one pass of `MotionModel.generate`
        (`t2v.models.motion_vae.generate_chunked` does the same; these jitted steps are
        compiled once per task instead of once per call).
        """
        temperature = float(self.config.sample.temperature if temperature is None else temperature)
        mel, reference = jnp.asarray(mel), jnp.asarray(reference)
        num_frames = mel.shape[1] // MELS_PER_FRAME
        carry = self.model.prior.initial_carry(mel.shape[0])
        parts = []
        for c in chunk_spans(num_frames, chunk_frames, self.model.audio_encoder.context_frames()):
            feats = self._encode_audio(params, mel[:, MELS_PER_FRAME * c.lo : MELS_PER_FRAME * c.hi])
            out, carry = self._generate_step(params, rng, feats[:, c.start - c.lo : c.stop - c.lo], reference,
                                             temperature, carry)
            parts.append(jax.device_get(out))
        return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}

    @functools.partial(jax.jit, static_argnums=0)
    def _encode_audio(self, params, mel):
        return self.apply(params, mel, method=MotionModel.encode_audio)

    @functools.partial(jax.jit, static_argnums=0)
    def _generate_step(self, params, rng, audio_feats, reference, temperature, carry):
        return self.apply(params, rng, audio_feats, reference, temperature, carry,
                          method=MotionModel.generate_from_features)

    @functools.partial(jax.jit, static_argnums=0)
    def generate_from_source(self, params, mel, reference, source_mel, source_keypoints, source_reference):
        """Motion-controllable mode: pose, blinks and brows of a source clip, lips of the audio.

        mel `[batch, 4T, 80]` and reference `[batch, 68, 2]` of the target; the source's
        mel `[batch, 4T, 80]`, keypoints `[batch, T, 68, 2]`, reference -> decode outputs.
        """
        source_audio = self.apply(params, source_mel, method=MotionModel.encode_audio)
        mean, _ = self.apply(params, source_keypoints, source_reference, source_audio, method=MotionModel.encode)
        audio_feats = self.apply(params, mel, method=MotionModel.encode_audio)
        return self.apply(params, mean, audio_feats, reference, method=MotionModel.decode)


def _without_global_mesh():
    """Flax's DenseGeneral (the audio encoder's attention) makes its kernel flat and reshapes
    it after boxing, so under a global mesh the box's sharding constraint meets the flat rank
    (also in apply, which shape-checks through the initialiser). Tracing the model without
    the global mesh avoids that; the loop still shards parameters and batches explicitly."""
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), ()))


def landmark_distance(prediction, target):
    """Euclidean distance per point in face units: `[..., 68, 2]` -> `[..., 68]`."""
    xp = jnp if isinstance(prediction, jax.Array) or isinstance(target, jax.Array) else np
    return xp.sqrt(((prediction - target) ** 2).sum(-1))
