"""One clip -> one `t2v.data.records` record, or the reason it was skipped.

Cheap checks first (decode, silence, lengths), the face work last (landmarks, crop,
labels); the steps and the record's fields: docs/data_pipelines.md. Synthetic
ground-truth records are checked and passed through with their provenance.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import align, landmarks
from data_pipelines.layouts import ClipSource
from t2v import audio as audio_lib
from t2v import keypoints as kp
from t2v import video as video_lib
from t2v.data import records
from t2v.errors import InputError

# Why a clip was skipped; the report counts clips under these names.
SKIP_REASONS = {
    "unreadable_video": "the video file is missing or cannot be decoded",
    "unreadable_audio": "the audio is missing, cannot be decoded or is unusable",
    "silent_audio": "the audio peak stays below t2v.audio.SILENCE_DBFS",
    "av_length_mismatch": "audio and video lengths differ by more than the tolerance",
    "too_short": "fewer frames than min_frames",
    "no_face": "no face found on any frame",
    "face_lost": "the face is missing for more than max_gap_frames frames in a row",
    "bad_record": "a synthetic record that cannot be read or breaks the schema",
    "internal_error": "an unexpected error while preparing the clip (a bug: please report it)",
}


class SkipClip(Exception):
    """A clip that cannot become a record: `reason` (a SKIP_REASONS key) and a one-line message."""

    def __init__(self, reason: str, message: str):
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Knobs of the per-clip preparation (defaults suit VoxCeleb2-like talking heads).

    crop_size: side of the square crop, pixels.
    detect_every: run the face detector every this many frames, track in between.
    max_gap_frames: interpolate the face over at most this many missing frames in a row.
    smoothing_window: Savitzky-Golay window over time (odd, frames); 1 turns it off.
    stabilise_seconds: see `align.py`: None keeps all head motion in the crop.
    min_frames: shorter clips are skipped (25 = 1 s).
    max_length_mismatch_frames: larger audio/video length differences are skipped.
    max_frames: read at most this many frames of a clip (None: all of it).
    """

    crop_size: int = align.CROP_SIZE
    detect_every: int = 5
    max_gap_frames: int = 5
    smoothing_window: int = 5
    stabilise_seconds: float | None = None
    min_frames: int = 25
    max_length_mismatch_frames: int = 5
    max_frames: int | None = None

    def __post_init__(self):
        # Checked once, here: inside a build a bad knob would skip every clip instead.
        problems = {
            "crop_size": self.crop_size < 16 and "must be at least 16",
            "detect_every": self.detect_every < 1 and "must be at least 1",
            "max_gap_frames": self.max_gap_frames < 0 and "must be at least 0",
            "smoothing_window": self.smoothing_window > 1 and self.smoothing_window % 2 == 0 and "must be odd (or 1: off)",
            "stabilise_seconds": self.stabilise_seconds is not None and self.stabilise_seconds < 0
            and "must be None (-1 in the config) or >= 0",
            "min_frames": self.min_frames < 1 and "must be at least 1",
            "max_length_mismatch_frames": self.max_length_mismatch_frames < 0 and "must be at least 0",
            "max_frames": self.max_frames is not None and self.max_frames < 1 and "must be None (-1 in the config) or >= 1",
        }
        for name, problem in problems.items():
            if problem:
                raise InputError(f"prepare.{name}={getattr(self, name)}: {problem}")


@dataclasses.dataclass
class Clip:
    """A prepared clip before encoding (kept for measurements such as the benchmark's).

    landmarks: float32 `[T, 68, 2]` smoothed landmarks in source-frame pixels.
    fields: the record's fields.
    """

    landmarks: np.ndarray
    fields: dict


def prepare_clip(source: ClipSource, detector: landmarks.LandmarkDetector | None, options: PrepareOptions) -> bytes:
    """The encoded record of one clip; raises `SkipClip` when the clip cannot be used.

    `detector` may be None for synthetic records, which need no face work."""
    if source.dataset == "synthetic":
        return repack_synthetic(source)
    return records.encode_clip(extract_clip(source, detector, options).fields)


def prepare_or_skip(
    source: ClipSource, detector: landmarks.LandmarkDetector | None, options: PrepareOptions
) -> bytes | dict:
    """The clip's record, or its skip entry `{"clip_id", "path", "reason", "message"}`.

    Never raises for one clip's sake: an unexpected error is reported as `internal_error`
    with its type and message, so that one bad file cannot stop a build.
    """
    try:
        return prepare_clip(source, detector, options)
    except SkipClip as skip:
        reason, message = skip.reason, skip.message
    except Exception as error:  # noqa: BLE001: a build outlives any one clip
        reason, message = "internal_error", f"{source.path}: {type(error).__name__}: {' '.join(str(error).split())}"
    return {"clip_id": source.clip_id, "path": source.relative_path, "reason": reason, "message": message}


