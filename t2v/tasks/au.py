"""The `au` task: speech-related action units drive the keypoints (audio -> AUs -> fusion -> keypoints).

Model (`t2v.models.au.AUTalkingHead`): the shared audio encoder; an audio-to-AU module
predicting the nine speech AUs (`t2v.au.SPEECH_AUS`) per frame; a fusion network (dilated
non-causal temporal convolutions + local self-attention) over the audio features, the
predicted AUs and the identity of the reference keypoints, giving offsets from the
reference. `model.au_driving=False` (configs/au.py `no_au`) is the ablation: the fusion
gets no AUs and the AU regression is off.

Training loss, per window (`config.loss`):
  l1           L1 keypoint error in face units, mouth points weighted `mouth_weight`
  mouth_shape  L1 error of the pose-free mouth
  velocity     L1 error of frame-to-frame differences
  au           L1 between the predicted AUs and the window's labels (`au [T, 9]`), `au_weight`
               (0 without AU driving)
  au_cls       optional: L1 between a frozen AU classifier's reading of the generated
               keypoints and the labels (`model.au_classifier_workdir`, an `au_cls`
               workdir; never the judge `t2v eval` uses), `au_cls_weight`

Generation (`generate_audio_driven`, as for `motion`): deterministic, any length, chunk by
chunk, equal to one pass.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from t2v.data import pipeline
from t2v.models.au import AUTalkingHead, build_au_model, generate_chunked
from t2v.tasks import Task, register
from t2v.tasks.a2k import keypoint_metrics
from t2v.tasks.motion import landmark_distance, point_weights, write_keypoint_samples


@register("au")
class AUTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.model: AUTalkingHead = build_au_model(m.audio.to_dict(), m.identity.to_dict(), m.au_head.to_dict(),
                                                   m.fusion.to_dict(), bool(m.au_driving),
                                                   dtype=jnp.dtype(config.train.compute_dtype))
        self.weights = jnp.asarray(point_weights(float(config.loss.mouth_weight)))
        # Without AU driving the AU head would only shape the audio encoder: off, a clean ablation.
        self.au_weight = float(config.loss.au_weight) if bool(m.au_driving) else 0.0
        self.classifier = None
        if m.get("au_classifier_workdir", ""):
            from t2v.tasks.au_cls import load_classifier  # frozen: its parameters are constants here

            self.classifier = load_classifier(m.au_classifier_workdir)

    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    def init(self, rng, batch):
        return self.model.init(rng, batch["mel"], batch["reference"])["params"]

    def generate(self, params, mel, reference):
        """One pass (traced): mel `[B, 4T, 80]`, reference `[B, 68, 2]` -> decode outputs."""
        return self.model.apply({"params": params}, mel, reference)

    def weighted_l1(self, prediction, target):
        return jnp.mean(jnp.abs(prediction - target).mean(-1) * self.weights)

    def loss(self, params, batch, rng, step):
        lc = self.config.loss
        target, reference = batch["keypoints"], batch["reference"]
        out = self.generate(params, batch["mel"], reference)
        generated = out["keypoints"]
        l1 = self.weighted_l1(generated, target)
        mouth_shape = jnp.mean(jnp.abs(pipeline.pose_free_mouth(generated, reference[:, None]) - batch["mouth"]))
        velocity = self.weighted_l1(jnp.diff(generated, axis=1), jnp.diff(target, axis=1))
        au_l1 = jnp.mean(jnp.abs(out["au"] - batch["au"]))
        total = (l1 + float(lc.mouth_shape_weight) * mouth_shape + float(lc.velocity_weight) * velocity
                 + self.au_weight * au_l1)
        metrics = {"l1": l1, "mouth_shape": mouth_shape, "velocity": velocity, "au": au_l1,
                   "lmd": landmark_distance(generated, target).mean()}
        if self.classifier is not None:
            au_cls = jnp.mean(jnp.abs(self.classifier.predict(generated, reference) - batch["au"]))
            total = total + float(lc.au_cls_weight) * au_cls
            metrics["au_cls"] = au_cls
        return total, metrics

    def eval_metrics(self, params, batch, rng):
        out = self.generate(params, batch["mel"], batch["reference"])
        return {**keypoint_metrics(out["keypoints"], batch["keypoints"], batch["reference"]),
                "au_head_err": jnp.mean(jnp.abs(out["au"] - batch["au"]))}

    # -- generation (host side, used by t2v.evaluate) ------------------------------------------
    def generate_audio_driven(self, params, rng, mel, reference, temperature=None, chunk_frames=256):
        """Any length, chunk by chunk: mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` ->
        {"keypoints", "offsets" `[batch, T, 68, 2]`, "au" `[batch, T, 9]`} host arrays, equal to
        one pass. Deterministic: `rng` and `temperature` are accepted for the shared interface."""
        del rng, temperature
        return generate_chunked(self.model, {"params": params}, jnp.asarray(mel), jnp.asarray(reference), chunk_frames)

    def write_samples(self, params, out_dir, step):
        """`au_sample_<i>.mp4`: generated | true keypoints of held-out clips, with their audio."""
        write_keypoint_samples(self, params, out_dir, "au")
