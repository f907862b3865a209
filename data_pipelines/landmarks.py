"""Face detection, 68 landmarks and main-face tracking with dlib, then gap filling and
temporal smoothing.

Conventions: frames are uint8 RGB `[T, H, W, 3]`; landmarks are float32 `[T, 68, 2]` in
frame pixels (x right, y down), iBUG-300W order as in `t2v.keypoints`, NaN on frames
where the main face was not found.

Speed: dlib's HOG detector costs ~70 ms on a 512 x 512 frame, its shape predictor ~2 ms.
So the detector runs every `detect_every` frames only (the keyframes); in between the
landmarks are re-fitted in a box carried over from the previous frame's landmarks.
A keyframe that misses the face switches to detecting on every frame until it is back.

Several faces: detections are linked across keyframes into tracks by box overlap, and
the main face is the track with the largest summed (area x centrality): the biggest,
most central face, consistently over the clip rather than frame by frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.signal

from t2v import keypoints as kp
from t2v import landmarks

_STABLE = np.array(kp.STABLE)
_SAME_FACE_IOU = 0.3  # boxes of one face on consecutive keyframes overlap at least this much
_REACQUIRE_IOU = 0.1  # a face found again after a miss must overlap where it was last seen


@dataclasses.dataclass
class FaceTrack:
    """The main face over a clip.

    landmarks: float32 `[T, 68, 2]` frame pixels, NaN where the face was not found.
    most_faces: the most faces detected on one keyframe (several faces: > 1).
    """

    landmarks: np.ndarray
    most_faces: int

    @property
    def found(self) -> np.ndarray:
        """bool `[T]`: frames with landmarks."""
        return ~np.isnan(self.landmarks[:, 0, 0])

    @property
    def longest_gap(self) -> int:
        """The longest run of frames without the face (the whole clip when never found)."""
        return longest_run(~self.found)


class LandmarkDetector(landmarks.LandmarkDetector):
    """`t2v.landmarks.LandmarkDetector` (the extractor inference uses too) over whole clips.

    detect_every: run the detector on every this many frames (1: every frame).
    """

    def __init__(self, detect_every: int = 5):
        if detect_every < 1:
            raise ValueError(f"detect_every must be at least 1, got {detect_every}")
        super().__init__()
        self.detect_every = detect_every

    # ----------------------------------------------------------------------- clips

    def track(self, frames: np.ndarray) -> FaceTrack:
        """Landmarks of the main face on every frame of `frames` `[T, H, W, 3]`."""
        num_frames = len(frames)
        keyframes = range(0, num_frames, self.detect_every)
        detections = {index: self.detect(frames[index]) for index in keyframes}
        main_boxes = main_face_boxes(detections, frames.shape[2], frames.shape[1])
        most_faces = max((len(boxes) for boxes in detections.values()), default=0)

        landmarks = np.full((num_frames, kp.NUM_POINTS, 2), np.nan, np.float32)
        if not main_boxes:
            return FaceTrack(landmarks, most_faces)
        box_from_landmarks = None  # landmarks -> the detector's box, learnt on each detection
        last_box = main_boxes[min(main_boxes)]  # where the main face was last seen
        for index in range(num_frames):
            previous = landmarks[index - 1] if index else None
            tracking = previous is not None and not np.isnan(previous[0, 0])
            if index in main_boxes:
                box, detected = main_boxes[index], True
            elif tracking and index not in detections:
                box, detected = box_from_landmarks(previous), False
            else:
                # A keyframe that missed the main face, or a frame after losing it: search.
                boxes = detections[index] if index in detections else self.detect(frames[index])
                box, detected = _reacquire(boxes, last_box), True
            if box is None:
                continue
            landmarks[index] = self.fit(frames[index], box)
            if detected:
                box_from_landmarks = _BoxFromLandmarks.learn(landmarks[index], box)
            last_box = box_from_landmarks(landmarks[index])
        return FaceTrack(landmarks, most_faces)


# --------------------------------------------------------------------------- choosing the main face


def _main_face_scores(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """`[faces]`: box area times centrality (1 at the frame centre, 0.5 at a corner)."""
    sizes = boxes[:, 2:] - boxes[:, :2]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offset = np.linalg.norm((centres - [width / 2, height / 2]) / [width / 2, height / 2], axis=1) / np.sqrt(2)
    return sizes.prod(1) * (1 - 0.5 * np.clip(offset, 0, 1))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes `a [4]` and `b [N, 4]` -> `[N]`."""
    low = np.maximum(a[:2], b[:, :2])
    high = np.minimum(a[2:], b[:, 2:])
    intersection = np.clip(high - low, 0, None).prod(1)
    area = lambda box: np.clip(box[..., 2:] - box[..., :2], 0, None).prod(-1)  # noqa: E731
    return intersection / np.maximum(area(a) + area(b) - intersection, 1e-9)


