"""Generation's inputs, checked: the photo, the speech, and the face in the photo.

Bad input raises `t2v.errors.InputError`, one line naming the file.
"""

from __future__ import annotations

import os

import av
import numpy as np
import soundfile
from PIL import Image, ImageOps

from t2v import audio, keypoints
from t2v.errors import InputError

DEFAULT_MAX_SECONDS = 600.0  # longer speech is refused: its wave, mel and keypoints stay in memory
DETECT_MAX_SIDE = 1280  # photos are searched for faces at most this large (the fit uses full size)


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """A photo file as uint8 RGB `[H, W, 3]`, turned upright by its EXIF orientation."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise InputError(f"{name}: no such file")
    try:
        with Image.open(name) as image:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = type(error).__name__ if name in str(error) else " ".join(str(error).split())
        raise InputError(f"{name}: not a readable image ({reason})") from None


def read_speech(path: str | os.PathLike, max_seconds: float = DEFAULT_MAX_SECONDS) -> np.ndarray:
    """Speech from any audio (or video) file as a 16 kHz wave `[samples]`, refusing files
    longer than `max_seconds` before decoding them when their header says how long they are."""
    name = os.fspath(path)
    stated = _stated_seconds(name)
    if stated is not None and stated > max_seconds:
        raise InputError(_too_long(name, stated, max_seconds))
    try:
        wave = audio.load_audio(name)
    except audio.AudioError as error:  # one line naming the file already
        if isinstance(error, InputError):
            raise
        raise InputError(str(error)) from error
    seconds = len(wave) / audio.SAMPLE_RATE
    if seconds > max_seconds:
        raise InputError(_too_long(name, seconds, max_seconds))
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


SAME_SIZE = 0.05  # faces whose box areas are within 5% of the largest count as equally large
MIN_FIT_PX = 96  # smaller faces are fitted on an upsampled copy of their surroundings


def ordered_faces(boxes: np.ndarray) -> np.ndarray:
    """Face boxes `[faces, 4]` numbered left to right: sorted by the box centre's x, then y."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    return boxes[np.lexsort((np.round(centres[:, 1], 1), np.round(centres[:, 0], 1)))]


def default_face(sizes: np.ndarray) -> int:
    """The index of the largest of faces of `sizes`, in their order; of faces equally large
    (within `SAME_SIZE`) the first, so the choice never hangs on a pixel's rounding."""
    sizes = np.asarray(sizes, np.float64)
    return int(np.flatnonzero(sizes >= (1 - SAME_SIZE) * sizes.max())[0])


def largest_box(boxes: np.ndarray) -> np.ndarray:
    """The largest detector box (by area; equally large: the leftmost)."""
    ordered = ordered_faces(boxes)
    return ordered[default_face((ordered[:, 2] - ordered[:, 0]) * (ordered[:, 3] - ordered[:, 1]))]


def list_faces(detector, image: np.ndarray) -> tuple[np.ndarray, int]:
    """(the photo's face boxes `[faces, 4]` (left, top, right, bottom) numbered left to
    right, the index of the one animated by default: the largest by its fitted landmarks'
    size, which unlike the detector's box does not step with the face's position)."""
    boxes = ordered_faces(detect_faces(detector, image, DETECT_MAX_SIDE))
    if not len(boxes):
        return boxes, -1
    sizes = [float(keypoints.face_size(fit_landmarks(detector, image, box))) for box in boxes]
    return boxes, default_face(sizes)


def fit_landmarks(detector, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 68 landmarks `[68, 2]` of the face in `box`; a face under `MIN_FIT_PX` is fitted
    on a bicubically upsampled copy of its surroundings (the shape model's features need
    more than a few pixels per eye), then mapped back."""
    box = np.asarray(box, np.float64)
    width = float(box[2] - box[0])
    if width >= MIN_FIT_PX:
        return detector.fit(image, box)
    factor = int(np.ceil(MIN_FIT_PX / max(width, 1.0)))
    height, image_width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(box[:2] - width).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(box[2:] + width).astype(int), (image_width, height))
    patch = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    large = np.asarray(patch.resize((patch.width * factor, patch.height * factor), Image.BICUBIC))
    # Pixel centres: patch pixel p is at (p + 0.5) * factor - 0.5 in the large copy.
    large_box = (box - [x0, y0, x0, y0] + 0.5) * factor - 0.5
    points = detector.fit(large, large_box)
    return ((points + 0.5) / factor - 0.5 + [x0, y0]).astype(np.float32)


def find_face(detector, image: np.ndarray, name: str, face: int | None = None) -> tuple[np.ndarray, int]:
    """Landmarks `[68, 2]` (pixels) of a photo's face and how many faces it holds.

    face: which face, numbered 1, 2, ... left to right (`list_faces`); None: the largest.
    """
    boxes, default = list_faces(detector, image)
    if not len(boxes):
        raise InputError(f"{name}: no face found")
    if face is None:
        index = default
    elif 1 <= face <= len(boxes):
        index = face - 1
    else:
        raise InputError(f"{name}: no face {face}: {len(boxes)} found, numbered 1 to {len(boxes)} left to right "
                         "(t2v generate --list-faces PHOTO lists them)")
    return fit_landmarks(detector, image, boxes[index]), len(boxes)


def face_listing(detector, path: str | os.PathLike) -> str:
    """What `t2v generate --list-faces PHOTO` prints: one line per face, numbered as `--face`
    numbers them (left to right), the default marked; no face is bad input."""
    name = os.fspath(path)
    boxes, default = list_faces(detector, read_photo(name))
    if not len(boxes):
        raise InputError(f"{name}: no face found")
    lines = [f"{name}: {len(boxes)} face{'s' if len(boxes) > 1 else ''}, numbered left to right for --face"]
    for number, (x0, y0, x1, y1) in enumerate(boxes.tolist(), start=1):
        mark = "  (the default: the largest)" if number - 1 == default else ""
        lines.append(f"  face {number}: box left {x0:.0f} top {y0:.0f} right {x1:.0f} bottom {y1:.0f}, "
                     f"{x1 - x0:.0f} px wide{mark}")
    return "\n".join(lines)
