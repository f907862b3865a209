"""The judges of benchmarks/photo_quality.py, on inputs whose answer is known, and their
independence: no t2v module imports them (a judge is never a loss).

Measured values are printed (`pytest -s`) so that the margins of the thresholds stay visible.
"""

import ast
import pathlib
import sys

import numpy as np
import pytest
import scipy.ndimage

from t2v import audio
from t2v.data import face_render, synthetic

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

JUDGE_MODULES = {"judges", "photo_quality", "benchmarks", "mediapipe"}


def test_no_t2v_module_imports_the_judges():
    """Nothing t2v trains or runs with may reach the judges (or MediaPipe)."""
    offenders = []
    for folder in ("t2v", "configs", "data_pipelines", "launch"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in JUDGE_MODULES]
            text = path.read_text()
            if "benchmarks/judges" in text or "import_module(\"judges" in text:
                offenders.append(f"{path.relative_to(ROOT)}: mentions the judges' path")
    assert not offenders, offenders


@pytest.fixture(scope="module")
def judges():
    pytest.importorskip("mediapipe", reason="the judge extra: pip install --no-deps mediapipe==0.10.18")
    import judges as module

    return module


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return skimage.data.astronaut()


def test_detail_drops_when_the_photo_is_blurred(judges, astronaut):
    box = judges.detect_faces(astronaut)[0]
    blurred = scipy.ndimage.gaussian_filter(astronaut.astype(float), (2, 2, 0)).astype(np.uint8)
    sharp, soft = judges.laplacian_variance(box.pixels(astronaut)), judges.laplacian_variance(box.pixels(blurred))
    print(f"Laplacian variance in the face box: photo {sharp:.0f}, blurred (sigma 2) {soft:.0f}")
    assert soft < 0.1 * sharp
    assert judges.laplacian_variance(box.pixels(astronaut)) == sharp  # a judge is deterministic


def test_identity_same_photo_zero_other_face_far(judges, astronaut):
    import photo_quality

    grace = photo_quality.grace_hopper()
    box, other_box = judges.detect_faces(astronaut)[0], judges.detect_faces(grace)[0]
    reference = judges.face_descriptor(astronaut, box)
    assert reference.shape == (128,)
    same = judges.identity_distance(reference, judges.face_descriptor(astronaut, box))
    blurred = scipy.ndimage.gaussian_filter(astronaut.astype(float), (1.5, 1.5, 0)).astype(np.uint8)
    soft = judges.identity_distance(reference, judges.face_descriptor(blurred, box))
    other = judges.identity_distance(reference, judges.face_descriptor(grace, other_box))
    print(f"identity distance: same photo {same:.3f}, blurred {soft:.2f}, another person {other:.2f}")
    assert same < 1e-6
    assert 0.0 < soft < 0.6 < other


def test_faces_found_where_there_are_faces(judges, astronaut):
    import photo_quality

    assert len(judges.detect_faces(astronaut)) == 1
    assert judges.detect_faces(np.full((256, 256, 3), 128, np.uint8)) == []
    group = photo_quality.group_photo()
    faces = judges.detect_faces(group)
    print("group photo faces (px wide):", [round(f.width) for f in faces])
    assert len(faces) == 6
    assert faces[0].width > 1.15 * faces[1].width  # the largest is not a coin toss
    # The face that changes is the judged one, whichever is the largest.
    frames = np.repeat(group[None], 6, axis=0)
    moving = faces[3]
    y0, y1, x0, x1 = int(moving.y0), int(moving.y1), int(moving.x0), int(moving.x1)
    frames[::2, y0:y1, x0:x1] = 255 - frames[::2, y0:y1, x0:x1]
    assert photo_quality.animated_face(group, frames) == moving


def test_blinks_are_dips_of_the_eye_aspect_ratio(judges):
    rng = np.random.default_rng(0)
    ear = 0.3 + rng.normal(0, 0.006, 500)
    for centre in (40, 160, 161 + 30, 330):  # four blinks of 5 frames (200 ms at 25 fps)
        ear[centre - 2 : centre + 3] = [0.22, 0.12, 0.05, 0.1, 0.2]
    ear[400:440] = 0.05  # eyes held shut for 1.6 s: not a blink
    ear[250] = np.nan  # a frame without a face
    assert judges.blinks(ear, 25.0) == [40, 160, 191, 330]
    assert judges.blinks(0.3 + rng.normal(0, 0.006, 500), 25.0) == []


def test_lagged_correlation_reports_the_lag(judges):
    rng = np.random.default_rng(1)
    envelope = scipy.ndimage.gaussian_filter1d(rng.random(300), 2)
    mouth = np.roll(envelope, -2)  # the mouth two frames ahead of the sound
    r, lag = judges.lagged_correlation(mouth, envelope)
    assert lag == 2 and r > 0.99
    assert judges.lagged_correlation(mouth, envelope, max_lag=0)[0] < r


def _ground_truth_mouth(points):
    """The judge's definition on t2v's 68 points: inner-lip gap / distance of the eye centres."""
    gap = np.linalg.norm(points[:, [67, 66, 65]] - points[:, [61, 62, 63]], axis=-1).mean(-1)
    right, left = points[:, [36, 39]].mean(1), points[:, [42, 45]].mean(1)
    return gap / np.linalg.norm(left - right, axis=-1)


def test_mouth_and_blinks_of_a_synthetic_clip_agree_with_its_ground_truth(judges):
    texture = face_render.PhotoTexture.astronaut()
    clip = synthetic.make_clip(11, language="en", emotion="neutral", size=256, texture=texture)
    box = judges.detect_faces(clip.frames[0])[0]
    points = [judges.face_landmarks(frame, judges.find_face(frame, box) or box) for frame in clip.frames]
    assert all(p is not None for p in points)
    points = np.stack(points)
    mouth, truth = judges.mouth_opening(points), _ground_truth_mouth(clip.keypoints)
    envelope = judges.speech_envelope(clip.audio, audio.SAMPLE_RATE, clip.num_frames, audio.FPS)
    (r, lag), (r_truth, _) = judges.lagged_correlation(mouth, envelope), judges.lagged_correlation(truth, envelope)
    eye_closure = clip.expression[:, synthetic.EXPRESSION_NAMES.index("eye_close")]
    labels, count = scipy.ndimage.label(eye_closure > 0.5)
    truth_blinks = [int(np.argmax(np.where(labels == i, eye_closure, -1))) for i in range(1, count + 1)]
    found = judges.blinks(judges.eye_aspect_ratio(points), audio.FPS)
    print(f"mouth vs ground truth r {np.corrcoef(mouth, truth)[0, 1]:.3f}; vs envelope judged {r:.2f} "
          f"(lag {lag}), ground truth {r_truth:.2f}; std judged {mouth.std():.3f}, ground truth {truth.std():.3f}; "
          f"blinks judged {found}, ground truth {truth_blinks}")  # fmt: skip
    assert np.corrcoef(mouth, truth)[0, 1] > 0.9
    assert abs(r - r_truth) < 0.15
    assert 0.7 < mouth.std() / truth.std() < 1.4
    assert len(truth_blinks) >= 2
    assert len(found) == len(truth_blinks)
    assert all(abs(a - b) <= 2 for a, b in zip(found, truth_blinks))
