"""The `au_cls` task: an action-unit classifier, keypoints -> speech-AU intensities (`t2v.au`).

Trained by t2v (no weights are downloaded) on windows that carry `au [T, 9]`
(`data.action_units`): binary cross-entropy against the soft intensities in [0, 1], on
keypoints jittered by `data.augment.keypoint_noise` so generated keypoints are no surprise.
Two uses, always two different runs (`configs/au.py`):
  cls    a loss for the `au` task (`model.au_classifier_workdir`): seed 0, speakers 0..
  judge  a judge for `t2v eval` (`eval.au_judge_workdir`): another seed, other speakers;
         `t2v.evaluate.au` refuses a judge that is the model's loss classifier.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2v.au import ACTIVE
from t2v.data import pipeline
from t2v.models.au import AUClassifier
from t2v.tasks import Task, register


def soft_cross_entropy(logits, targets):
    """Mean binary cross-entropy of logits against soft targets in [0, 1]."""
    return jnp.mean(jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def intensity_metrics(predicted, truth) -> dict:
    """Traced scalars: mean absolute error and presence accuracy (`t2v.au.ACTIVE`)."""
    return {"au_err": jnp.mean(jnp.abs(predicted - truth)),
            "au_acc": jnp.mean(((predicted > ACTIVE) == (truth > ACTIVE)).astype(jnp.float32))}


@register("au_cls")
class AUClassifierTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.classifier.to_dict().items()}
        self.model = AUClassifier(**fields, dtype=jnp.dtype(config.train.compute_dtype))

    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    def init(self, rng, batch):
        return self.model.init(rng, batch["keypoints"], batch["reference"])["params"]

    def logits(self, params, keypoints, reference):
        """keypoints `[batch, T, 68, 2]`, reference `[batch, 68, 2]` -> logits `[batch, T, 9]`."""
        return self.model.apply({"params": params}, keypoints, reference)

    def loss(self, params, batch, rng, step):
        logits = self.logits(params, batch["keypoints"], batch["reference"])
        loss = soft_cross_entropy(logits, batch["au"])
        return loss, {"bce": loss, **intensity_metrics(jax.nn.sigmoid(logits), batch["au"])}

    def eval_metrics(self, params, batch, rng):
        return intensity_metrics(jax.nn.sigmoid(self.logits(params, batch["keypoints"], batch["reference"])), batch["au"])


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenClassifier:
    """A trained AU classifier whose parameters are constants: a loss or a judge for others."""

    task: AUClassifierTask
    params: Any
    workdir: str

    def predict(self, keypoints, reference):
        """Intensities `[batch, T, 9]` of keypoints `[batch, T, 68, 2]`; traceable, gradients
        reach the keypoints only."""
        return jax.nn.sigmoid(self.task.logits(jax.lax.stop_gradient(self.params), keypoints, reference))

    def clip_aus(self, keypoints: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Host side: one sequence `[T, 68, 2]` and its reference `[68, 2]` -> `[T, 9]`."""
        return np.asarray(_predict(self, jnp.asarray(keypoints)[None], jnp.asarray(reference)[None]))[0]


@functools.partial(jax.jit, static_argnums=0)
def _predict(classifier: FrozenClassifier, keypoints, reference):
    return classifier.predict(keypoints, reference)


def load_classifier(workdir: str | Path) -> FrozenClassifier:
    """The AU classifier trained in `workdir` (config.json, latest checkpoint, EMA parameters)."""
    from t2v import checkpoint

    config = checkpoint.read_config(workdir)
    if config.task != "au_cls":
        raise ValueError(f"{Path(workdir) / 'config.json'}: task {config.task!r}, expected an 'au_cls' workdir")
    return FrozenClassifier(AUClassifierTask(config), checkpoint.load_params(workdir), str(workdir))