def extract_clip(source: ClipSource, detector: landmarks.LandmarkDetector, options: PrepareOptions) -> Clip:
    """Steps 1-5 of the module docstring for a video clip; raises `SkipClip`."""
    frames, wave = decode_media(source, options)
    track = detector.track(frames)
    if not track.found.any():
        raise SkipClip("no_face", f"{source.path}: no face on any of {len(frames)} frames")
    if track.longest_gap > options.max_gap_frames:
        raise SkipClip(
            "face_lost", f"{source.path}: face missing for {track.longest_gap} frames in a row (max {options.max_gap_frames})"
        )
    points = landmarks.smooth(landmarks.fill_gaps(track.landmarks), options.smoothing_window)

    transforms = align.crop_transforms(points, options.crop_size, options.stabilise_seconds, video_lib.FPS)
    crop_points = align.transform_points(points, transforms)
    crops = align.crop_frames(frames, transforms, options.crop_size)
    rotation, scale, translation = kp.fit_weak_perspective(crop_points.astype(np.float64))
    pose = np.concatenate([kp.euler_angles(rotation), scale[:, None], translation], axis=1)

    fields = {
        "clip_id": source.clip_id,
        "audio": wave,
        "sample_rate": audio_lib.SAMPLE_RATE,
        "fps": video_lib.FPS,
        "keypoints": crop_points,
        "frames": crops,
        "frame_size": options.crop_size,
        "pose": pose.astype(np.float32),
        # The schema wants [0, 1]; the proxies only floor at 0 (a face far from the
        # template's proportions can read above full scale).
        "aus": np.clip(kp.au_proxies(crop_points), 0.0, 1.0).astype(np.float32),
        **source.labels,
        "source": source.dataset,
        "source_path": source.relative_path,
        "split": source.split,
        "keypoints_observed": track.found,
        "crop_transform": transforms,
    }
    return Clip(points, fields)


def decode_media(source: ClipSource, options: PrepareOptions) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 `[T, H, W, 3]` and the wave float32 `[S]`, checked and trimmed to one length."""
    try:
        video = video_lib.read_video(source.path, max_frames=options.max_frames)
    except (OSError, ValueError) as error:  # VideoError is a ValueError; a missing file an OSError
        raise SkipClip("unreadable_video", _one_line(error)) from None
    frames = video.frames
    if source.audio_path is not None:
        try:
            wave = audio_lib.load_audio(source.audio_path)
        except audio_lib.AudioError as error:
            reason = "silent_audio" if "is silent" in str(error) else "unreadable_audio"
            raise SkipClip(reason, _one_line(error)) from None
        if options.max_frames is not None:
            wave = wave[: options.max_frames * audio_lib.SAMPLES_PER_FRAME]
    elif video.audio is None:
        raise SkipClip("unreadable_audio", f"{source.path}: no audio stream")
    else:
        wave = video.audio
        try:
            audio_lib.check_speech(wave, source.path)
        except audio_lib.AudioError as error:
            reason = "silent_audio" if "is silent" in str(error) else "unreadable_audio"
            raise SkipClip(reason, _one_line(error)) from None

    audio_frames = audio_lib.num_video_frames(len(wave))
    if abs(audio_frames - len(frames)) > options.max_length_mismatch_frames:
        raise SkipClip(
            "av_length_mismatch",
            f"{source.path}: {len(frames)} video frames but {audio_frames} frames of audio"
            f" (tolerance {options.max_length_mismatch_frames})",
        )
    num_frames = min(audio_frames, len(frames))
    if num_frames < options.min_frames:
        raise SkipClip("too_short", f"{source.path}: {num_frames} frames (min {options.min_frames})")
    return frames[:num_frames], wave[: num_frames * audio_lib.SAMPLES_PER_FRAME]


def repack_synthetic(source: ClipSource) -> bytes:
    """A ground-truth record, checked (decoded in full, JPEGs included) and given provenance."""
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(source.path)
        try:
            record = reader.read([source.record_index])[0]
        finally:
            reader.close()
        clip = records.decode_clip(record, decode_frames=False)
        records.decode_jpegs(clip.get("frames") or [])
    except Exception as error:  # array_record raises RuntimeError / OSError, decoding RecordError
        raise SkipClip("bad_record", f"{source.path} record {source.record_index}: {_one_line(error)}") from None
    clip.update(source="synthetic", source_path=source.relative_path, split=source.split)
    return records.encode_clip(clip)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
