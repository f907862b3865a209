"""An emotion judge t2v never trains: FACS-style rules on 68 landmarks. Measuring only.

Nothing in t2v may use this module as a loss or to choose anything it generates (it is
imported by benchmarks and tests only); its rules were written down from the FACS/EMFACS
literature before it was run on any t2v output, and were not tuned afterwards:

  happy      AU12 (lip corner puller)                                  EMFACS: 12, 6+12
  surprised  AU1 + AU2 (inner and outer brows up) with AU5 (upper lids
             up) or AU26 (jaw drop), no AU4                            EMFACS: 1+2+5B(+26/27), 1+2+26
  fearful    AU1 + AU4 (brows up and drawn together) with AU5 or AU20  EMFACS: 1+2+4+5(+20)(+26)
  sad        AU15 (corners down) with AU1 or AU4                       EMFACS: 1+4+15(+17)
  angry      AU4 with AU7 (lids tightened) or AU23 (lips tightened),
             no AU1/AU2                                                EMFACS: 4+5+7+23, 4+7+23
  disgusted  AU10 (upper lip up, towards the nose) with the mouth
             not opened by the jaw                                     EMFACS: 9, 10(+17/25/26)
  neutral    none of the AUs above (speech's own AU25/26 do not count)
  other      AUs active in no pattern above

The rules are tried in that order; the first that holds names the frame.

Each AU is a landmark displacement from the same face's neutral (the input photo, or the
first frames of the input video), measured after a similarity fit on the points that
expressions barely move (`t2v.keypoints.STABLE`: jaw tops, nose, eye corners) took the frame
onto the neutral, in the neutral's upright frame (eye line horizontal), in units of the
neutral's inter-ocular distance (IOD, eye centre to eye centre). Speech is kept out of the
mouth AUs by measuring the lip corners against the centre of the inner lips (which an
opening jaw moves about as much as the corners) rather than against the nose.

Thresholds, fixed ahead of measurement (`THRESHOLDS`): 0.04 IOD for displacements (about
2.5 pixels for a face 60 pixels between the eyes, above the predictor's jitter), 0.08 IOD
for mouth width and jaw, and +-15% of the neutral lid opening for AU5/AU7.

Landmarks: dlib's 68-point predictor on dlib's HOG face boxes (`t2v.landmarks`), each
frame searched anew, or any `[T, 68, 2]` points handed to `classify`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2v import keypoints as kp

LABELS = ("neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful", "other")

THRESHOLDS = {
    "brow": 0.04,        # AU1, AU2 raise; AU4 lower or inner brows drawn together (IOD)
    "corner": 0.04,      # AU12 / AU15: lip corners up / down against the inner-lip centre (IOD)
    "upper_lip": 0.04,   # AU10: upper lip centre towards the nose (IOD)
    "width": 0.08,       # AU20 wider / AU23 narrower mouth (IOD)
    "jaw": 0.08,         # AU26: chin away from the nose (IOD)
    "lids": 0.15,        # AU5 / AU7: lid opening up / down by this fraction of the neutral's
}  # fmt: skip

_EYE_CORNERS = (36, 39, 42, 45)
_INNER_BROW, _OUTER_BROW = (20, 21, 22, 23), (17, 18, 25, 26)
_LIDS = ((37, 41), (38, 40), (43, 47), (44, 46))  # (upper lid point, lower lid point below it)


def _inter_ocular(points: np.ndarray) -> np.ndarray:
    right, left = points[..., 36:42, :].mean(-2), points[..., 42:48, :].mean(-2)
    return np.maximum(np.linalg.norm(left - right, axis=-1), 1e-9)


def _upright(points: np.ndarray, neutral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, neutral) in the neutral's upright frame: origin between the eye centres,
    eye line along +x, unit = the neutral's IOD. Frames are first taken onto the neutral by
    the similarity fit on the STABLE points."""
    _, aligned = kp.split_pose(points.astype(np.float64), np.broadcast_to(neutral, points.shape).astype(np.float64))
    right, left = neutral[36:42].mean(0), neutral[42:48].mean(0)
    angle = np.arctan2(*(left - right)[::-1])
    cos, sin = np.cos(-angle), np.sin(-angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    centre, iod = (left + right) / 2, _inter_ocular(neutral)

    def move(p):
        return (p - centre) @ rotation.T / iod

    return move(aligned), move(neutral.astype(np.float64))


def measures(points: np.ndarray) -> dict[str, np.ndarray]:
    """Geometry `[...]` of upright points `[..., 68, 2]` (y down): what the AUs compare."""
    y = points[..., 1]
    eye_line = y[..., list(_EYE_CORNERS)].mean(-1)
    lid_opening = np.mean([y[..., lower] - y[..., upper] for upper, lower in _LIDS], 0)
    lip_centre = y[..., [62, 66]].mean(-1)
    return {
        "inner_brow": eye_line - y[..., list(_INNER_BROW)].mean(-1),
        "outer_brow": eye_line - y[..., list(_OUTER_BROW)].mean(-1),
        "brow": eye_line - y[..., 17:27].mean(-1),
        "brow_gap": points[..., 22, 0] - points[..., 21, 0],
        "lids": lid_opening,
        "corner_lift": lip_centre - y[..., [48, 54]].mean(-1),
        "mouth_width": points[..., 54, 0] - points[..., 48, 0],
        "upper_lip": y[..., 51] - y[..., 33],
        "mouth_open": (y[..., [65, 66, 67]] - y[..., [63, 62, 61]]).mean(-1),
        "jaw": y[..., 8] - y[..., 33],
    }


def action_units(points: np.ndarray, neutral: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean AU activations `[T]` of landmarks `[T, 68, 2]` against the same face's
    neutral `[68, 2]` (both in pixels of any one image size)."""
    points = np.asarray(points, np.float64)
    neutral = np.asarray(neutral, np.float64)
    if points.ndim != 3 or points.shape[1:] != (kp.NUM_POINTS, 2) or neutral.shape != (kp.NUM_POINTS, 2):
        raise ValueError(f"action_units: points [T, 68, 2] and neutral [68, 2], got {points.shape}, {neutral.shape}")
    face, rest = _upright(points, neutral)
    now, then = measures(face), measures(rest)
    d = {name: now[name] - then[name] for name in now}
    t = THRESHOLDS
    lids = now["lids"] / max(float(then["lids"]), 1e-9)
    au12 = d["corner_lift"] > t["corner"]
    return {
        "AU1": d["inner_brow"] > t["brow"],
        "AU2": d["outer_brow"] > t["brow"],
        "AU4": (d["brow"] < -t["brow"]) | (d["brow_gap"] < -t["brow"]),
        "AU5": lids > 1 + t["lids"],
        "AU7": (lids < 1 - t["lids"]) & (lids > 0.4),  # below 0.4 of the opening: a blink, not AU7
        "AU10": (d["upper_lip"] < -t["upper_lip"]) & (d["mouth_open"] < t["jaw"]),
        "AU12": au12,
        "AU15": d["corner_lift"] < -t["corner"],
        "AU20": (d["mouth_width"] > t["width"]) & ~au12,
        "AU23": d["mouth_width"] < -t["width"],
        "AU26": (d["jaw"] > t["jaw"]) | (d["mouth_open"] > t["jaw"]),
    }


def classify(points: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """The label (one of LABELS) of each frame, `[T]` str, by the rules in the module docstring."""
    au = action_units(points, neutral)
    rules = (
        ("fearful", au["AU1"] & au["AU4"] & (au["AU5"] | au["AU20"])),
        ("surprised", au["AU1"] & au["AU2"] & (au["AU5"] | au["AU26"]) & ~au["AU4"]),
        ("happy", au["AU12"]),
        ("sad", au["AU15"] & (au["AU1"] | au["AU4"])),
        ("angry", au["AU4"] & (au["AU7"] | au["AU23"]) & ~au["AU1"] & ~au["AU2"]),
        ("disgusted", au["AU10"]),
    )
    expressive = np.any([au[name] for name in au if name != "AU26"], axis=0)
    labels = np.where(expressive, "other", "neutral").astype(object)
    for name, holds in reversed(rules):  # the first rule that holds wins
        labels[holds] = name
    return labels.astype(str)


@dataclasses.dataclass
class Judgement:
    labels: np.ndarray  # [T] str, "" where no face was found
    found: np.ndarray  # [T] bool

    def rate(self, emotion: str) -> float:
        """Fraction of all frames (faces not found count as misses) judged `emotion`."""
        return float(np.mean(self.labels == emotion)) if len(self.labels) else 0.0

    def counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.labels == name)) for name in LABELS}


class EmotionJudge:
    """`judge(frames, neutral)`: labels of uint8 frames `[T, H, W, 3]` against a neutral
    image `[H', W', 3]` or neutral frames `[N, H', W', 3]` (their landmarks' median) of the
    same face."""

    def __init__(self):
        from t2v.landmarks import LandmarkDetector

        self.detector = LandmarkDetector()

    def landmarks(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(`[T, 68, 2]` landmarks of each frame's largest face, NaN where none; found `[T]`)."""
        points = np.full((len(frames), kp.NUM_POINTS, 2), np.nan, np.float32)
        for index, frame in enumerate(frames):
            boxes = self.detector.detect(np.ascontiguousarray(frame))
            if len(boxes):
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                points[index] = self.detector.fit(frame, boxes[int(np.argmax(areas))])
        return points, ~np.isnan(points[:, 0, 0])

    def neutral(self, neutral: np.ndarray) -> np.ndarray:
        frames = neutral[None] if neutral.ndim == 3 else neutral
        points, found = self.landmarks(frames)
        if not found.any():
            raise ValueError("EmotionJudge: no face found in the neutral image(s)")
        return np.median(points[found], axis=0)

    def judge(self, frames: np.ndarray, neutral: np.ndarray) -> Judgement:
        points, found = self.landmarks(frames)
        return self.judge_points(points, found, self.neutral(neutral))

    @staticmethod
    def judge_points(points: np.ndarray, found: np.ndarray, neutral_points: np.ndarray) -> Judgement:
        labels = np.full(len(points), "", dtype=object)
        if found.any():
            labels[found] = classify(points[found], neutral_points)
        return Judgement(labels.astype(str), found)
