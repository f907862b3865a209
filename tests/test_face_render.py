"""Frames drawn from keypoints: stylised faces and the warped photograph."""

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw

from t2v.data.face_render import Appearance, PhotoTexture, render_face
from t2v.keypoints import FRONTAL_TEMPLATE, REGIONS

INNER_LIP = list(REGIONS["inner_lip"])
RIGHT_EYE = list(REGIONS["right_eye"])
LOWER_LIP = [55, 56, 57, 58, 59, 65, 66, 67]


def frontal_keypoints(size: int) -> np.ndarray:
    return size / 2 + FRONTAL_TEMPLATE.astype(np.float64) * size * 0.32


def with_open_mouth(points: np.ndarray, drop: float) -> np.ndarray:
    opened = points.copy()
    opened[LOWER_LIP, 1] += drop
    return opened


def with_closed_eyes(points: np.ndarray) -> np.ndarray:
    closed = points.copy()
    closed[[37, 38]] = points[[41, 40]]  # upper lids down onto the lower lids
    closed[[43, 44]] = points[[47, 46]]
    return closed


def polygon_mask(polygon: np.ndarray, size: int) -> np.ndarray:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(polygon.ravel().tolist(), fill=1)
    return np.asarray(mask, bool)


def brightness(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64).mean(-1)


@pytest.fixture(scope="module")
def appearance() -> Appearance:
    return Appearance.random(np.random.default_rng(3))


@pytest.fixture(scope="module")
def astronaut() -> PhotoTexture:
    return PhotoTexture.astronaut()


# ------------------------------------------------------------------------ render_face


@pytest.mark.parametrize("size", [64, 128, 224, 256])
def test_render_face_shape_and_dtype(size, appearance):
    frame = render_face(frontal_keypoints(size), size, appearance)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # something was drawn


def test_render_face_is_deterministic():
    look = Appearance.random(np.random.default_rng(7))
    assert look == Appearance.random(np.random.default_rng(7))
    points = frontal_keypoints(128)
    np.testing.assert_array_equal(render_face(points, 128, look), render_face(points, 128, look))


def test_appearances_span_light_to_dark_skin():
    rng = np.random.default_rng(0)
    luminance = [np.mean(Appearance.random(rng).skin) for _ in range(200)]
    assert min(luminance) < 80 and max(luminance) > 200


def test_open_mouth_darkens_the_mouth():
    size = 224
    look = Appearance(skin=(215, 165, 130), lips=(175, 95, 90), iris=(90, 60, 35), brows=(60, 40, 30),
                      hair=(70, 45, 30), background=(120, 140, 160))
    closed = frontal_keypoints(size)
    opened = with_open_mouth(closed, drop=0.15 * size * 0.32)
    inside = polygon_mask(opened[INNER_LIP], size)
    darkening = brightness(render_face(closed, size, look))[inside].mean() - brightness(
        render_face(opened, size, look))[inside].mean()
    assert darkening > 30


@pytest.mark.parametrize("seed", range(6))
def test_open_mouth_is_dark_inside_for_any_skin(seed):
    # Teeth can outshine very dark lips, so for any person count the pixels well below the lips.
    look = Appearance.random(np.random.default_rng(seed))
    size = 224
    closed = frontal_keypoints(size)
    opened = with_open_mouth(closed, drop=0.15 * size * 0.32)
    inside = polygon_mask(opened[INNER_LIP], size)
    closed_lips = brightness(render_face(closed, size, look))[inside]
    open_mouth = brightness(render_face(opened, size, look))[inside]
    dark = 0.6 * closed_lips.mean()
    assert (open_mouth < dark).mean() > (closed_lips < dark).mean() + 0.4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_eyelids_turn_the_eye_to_skin(seed):
    look = Appearance.random(np.random.default_rng(seed))
    size = 224
    points = frontal_keypoints(size)
    eye = polygon_mask(points[RIGHT_EYE], size)
    cheek = polygon_mask(points[[1, 2, 31, 39]], size)  # skin beside the nose, below the eye
    open_frame, closed_frame = render_face(points, size, look), render_face(with_closed_eyes(points), size, look)
    skin = open_frame[cheek].mean(0)
    distance_open = np.linalg.norm(open_frame[eye].mean(0) - skin)
    distance_closed = np.linalg.norm(closed_frame[eye].mean(0) - skin)
    assert distance_closed < 0.6 * distance_open


