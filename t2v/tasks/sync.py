"""The `sync` task: a contrastive lip-sync expert (Wav2Lip's SyncNet, StyleTalker's sync loss).

Two towers (`t2v.models.sync_expert.SyncExpert`) embed a window of W = `model.sync.window`
video frames of audio (log-mel `[4W, 80]`) and of the pose-free mouth (`[W, 20, 2]`, see
`pipeline.pose_free_mouth`). Loss: InfoNCE, symmetric over the batch (every other
window in the batch is a negative), and, for each mouth, `loss.shifted_negatives` extra
negatives that are the *same clip's* audio shifted by 2..`data.max_shift` frames either
way: those can only be told apart by timing, which is what a sync expert is for.

Eval: for each held-out window the mouth is scored against the audio shifted by every
offset in [-M, M] (M = `data.max_shift`, 31 candidates for M = 15);
  sync_offset_acc  fraction of windows whose best-scoring offset is 0 (chance 1 / (2M + 1))
  sync_offset_err  mean |best offset| in frames
  sync_auc         P(score in sync > score of an offset with |offset| >= 2)

At each eval, `write_samples` plots the scores over the offsets for two held-out windows
(`sync_offsets.png`, `.json`): a trained expert peaks at offset 0.

Other tasks use a trained expert, frozen, through `load_expert(workdir)`:
`expert.score(mel, keypoints, reference)` is a cosine in [-1, 1] per window.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from PIL import Image, ImageDraw

from t2v.audio import MELS_PER_FRAME
from t2v.data import pipeline
from t2v.errors import InputError
from t2v.models.sync_expert import SyncExpert
from t2v.tasks import Task, register

MIN_NEGATIVE_SHIFT = 2  # 1-frame shifts look in sync to any expert: too close to be negatives
SAMPLE_WINDOWS = 2  # held-out windows whose offset-score curves each eval writes


def build_expert(model_config: ml_collections.ConfigDict, dtype=jnp.float32) -> SyncExpert:
    return SyncExpert(**model_config.sync.to_dict(), dtype=dtype)


def shifted_mels(mel_context, shifts, window: int, max_shift: int):
    """Audio windows shifted by `shifts` frames: mel_context `[batch, 4(W + 2M), 80]`,
    shifts int `[batch, K]` in [-M, M] -> `[batch, K, 4W, 80]` (shift s = audio s frames later)."""
    length = MELS_PER_FRAME * window

    def one(context, example_shifts):
        return jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(context, MELS_PER_FRAME * (max_shift + s), length))(
            example_shifts)

    return jax.vmap(one)(mel_context, shifts)


def all_offsets(mel_context, window: int, max_shift: int):
    """Every shift -M..M: `[batch, 4(W + 2M), 80]` -> `[batch, 2M + 1, 4W, 80]`."""
    length = MELS_PER_FRAME * window
    return jnp.stack([mel_context[:, MELS_PER_FRAME * k : MELS_PER_FRAME * k + length]
                      for k in range(2 * max_shift + 1)], axis=1)


@register("sync")
class SyncTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model = build_expert(config.model, jnp.dtype(config.train.compute_dtype))
        self.window = int(config.model.sync.window)
        self.max_shift = int(config.data.max_shift)
        if int(config.data.window) != self.window:
            raise InputError(f"sync: data.window={config.data.window} must equal model.sync.window={self.window}")
        if self.max_shift < MIN_NEGATIVE_SHIFT:
            raise InputError(f"sync: data.max_shift={self.max_shift} leaves no shifted negatives (needs >= {MIN_NEGATIVE_SHIFT})")

    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    def init(self, rng, batch):
        return self.model.init(rng, batch["mel"], batch["mouth"])["params"]

    def apply(self, params, *args, method=None):
        return self.model.apply({"params": params}, *args, method=method)

    def embed_audio(self, params, mel):
        """mel `[..., 4W, 80]` -> unit embeddings `[..., E]` (any leading dims)."""
        flat = mel.reshape(-1, *mel.shape[-2:])
        return self.apply(params, flat, method=SyncExpert.embed_audio).reshape(*mel.shape[:-2], -1)

    def sync_score(self, params, mel_windows, mouth_windows):
        """Cosine similarity `[batch]` of audio `[batch, 4W, 80]` and pose-free mouth `[batch, W, 20, 2]`."""
        audio = self.apply(params, mel_windows, method=SyncExpert.embed_audio)
        mouth = self.apply(params, mouth_windows, method=SyncExpert.embed_mouth)
        return jnp.sum(audio * mouth, axis=-1)

    def loss(self, params, batch, rng, step):
        out = self.apply(params, batch["mel"], batch["mouth"])
        audio, mouth, scale = out["audio"], out["mouth"], out["logit_scale"]
        batch_size = audio.shape[0]
        labels = jnp.arange(batch_size)
        in_batch = scale * mouth @ audio.T  # [mouth, audio]

        # The same clip's audio, shifted by 2..M frames either way.
        count = int(self.config.loss.shifted_negatives)
        magnitude_rng, sign_rng = jax.random.split(rng)
        magnitude = jax.random.randint(magnitude_rng, (batch_size, count), MIN_NEGATIVE_SHIFT, self.max_shift + 1)
        shifts = magnitude * jnp.where(jax.random.bernoulli(sign_rng, shape=(batch_size, count)), 1, -1)
        shifted = self.embed_audio(params, shifted_mels(batch["mel_context"], shifts, self.window, self.max_shift))
        shifted_logits = scale * jnp.einsum("be,bke->bk", mouth, shifted)

        mouth_to_audio = optax.softmax_cross_entropy_with_integer_labels(
            jnp.concatenate([in_batch, shifted_logits], axis=1), labels).mean()
        audio_to_mouth = optax.softmax_cross_entropy_with_integer_labels(in_batch.T, labels).mean()
        loss = 0.5 * (mouth_to_audio + audio_to_mouth)
        positive = jnp.diagonal(in_batch)
        return loss, {
            "mouth_to_audio": mouth_to_audio,
            "audio_to_mouth": audio_to_mouth,
            "logit_scale": scale,
            "in_batch_acc": jnp.mean(jnp.argmax(in_batch, axis=1) == labels),
            "shift_margin": jnp.mean(positive[:, None] - shifted_logits) / scale,
        }

    def offset_scores(self, params, batch):
        """Cosine scores `[batch, 2M + 1]` of each mouth window against its audio at offsets -M..M."""
        audio = self.embed_audio(params, all_offsets(batch["mel_context"], self.window, self.max_shift))
        mouth = self.apply(params, batch["mouth"], method=SyncExpert.embed_mouth)
        return jnp.einsum("be,bke->bk", mouth, audio)

    def eval_metrics(self, params, batch, rng):
        return offset_metrics(self.offset_scores(params, batch), self.max_shift)

    # -- reports ---------------------------------------------------------------------------
    def write_samples(self, params, out_dir, step):
        """`sync_offsets.json` and `sync_offsets.png`: the score of the first window of the
        first `SAMPLE_WINDOWS` held-out clips against its audio at every offset -M..M; a
        trained expert peaks at offset 0 (grey line; the best offset is red)."""
        params = multihost_utils.process_allgather(params, tiled=True)  # collective: every process
        if jax.process_index() != 0:
            return
        maker = pipeline.WindowMaker(self.window, self.max_shift)
        clips = [c for c in pipeline.load_clips(self.config, "eval", limit=SAMPLE_WINDOWS)
                 if len(c["keypoints"]) >= self.window]
        if not clips:
            return
        starts = [pipeline.eval_windows(c, self.window, self.max_shift, 1)[0] for c in clips]
        windows = [maker.example(c, start) for c, start in zip(clips, starts)]
        batch = {name: np.stack([w[name] for w in windows]) for name in ("mouth", "mel_context")}
        scores = np.asarray(jax.jit(self.offset_scores)(params, batch))  # [windows, 2M + 1]
        offsets = list(range(-self.max_shift, self.max_shift + 1))
        report = {"step": int(step), "offsets": offsets, "windows": [
            {"clip_id": c.get("clip_id"), "start": start, "scores": row.round(4).tolist(),
             "best_offset": offsets[int(np.argmax(row))]}
            for c, start, row in zip(clips, starts, scores)]}
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sync_offsets.json").write_text(json.dumps(report, indent=1) + "\n")
        Image.fromarray(np.concatenate([score_plot(row) for row in scores])).save(out / "sync_offsets.png")


def score_plot(scores: np.ndarray, column_px: int = 8, height: int = 80) -> np.ndarray:
    """A cosine score per offset -M..M `[2M + 1]` as a line plot, uint8 `[height, (2M + 1) * column_px, 3]`:
    y spans scores -1 (bottom) to 1 (top), a grey line marks offset 0, a red dot the best."""
    width = len(scores) * column_px
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    x = (np.arange(len(scores)) + 0.5) * column_px
    y = (1 - np.clip(scores, -1, 1)) / 2 * (height - 8) + 4
    draw.line([(width / 2, 0), (width / 2, height)], fill=(170, 170, 170))
    draw.line([(0, height - 1), (width, height - 1)], fill=(170, 170, 170))  # stacked plots stay apart
    draw.line(list(zip(x.tolist(), y.tolist())), fill=(30, 60, 200), width=2)
    best = int(np.argmax(scores))
    draw.ellipse([x[best] - 3, y[best] - 3, x[best] + 3, y[best] + 3], fill=(220, 30, 30))
    return np.asarray(image)


def offset_metrics(scores, max_shift: int) -> dict[str, Any]:
    """`sync_offset_acc`, `sync_offset_err`, `sync_auc` from scores `[batch, 2M + 1]` (offsets -M..M)."""
    xp = jnp if isinstance(scores, jax.Array) else np
    offsets = xp.arange(-max_shift, max_shift + 1)
    best = offsets[xp.argmax(scores, axis=1)]
    positive = scores[:, max_shift]
    far = xp.abs(offsets) >= MIN_NEGATIVE_SHIFT
    wins = (positive[:, None] > scores) + 0.5 * (positive[:, None] == scores)
    return {
        "sync_offset_acc": xp.mean(best == 0),
        "sync_offset_err": xp.mean(xp.abs(best)),
        "sync_auc": xp.sum(wins * far) / (scores.shape[0] * xp.sum(far)),
    }


# ---------------------------------------------------------------------------- a frozen expert


@dataclasses.dataclass(eq=False)  # hashed by identity: a static argument of its jitted scorer
class FrozenExpert:
    """A trained sync expert whose parameters are constants: a loss and a metric for other tasks."""

    task: SyncTask
    params: Any
    workdir: str

    @property
    def window(self) -> int:
        return self.task.window

    def score(self, mel, keypoints, reference, params=None):
        """Mean cosine sync score `[batch]` over the non-overlapping W-frame windows of a sequence.

        mel `[batch, 4T, 80]`, face-frame keypoints `[batch, T, 68, 2]`, reference
        `[batch, 68, 2]`; frames past the last whole window are not scored. Traceable.
        """
        w = self.window
        batch, frames = keypoints.shape[:2]
        n = frames // w
        if n == 0:
            raise ValueError(f"sync expert {self.workdir}: sequences of {frames} frames are shorter than its window {w}")
        mouth = pipeline.pose_free_mouth(keypoints[:, : n * w], reference[:, None])
        mouth = mouth.reshape(batch * n, w, *mouth.shape[2:])
        mel = mel[:, : MELS_PER_FRAME * n * w].reshape(batch * n, MELS_PER_FRAME * w, mel.shape[-1])
        params = jax.lax.stop_gradient(self.params if params is None else params)  # `params`: the step's copy
        return self.task.sync_score(params, mel, mouth).reshape(batch, n).mean(axis=1)

    def offset_accuracy(self, mel, keypoints, reference, max_shift: int | None = None) -> dict[str, float]:
        """`offset_metrics` of a whole clip, host side (see `clip_offset_scores`); {} when the
        clip is too short for one window with its audio context."""
        max_shift = self.task.max_shift if max_shift is None else max_shift
        scores = self.clip_offset_scores(mel, keypoints, reference, max_shift)
        if scores is None:
            return {}
        return {k: float(v) for k, v in offset_metrics(scores, max_shift).items()}

    def clip_offset_scores(self, mel, keypoints, reference, max_shift: int | None = None) -> np.ndarray | None:
        """Cosine scores `[windows, 2M + 1]` of a whole clip against its audio at offsets -M..M:
        mel `[4T, 80]`, keypoints `[T, 68, 2]`, reference `[68, 2]`; the non-overlapping
        W-frame windows starting at frame M, each with M frames of audio either side (the
        pinned preprocessing of every sync judgement). None when no window fits."""
        max_shift = self.task.max_shift if max_shift is None else max_shift
        w, frames = self.window, len(keypoints)
        starts = list(range(max_shift, frames - w - max_shift + 1, w))
        if not starts:
            return None
        mouth = pipeline.pose_free_mouth(np.asarray(keypoints), np.asarray(reference))
        mouths = np.stack([mouth[s : s + w] for s in starts]).astype(np.float32)
        contexts = np.stack([pipeline.mel_span(np.asarray(mel), s - max_shift, w + 2 * max_shift) for s in starts])
        # Pad the window count to a multiple of 16 so clips of any length share compilations.
        padded = -len(starts) % 16
        mouths = np.concatenate([mouths, np.repeat(mouths[:1], padded, axis=0)])
        contexts = np.concatenate([contexts, np.repeat(contexts[:1], padded, axis=0)])
        return np.asarray(self._offset_scores(self.params, mouths, contexts, max_shift))[: len(starts)]

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _offset_scores(self, params, mouths, contexts, max_shift):
        audio = self.task.embed_audio(params, all_offsets(contexts, self.window, max_shift))
        mouth = self.task.apply(params, mouths, method=SyncExpert.embed_mouth)
        return jnp.einsum("be,bke->bk", mouth, audio)


def load_expert(workdir: str | Path) -> FrozenExpert:
    """The sync expert trained in `workdir` (its config.json and latest checkpoint, EMA parameters)."""
    from t2v import checkpoint

    config = checkpoint.read_config(workdir)
    if config.task != "sync":
        raise InputError(f"{Path(workdir) / 'config.json'}: task {config.task!r}, expected a 'sync' workdir")
    return FrozenExpert(SyncTask(config), checkpoint.load_params(workdir), str(workdir))
