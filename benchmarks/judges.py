"""Judges of a talking-head video that owe nothing to t2v: for measuring only, never a loss.

t2v trains on, and finds faces with, dlib's HOG detector and 68-point predictor
(`t2v.landmarks`). The judges here are other models, trained by others on other data:

  * face found: MediaPipe face detection (BlazeFace, full range), the model inside the
    mediapipe 0.10.18 wheel;
  * landmarks (mouth, eyes): MediaPipe FaceMesh, 478 points with irises, run on a crop
    around the face so that small faces and group photos are measured alike;
  * identity: dlib's ResNet face descriptor (`dlib_face_recognition_resnet_model_v1.dat`
    from face-recognition-models; 128-D, Euclidean, < 0.6 means the same person), on
    faces found by dlib's CNN detector (`mmod_human_face_detector.dat`) and aligned with
    the 5-point predictor, as `face_recognition` does it.

Nothing in `t2v` may import this module (tests/test_photo_quality.py checks): a judge
that served as a loss would grade its own pupil.

Arrays: images are uint8 `[H, W, 3]` RGB, videos `[T, H, W, 3]`; boxes are `FaceBox` in
pixels; landmarks are float `[478, 2]` pixels of the image they were found in.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.ndimage

# FaceMesh indices (mediapipe/modules/face_geometry/data/canonical_face_model_uv_visualization.png).
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317))  # (upper, lower): centre, left and right of it
EYE_CORNERS = ((33, 133), (362, 263))  # (outer, inner) of the subject's right eye, then left
# Eye aspect ratio points p1..p6 (Soukupova and Cech): corner, 2 upper lid, corner, 2 lower lid.
EAR_POINTS = ((33, 160, 158, 133, 153, 144), (362, 385, 387, 263, 373, 380))

LANDMARK_CROP = 256  # pixels: the crop FaceMesh sees, whatever the face's size in the frame
_CROP_MARGIN = 1.7  # crop side over the detector box's longer side
_MIN_IOU = 0.3  # a detection this close to the judged face's box is that face


@dataclasses.dataclass(frozen=True)
class FaceBox:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def iou(self, other: FaceBox) -> float:
        w = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        h = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        union = self.width * self.height + other.width * other.height - w * h
        return w * h / union if union > 0 else 0.0

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """The part of `image` inside the box (clipped to the image)."""
        h, w = image.shape[:2]
        x0, y0 = max(0, int(round(self.x0))), max(0, int(round(self.y0)))
        x1, y1 = min(w, int(round(self.x1))), min(h, int(round(self.y1)))
        return image[y0:y1, x0:x1]


# --------------------------------------------------------------------------- MediaPipe


@functools.cache
def _mediapipe():
    try:
        import mediapipe
    except ImportError as error:  # the `judge` extra: see pyproject.toml
        raise ImportError(
            "the judges need mediapipe 0.10.18: pip install --no-deps mediapipe==0.10.18 'opencv-python-headless<5'"
        ) from error
    return mediapipe


@functools.cache
def _detector():
    return _mediapipe().solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


@functools.cache
def _face_mesh():
    return _mediapipe().solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
    )


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def detect_faces(image: np.ndarray) -> list[FaceBox]:
    """Every face MediaPipe finds in `image`, largest first."""
    image = _rgb(image)
    h, w = image.shape[:2]
    result = _detector().process(image)
    boxes = []
    for detection in result.detections or ():
        box = detection.location_data.relative_bounding_box
        boxes.append(FaceBox(box.xmin * w, box.ymin * h, (box.xmin + box.width) * w,
                             (box.ymin + box.height) * h, float(detection.score[0])))  # fmt: skip
    return sorted(boxes, key=lambda b: -b.width * b.height)


def find_face(image: np.ndarray, near: FaceBox) -> FaceBox | None:
    """The face MediaPipe finds in `image` that overlaps `near` best (IoU >= 0.3), or None."""
    best = max(detect_faces(image), key=near.iou, default=None)
    return best if best is not None and near.iou(best) >= _MIN_IOU else None


def _square_crop(image: np.ndarray, box: FaceBox, margin: float, side: int) -> tuple[np.ndarray, float, float, float]:
    """A `side x side` crop centred on `box`, `margin` times its longer side, edge-padded
    where it leaves the image. Returns (crop, x0, y0, pixels of the image per crop pixel)."""
    from PIL import Image

    extent = margin * max(box.width, box.height)
    cx, cy = box.centre
    x0, y0 = cx - extent / 2, cy - extent / 2
    pad = int(np.ceil(extent))
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    left, top = int(round(x0)) + pad, int(round(y0)) + pad
    size = max(1, int(round(extent)))
    window = padded[top : top + size, left : left + size]
    crop = np.asarray(Image.fromarray(window).resize((side, side), Image.BILINEAR))
    return crop, float(int(round(x0))), float(int(round(y0))), size / side


def face_landmarks(image: np.ndarray, box: FaceBox) -> np.ndarray | None:
    """FaceMesh's 478 points `[478, 2]` (pixels of `image`) for the face in `box`, or None."""
    crop, x0, y0, scale = _square_crop(_rgb(image), box, _CROP_MARGIN, LANDMARK_CROP)
    result = _face_mesh().process(crop)
    if not result.multi_face_landmarks:
        return None
    points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], np.float64)
    return points * LANDMARK_CROP * scale + np.array([x0, y0])


