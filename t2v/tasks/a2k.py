"""The `a2k` task: Audio2Keypoint (Manocha et al.), audio + reference keypoints -> keypoints, a GAN.

Model (`t2v.models.a2k`): the shared audio encoder and PIV identity encoder feed a 1-D
temporal U-Net that predicts per-frame offsets from the reference (head pose included,
in-plane and out-of-plane: the offsets move every point), with per-frame noise for the
motion audio does not determine; a temporal discriminator judges keypoint motion.

Training loss, per window (`config.loss`):
  l1            L1 keypoint error in face units, mouth points weighted `mouth_weight`
  mouth_shape   L1 error of the pose-free mouth (`pipeline.pose_free_mouth`)
  velocity      L1 error of frame-to-frame differences
  adversarial   the generator's LSGAN (or hinge) term against the temporal discriminator,
                on from `adversarial_start_step`
  piv           PIV identity, two ways: the encoder learns invariance (another frame of the
                clip, randomly moved in-plane, embeds like the reference, as in `motion`),
                and the generator keeps the identity (its frames, through the encoder held
                fixed, embed like the reference)
  d_loss        the discriminator's own loss on true vs generated windows

Both players train in one optimizer step, as `t2v.tasks.render` does: each sees the other
through `stop_gradient`, so the summed loss gives the generator only generator gradients
and the discriminator only discriminator gradients (simultaneous gradient descent). Its
learning rate relative to the generator's is `optimizer.lr_multipliers["^discriminator/"]`.

Generation (`generate_audio_driven`, used by `t2v.evaluate` and `t2v.generate` as for
`motion`): any length, chunk by chunk, equal to one pass; `temperature` scales the noise.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections

from t2v import keypoints as kp
from t2v.data import pipeline
from t2v.models.a2k import (Audio2KeypointGenerator, TemporalDiscriminator, build_a2k_generator,
                            generate_chunked, motion_features)
from t2v.tasks import Task, register
from t2v.tasks.motion import (landmark_distance, pearson, point_weights, random_similarity,
                              write_keypoint_samples)

ADVERSARIAL_LOSSES = ("lsgan", "hinge")


def discriminator_loss(kind: str, real_logits, fake_logits):
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1 - real_logits)) + jnp.mean(jax.nn.relu(1 + fake_logits))
    return jnp.mean(jnp.square(real_logits - 1)) + jnp.mean(jnp.square(fake_logits))


def generator_loss(kind: str, fake_logits):
    return -jnp.mean(fake_logits) if kind == "hinge" else jnp.mean(jnp.square(fake_logits - 1))


def keypoint_metrics(generated, target, reference) -> dict:
    """The eval-step metrics every keypoint task reports (as `t2v.evaluate` defines them):
    `[B, T, 68, 2]` generated and true keypoints, reference `[B, 68, 2]` -> scalars."""
    mouths = [pipeline.pose_free_mouth(points, reference[:, None]) for points in (generated, target)]
    return {
        "lmd": landmark_distance(generated, target).mean(),
        "lmd_mouth": jnp.sqrt(((mouths[0] - mouths[1]) ** 2).sum(-1)).mean(),
        "mouth_corr": pearson(kp.mouth_opening(generated), kp.mouth_opening(target)).mean(),
    }


@register("a2k")
class Audio2KeypointTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        dtype = jnp.dtype(config.train.compute_dtype)
        self.generator: Audio2KeypointGenerator = build_a2k_generator(
            m.audio.to_dict(), m.identity.to_dict(), m.unet.to_dict(), int(m.noise_dim), dtype=dtype)
        self.discriminator = TemporalDiscriminator(tuple(m.discriminator.widths), dtype=dtype)
        self.audio_condition = bool(m.discriminator.audio_condition)
        self.weights = jnp.asarray(point_weights(float(config.loss.mouth_weight)))
        if config.loss.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"loss.adversarial_loss={config.loss.adversarial_loss!r}: expected one of "
                             f"{ADVERSARIAL_LOSSES}")

    # -- data ------------------------------------------------------------------------------
    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    # -- model -----------------------------------------------------------------------------
    def _critic_input(self, keypoints, reference, audio_feats):
        x = motion_features(keypoints, reference)
        if self.audio_condition:
            x = jnp.concatenate([x, jax.lax.stop_gradient(audio_feats).astype(x.dtype)], axis=-1)
        return x

    def init(self, rng, batch):
        generator_rng, noise_rng, critic_rng = jax.random.split(rng, 3)
        generator = self.generator.init(generator_rng, noise_rng, batch["mel"], batch["reference"])["params"]
        feats = jax.eval_shape(lambda: self.generator.apply({"params": generator}, batch["mel"],
                                                             method=Audio2KeypointGenerator.encode_audio))
        x = self._critic_input(batch["keypoints"], batch["reference"], jnp.zeros(feats.shape, feats.dtype))
        return {"generator": generator, "discriminator": self.discriminator.init(critic_rng, x)["params"]}

    def generate(self, params, rng, mel, reference, temperature=1.0):
        """One pass: mel `[B, 4T, 80]`, reference `[B, 68, 2]` -> generator outputs (traced)."""
        return self.generator.apply({"params": params["generator"]}, rng, mel, reference, temperature)

    def weighted_l1(self, prediction, target):
        """Mean L1 over x, y and frames, points weighted by `self.weights`: `[..., 68, 2]` -> []."""
        return jnp.mean(jnp.abs(prediction - target).mean(-1) * self.weights)

    def _piv(self, params, rng, target, out):
        """Encoder invariance (another frame, moved in-plane) + identity kept by the generator."""
        frame_rng, move_rng = jax.random.split(rng)
        batch, frames = target.shape[:2]
        other = random_similarity(move_rng, target[jnp.arange(batch), jax.random.randint(frame_rng, (batch,), 0, frames)])
        embed = lambda p, x: self.generator.apply(  # noqa: E731
            {"params": p}, x, method=Audio2KeypointGenerator.embed_identity).astype(jnp.float32)
        identity = out["identity"]
        scale = jax.lax.stop_gradient(jnp.mean(identity**2)) + 1e-6
        invariance = jnp.mean((embed(params["generator"], other) - identity) ** 2) / scale
        fixed = jax.lax.stop_gradient(params["generator"])
        generated = out["keypoints"].reshape(batch * frames, kp.NUM_POINTS, 2)
        kept = embed(fixed, generated).reshape(batch, frames, -1)
        keeping = jnp.mean((kept - jax.lax.stop_gradient(identity)[:, None]) ** 2) / scale
        return invariance, keeping

    def loss(self, params, batch, rng, step):
        lc = self.config.loss
        noise_rng, piv_rng = jax.random.split(rng)
        target, reference = batch["keypoints"], batch["reference"]
        out = self.generate(params, noise_rng, batch["mel"], reference)
        generated = out["keypoints"]

        l1 = self.weighted_l1(generated, target)
        mouth_shape = jnp.mean(jnp.abs(pipeline.pose_free_mouth(generated, reference[:, None]) - batch["mouth"]))
        velocity = self.weighted_l1(jnp.diff(generated, axis=1), jnp.diff(target, axis=1))
        invariance, keeping = self._piv(params, piv_rng, target, out)

        kind = lc.adversarial_loss
        critic = lambda p, points: self.discriminator.apply(  # noqa: E731
            {"params": p}, self._critic_input(points, reference, out["audio_feats"]))[1]
        real = critic(params["discriminator"], target)
        fake_for_d = critic(params["discriminator"], jax.lax.stop_gradient(generated))
        fake_for_g = critic(jax.lax.stop_gradient(params["discriminator"]), generated)
        d_loss = discriminator_loss(kind, real, fake_for_d)
        g_adversarial = generator_loss(kind, fake_for_g)
        gan_on = (step >= int(lc.adversarial_start_step)).astype(jnp.float32)

        total = (l1 + float(lc.mouth_shape_weight) * mouth_shape + float(lc.velocity_weight) * velocity
                 + float(lc.piv_weight) * (invariance + keeping)
                 + gan_on * (float(lc.adversarial_weight) * g_adversarial + d_loss))
        metrics = {"l1": l1, "mouth_shape": mouth_shape, "velocity": velocity, "piv_invariance": invariance,
                   "piv_identity": keeping, "g_adversarial": g_adversarial, "d_loss": d_loss,
                   "d_real": jnp.mean(real), "d_fake": jnp.mean(fake_for_d),
                   "lmd": landmark_distance(generated, target).mean()}
        return total, metrics

    def eval_metrics(self, params, batch, rng):
        out = self.generate(params, rng, batch["mel"], batch["reference"], float(self.config.sample.temperature))
        return keypoint_metrics(out["keypoints"], batch["keypoints"], batch["reference"])

    # -- generation (host side, used by t2v.evaluate and t2v.generate) -----------------------------
    def generate_audio_driven(self, params, rng, mel, reference, temperature=None, chunk_frames=256):
        """Any length, chunk by chunk: mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` ->
        {"keypoints", "offsets"} host arrays `[batch, T, 68, 2]`, equal to one pass (`generate`)."""
        temperature = float(self.config.sample.temperature if temperature is None else temperature)
        return generate_chunked(self.generator, {"params": params["generator"]}, rng, jnp.asarray(mel),
                                jnp.asarray(reference), chunk_frames, temperature)

    # -- reports ---------------------------------------------------------------------------
    def write_samples(self, params, out_dir, step):
        """`a2k_sample_<i>.mp4`: generated | true keypoints of held-out clips, with their audio."""
        write_keypoint_samples(self, params, out_dir, "a2k")
