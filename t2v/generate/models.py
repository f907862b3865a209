"""The trained models generation runs: a keypoint model (speech -> keypoints) and the renderer.

    generator = KeypointGenerator.from_workdir("/tmp/motion")   # or an "a2k" / "pose_lstm" workdir
    points_px = generator(wave, reference_px)      # [T, 68, 2] pixels, T = round(25 * seconds)
    renderer = FaceRenderer.from_workdir("/tmp/render")
    reference = renderer.encode(crop_uint8, crop_points)   # [S, S, 3], [68, 2] crop pixels
    frames = renderer.render(reference, points)    # [B, S, S, 3] in [0, 1] for points [B, 68, 2]

The keypoint model is any of `KEYPOINT_TASKS` (`t2v generate --motion`): each task's
`generate_audio_driven` turns log-mel and a reference into keypoints chunk by chunk; only
`motion` also follows a source video (`keypoints_following`, `--pose-from`).
`checkpoint_workdirs` finds the keypoint task's and the renderer's workdirs in a checkpoint.
A workdir whose task or parameters do not fit raises `t2v.errors.InputError` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2v import audio, keypoints
from t2v.data.pipeline import image_keypoints
from t2v.errors import InputError
from t2v.tasks.render import renderer_spec

KEYPOINT_TASKS = ("motion", "a2k", "pose_lstm")  # what `t2v generate --motion` picks from


def read_task_config(workdir: str | Path, task: str | None) -> ml_collections.ConfigDict:
    """A workdir's config.json, which must be of `task` (any task when None)."""
    from t2v import checkpoint

    try:
        config = checkpoint.read_config(workdir)
    except FileNotFoundError as error:
        raise InputError(str(error)) from error
    if task is not None and config.task != task:
        raise InputError(f"{workdir}: task {config.task!r}; this needs a {task!r} workdir")
    return config


def checkpoint_workdirs(checkpoint_dir: str | Path, motion: str = "motion") -> tuple[Path, Path]:
    """(keypoint task workdir, render workdir) of a checkpoint: a `t2v demo` workdir or a folder
    holding a `render` workdir and the `motion` task's (`KEYPOINT_TASKS`). A subfolder named
    after the task must be of that task; otherwise any subfolder of that task serves."""
    from t2v import checkpoint as checkpoint_lib

    if motion not in KEYPOINT_TASKS:
        raise InputError(f"--motion {motion!r}: not one of {', '.join(KEYPOINT_TASKS)}")
    try:
        workdirs = checkpoint_lib.task_workdirs(checkpoint_dir)
    except FileNotFoundError as error:  # checkpoint.py's one-line message
        raise InputError(str(error)) from error
    named = Path(checkpoint_dir) / motion
    if (named / "config.json").is_file():
        read_task_config(named, motion)  # a folder `a2k/` of another task: say so
        workdirs[motion] = named
    missing = [task for task in (motion, "render") if task not in workdirs]
    if missing:
        raise InputError(f"{checkpoint_dir}: no {' and no '.join(repr(m) for m in missing)} task "
                         f"workdir (found {sorted(workdirs) or 'none'}); generation needs both")
    return Path(workdirs[motion]), Path(workdirs["render"])


