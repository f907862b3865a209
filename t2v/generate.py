"""Generation: speech + a reference face -> keypoints (-> frames -> mp4, with the renderer).

    generator = KeypointGenerator.from_workdir("/tmp/motion")
    points_px = generator(wave, reference_px)      # [T, 68, 2] pixels, T = round(25 * seconds)

Any length: the audio features are computed with `t2v.audio.log_mel` (the one definition
used in training), the motion model runs chunk by chunk (`chunk_frames` video frames per
chunk plus the audio encoder's context either side, the prior's state carried across
chunks), so memory is bounded by the chunk, not by the audio, and the result equals one
pass over the whole sequence. Keypoints are made in the reference's face frame and mapped
back into its pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from t2v import audio, keypoints


@dataclasses.dataclass
class KeypointGenerator:
    """A trained motion model ready to turn speech into keypoints (audio-driven mode)."""

    task: Any  # t2v.tasks.motion.MotionTask
    params: Any
    chunk_frames: int = 256

    @classmethod
    def from_workdir(cls, workdir: str | Path, chunk_frames: int | None = None) -> "KeypointGenerator":
        """The motion model of a workdir (latest checkpoint, EMA parameters)."""
        from t2v import evaluate
        from t2v.tasks import get_task

        config = evaluate.read_config(workdir)
        if config.task != "motion":
            raise ValueError(f"{workdir}: task {config.task!r}; keypoint generation needs a 'motion' workdir")
        chunk = int(config.sample.get("chunk_frames", 256)) if chunk_frames is None else chunk_frames
        return cls(get_task(config), evaluate.load_params(workdir), chunk)

    def keypoints_from_mel(self, mel: np.ndarray, reference: np.ndarray, *, seed: int = 0,
                           temperature: float | None = None) -> np.ndarray:
        """Face-frame keypoints `[T, 68, 2]` from log-mel `[4T, 80]` and a face-frame reference `[68, 2]`."""
        mel = np.asarray(mel, np.float32)
        if mel.ndim != 2 or mel.shape[0] % audio.MELS_PER_FRAME or mel.shape[0] == 0:
            raise ValueError(f"mel must be [4T, {audio.N_MELS}] with T >= 1, got {mel.shape}")
        out = self.task.generate_audio_driven(self.params, jax.random.PRNGKey(seed), mel[None],
                                              np.asarray(reference, np.float32)[None], temperature,
                                              chunk_frames=self.chunk_frames)
        return out["keypoints"][0]

    def __call__(self, wave: np.ndarray, reference_px: np.ndarray, *, sample_rate: int = audio.SAMPLE_RATE,
                 seed: int = 0, temperature: float | None = None) -> np.ndarray:
        """Keypoints in the reference image's pixels `[T, 68, 2]` for speech `wave [samples]`
        and the reference face's keypoints `reference_px [68, 2]` (pixels)."""
        reference_px = np.asarray(reference_px, np.float32)
        if reference_px.shape != (keypoints.NUM_POINTS, 2):
            raise ValueError(f"reference keypoints must be [68, 2], got {reference_px.shape}")
        reference, frame = keypoints.normalise(reference_px)
        points = self.keypoints_from_mel(audio.log_mel(wave, sample_rate), reference, seed=seed,
                                         temperature=temperature)
        return np.asarray(keypoints.denormalise(points, frame), np.float32)