# --------------------------------------------------------------------------- geometry


def _down_axis(points: np.ndarray) -> np.ndarray:
    """Unit vector down the face `[..., 2]`: the eye line turned clockwise by 90 degrees."""
    across = _eye_centres(points)[1] - _eye_centres(points)[0]
    across = across / np.linalg.norm(across, axis=-1, keepdims=True)
    return np.stack([-across[..., 1], across[..., 0]], -1)


def _eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (r_out, r_in), (l_in, l_out) = EYE_CORNERS[0], (EYE_CORNERS[1][0], EYE_CORNERS[1][1])
    return (points[..., r_out, :] + points[..., r_in, :]) / 2, (points[..., l_in, :] + points[..., l_out, :]) / 2


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """`[..., 478, 2] -> [...]`: distance between the eye centres (mid-points of the corners)."""
    right, left = _eye_centres(points)
    return np.linalg.norm(left - right, axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """`[..., 478, 2] -> [...]`: the inner-lip gap over the inter-ocular distance.

    The mean of three upper-to-lower inner-lip distances along the face's down axis, so
    a tilted head reads the same; about 0 closed, 0.3-0.5 wide open.
    """
    down = _down_axis(points)
    gaps = [((points[..., lower, :] - points[..., upper, :]) * down).sum(-1) for upper, lower in INNER_LIP_PAIRS]
    return np.mean(gaps, axis=0) / inter_ocular(points)


def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """`[..., 478, 2] -> [...]`: the mean of both eyes' EAR (about 0.25-0.3 open, under 0.1 shut)."""
    ratios = []
    for p1, p2, p3, p4, p5, p6 in EAR_POINTS:
        height = np.linalg.norm(points[..., p2, :] - points[..., p6, :], axis=-1) + np.linalg.norm(
            points[..., p3, :] - points[..., p5, :], axis=-1
        )
        ratios.append(height / (2 * np.linalg.norm(points[..., p1, :] - points[..., p4, :], axis=-1)))
    return np.mean(ratios, axis=0)


# --------------------------------------------------------------------------- time series

BLINK_DIP = 0.3  # a blink: EAR below (1 - BLINK_DIP) x its running baseline...
BLINK_MAX_S = 0.6  # ...for at most this long (longer is the eyes held shut, not a blink)
_BASELINE_S = 2.0  # running-median window of the open-eye EAR


def blinks(ear: np.ndarray, fps: float) -> list[int]:
    """Frames where blinks happen (the lowest EAR of each dip), from EAR `[T]` (NaN where
    no face was measured). A dip is a run of frames under (1 - BLINK_DIP) x the running
    median of the EAR over `_BASELINE_S`; runs one frame apart are one blink."""
    ear = np.asarray(ear, np.float64)
    valid = np.isfinite(ear)
    if valid.sum() < 3:
        return []
    filled = np.interp(np.arange(len(ear)), np.flatnonzero(valid), ear[valid])
    window = max(3, int(round(_BASELINE_S * fps)) | 1)
    baseline = scipy.ndimage.median_filter(filled, size=window, mode="nearest")
    below = filled < (1 - BLINK_DIP) * baseline
    closed = below.copy()
    closed[1:-1] |= below[:-2] & below[2:]  # one open frame inside a dip does not split it
    runs, count = scipy.ndimage.label(closed)
    events = []
    for run in range(1, count + 1):
        frames = np.flatnonzero(runs == run)
        if len(frames) <= BLINK_MAX_S * fps:
            events.append(int(frames[np.argmin(filled[frames])]))
    return events


def speech_envelope(wave: np.ndarray, sample_rate: int, num_frames: int, fps: float) -> np.ndarray:
    """RMS of the audio under each video frame `[num_frames]` (frame i: [i / fps, (i + 1) / fps))."""
    wave = np.asarray(wave, np.float64)
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(int)
    return np.array([np.sqrt(np.mean(wave[a:b] ** 2)) if b > a else 0.0
                     for a, b in zip(edges, np.minimum(edges[1:], len(wave)))])  # fmt: skip


def lagged_correlation(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 2) -> tuple[float, int]:
    """(the best Pearson r over lags -max_lag..max_lag, that lag) between two series `[T]`
    (NaN where unmeasured). Lag k pairs mouth[t] with envelope[t + k]: a positive lag
    means the mouth moves before the sound, as lips do before a vowel."""
    best = (float("nan"), 0)
    for lag in range(-max_lag, max_lag + 1):
        a = mouth[max(0, -lag) : len(mouth) - max(0, lag)]
        b = envelope[max(0, lag) : len(envelope) - max(0, -lag)]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() > 2 and np.std(a[ok]) > 0 and np.std(b[ok]) > 0:
            r = float(np.corrcoef(a[ok], b[ok])[0, 1])
            if not np.isfinite(best[0]) or r > best[0]:
                best = (r, lag)
    return best


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (0..255 scale): its fine detail."""
    grey = _rgb(image).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return float(np.var(scipy.ndimage.laplace(grey)))


# --------------------------------------------------------------------------- identity (dlib)


@functools.cache
def _dlib_models():
    import dlib
    import face_recognition_models as models

    return (
        dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location()),
        dlib.shape_predictor(models.pose_predictor_five_point_model_location()),
        dlib.face_recognition_model_v1(models.face_recognition_model_location()),
    )


_DESCRIPTOR_CROP = 320  # pixels: the crop around the face that the CNN detector searches


def face_descriptor(image: np.ndarray, box: FaceBox) -> np.ndarray:
    """dlib's 128-D face descriptor of the face in `box`.

    The CNN detector looks in a crop around `box`, scaled so the face is about 150 px; the
    detection nearest the box's centre is aligned with the 5-point predictor. Where the
    CNN finds nothing (a very small or blurred face) the MediaPipe box itself is aligned.
    """
    import dlib

    detector, shape_predictor, recogniser = _dlib_models()
    crop, _, _, _ = _square_crop(_rgb(image), box, 2.2, _DESCRIPTOR_CROP)
    found = [d.rect for d in detector(crop, 0)]
    if found:
        centre = _DESCRIPTOR_CROP / 2
        rect = min(found, key=lambda r: (r.center().x - centre) ** 2 + (r.center().y - centre) ** 2)
    else:
        half = _DESCRIPTOR_CROP / 2.2 / 2
        rect = dlib.rectangle(*(int(round(_DESCRIPTOR_CROP / 2 + s * half)) for s in (-1, -1, 1, 1)))
    shape = shape_predictor(crop, rect)
    return np.array(recogniser.compute_face_descriptor(crop, shape), np.float64)


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two dlib descriptors: < 0.6 the same person (dlib's threshold)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
