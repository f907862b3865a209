"""The `emotion` task (Wav2Lip-Emotion): a talking face's frames -> the same frames with a
target emotion, lips, identity and head pose kept.

    t2v train --config configs/emotion.py:tiny --workdir /tmp/emotion
    t2v emotion --checkpoint /tmp/emotion --video IN.mp4 --to happy --out OUT.mp4

Data: synthetic clips (`pipeline.synthetic_plan`, each with its own emotion) and, for
every clip and every emotion in EMOTIONS, the same clip with that emotion held instead
(`synthetic.with_emotion`: same speech, lips, blinks, pose and speaker; the intensity one of
`INTENSITY_LEVELS`, drawn per clip and emotion). `data.frames_per_clip` frames of each are
cropped (`emotion_cls.face_crop`) to `data.crop` pixels and cached as one `.npz` of uint8
arrays. An example: the source crop, a target emotion and intensity, the target crop.

Model (`t2v.models.emotion.EmotionTranslator`): a FiLM-conditioned U-Net predicting a
residual on the crop. `model.mask`: "full" lets it change the whole crop, "lower_half" only
the lower half (feathered), the upper face kept from the input.

Losses: L1 against the target crop (`loss.l1`), plus (`loss.classifier`, when
`model.emotion_cls_workdir` names a trained `emotion_cls` workdir) the frozen classifier's
cross-entropy toward the target emotion. That classifier is a loss: `t2v eval` judges with
another one (`eval.emotion_judge_workdir`) and refuses this one.

Eval metrics (held-out speakers, every target emotion): `l1`, `copy_l1` (the input
unchanged, a baseline that keeps everything), and with a loss classifier `loss_cls_acc`
(its accuracy on the outputs; not an independent judgement).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from t2v.data import face_render, pipeline, synthetic
from t2v.data.synthetic import EMOTIONS, INTENSITY_LEVELS
from t2v.models.emotion import EmotionTranslator
from t2v.tasks import Task, register
from t2v.tasks.emotion_cls import crop_box, eval_frame_indices, face_crop

log = logging.getLogger(__name__)

MASKS = ("full", "lower_half")
PAIR_CACHE_VERSION = 2  # bump when the cached pairs change meaning


# --------------------------------------------------------------------------- paired crops (host side)


def clip_crops(clip: synthetic.Clip, indices: list[int], size: int, boxes_from: synthetic.Clip | None = None
               ) -> np.ndarray:
    """uint8 `[len(indices), size, size, 3]`: the clip's face crops at those frames, in the
    boxes of `boxes_from`'s keypoints (default its own): a target is cropped where its
    source was, so the pair stays aligned, as `t2v emotion` pastes back where it cropped.
    A clip made with `render=False` is painted at those frames only."""
    boxes_from = boxes_from or clip
    appearance = synthetic.identity_for(clip.speaker).appearance

    def frame(i):
        return clip.frames[i] if clip.frames is not None else face_render.render_face(
            clip.keypoints[i], clip.size, appearance)

    return np.stack([face_crop(frame(i), crop_box(boxes_from.keypoints[i]), size) for i in indices])


def make_pairs(data_config: ml_collections.ConfigDict, split: str, seed: int) -> dict[str, np.ndarray]:
    """The split's paired crops, made once and cached (npz, no pickle):
    source `[C, F, S, S, 3]`, source_emotion `[C]`, targets `[C, E, F, S, S, 3]`, intensity `[C, E]`,
    speaker `[C]`."""
    plan = pipeline.synthetic_plan(data_config, split, seed)
    size, crop, frames = int(data_config.size), int(data_config.crop), int(data_config.frames_per_clip)
    key_fields = {"plan": plan, "version": [pipeline.PLAN_VERSION, PAIR_CACHE_VERSION], "size": size,
                  "crop": crop, "frames": frames}
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = pipeline.cache_dir(data_config) / "emotion_pairs" / f"{split}-{key}.npz"
    if not path.is_file():
        log.info("making %d synthetic %s clips, each with %d emotions, into %s", len(plan), split, len(EMOTIONS), path)
        arrays = {"source": [], "source_emotion": [], "targets": [], "intensity": [], "speaker": []}
        for index, kw in enumerate(plan):
            clip = synthetic.make_clip(size=size, render=False, **kw)  # painted at the chosen frames only
            rng = np.random.default_rng([seed, index, PAIR_CACHE_VERSION])
            indices = eval_frame_indices(clip.num_frames, frames)
            indices = (indices * frames)[:frames]  # short clips repeat frames: fixed shapes
            levels = [0.0 if e == "neutral" else float(rng.choice(INTENSITY_LEVELS)) for e in EMOTIONS]
            arrays["source"].append(clip_crops(clip, indices, crop))
            arrays["source_emotion"].append(EMOTIONS.index(clip.emotion))
            arrays["targets"].append(np.stack([clip_crops(synthetic.with_emotion(clip, e, level), indices, crop, clip)
                                               for e, level in zip(EMOTIONS, levels)]))
            arrays["intensity"].append(levels)
            arrays["speaker"].append(clip.speaker)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        Path(f.name).rename(path)  # atomic: concurrent runs never read half
    with np.load(path, allow_pickle=False) as loaded:
        return {k: loaded[k] for k in loaded.files}


class PairExamples:
    """Clip index + rng -> a random (frame, target emotion) example of the cached pairs."""

    def __init__(self, pairs: dict[str, np.ndarray]):
        self.pairs = pairs

    def example(self, clip: int, frame: int, target: int) -> dict:
        return {"source": self.pairs["source"][clip, frame], "target": self.pairs["targets"][clip, target, frame],
                "emotion": np.int32(target), "intensity": np.float32(self.pairs["intensity"][clip, target])}

    def __call__(self, clip: int, rng: np.random.Generator) -> dict:
        frames = self.pairs["source"].shape[1]
        return self.example(int(clip), int(rng.integers(frames)), int(rng.integers(len(EMOTIONS))))


def region_mask(size: int, mask: str, feather: float = 0.08) -> np.ndarray:
    """`[size, size, 1]` float32: where the translator may change the crop (1) and where the
    input stays (0); "lower_half" ramps from 0 to 1 over `feather` of the side at mid-height."""
    if mask not in MASKS:
        raise ValueError(f"model.mask={mask!r}: expected one of {MASKS}")
    if mask == "full":
        return np.ones((size, size, 1), np.float32)
    rows = (np.arange(size) + 0.5) / size
    ramp = np.clip((rows - 0.5) / feather + 0.5, 0.0, 1.0).astype(np.float32)
    return np.broadcast_to(ramp[:, None, None], (size, size, 1)).copy()


# --------------------------------------------------------------------------- the task


@register("emotion")
class EmotionTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.crop = int(config.data.crop)
        self.model = EmotionTranslator(len(EMOTIONS), tuple(m.translator.widths), int(m.translator.embed),
                                       dtype=jnp.dtype(config.train.compute_dtype))
        self.mask = region_mask(self.crop, str(m.mask))
        self.classifier = None
        if str(m.get("emotion_cls_workdir", "")) and float(config.loss.classifier) > 0:
            from t2v.tasks.emotion_cls import load_classifier

            self.classifier = load_classifier(m.emotion_cls_workdir)
            if self.classifier.crop != self.crop:
                raise ValueError(f"emotion: model.emotion_cls_workdir={m.emotion_cls_workdir} classifies "
                                 f"{self.classifier.crop}-pixel crops, data.crop={self.crop}")

    def dataset(self, split, *, seed, process_index, process_count):
        if self.config.data.source != "synthetic":
            raise ValueError("emotion task: data.source must be 'synthetic' (paired target-emotion frames)")
        shares = dict(global_batch_size=int(self.config.train.batch_size), process_index=process_index,
                      process_count=process_count, what=pipeline.source_name(self.config, split))
        examples = PairExamples(make_pairs(self.config.data, split, seed))
        clips, frames = examples.pairs["source"].shape[:2]
        if split == "train":
            return pipeline.train_batches(grain.MapDataset.range(clips), examples, seed=seed, **shares)
        if split != "eval":
            raise ValueError(f"emotion task: unknown split {split!r}: expected 'train' or 'eval'")
        items = [(c, f, e) for c in range(clips) for f in range(0, frames, max(1, frames // 2))
                 for e in range(len(EMOTIONS))]
        return pipeline.eval_batches(items, lambda item: examples.example(*item), **shares)

    def init(self, rng, batch):
        source = batch["source"].astype(jnp.float32) / 255.0
        return self.model.init(rng, source, batch["emotion"], batch["intensity"])["params"]

    def translate(self, params, source_unit, emotion, intensity):
        """Traceable: crops `[B, S, S, 3]` in [0, 1], emotion int `[B]`, intensity `[B]` -> crops."""
        out = self.model.apply({"params": params}, source_unit, emotion, intensity)
        mask = jnp.asarray(self.mask)
        return source_unit * (1 - mask) + out * mask

    def _outputs(self, params, batch):
        source = batch["source"].astype(jnp.float32) / 255.0
        target = batch["target"].astype(jnp.float32) / 255.0
        return source, target, self.translate(params, source, batch["emotion"], batch["intensity"])

    def loss(self, params, batch, rng, step):
        source, target, out = self._outputs(params, batch)
        l1 = jnp.mean(jnp.abs(out - target))
        loss = float(self.config.loss.l1) * l1
        metrics = {"l1": l1, "copy_l1": jnp.mean(jnp.abs(source - target))}
        if self.classifier is not None:
            logits = self.classifier.logits(out)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["emotion"]).mean()
            loss = loss + float(self.config.loss.classifier) * ce
            metrics.update(classifier_ce=ce, loss_cls_acc=jnp.mean(jnp.argmax(logits, -1) == batch["emotion"]))
        return loss, metrics

    def eval_metrics(self, params, batch, rng):
        source, target, out = self._outputs(params, batch)
        metrics = {"l1": jnp.mean(jnp.abs(out - target)), "copy_l1": jnp.mean(jnp.abs(source - target))}
        if self.classifier is not None:
            logits = self.classifier.logits(out)
            metrics["loss_cls_acc"] = jnp.mean(jnp.argmax(logits, -1) == batch["emotion"])
        return metrics

    def write_samples(self, params, out_dir, step):
        """`emotion_samples.png`: for two held-out crops, the input then each target emotion's output."""
        from jax.experimental import multihost_utils
        from PIL import Image

        params = multihost_utils.process_allgather(params, tiled=True)
        if jax.process_index() != 0:
            return
        pairs = make_pairs(self.config.data, "eval", self.config.seed)
        rows = []
        for clip in range(min(2, len(pairs["source"]))):
            source = np.repeat(pairs["source"][clip, :1], len(EMOTIONS), axis=0).astype(np.float32) / 255.0
            out = jax.jit(self.translate)(params, source, jnp.arange(len(EMOTIONS)),
                                          jnp.ones(len(EMOTIONS), jnp.float32))
            images = [pairs["source"][clip, 0]] + list((np.asarray(out) * 255).round().astype(np.uint8))
            rows.append(np.concatenate(images, axis=1))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(Path(out_dir) / "emotion_samples.png")
