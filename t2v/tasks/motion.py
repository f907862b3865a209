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

At each eval, `write_samples` draws generated keypoints beside the true ones for two
held-out clips, with their audio (`motion_sample_<i>.mp4`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from t2v import keypoints as kp
from t2v import parallel
from t2v import video
from t2v.data import pipeline
from t2v.errors import InputError
from t2v.evaluate.metrics import landmark_distance, pearson  # one home for every metric
from t2v.models.flow import diagonal_gaussian_log_prob
from t2v.models.motion_vae import MotionModel, build_motion_model, generate_chunked
from t2v.tasks import Task, register

MOUTH_INDEX = np.asarray(kp.MOUTH)
SAMPLE_CLIPS = 2  # held-out clips drawn into sample videos at each eval
SAMPLE_FRAMES = 100  # 4 s at most: enough to see the lips follow the speech
SAMPLE_CANVAS = 128  # pixels per panel (generated | true)
GENERATED_COLOR, TRUE_COLOR = (0, 255, 0), (255, 255, 255)
# The frontal face centred on the canvas, 70% of its width: room left for head motion.
_CANVAS_SCALE = 0.35 * SAMPLE_CANVAS  # pixels per face unit (the jaw spans about [-1, 1])
_TEMPLATE_MIDDLE = (kp.FRONTAL_TEMPLATE.min(0) + kp.FRONTAL_TEMPLATE.max(0)) / 2
_CANVAS_FRAME = kp.FaceFrame((SAMPLE_CANVAS / 2 - _CANVAS_SCALE * _TEMPLATE_MIDDLE).astype(np.float32),
                             np.float32(_CANVAS_SCALE))


def point_weights(mouth_weight: float) -> np.ndarray:
    """`[68]` loss weights: 1 everywhere, `mouth_weight` on the MOUTH points, mean 1."""
    weights = np.ones(kp.NUM_POINTS, np.float32)
    weights[MOUTH_INDEX] = mouth_weight
    return weights / weights.mean()


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
            dtype=jnp.dtype(config.train.compute_dtype), remat=config.model.get("remat", "none"))
        self.weights = jnp.asarray(point_weights(float(config.loss.mouth_weight)))
        self.sync_expert = None
        if config.model.get("sync_workdir", ""):
            from t2v.tasks import sync  # a frozen expert: an input of the step (frozen_params)

            self.sync_expert = sync.load_expert(config.model.sync_workdir)
            if self.sync_expert.window > config.data.window:
                raise InputError(f"model.sync_workdir={config.model.sync_workdir}: the expert's window "
                                 f"{self.sync_expert.window} is longer than data.window={config.data.window}")

    # -- data ------------------------------------------------------------------------------
    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    # -- model -----------------------------------------------------------------------------
    # -- the frozen sync expert: an input of the step, sharded like the parameters -----------
    def frozen_params(self):
        """The trained constants the loss reads (`{"sync_expert": params}`), or None.

        The update step takes them as an argument (`loss(..., frozen=...)`) with the
        shardings of `frozen_shardings`, so they live on the mesh like the parameters
        instead of being baked into the program from one device; no gradient reaches them."""
        return None if self.sync_expert is None else {"sync_expert": self.sync_expert.params}

    def frozen_shardings(self, mesh, rules):
        """NamedShardings of `frozen_params()` from the expert's logical axis names and `rules`."""
        if self.sync_expert is None:
            return None
        w = self.sync_expert.window
        example = {"mel": jax.ShapeDtypeStruct((1, 4 * w, 80), jnp.float32),
                   "mouth": jax.ShapeDtypeStruct((1, w, len(kp.MOUTH), 2), jnp.float32)}
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            boxed = jax.eval_shape(self.sync_expert.task.init, jax.random.PRNGKey(0), example)
        return {"sync_expert": parallel.logical_to_sharding(boxed, mesh, rules)}

    def init(self, rng, batch):
        params_rng, latent_rng = jax.random.split(rng)
        variables = self.model.init({"params": params_rng, "latent": latent_rng},
                                    batch["mel"], batch["reference"], batch["keypoints"])
        return variables["params"]

    def apply(self, params, *args, method=None, **kwargs):
        return self.model.apply({"params": params}, *args, method=method, **kwargs)

    def loss(self, params, batch, rng, step, frozen=None):
        """`frozen`: `frozen_params()` as the step passes them (None: the expert's own arrays)."""
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
            expert_params = None if frozen is None else frozen["sync_expert"]
            score = self.sync_expert.score(batch["mel"], out["keypoints"], reference, params=expert_params)
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
        (see `t2v.models.motion_vae.generate_chunked`).
        """
        temperature = float(self.config.sample.temperature if temperature is None else temperature)
        return generate_chunked(self.model, {"params": params}, rng, jnp.asarray(mel), jnp.asarray(reference),
                                chunk_frames, temperature)

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

    # -- reports ---------------------------------------------------------------------------
    def write_samples(self, params, out_dir, step):
        """`motion_sample_<i>.mp4`: see `write_keypoint_samples`."""
        write_keypoint_samples(self, params, out_dir, "motion")


def draw_face(points, color) -> np.ndarray:
    """Face-frame keypoints `[68, 2]` drawn on a blank `SAMPLE_CANVAS`-pixel square: uint8 `[S, S, 3]`."""
    canvas = np.zeros((SAMPLE_CANVAS, SAMPLE_CANVAS, 3), np.uint8)
    return kp.draw_keypoints(canvas, kp.denormalise(np.asarray(points, np.float32), _CANVAS_FRAME), color)


def write_keypoint_samples(task, params, out_dir: str, name: str) -> None:
    """`<name>_sample_<i>.mp4` for the first held-out clips: generated keypoints (green) beside
    the true ones (white), with the clip's audio, Every process calls
    it (the parameters are gathered); process 0 writes."""
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
        return
    clips = pipeline.load_clips(task.config, "eval", limit=SAMPLE_CLIPS, keep_audio=True)
    if not clips:
        return
    frames = min(SAMPLE_FRAMES, max(len(c["keypoints"]) for c in clips))
    mel = np.stack([pipeline.mel_span(c["mel"], 0, frames) for c in clips])
    reference = np.stack([c["reference"] for c in clips])
    generated = task.generate_audio_driven(params, jax.random.PRNGKey(task.config.seed), mel, reference,
                                           chunk_frames=int(task.config.sample.chunk_frames))["keypoints"]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        shown = min(frames, len(clip["keypoints"]))
        panels = [np.concatenate([draw_face(generated[i, t], GENERATED_COLOR),
                                  draw_face(clip["keypoints"][t], TRUE_COLOR)], axis=1) for t in range(shown)]
        wave = clip["audio"][: round(shown * clip["sample_rate"] / video.FPS)]
        video.write_video(Path(out_dir) / f"{name}_sample_{i}.mp4", np.stack(panels), wave,
                          sample_rate=clip["sample_rate"])
