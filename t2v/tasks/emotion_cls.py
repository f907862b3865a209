"""The `emotion_cls` task: face crop -> one of `synthetic.EMOTIONS` (a small CNN).

    t2v train --config configs/emotion_cls.py:tiny --workdir /tmp/emo_cls    # the loss classifier
    t2v train --config configs/emotion_cls.py:judge --workdir /tmp/emo_judge # trained apart: a judge

Examples are single frames of labelled clips: synthetic clips (each with its emotion held
throughout, `data.source = "synthetic"`, rendered at `data.size`), or records written by
`t2v prepare --dataset mead|crema_d` (their `emotion` label from the file names; clips of
an emotion outside EMOTIONS, such as MEAD's contempt, are skipped and counted). Every
frame is cropped around its keypoints (`face_crop`) to `data.crop` pixels, the crop
`t2v emotion` takes of a video's face. Train frames are drawn at random and mirrored half
the time; eval frames are `data.eval_frames` frames spread over each held-out clip (unseen
speakers). Metrics: `acc` (held-out frames), `loss`, `chance`.

Other tasks use a trained classifier, frozen, through `load_classifier(workdir)`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from t2v.data import pipeline, records
from t2v.data.synthetic import EMOTIONS, FACE_WIDTH_FRACTION
from t2v.models.emotion import EmotionClassifier
from t2v.tasks import Task, register

log = logging.getLogger(__name__)

EMOTION_INDEX = {name: i for i, name in enumerate(EMOTIONS)}


# --------------------------------------------------------------------------- face crops (host side)


def crop_box(keypoints: np.ndarray) -> np.ndarray:
    """The square (left, top, right, bottom) around a face's 68 points `[68, 2]` (pixels):
    centred on their mean, the jaw `FACE_WIDTH_FRACTION` of its side, as synthetic frames are."""
    points = np.asarray(keypoints, np.float64)
    centre = points.mean(axis=0)
    jaw = np.linalg.norm(points[16] - points[0])
    half = 0.5 * jaw / FACE_WIDTH_FRACTION
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def face_crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """uint8 `[size, size, 3]`: `frame` inside `box`, resized (outside the frame is black)."""
    image = Image.fromarray(np.asarray(frame))
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=tuple(float(v) for v in box))
                      if _inside(box, image.size) else image.crop(tuple(int(round(v)) for v in box)).resize(
                          (size, size), Image.BILINEAR))


def _inside(box, image_size) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= image_size[0] and box[3] <= image_size[1]


class FrameMaker(pipeline.FrameRecords):
    """(record index, record bytes) + rng -> {"image": uint8 crop, "label": int}, or None
    (counted) for a record without frames or with an emotion outside EMOTIONS."""

    def __init__(self, crop: int, flip: bool = True):
        super().__init__()
        self.crop, self.flip = int(crop), flip

    def decode(self, record: bytes, where: str) -> dict | None:
        clip = super().decode(record, where)
        if clip is not None and clip.get("emotion") not in EMOTION_INDEX:
            self.count_skip(f"with emotion {clip.get('emotion')!r} (not one of EMOTIONS)")
            return None
        return clip

    def example(self, clip: dict, index: int) -> dict:
        frame = records.decode_jpegs([clip["frames"][index]])[0]
        image = face_crop(frame, crop_box(clip["keypoints"][index]), self.crop)
        return {"image": image, "label": np.int32(EMOTION_INDEX[clip["emotion"]])}

    def __call__(self, indexed_record, rng: np.random.Generator) -> dict | None:
        index, record = indexed_record
        clip = self.decode(record, f"record {index}")
        if clip is None:
            return None
        example = self.example(clip, int(rng.integers(len(clip["frames"]))))
        if self.flip and rng.random() < 0.5:
            example["image"] = example["image"][:, ::-1].copy()
        return example


def eval_frame_indices(num_frames: int, per_clip: int) -> list[int]:
    """`per_clip` frames spread over a clip, the same every call."""
    return sorted(set(np.linspace(0, num_frames - 1, per_clip + 2)[1:-1].round().astype(int).tolist()))


# --------------------------------------------------------------------------- the task


def build_classifier(config: ml_collections.ConfigDict, dtype=jnp.float32) -> EmotionClassifier:
    return EmotionClassifier(len(EMOTIONS), tuple(config.model.classifier.widths), dtype=dtype)


@register("emotion_cls")
class EmotionClsTask(Task):
    compute_inputs = ()

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = build_classifier(config, jnp.dtype(config.train.compute_dtype))
        self.crop = int(config.data.crop)
        if self.crop % 2 ** len(config.model.classifier.widths):
            raise ValueError(f"emotion_cls: data.crop={self.crop} must divide by 2**{len(config.model.classifier.widths)}")

    def dataset(self, split, *, seed, process_index, process_count):
        shares = dict(global_batch_size=int(self.config.train.batch_size), process_index=process_index,
                      process_count=process_count, what=pipeline.source_name(self.config, split))
        source = pipeline.record_source(pipeline.shard_paths(self.config, split, seed, render=True))
        maker = FrameMaker(self.crop)
        if split == "train":
            indexed = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
            return pipeline.train_batches(indexed, maker, seed=seed, threads=1,
                                          workers=int(self.config.data.get("workers", 0)), **shares)
        if split != "eval":
            raise ValueError(f"emotion_cls task: unknown split {split!r}: expected 'train' or 'eval'")
        items = []
        for index in range(len(source)):
            clip = maker.decode(source[index], f"record {index} of {shares['what']}")
            if clip is not None:
                items += [(index, f) for f in eval_frame_indices(len(clip["frames"]), int(self.config.data.eval_frames))]
        return pipeline.eval_batches(items, lambda item: maker.example(maker.decode(source[item[0]], ""), item[1]),
                                     **shares)

    def init(self, rng, batch):
        return self.model.init(rng, batch["image"].astype(jnp.float32) / 255.0)["params"]

    def logits(self, params, images_unit):
        return self.model.apply({"params": params}, images_unit)

    def loss(self, params, batch, rng, step):
        logits = self.logits(params, batch["image"].astype(jnp.float32) / 255.0)
        smoothing = float(self.config.loss.get("label_smoothing", 0.0))
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], len(EMOTIONS)), smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    def eval_metrics(self, params, batch, rng):
        logits = self.logits(params, batch["image"].astype(jnp.float32) / 255.0)
        return accuracy_metrics(logits, batch["label"])


def accuracy_metrics(logits, labels) -> dict[str, Any]:
    """`acc`, `loss` (cross-entropy) and `chance` of a batch."""
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"acc": correct.mean(), "chance": jnp.float32(1.0 / len(EMOTIONS)),
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()}


# --------------------------------------------------------------------------- a frozen classifier


@dataclasses.dataclass(eq=False)  # hashed by identity: a static argument of its jitted scorer
class FrozenClassifier:
    """A trained emotion classifier whose parameters are constants: a loss and a judge."""

    task: EmotionClsTask
    params: Any
    workdir: str

    @property
    def crop(self) -> int:
        return self.task.crop

    def logits(self, images_unit):
        """Traceable: images `[B, crop, crop, 3]` in [0, 1] -> logits `[B, len(EMOTIONS)]`."""
        return self.task.logits(jax.lax.stop_gradient(self.params), images_unit)

    def probabilities(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """Host side: uint8 crops `[N, crop, crop, 3]` -> probabilities `[N, len(EMOTIONS)]`."""
        out = []
        for start in range(0, len(crops), batch):
            chunk = np.asarray(crops[start : start + batch], np.float32) / 255.0
            padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])  # one compilation
            out.append(np.asarray(self._probabilities(self.params, padded))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)

    @functools.partial(jax.jit, static_argnums=0)
    def _probabilities(self, params, images):
        return jax.nn.softmax(self.task.logits(params, images), axis=-1)


def load_classifier(workdir) -> FrozenClassifier:
    """The emotion classifier trained in `workdir` (its config.json and latest EMA parameters)."""
    from t2v import checkpoint

    config = checkpoint.read_config(workdir)
    if config.task != "emotion_cls":
        raise ValueError(f"{workdir}/config.json: task {config.task!r}, expected an 'emotion_cls' workdir")
    return FrozenClassifier(EmotionClsTask(config), checkpoint.load_params(workdir), str(workdir))