@dataclasses.dataclass
class KeypointGenerator:
    """A trained keypoint model (`KEYPOINT_TASKS`) ready to turn speech into keypoints."""

    task: Any  # t2v.tasks.motion.MotionTask, t2v.tasks.a2k.Audio2KeypointTask or t2v.tasks.pose_lstm.PoseLSTMTask
    params: Any
    chunk_frames: int = 256

    @classmethod
    def from_workdir(cls, workdir: str | Path, chunk_frames: int | None = None,
                     task_name: str | None = None) -> "KeypointGenerator":
        """The keypoint model of a workdir (latest checkpoint, EMA parameters), of `task_name`
        when given, else of any of `KEYPOINT_TASKS`."""
        from t2v import checkpoint
        from t2v.tasks import get_task

        if task_name is None:
            config = read_task_config(workdir, None)
            if config.task not in KEYPOINT_TASKS:
                raise InputError(f"{workdir}: task {config.task!r}; this needs a workdir of "
                                 f"{', '.join(map(repr, KEYPOINT_TASKS))}")
        else:
            config = read_task_config(workdir, task_name)
        # A lip-sync expert is a training loss only: generation must not need its workdir.
        config = ml_collections.ConfigDict(config.to_dict())
        if "sync_workdir" in config.model:
            config.model.sync_workdir = ""
        task = get_task(config)
        frames = 8
        example = {"mel": jax.ShapeDtypeStruct((1, audio.MELS_PER_FRAME * frames, audio.N_MELS), jnp.float32),
                   "reference": jax.ShapeDtypeStruct((1, keypoints.NUM_POINTS, 2), jnp.float32),
                   "keypoints": jax.ShapeDtypeStruct((1, frames, keypoints.NUM_POINTS, 2), jnp.float32)}
        expected = jax.eval_shape(lambda batch: nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch)), example)
        params = checkpoint.load_checked_params(workdir, expected)
        chunk = int(config.sample.get("chunk_frames", 256)) if chunk_frames is None else chunk_frames
        return cls(task, params, chunk)

    def keypoints_from_mel(self, mel: np.ndarray, reference: np.ndarray, *, seed: int = 0,
                           temperature: float | None = None) -> np.ndarray:
        """Face-frame keypoints `[T, 68, 2]` from log-mel `[4T, 80]` and a face-frame reference `[68, 2]`."""
        mel = _checked_mel(mel, "mel")
        out = self.task.generate_audio_driven(self.params, jax.random.PRNGKey(seed), mel[None],
                                              np.asarray(reference, np.float32)[None], temperature,
                                              chunk_frames=self.chunk_frames)
        return np.asarray(out["keypoints"][0], np.float32)

    @property
    def follows_source(self) -> bool:
        """Whether the model has the motion-controllable mode (`keypoints_following`): motion only."""
        return hasattr(self.task, "generate_from_source")

    def keypoints_following(self, mel: np.ndarray, reference: np.ndarray, source_mel: np.ndarray,
                            source_keypoints: np.ndarray, source_reference: np.ndarray) -> np.ndarray:
        """Motion-controllable mode: face-frame keypoints `[T, 68, 2]` whose head pose, blinks
        and brows follow a source clip and whose lips follow the audio.

        mel `[4T, 80]` and reference `[68, 2]` of the target; the source's mel `[4T, 80]`,
        keypoints `[T, 68, 2]` and reference `[68, 2]`, all in the face frame.
        """
        if not self.follows_source:
            raise InputError(f"following a source video (--pose-from) needs the motion model; this is "
                             f"{self.task.config.task!r} (--motion motion)")
        mel, source_mel = _checked_mel(mel, "mel"), _checked_mel(source_mel, "source_mel")
        frames = len(mel) // audio.MELS_PER_FRAME
        if source_mel.shape != mel.shape or np.shape(source_keypoints) != (frames, keypoints.NUM_POINTS, 2):
            raise InputError(f"the source must span the target's {frames} frames: mel {source_mel.shape}, "
                             f"keypoints {np.shape(source_keypoints)}")
        as_batch = lambda x: jnp.asarray(np.asarray(x, np.float32)[None])  # noqa: E731
        out = self.task.generate_from_source(self.params, as_batch(mel), as_batch(reference), as_batch(source_mel),
                                             as_batch(source_keypoints), as_batch(source_reference))
        return np.asarray(out["keypoints"][0], np.float32)

    def __call__(self, wave: np.ndarray, reference_px: np.ndarray, *, sample_rate: int = audio.SAMPLE_RATE,
                 seed: int = 0, temperature: float | None = None) -> np.ndarray:
        """Keypoints in the reference image's pixels `[T, 68, 2]` for speech `wave [samples]`
        and the reference face's keypoints `reference_px [68, 2]` (pixels)."""
        reference_px = np.asarray(reference_px, np.float32)
        if reference_px.shape != (keypoints.NUM_POINTS, 2):
            raise InputError(f"reference keypoints must be [68, 2], got {reference_px.shape}")
        reference, frame = keypoints.normalise(reference_px)
        points = self.keypoints_from_mel(audio.log_mel(wave, sample_rate), reference, seed=seed,
                                         temperature=temperature)
        return np.asarray(keypoints.denormalise(points, frame), np.float32)


def _checked_mel(mel: np.ndarray, name: str) -> np.ndarray:
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] % audio.MELS_PER_FRAME or mel.shape[0] == 0:
        raise InputError(f"{name} must be [4T, {audio.N_MELS}] with T >= 1, got {mel.shape}")
    return mel



@functools.lru_cache(maxsize=None)
def _renderer_programs(spec):
    """Jitted `encode_reference` and `render_frame` of a renderer spec, compiled once per process."""
    from t2v.models.renderer import KeypointRenderer

    model = KeypointRenderer(spec)
    output = "refined" if spec.refine else "frame"

    @jax.jit
    def encode(params, image, points):
        return model.apply({"params": params}, image, points, method=model.encode_reference)

    @jax.jit
    def render(params, reference, points):
        return model.apply({"params": params}, reference, points, method=model.render_frame)[output]

    return encode, render


@dataclasses.dataclass
class FaceRenderer:
    """A trained keypoint renderer: one reference face, then frames for any keypoints.

    Keypoints here are pixels of the S x S crop; the renderer's [-1, 1] image coordinates
    are made inside.
    """

    spec: Any  # t2v.models.renderer.RendererSpec
    params: Any  # the renderer's own parameters (no discriminators)

    @classmethod
    def from_workdir(cls, workdir: str | Path) -> "FaceRenderer":
        """The renderer of a `render` workdir (latest checkpoint, EMA parameters)."""
        from t2v import checkpoint
        from t2v.models.renderer import KeypointRenderer

        config = read_task_config(workdir, "render")
        spec = renderer_spec(config)
        size = spec.size
        image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        points = jax.ShapeDtypeStruct((1, keypoints.NUM_POINTS, 2), jnp.float32)
        model = KeypointRenderer(spec)
        expected = jax.eval_shape(lambda i, p: nn.meta.unbox(model.init(jax.random.PRNGKey(0), i, p, p)), image, points)
        return cls(spec, checkpoint.load_checked_params(workdir, expected["params"], part="renderer"))

    @property
    def size(self) -> int:
        return self.spec.size

    def encode(self, image: np.ndarray, points_px: np.ndarray) -> dict:
        """The reference tensors of uint8 `image [S, S, 3]` and its keypoints `[68, 2]` (pixels)."""
        encode, _ = _renderer_programs(self.spec)
        unit_image = jnp.asarray(image, jnp.float32)[None] / 255.0
        return encode(self.params, unit_image, jnp.asarray(image_keypoints(points_px, self.size))[None])

    def render(self, reference: dict, points_px: np.ndarray) -> jax.Array:
        """Frames `[B, S, S, 3]` in [0, 1] (on the device) for keypoints `[B, 68, 2]` (pixels)."""
        _, render = _renderer_programs(self.spec)
        return render(self.params, reference, jnp.asarray(image_keypoints(points_px, self.size)))