def test_translating_keypoints_translates_the_face(appearance):
    size, shift = 128, np.array([7, -5])  # (x, y) pixels
    points = frontal_keypoints(size)
    still = brightness(render_face(points, size, appearance))
    moved = brightness(render_face(points + shift, size, appearance))
    still, moved = still - still.mean(), moved - moved.mean()
    correlation = np.fft.ifft2(np.fft.fft2(moved) * np.conj(np.fft.fft2(still))).real
    dy, dx = np.unravel_index(np.argmax(correlation), correlation.shape)
    found = (np.array([dx, dy]) + size // 2) % size - size // 2  # circular offsets to signed
    assert np.abs(found - shift).max() <= 1


def test_render_face_rejects_bad_keypoints(appearance):
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        render_face(np.zeros((5, 2)), 64, appearance)


# ----------------------------------------------------------------------- PhotoTexture


def test_astronaut_landmarks_lie_on_the_detected_face(astronaut):
    import dlib

    box = dlib.get_frontal_face_detector()(astronaut.image, 0)[0]
    margin = 0.2 * box.width()
    landmarks = astronaut.landmarks
    assert np.all(landmarks[:, 0] > box.left() - margin) and np.all(landmarks[:, 0] < box.right() + margin)
    assert np.all(landmarks[:, 1] > box.top() - margin) and np.all(landmarks[:, 1] < box.bottom() + margin)
    # Inner features (eyes, nose, mouth) sit well inside the box, in their usual order.
    inner = landmarks[27:]
    assert np.all(inner[:, 0] > box.left()) and np.all(inner[:, 1] < box.bottom())
    assert landmarks[RIGHT_EYE, 1].mean() < landmarks[30, 1] < landmarks[INNER_LIP, 1].mean()


def test_photo_face_shape_is_in_the_template_frame(astronaut):
    shape = astronaut.face_shape
    assert np.abs(shape[[0, 16], 0] - FRONTAL_TEMPLATE[[0, 16], 0]).max() < 0.2
    assert np.abs(shape.mean(0) - FRONTAL_TEMPLATE.mean(0)).max() < 0.1
    # It is the photo's own landmarks up to a similarity (z -> w z + c in the complex plane).
    z, target = shape @ [1, 1j], astronaut.landmarks @ [1, 1j]
    design = np.stack([z, np.ones_like(z)], -1)
    w_c = np.linalg.lstsq(design, target, rcond=None)[0]
    assert np.abs(design @ w_c - target).max() < 1e-6


def crop_keypoints(photo: PhotoTexture, left: int, top: int) -> np.ndarray:
    """The photo's landmarks in a 2x-downscaled crop whose top-left pixel is (left, top)."""
    return (photo.landmarks - [left, top] + 0.5) / 2 - 0.5


@pytest.mark.parametrize("size", [64, 128, 224, 256])
def test_photo_render_shape_and_dtype(astronaut, size):
    frame = astronaut.render(frontal_keypoints(size), size)
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8


def test_photo_warped_onto_its_own_landmarks_is_the_photo(astronaut):
    left, top, size = 96, 0, 128
    frame = astronaut.render(crop_keypoints(astronaut, left, top), size)
    crop = Image.fromarray(astronaut.image[top:top + 2 * size, left:left + 2 * size]).reduce(2)
    error = np.abs(frame.astype(np.float64) - np.asarray(crop, np.float64)).mean()
    assert error < 2.0


def test_photo_mouth_moves_only_the_mouth(astronaut):
    points = crop_keypoints(astronaut, 96, 0)
    opened = with_open_mouth(points, drop=6.0)
    still, moved = astronaut.render(points, 128), astronaut.render(opened, 128)
    changed = np.argwhere(np.abs(still.astype(int) - moved.astype(int)).max(-1) > 8)  # (y, x)
    assert len(changed) > 30
    top = points[31:36, 1].min()  # below the nostrils
    left, right = points[3, 0], points[13, 0]
    assert changed[:, 0].min() >= top and changed[:, 0].max() <= points[8, 1] + 6
    assert changed[:, 1].min() >= left and changed[:, 1].max() <= right
    inside = polygon_mask(opened[INNER_LIP], 128)
    assert brightness(moved)[inside].mean() < brightness(still)[inside].mean() - 30


def test_photo_blink_paints_lids_with_the_photos_skin(astronaut):
    points = crop_keypoints(astronaut, 96, 0)
    eye = polygon_mask(points[RIGHT_EYE], 128)
    still, blinking = astronaut.render(points, 128), astronaut.render(with_closed_eyes(points), 128)
    cheek = polygon_mask(points[[1, 2, 31, 39]], 128)
    skin = still[cheek].mean(0)
    assert np.linalg.norm(blinking[eye].mean(0) - skin) < 0.6 * np.linalg.norm(still[eye].mean(0) - skin)


@pytest.mark.parametrize("name, image", [
    ("camera.png", lambda: np.stack([skimage.data.camera()] * 3, -1)),
    ("flat.png", lambda: np.full((200, 200, 3), 128, np.uint8)),
])
def test_photo_without_a_face_is_rejected_by_name(tmp_path, name, image):
    path = tmp_path / name
    Image.fromarray(image()).save(path)
    with pytest.raises(ValueError, match=rf"^{path}: no face found$"):
        PhotoTexture.from_file(path)
