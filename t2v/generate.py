"""Generation: a face photo + speech -> a talking-head mp4 that keeps the photo's framing.

    t2v generate --image face.jpg --audio speech.wav --out talk.mp4 --checkpoint DIR
    report = run("face.jpg", "speech.wav", "talk.mp4", checkpoint="DIR")   # the same, from Python

The path, stage by stage (the names are the keys of `GenerationReport.stage_seconds`):

  face            the photo's largest face: `t2v.landmarks` (the detector of data
                  preparation), the similarity crop of data preparation (`FaceCrop`) at the
                  renderer's size S, the renderer's reference encoded once;
  audio_features  `t2v.audio.load_audio`, then `log_mel` (the one definition training used)
                  30 s at a time (`log_mel_in_chunks`, equal to one pass);
  motion          the motion model (`KeypointGenerator`), chunk by chunk with the prior's
                  state carried across chunks: keypoints `[T, 68, 2]` in the crop's pixels,
                  T = `audio.num_video_frames(len(wave))` = round(25 x seconds) (with
                  `pose_from`, tracking the source video's face is counted here too);
  render          `render_batch` frames per call of the renderer;
  paste_back      each S x S face back into the photo through the crop's inverse warp,
                  blended with a feathered mask (`PasteBack`, a precomputed bilinear map);
  encode          H.264 + AAC with the input audio (`t2v.video.VideoWriter`).

Memory: the wave, its log-mel and the keypoints are held whole (a few hundred kB per
second of audio; `max_seconds` caps the audio); pixels are streamed, so only one render
batch of frames exists at any time whatever the audio's length.

Outputs appear all together or not at all: the mp4, the keypoints (npz) and the overlay
video are written under hidden names beside their destinations and renamed only when
everything succeeded; an earlier file at a destination stays untouched on failure.
Bad input raises a one-line `ValueError` (or `FileNotFoundError`) naming the file.

The keypoint half alone:

    generator = KeypointGenerator.from_workdir("/tmp/motion")
    points_px = generator(wave, reference_px)      # [T, 68, 2] pixels, T = round(25 * seconds)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import soundfile
from PIL import Image, ImageOps
from tqdm import tqdm

from t2v import audio, keypoints, video
from t2v.data.pipeline import image_keypoints
from t2v.tasks.render import renderer_spec

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 600.0  # longer speech is refused: its wave, mel and keypoints stay in memory
DETECT_MAX_SIDE = 1280  # photos are searched for faces at most this large (the fit uses full size)
TRACK_DETECT_MAX_SIDE = 640  # the same for --pose-from video frames, detected more often
DETECT_EVERY = 5  # --pose-from: run the detector on every 5th frame, track the box in between
OVERLAY_SUFFIX = "_keypoints"  # OUT.mp4 -> OUT_keypoints.mp4

# The canonical face in the crop, as data preparation places it (data_pipelines/align.py,
# which t2v may not import; tests/test_generate.py checks the two agree).
FACE_SCALE = 0.36  # crop pixels per face unit, over the crop size
FACE_CENTRE = (0.5, 0.52)  # where the face-frame origin sits, as fractions of the crop
_STABLE = np.asarray(keypoints.STABLE)

# The pasted region, in crop units from the crop's centre: opaque out to 0.40 (the jaw and
# chin lie within 0.37), fading smoothly to nothing at 0.48, inside the crop's edges.
MASK_OPAQUE_RADIUS = 0.40
MASK_CLEAR_RADIUS = 0.48

_SILENCE_LOG_MEL = float(np.log(audio.LOG_FLOOR))


# --------------------------------------------------------------------------- the motion model


@dataclasses.dataclass
class KeypointGenerator:
    """A trained motion model ready to turn speech into keypoints (audio-driven mode)."""

    task: Any  # t2v.tasks.motion.MotionTask
    params: Any
    chunk_frames: int = 256

    @classmethod
    def from_workdir(cls, workdir: str | Path, chunk_frames: int | None = None) -> "KeypointGenerator":
        """The motion model of a workdir (latest checkpoint, EMA parameters)."""
        from t2v import checkpoint
        from t2v.tasks import get_task

        config = checkpoint.read_config(workdir)
        if config.task != "motion":
            raise ValueError(f"{workdir}: task {config.task!r}; keypoint generation needs a 'motion' workdir")
        # A lip-sync expert is a training loss only: generation must not need its workdir.
        config = ml_collections.ConfigDict(config.to_dict())
        config.model.sync_workdir = ""
        task = get_task(config)
        frames = 8
        example = {"mel": jax.ShapeDtypeStruct((1, audio.MELS_PER_FRAME * frames, audio.N_MELS), jnp.float32),
                   "reference": jax.ShapeDtypeStruct((1, keypoints.NUM_POINTS, 2), jnp.float32),
                   "keypoints": jax.ShapeDtypeStruct((1, frames, keypoints.NUM_POINTS, 2), jnp.float32)}
        expected = jax.eval_shape(lambda batch: nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch)), example)
        params = checkpoint.checked_params(workdir, checkpoint.load_params(workdir), expected)
        chunk = int(config.sample.get("chunk_frames", 256)) if chunk_frames is None else chunk_frames
        return cls(task, params, chunk)

    def keypoints_from_mel(self, mel: np.ndarray, reference: np.ndarray, *, seed: int = 0,
                           temperature: float | None = None) -> np.ndarray:
        """Face-frame keypoints `[T, 68, 2]` from log-mel `[4T, 80]` and a face-frame reference `[68, 2]`."""
        mel = _checked_mel(mel, "mel")
        out = self.task.generate_audio_driven(self.params, jax.random.PRNGKey(seed), mel[None],
                                              np.asarray(reference, np.float32)[None], temperature,
                                              chunk_frames=self.chunk_frames)
        return out["keypoints"][0]

    def keypoints_following(self, mel: np.ndarray, reference: np.ndarray, source_mel: np.ndarray,
                            source_keypoints: np.ndarray, source_reference: np.ndarray) -> np.ndarray:
        """Motion-controllable mode: face-frame keypoints `[T, 68, 2]` whose head pose, blinks
        and brows follow a source clip and whose lips follow the audio.

        mel `[4T, 80]` and reference `[68, 2]` of the target; the source's mel `[4T, 80]`,
        keypoints `[T, 68, 2]` and reference `[68, 2]`, all in the face frame.
        """
        mel, source_mel = _checked_mel(mel, "mel"), _checked_mel(source_mel, "source_mel")
        frames = len(mel) // audio.MELS_PER_FRAME
        if source_mel.shape != mel.shape or np.shape(source_keypoints) != (frames, keypoints.NUM_POINTS, 2):
            raise ValueError(f"the source must span the target's {frames} frames: mel {source_mel.shape}, "
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
            raise ValueError(f"reference keypoints must be [68, 2], got {reference_px.shape}")
        reference, frame = keypoints.normalise(reference_px)
        points = self.keypoints_from_mel(audio.log_mel(wave, sample_rate), reference, seed=seed,
                                         temperature=temperature)
        return np.asarray(keypoints.denormalise(points, frame), np.float32)


def _checked_mel(mel: np.ndarray, name: str) -> np.ndarray:
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] % audio.MELS_PER_FRAME or mel.shape[0] == 0:
        raise ValueError(f"{name} must be [4T, {audio.N_MELS}] with T >= 1, got {mel.shape}")
    return mel


# --------------------------------------------------------------------------- the renderer


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

        config = checkpoint.read_config(workdir)
        if config.task != "render":
            raise ValueError(f"{workdir}: task {config.task!r}; rendering needs a 'render' workdir")
        spec = renderer_spec(config)
        size = spec.size
        image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        points = jax.ShapeDtypeStruct((1, keypoints.NUM_POINTS, 2), jnp.float32)
        model = KeypointRenderer(spec)
        expected = jax.eval_shape(lambda i, p: nn.meta.unbox(model.init(jax.random.PRNGKey(0), i, p, p)), image, points)
        saved = checkpoint.load_params(workdir)
        if "renderer" not in saved:
            raise ValueError(f"{workdir}: the checkpoint holds no renderer parameters")
        return cls(spec, checkpoint.checked_params(workdir, saved["renderer"], expected["params"]))

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


# --------------------------------------------------------------------------- crop and paste-back


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """The similarity taking photo pixels to an S x S face crop, as data preparation crops.

    `crop = photo @ A.T + b` with `matrix = [A | b]` `[2, 3]`; pixel centres at integers. The
    face's STABLE landmarks are fit onto the canonical face (`canonical_face`) by least
    squares; for several frames, the mean of their similarities (the fixed window of data
    preparation's `stabilise_seconds=None`), so head motion stays in the crop.
    """

    matrix: np.ndarray
    size: int

    @classmethod
    def fit(cls, landmarks: np.ndarray, size: int) -> "FaceCrop":
        """The crop of landmarks `[68, 2]` (a photo) or `[T, 68, 2]` (a clip), in pixels."""
        landmarks = np.asarray(landmarks, np.float64).reshape(-1, keypoints.NUM_POINTS, 2)
        target = np.broadcast_to(canonical_face(size)[_STABLE], landmarks[:, _STABLE].shape).astype(np.float64)
        # Fit crop -> photo: the window's scale, angle and centre are what may be averaged.
        scale, rotation, translation = keypoints.umeyama(target, landmarks[:, _STABLE])
        angle = np.unwrap(np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0]))
        centre = scale[:, None] * (rotation @ np.array([size / 2, size / 2])) + translation
        log_scale, angle, centre = np.log(scale).mean(), angle.mean(), centre.mean(0)
        cos, sin = np.cos(angle), np.sin(angle)
        to_crop = np.array([[cos, sin], [-sin, cos]]) / np.exp(log_scale)
        offset = np.array([size / 2, size / 2]) - to_crop @ centre
        return cls(np.concatenate([to_crop, offset[:, None]], axis=1), int(size))

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Photo pixels `[..., 2]` -> crop pixels."""
        return (np.asarray(points, np.float64) @ self.matrix[:, :2].T + self.matrix[:, 2]).astype(np.float32)

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels `[..., 2]` -> photo pixels."""
        inverse = np.linalg.inv(self.matrix[:, :2])
        return ((np.asarray(points, np.float64) - self.matrix[:, 2]) @ inverse.T).astype(np.float32)

    @property
    def photo_pixels_per_crop_pixel(self) -> float:
        return float(1.0 / np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The crop of uint8 `image [H, W, 3]`: uint8 `[S, S, 3]`, black outside the photo.

        A photo much larger than the crop is first box-filtered down by an integer factor,
        so that the bilinear warp does not alias (as data preparation does).
        """
        factor = max(1, int(self.photo_pixels_per_crop_pixel / 1.5))
        source = Image.fromarray(image)
        if factor > 1:
            source = source.reduce(factor)
        # Crop pixel -> pixel of the reduced photo, whose pixel r is centred on photo pixel
        # r * factor + (factor - 1) / 2.
        inverse = np.linalg.inv(self.matrix[:, :2])
        crop_to_source = np.concatenate([inverse, -(inverse @ self.matrix[:, 2:])], axis=1) / factor
        crop_to_source[:, 2] -= (factor - 1) / (2 * factor)
        # PIL maps output pixel centres (x + 0.5, y + 0.5) and reads input centres at +0.5.
        (a, b, c), (d, e, f) = crop_to_source
        c += 0.5 - 0.5 * (a + b)
        f += 0.5 - 0.5 * (d + e)
        warped = source.transform((self.size, self.size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
        return np.asarray(warped)


def canonical_face(size: int) -> np.ndarray:
    """The template face `[68, 2]` in the pixels of a `size x size` crop (data preparation's)."""
    return (keypoints.FRONTAL_TEMPLATE * (FACE_SCALE * size) + np.array(FACE_CENTRE) * size).astype(np.float32)


def crop_mask(crop_points: np.ndarray, size: int) -> np.ndarray:
    """The paste-back weight at crop positions `[..., 2]` (pixels): 1 over the face, a smooth
    fall to 0 at `MASK_CLEAR_RADIUS` crop sizes from the centre."""
    radius = np.linalg.norm(np.asarray(crop_points, np.float64) - (size - 1) / 2, axis=-1) / size
    t = np.clip((MASK_CLEAR_RADIUS - radius) / (MASK_CLEAR_RADIUS - MASK_OPAQUE_RADIUS), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no visible edge at either end


@jax.jit
def _paste(faces, taps, tap_weights, mask, photo_region):
    """faces `[B, S, S, 3]` in [0, 1] -> uint8 `[B, P, 3]`: the P region pixels, each the
    photo's blended towards the face bilinearly sampled at its 4 `taps` `[4, P]`."""
    batch, size = faces.shape[0], faces.shape[1]
    flat = faces.reshape(batch, size * size, 3).astype(jnp.float32)
    sampled = sum(tap_weights[k][None, :, None] * flat[:, taps[k]] for k in range(4))
    blended = photo_region + mask * (255.0 * sampled - photo_region)
    return jnp.clip(jnp.round(blended), 0, 255).astype(jnp.uint8)


class PasteBack:
    """Puts rendered S x S faces back into the photo, through the crop's inverse warp.

    Everything that does not change from frame to frame is computed once: the photo region
    the face can touch (`box`), each region pixel's 4 bilinear taps in the crop and their
    weights, and the feathered mask. Pixels outside the mask keep the photo's values exactly.

        paste = PasteBack(photo, crop)
        for frame in paste.frames(paste.regions(faces)):   # faces [B, S, S, 3] in [0, 1]
            writer.write(frame)          # uint8 [H, W, 3]: the photo with the face in
    """

    def __init__(self, photo: np.ndarray, crop: FaceCrop):
        self.photo = np.ascontiguousarray(photo, np.uint8)
        height, width = self.photo.shape[:2]
        size = crop.size
        # The region: the photo pixels the mask's circle covers, clipped to the photo.
        centre = crop.to_photo(np.array([(size - 1) / 2, (size - 1) / 2]))
        reach = MASK_CLEAR_RADIUS * size * crop.photo_pixels_per_crop_pixel + 2
        x0, y0 = np.maximum(np.floor(centre - reach).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(centre + reach).astype(int) + 1, (width, height))
        if x0 >= x1 or y0 >= y1:
            raise ValueError("the face crop lies outside the photo")
        self.box = (int(y0), int(y1), int(x0), int(x1))
        ys, xs = np.mgrid[y0:y1, x0:x1]
        at = crop.to_crop(np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64))
        mask = crop_mask(at, size)
        # Bilinear taps in the crop (clamped at its edges, where the mask is 0 anyway).
        x, y = np.clip(at[:, 0], 0, size - 1), np.clip(at[:, 1], 0, size - 1)
        left = np.minimum(np.floor(x), size - 2).astype(np.int32)
        top = np.minimum(np.floor(y), size - 2).astype(np.int32)
        wx, wy = (x - left).astype(np.float32), (y - top).astype(np.float32)
        self._taps = jnp.asarray(np.stack([top * size + left, top * size + left + 1,
                                           (top + 1) * size + left, (top + 1) * size + left + 1]))
        self._tap_weights = jnp.asarray(np.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]))
        self._mask = jnp.asarray(mask[:, None])
        self._photo_region = jnp.asarray(self.photo[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32))
        self._canvas = self.photo.copy()

    def regions(self, faces: jax.Array) -> jax.Array:
        """Faces `[B, S, S, 3]` in [0, 1] -> the pasted region of each frame, uint8 `[B, h, w, 3]`."""
        y0, y1, x0, x1 = self.box
        pasted = _paste(faces, self._taps, self._tap_weights, self._mask, self._photo_region)
        return pasted.reshape(faces.shape[0], y1 - y0, x1 - x0, 3)

    def frames(self, regions: np.ndarray) -> Iterator[np.ndarray]:
        """Whole frames uint8 `[H, W, 3]` for pasted regions `[B, h, w, 3]`, one at a time.

        Each frame is the same buffer, valid until the next one is made: write it or copy it.
        """
        y0, y1, x0, x1 = self.box
        for region in np.asarray(regions):
            self._canvas[y0:y1, x0:x1] = region
            yield self._canvas


# --------------------------------------------------------------------------- inputs


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """A photo file as uint8 RGB `[H, W, 3]`, turned upright by its EXIF orientation."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"{name}: no such file")
    try:
        with Image.open(name) as image:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = type(error).__name__ if name in str(error) else " ".join(str(error).split())
        raise ValueError(f"{name}: not a readable image ({reason})") from None


def read_speech(path: str | os.PathLike, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Speech from any audio (or video) file as a 16 kHz wave `[samples]`, refusing files
    longer than `max_seconds` before decoding them when their header says how long they are."""
    name = os.fspath(path)
    stated = _stated_seconds(name)
    if stated is not None and stated > max_seconds:
        raise ValueError(_too_long(name, stated, max_seconds))
    wave = audio.load_audio(name)
    seconds = len(wave) / audio.SAMPLE_RATE
    if seconds > max_seconds:
        raise ValueError(_too_long(name, seconds, max_seconds))
    return wave


def log_mel_in_chunks(wave: np.ndarray, chunk_seconds: float = 30.0) -> np.ndarray:
    """`audio.log_mel` of a 16 kHz wave `[samples]`, computed `chunk_seconds` at a time:
    the same `[4T, 80]`, without the whole-wave float64 copies `log_mel` makes inside.

    Chunks start on video-frame boundaries (640 samples = 4 mel hops, so the mel grid
    stays put) and read one video frame of audio either side, more than a mel window's
    reach (280 samples), so every kept row sees exactly the samples it sees in one pass.
    """
    frames = audio.num_video_frames(len(wave))
    step = audio.SAMPLES_PER_FRAME
    chunk_frames = max(1, int(chunk_seconds * audio.FPS))
    mel = np.empty((audio.mel_frames_for(frames), audio.N_MELS), np.float32)
    for first in range(0, frames, chunk_frames):
        last = min(first + chunk_frames, frames)
        context = min(first, 1)  # frames of audio read before the chunk (none at the start)
        piece = wave[(first - context) * step : (last + 1) * step]
        rows = audio.log_mel(piece)[audio.mel_frames_for(context) : audio.mel_frames_for(context + last - first)]
        mel[audio.mel_frames_for(first) : audio.mel_frames_for(last)] = rows
    return mel


def _too_long(name: str, seconds: float, max_seconds: float) -> str:
    return f"{name}: audio is {seconds:.1f} s long, over the limit of {max_seconds:g} s"


def _stated_seconds(name: str) -> float | None:
    """The duration a file's header states, or None (unreadable files are load_audio's to report)."""
    try:
        if name.lower().endswith((".wav", ".flac")):
            return float(soundfile.info(name).duration)
        with av.open(name) as container:
            return container.duration / av.time_base if container.duration else None
    except Exception:  # noqa: BLE001 - any failure here is diagnosed by load_audio with its own message
        return None


def detect_faces(detector, image: np.ndarray, max_side: int) -> np.ndarray:
    """Face boxes `[faces, 4]` in `image`'s pixels, searched on a copy at most `max_side` large."""
    height, width = image.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    if factor == 1.0:
        return detector.detect(image)
    small = np.asarray(Image.fromarray(image).resize((round(width * factor), round(height * factor)), Image.BILINEAR))
    return detector.detect(small) / factor


def _largest(boxes: np.ndarray) -> np.ndarray:
    return boxes[int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]


def find_face(detector, image: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Landmarks `[68, 2]` (pixels) of the largest face in a photo and how many faces it holds."""
    boxes = detect_faces(detector, image, DETECT_MAX_SIDE)
    if not len(boxes):
        raise ValueError(f"{name}: no face found")
    return detector.fit(image, _largest(boxes)), len(boxes)


def track_landmarks(detector, frames: Iterable[np.ndarray], name: str,
                    detect_every: int = DETECT_EVERY) -> np.ndarray:
    """Landmarks `[frames, 68, 2]` of the largest face of a video's frames (uint8 `[H, W, 3]`).

    The detector runs on every `detect_every`-th frame (and on every frame until a face
    is found); every frame gets its own 68-point fit, in the last detected box moved along
    with the face, so blinks and lips are measured on every frame. Frames before the first
    face take its landmarks.
    """
    points: list[np.ndarray] = []
    box = offset = None  # the detector's box, and its centre minus the landmarks' centre
    for index, frame in enumerate(frames):
        if box is None or index % detect_every == 0:
            boxes = detect_faces(detector, frame, TRACK_DETECT_MAX_SIDE)
            if len(boxes):
                box, offset = _largest(boxes), None
        if box is None:
            points.append(None)
            continue
        if offset is not None:  # follow the face: re-centre the box on the previous landmarks
            centre = points[-1][_STABLE].mean(0) + offset
            half = (box[2:] - box[:2]) / 2
            box = np.concatenate([centre - half, centre + half])
        landmarks = detector.fit(frame, box)
        if offset is None:
            offset = (box[:2] + box[2:]) / 2 - landmarks[_STABLE].mean(0)
        points.append(landmarks)
    found = [p for p in points if p is not None]
    if not found:
        raise ValueError(f"{name}: no face found in {len(points)} frames")
    return np.stack([found[0] if p is None else p for p in points]).astype(np.float32)


def ping_pong(count: int, length: int) -> np.ndarray:
    """`count` indices into a sequence of `length` that play it forwards, backwards, forwards...
    so that a short motion source covers long speech without jumps."""
    if length == 1:
        return np.zeros(count, np.int64)
    phase = np.arange(count) % (2 * (length - 1))
    return np.where(phase < length, phase, 2 * (length - 1) - phase)


def source_motion(detector, path: str | os.PathLike, frames: int, crop: FaceCrop) -> dict[str, np.ndarray]:
    """The motion source for `frames` target frames, in the model's face frame.

    The video's first `frames` frames (25 fps) are tracked, aligned by one similarity
    crop (the clip's mean, as data preparation crops) at the renderer's size, and
    normalised by their median face; its speech (silence when it has none) gives the
    source's mel. A shorter source is played back and forth. Returns `mel [4T, 80]`,
    `keypoints [T, 68, 2]`, `reference [68, 2]`.
    """
    name = os.fspath(path)
    landmarks = track_landmarks(detector, (frame for frame, _ in zip(video.iter_frames(name), range(frames))), name)
    aligned = FaceCrop.fit(landmarks, crop.size).to_crop(landmarks)
    reference, face_frame = keypoints.normalise(np.median(aligned, axis=0))
    source_points = (aligned - face_frame.origin) / face_frame.scale
    length = len(source_points)
    try:
        mel = audio.log_mel(audio.load_audio(name))
    except audio.AudioError as error:
        log.info("%s: using silence as the motion source's audio (%s)", name, error)
        mel = np.zeros((0, audio.N_MELS), np.float32)
    per_frame = np.full((length, audio.MELS_PER_FRAME, audio.N_MELS), _SILENCE_LOG_MEL, np.float32)
    usable = min(length, len(mel) // audio.MELS_PER_FRAME)
    per_frame[:usable] = mel[: usable * audio.MELS_PER_FRAME].reshape(usable, audio.MELS_PER_FRAME, audio.N_MELS)
    order = ping_pong(frames, length)
    if length < frames:
        log.info("%s: %d frames of motion for %d frames of speech: played back and forth", name, length, frames)
    return {"mel": per_frame[order].reshape(-1, audio.N_MELS), "keypoints": source_points[order].astype(np.float32),
            "reference": reference.astype(np.float32)}


# --------------------------------------------------------------------------- outputs


class _StagedOutputs:
    """Output files written under hidden names and moved into place together on `commit`.

    Leaving the `with` block without a commit (an exception) removes whatever was staged,
    so destinations keep their earlier contents.
    """

    def __init__(self):
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> "_StagedOutputs":
        return self

    def stage(self, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.staged")
        self._staged.append((staging, destination))
        return staging

    def commit(self) -> None:
        for staging, destination in self._staged:
            os.replace(staging, destination)
        self._staged = []

    def __exit__(self, *exc_info) -> None:
        for staging, _ in self._staged:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()


def overlay_path(out: str | os.PathLike) -> Path:
    """Where `overlay=True` writes the debug video: OUT.mp4 -> OUT_keypoints.mp4."""
    out = Path(out)
    return out.with_name(f"{out.stem}{OVERLAY_SUFFIX}{out.suffix or '.mp4'}")


# --------------------------------------------------------------------------- the whole path


@dataclasses.dataclass
class GenerationReport:
    """What `generate` wrote and how long each stage took (seconds, summed over the run)."""

    out: Path
    frames: int
    audio_seconds: float
    faces_found: int
    photo_size: tuple[int, int]  # (width, height)
    render_size: int
    keypoints_out: Path | None
    overlay_out: Path | None
    stage_seconds: dict[str, float]


class _Stopwatch:
    """Sums wall time per stage: `with watch("render"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclasses.dataclass
class TalkingHeadGenerator:
    """The trained motion model and renderer, loaded once, for any number of videos."""

    motion: KeypointGenerator
    renderer: FaceRenderer
    render_batch: int = 4

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, render_batch: int | None = None) -> "TalkingHeadGenerator":
        """From a `t2v demo` workdir, or any folder holding a `motion` and a `render` task workdir."""
        from t2v import checkpoint as checkpoint_lib

        workdirs = checkpoint_lib.task_workdirs(checkpoint)
        missing = [task for task in ("motion", "render") if task not in workdirs]
        if missing:
            raise FileNotFoundError(f"{os.fspath(checkpoint)}: no {' and no '.join(repr(m) for m in missing)} task "
                                    f"workdir (found {sorted(workdirs) or 'none'}); generation needs both")
        renderer = FaceRenderer.from_workdir(workdirs["render"])
        # Large frames render fastest one at a time on a CPU (cache-bound); small ones in batches.
        default_batch = 1 if renderer.size >= 256 else 4
        return cls(KeypointGenerator.from_workdir(workdirs["motion"]), renderer,
                   default_batch if render_batch is None else render_batch)

    @functools.cached_property
    def detector(self):
        from t2v.landmarks import LandmarkDetector

        return LandmarkDetector()

    def generate(self, image: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike, *,
                 pose_from: str | os.PathLike | None = None, temperature: float | None = None, seed: int = 0,
                 keypoints_out: str | os.PathLike | None = None, overlay: bool = False,
                 max_seconds: float = DEFAULT_MAX_SECONDS, progress: bool = False) -> GenerationReport:
        """Writes `out` (mp4: the photo talking, the speech as its audio); see `run`."""
        watch = _Stopwatch()
        out = Path(out)
        if out.is_dir():
            raise ValueError(f"{out}: is a directory; give the output mp4's file name")
        size = self.renderer.size

        with watch("face"):
            photo = read_photo(image)
        with watch("audio_features"):
            wave = read_speech(speech, max_seconds)
        with watch("face"):
            landmarks, faces = find_face(self.detector, photo, os.fspath(image))
            if faces > 1:
                log.warning("%s: %d faces found; animating the largest", os.fspath(image), faces)
            crop = FaceCrop.fit(landmarks, size)
            reference_crop_px = crop.to_crop(landmarks)
            reference = self.renderer.encode(crop.crop(photo), reference_crop_px)
            paste = PasteBack(photo, crop)
        with watch("audio_features"):
            mel = log_mel_in_chunks(wave)
        frames = len(mel) // audio.MELS_PER_FRAME
        assert frames == audio.num_video_frames(len(wave))

        with watch("motion"):
            reference_face, face_frame = keypoints.normalise(reference_crop_px)
            if pose_from is None:
                points = self.motion.keypoints_from_mel(mel, reference_face, seed=seed, temperature=temperature)
            else:
                source = source_motion(self.detector, pose_from, frames, crop)
                points = self.motion.keypoints_following(mel, reference_face, source["mel"], source["keypoints"],
                                                         source["reference"])
            crop_points = np.asarray(keypoints.denormalise(points, face_frame), np.float32)  # [T, 68, 2]
            photo_points = crop.to_photo(crop_points)

        overlay_out = overlay_path(out) if overlay else None
        keypoints_path = None if keypoints_out is None else Path(keypoints_out)
        with _StagedOutputs() as staged:
            with contextlib.ExitStack() as writers:
                writer = writers.enter_context(video.VideoWriter(staged.stage(out), audio=wave))
                overlay_writer = (writers.enter_context(video.VideoWriter(staged.stage(overlay_out), audio=wave))
                                  if overlay_out else None)
                self._stream_frames(reference, paste, crop_points, photo_points, writer, overlay_writer, watch,
                                    progress, out.name)
                with watch("encode"):
                    writers.close()
            if keypoints_path is not None:
                with open(staged.stage(keypoints_path), "wb") as file:
                    np.savez(file, keypoints=photo_points, reference=landmarks.astype(np.float32),
                             fps=np.int32(audio.FPS), image_size=np.array(photo.shape[1::-1], np.int32))
            staged.commit()
        return GenerationReport(out, frames, len(wave) / audio.SAMPLE_RATE, faces, (photo.shape[1], photo.shape[0]),
                                size, keypoints_path, overlay_out, watch.seconds)

    def _stream_frames(self, reference, paste: PasteBack, crop_points: np.ndarray, photo_points: np.ndarray,
                       writer, overlay_writer, watch: _Stopwatch, progress: bool, label: str) -> None:
        """Renders, pastes and encodes every frame, `render_batch` at a time."""
        batch = self.render_batch
        total = len(crop_points)
        with tqdm(total=total, unit="frame", desc=label, disable=not progress, leave=False) as bar:
            for start in range(0, total, batch):
                stop = min(start + batch, total)
                # Every call has the full batch shape (the last batch repeats its last frame): one compilation.
                chunk = crop_points[np.minimum(np.arange(start, start + batch), total - 1)]
                with watch("render"):
                    faces = jax.block_until_ready(self.renderer.render(reference, chunk))
                with watch("paste_back"):
                    regions = np.asarray(paste.regions(faces))[: stop - start]
                for index, frame in zip(range(start, stop), paste.frames(regions)):
                    with watch("encode"):
                        writer.write(frame)
                    if overlay_writer is not None:
                        with watch("overlay"):
                            overlay_writer.write(keypoints.draw_keypoints(frame, photo_points[index]))
                bar.update(stop - start)


def run(image: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike, *,
        checkpoint: str | os.PathLike, pose_from: str | os.PathLike | None = None,
        temperature: float | None = None, seed: int = 0, keypoints_out: str | os.PathLike | None = None,
        overlay: bool = False, max_seconds: float | None = None, render_batch: int | None = None,
        progress: bool = True) -> GenerationReport:
    """`t2v generate`: the face in photo `image` speaks `speech`; the video goes to `out`.

    out: an mp4 of the photo's size (an odd side gains one edge row or column) with
        exactly `audio.num_video_frames(samples)` = round(25 x seconds) frames at 25 fps
        and the speech (mono, 16 kHz) as its audio track.
    checkpoint: a `t2v demo` workdir, or a folder holding a `motion` and a `render` task
        workdir (each with config.json and checkpoints/).
    pose_from: a video whose face's head pose, blinks and brows the output follows
        (motion-controllable mode); lips still follow `speech`.
    temperature: of the motion prior's samples (the checkpoint's `sample.temperature`
        when None); seed: of those samples (same seed, same video).
    keypoints_out: also write the generated keypoints as npz: `keypoints [T, 68, 2]`
        (photo pixels), `reference [68, 2]` (the photo's landmarks), `fps`, `image_size`
        (width, height).
    overlay: also write OUT_keypoints.mp4, the video with its keypoints drawn.
    max_seconds: longer speech is refused (None: `DEFAULT_MAX_SECONDS`, 10 minutes).
    render_batch: frames per renderer call (default: 1 at 256 px and above, else 4).
    progress: a progress bar on stderr.

    Several faces in the photo: the largest is animated and a warning says so. Bad input
    (no face, unreadable image or audio, silent or too long audio, missing or mismatched
    checkpoint) raises a one-line ValueError or FileNotFoundError naming the file, and
    leaves no output behind.
    """
    generator = TalkingHeadGenerator.from_checkpoint(checkpoint, render_batch)
    return generator.generate(image, speech, out, pose_from=pose_from, temperature=temperature, seed=seed,
                              keypoints_out=keypoints_out, overlay=overlay,
                              max_seconds=DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds,
                              progress=progress)