def main_face_boxes(detections: dict[int, np.ndarray], width: int, height: int) -> dict[int, np.ndarray]:
    """The main face's box on each keyframe that has it: `{frame index: [4]}`.

    `detections` maps keyframe indices (in order) to boxes `[faces, 4]`. Detections are
    linked greedily into tracks by overlap with each track's latest box; the main track
    has the largest sum of `_main_face_scores` over the clip.
    """
    tracks: list[dict[int, np.ndarray]] = []
    scores: list[float] = []
    for index, boxes in detections.items():
        claimed: set[int] = set()
        for box, score in zip(boxes, _main_face_scores(boxes, width, height)):
            overlaps = [
                box_iou(box, track[max(track)][None])[0] if number not in claimed else 0.0
                for number, track in enumerate(tracks)
            ]
            best = int(np.argmax(overlaps)) if overlaps else -1
            if best >= 0 and overlaps[best] >= _SAME_FACE_IOU:
                tracks[best][index] = box
                scores[best] += score
                claimed.add(best)
            else:
                tracks.append({index: box})
                scores.append(score)
                claimed.add(len(tracks) - 1)
    return tracks[int(np.argmax(scores))] if tracks else {}


def _reacquire(boxes: np.ndarray, last_box: np.ndarray) -> np.ndarray | None:
    """The box among `boxes` that overlaps the face's last known box most, if any does."""
    if not len(boxes):
        return None
    overlaps = box_iou(last_box, boxes)
    best = int(np.argmax(overlaps))
    return boxes[best] if overlaps[best] >= _REACQUIRE_IOU else None


@dataclasses.dataclass(frozen=True)
class _BoxFromLandmarks:
    """Where the detector would put its box, given landmarks: a square about the STABLE
    points' centre, offset and sized in units of their spread (learnt from one detection,
    so the shape predictor gets the kind of box it was trained on)."""

    offset: np.ndarray  # [2], box centre minus landmark centre, over spread
    half_size: float  # box half-width over spread

    @staticmethod
    def _centre_and_spread(points: np.ndarray) -> tuple[np.ndarray, float]:
        stable = points[_STABLE]
        centre = stable.mean(0)
        return centre, float(np.sqrt(((stable - centre) ** 2).sum(1).mean()) + 1e-6)

    @classmethod
    def learn(cls, points: np.ndarray, box: np.ndarray) -> _BoxFromLandmarks:
        centre, spread = cls._centre_and_spread(points)
        box_centre = (box[:2] + box[2:]) / 2
        return cls((box_centre - centre) / spread, float((box[2] - box[0]) / 2 / spread))

    def __call__(self, points: np.ndarray) -> np.ndarray:
        centre, spread = self._centre_and_spread(points)
        box_centre = centre + self.offset * spread
        half = self.half_size * spread
        return np.concatenate([box_centre - half, box_centre + half]).astype(np.float32)


# --------------------------------------------------------------------------- gaps and smoothing


def longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a bool `[T]`."""
    longest = current = 0
    for value in mask:
        current = current + 1 if value else 0
        longest = max(longest, current)
    return longest


def fill_gaps(landmarks: np.ndarray) -> np.ndarray:
    """Fills NaN frames of `[T, 68, 2]` by linear interpolation between the nearest found
    frames (holding the first/last found frame at the ends). Needs one found frame."""
    found = ~np.isnan(landmarks[:, 0, 0])
    if not found.any():
        raise ValueError("fill_gaps: no frame has landmarks")
    if found.all():
        return landmarks.copy()
    times = np.arange(len(landmarks))
    flat = landmarks.reshape(len(landmarks), -1)
    filled = np.stack([np.interp(times, times[found], column[found]) for column in flat.T], axis=1)
    return filled.reshape(landmarks.shape).astype(np.float32)


def smooth(landmarks: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of `[T, 68, 2]` over time: removes the detector's frame-to-
    frame jitter while keeping fast mouth motion (a quadratic fit follows a lip closing
    within a 5-frame, 200 ms window). Clips shorter than the window are returned as is."""
    if window <= 1 or len(landmarks) < window:
        return landmarks.copy()
    if window % 2 == 0:
        raise ValueError(f"smoothing window must be odd, got {window}")
    return scipy.signal.savgol_filter(landmarks, window, min(order, window - 1), axis=0, mode="interp").astype(np.float32)
