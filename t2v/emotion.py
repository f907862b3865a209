"""`t2v emotion`: a talking video -> the same video with another emotion (the `emotion` task).

    t2v emotion --checkpoint DIR --video IN.mp4 --to happy [--intensity 0.7] --out OUT.mp4

Each frame's face is tracked (`t2v.generate.tracking.track_landmarks`, the detector of data
preparation), cropped as in training (`emotion_cls.crop_box`, boxes smoothed over 5 frames),
translated at the model's crop size, and the change (output minus input crop) is scaled
back to the face's size and added through a feathered mask, so every pixel the model left
alone keeps the video's own detail. Same resolution, frame rate, length and audio as the
input; the mp4 is written under a hidden name and renamed (`t2v.video.write_video`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from t2v import checkpoint, video
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError

BOX_SMOOTHING = 5  # frames: a moving average keeps the crop from jittering with the landmarks
FEATHER = 0.15  # fraction of the crop side over which the pasted change fades out
BATCH = 16


@dataclasses.dataclass
class EmotionReport:
    out: str
    frames: int
    size: tuple[int, int]
    fps: float
    emotion: str
    intensity: float


def load_translator(workdir: str):
    """(task, EMA params) of an `emotion` workdir; InputError if it is not one."""
    from t2v.tasks import get_task

    try:
        config = checkpoint.read_config(workdir)
    except FileNotFoundError:
        raise InputError(f"{workdir}: not a trained workdir (no config.json)") from None
    if config.task != "emotion":
        raise InputError(f"{workdir}: task {config.task!r}, expected an 'emotion' workdir (configs/emotion.py)")
    if not checkpoint.saved_steps(workdir):
        raise InputError(f"{workdir}: no checkpoint yet")
    config.model.emotion_cls_workdir = ""  # the loss classifier is not needed to translate
    return get_task(config), checkpoint.load_params(workdir)


def check_request(video_path: str, to: str, intensity: float, out: str) -> None:
    if to not in EMOTIONS:
        raise InputError(f"--to {to!r}: unknown emotion; valid: {','.join(EMOTIONS)}")
    if not (0.0 <= intensity <= 1.0) or math.isnan(intensity):
        raise InputError(f"--intensity {intensity}: must be in [0, 1]")
    if not Path(video_path).is_file():
        raise InputError(f"{video_path}: no such video")
    if Path(out).suffix.lower() != ".mp4":
        raise InputError(f"{out}: the output must be an .mp4")
    if not Path(out).resolve().parent.is_dir():
        raise InputError(f"{out}: its folder does not exist")


def smoothed_boxes(landmarks: np.ndarray) -> np.ndarray:
    """Crop boxes `[T, 4]` of tracked landmarks `[T, 68, 2]`, a centred moving average."""
    from t2v.tasks.emotion_cls import crop_box

    boxes = np.stack([crop_box(points) for points in landmarks])
    k = min(BOX_SMOOTHING, len(boxes))
    padded = np.pad(boxes, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    return np.stack([padded[i : i + k].mean(0) for i in range(len(boxes))])


def feather_mask(side: int) -> np.ndarray:
    """`[side, side, 1]`: 1 in the middle, fading to 0 over FEATHER of the side at the edges."""
    ramp = np.clip(np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5) / (FEATHER * side), 0.0, 1.0)
    return (ramp[:, None] * ramp[None, :])[..., None].astype(np.float32)


def paste_change(frame: np.ndarray, change: np.ndarray, box: np.ndarray) -> np.ndarray:
    """`frame` plus the crop-sized `change` (float, [-1, 1] units) scaled into `box`, feathered."""
    left, top = int(round(box[0])), int(round(box[1]))
    side = max(1, int(round(box[2] - box[0])))
    scaled = np.stack([np.asarray(Image.fromarray(change[..., c]).resize((side, side), Image.BILINEAR))
                       for c in range(3)], axis=-1) * feather_mask(side) * 255.0
    out = frame.astype(np.float32)
    height, width = frame.shape[:2]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] += scaled[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def translate_frames(task, params, frames: np.ndarray, landmarks: np.ndarray, to: str, intensity: float):
    """The frames `[T, H, W, 3]` with the face translated to `to`; yields one frame at a time."""
    from t2v.tasks.emotion_cls import face_crop

    boxes = smoothed_boxes(landmarks)
    step = jax.jit(task.translate)
    emotion = jnp.full((BATCH,), EMOTIONS.index(to), jnp.int32)
    level = jnp.full((BATCH,), 0.0 if to == "neutral" else intensity, jnp.float32)
    for start in range(0, len(frames), BATCH):
        chunk = range(start, min(start + BATCH, len(frames)))
        crops = np.stack([face_crop(frames[i], boxes[i], task.crop) for i in chunk]).astype(np.float32) / 255.0
        padded = np.concatenate([crops, np.repeat(crops[:1], BATCH - len(crops), axis=0)])  # one compilation
        change = np.asarray(step(params, padded, emotion, level))[: len(crops)] - crops
        for j, i in enumerate(chunk):
            yield paste_change(frames[i], change[j], boxes[i])


def run(video_path: str, out: str, *, checkpoint_dir: str, to: str, intensity: float = 1.0) -> EmotionReport:
    """Translates the video's face to `to` and writes `out` (mp4, the input's size, rate and audio)."""
    from t2v.generate.tracking import track_landmarks
    from t2v.landmarks import LandmarkDetector

    check_request(video_path, to, intensity, out)
    task, params = load_translator(checkpoint_dir)
    facts = video.probe(video_path)
    fps = facts["fps"] if facts["fps"] and math.isfinite(facts["fps"]) else video.FPS
    clip = video.read_video(video_path, fps=fps)
    if not len(clip.frames):
        raise InputError(f"{video_path}: no video frames")
    landmarks = track_landmarks(LandmarkDetector(), clip.frames, video_path)
    video.write_video(out, translate_frames(task, params, clip.frames, landmarks, to, intensity),
                      audio=clip.audio, sample_rate=clip.sample_rate, fps=fps)
    height, width = clip.frames.shape[1:3]
    return EmotionReport(str(out), len(clip.frames), (width, height), float(fps), to, float(intensity))
