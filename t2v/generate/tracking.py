"""Tracking a video's face for `--pose-from`: landmarks on every frame, the motion source
in the model's face frame, played back and forth when shorter than the speech."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import numpy as np

from t2v import audio, keypoints, video
from t2v.errors import InputError
from t2v.generate.crop import FaceCrop
from t2v.generate.inputs import detect_faces, largest_box

log = logging.getLogger(__name__)

TRACK_DETECT_MAX_SIDE = 640  # --pose-from video frames are searched for faces at most this large
DETECT_EVERY = 5  # run the detector on every 5th frame, track the box in between
_STABLE = np.asarray(keypoints.STABLE)


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
                box, offset = largest_box(boxes), None
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
        raise InputError(f"{name}: no face found in {len(points)} frames")
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
    if not os.path.isfile(name):
        raise InputError(f"{name}: no such file")
    try:
        frames_read = (frame for frame, _ in zip(video.iter_frames(name), range(frames)))
        landmarks = track_landmarks(detector, frames_read, name)
    except video.VideoError as error:  # one line naming the file already
        if isinstance(error, InputError):
            raise
        raise InputError(str(error)) from error
    aligned = FaceCrop.fit(landmarks, crop.size).to_crop(landmarks)
    reference, face_frame = keypoints.normalise(np.median(aligned, axis=0))
    source_points = (aligned - face_frame.origin) / face_frame.scale
    length = len(source_points)
    try:
        mel = audio.log_mel(audio.load_audio(name))
    except audio.AudioError as error:
        log.info("%s: using silence as the motion source's audio (%s)", name, error)
        mel = np.zeros((0, audio.N_MELS), np.float32)
    per_frame = np.full((length, audio.MELS_PER_FRAME, audio.N_MELS), audio.SILENCE_LOG_MEL, np.float32)
    usable = min(length, len(mel) // audio.MELS_PER_FRAME)
    per_frame[:usable] = mel[: usable * audio.MELS_PER_FRAME].reshape(usable, audio.MELS_PER_FRAME, audio.N_MELS)
    order = ping_pong(frames, length)
    if length < frames:
        log.info("%s: %d frames of motion for %d frames of speech: played back and forth", name, length, frames)
    return {"mel": per_frame[order].reshape(-1, audio.N_MELS), "keypoints": source_points[order].astype(np.float32),
            "reference": reference.astype(np.float32)}
