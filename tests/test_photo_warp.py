"""The photo-native renderer (`t2v.generate.warp.PhotoWarp`) on tiny painted faces: what
stays, what moves, what is painted where the photo has no pixels, and the photo's edge."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from t2v import generate, keypoints
from t2v.generate import warp as warp_lib

SKIN, IRIS, LIPS, TEETH = (205, 160, 130), (40, 70, 160), (170, 60, 70), (240, 240, 235)


def painted_face(size=(160, 144), centre=(80, 76), scale=34.0, open_mouth=False):
    """(a uint8 photo of a crude face, its 68 landmarks): skin-coloured head on a textured
    background, blue irises in the eyes, red lips (apart, showing white teeth, if asked)."""
    points = (keypoints.FRONTAL_TEMPLATE * scale + centre).astype(np.float64)
    if open_mouth:
        points[[65, 66, 67]] += [0, 0.16 * scale]
        points[list(range(55, 60))] += [0, 0.16 * scale]
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(90, 200, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(photo)
    draw.polygon([tuple(p) for p in points[list(range(17)) + [26, 24, 19, 17]]], fill=SKIN)
    for eye in (range(36, 42), range(42, 48)):
        draw.polygon([tuple(points[i]) for i in eye], fill=IRIS)
    draw.polygon([tuple(points[i]) for i in range(48, 60)], fill=LIPS)
    inner = points[60:68]
    inner = inner.mean(0) + 0.8 * (inner - inner.mean(0))  # PIL fills a pixel past the edge: stay inside
    draw.polygon([tuple(p) for p in inner], fill=TEETH if open_mouth else LIPS)
    return np.asarray(photo), points


def polygon_mask(shape, polygon):
    image = Image.new("L", shape[1::-1], 0)
    ImageDraw.Draw(image).polygon([tuple(p) for p in polygon], fill=1)
    return np.asarray(image, bool)


def test_equal_keypoints_give_the_photo_back_exactly():
    photo, points = painted_face()
    warp = generate.PhotoWarp(photo, points)
    np.testing.assert_array_equal(warp.render(points), photo)
    np.testing.assert_array_equal(warp.render(points.astype(np.float32)), photo)


def test_head_motion_moves_the_face_and_leaves_the_background():
    photo, points = painted_face()
    warp = generate.PhotoWarp(photo, points)
    moved = warp.render(points + [2.0, 1.0]).copy()
    x0, y0, x1, y1 = warp.box
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(moved[outside], photo[outside])
    # The iris moved with the head: 2 px right, 1 px down, sampled from the photo itself.
    eye = polygon_mask(photo.shape, points[36:42] + [2.0, 1.0])
    assert np.abs(moved[eye].astype(int) - IRIS).mean() < 25
    assert not np.array_equal(moved, photo)


def test_a_wider_mouth_is_painted_dark_with_teeth_and_closes_from_an_open_photo():
    photo, points = painted_face()
    warp = generate.PhotoWarp(photo, points)
    opened = points.copy()
    opened[[65, 66, 67]] += [0, 7.0]
    opened[list(range(55, 60)) + [7, 8, 9]] += [0, 7.0]
    frame = warp.render(opened).copy()
    inside = polygon_mask(photo.shape, opened[60:68])
    brightness = frame[inside].astype(float).mean(-1)
    assert brightness.min() < 60, "no dark cavity"  # the photo there is lips and skin
    assert brightness.max() > 170, "no teeth"
    # A photo with parted lips closes them: the teeth between are covered by the lips.
    open_photo, open_points = painted_face(open_mouth=True)
    closed = open_points.copy()
    closed[[65, 66, 67]] = open_points[[63, 62, 61]]
    closed[list(range(55, 60))] -= [0, 0.16 * 34]
    frame = generate.PhotoWarp(open_photo, open_points).render(closed)
    teeth_before = (np.abs(open_photo.astype(int) - TEETH).sum(-1) < 30).sum()
    teeth_after = (np.abs(frame.astype(int) - TEETH).sum(-1) < 30).sum()
    assert teeth_before > 50 and teeth_after < 0.1 * teeth_before, (teeth_before, teeth_after)


def test_a_blink_closes_the_lids_over_the_eyes():
    photo, points = painted_face()
    warp = generate.PhotoWarp(photo, points)
    blink = generate.close_lids(points[None], np.ones(1))[0]
    frame = warp.render(blink)
    eyes = polygon_mask(photo.shape, points[36:42]) | polygon_mask(photo.shape, points[42:48])
    blue = lambda image: (image.astype(int) @ [-1, -1, 2] > 120) & eyes  # noqa: E731
    # The photo's eyes are open (several rows of iris); closed, what is left is a lash line
    # at most two pixels thick, and the lids over the eyes are the photo's own skin.
    rows_open, rows_closed = blue(photo).sum(0).max(), blue(frame).sum(0).max()
    assert rows_open >= 5 and rows_closed <= 2, (rows_open, rows_closed)
    assert np.abs(np.median(frame[eyes].astype(int), 0) - SKIN).max() < 45


def test_a_face_crossing_the_photo_edge_gets_no_black_border():
    photo, points = painted_face(size=(96, 90), centre=(30, 40), scale=30.0)
    warp = generate.PhotoWarp(photo, points)
    assert warp.region[0] < 0 and warp.region[1] < 0  # the region leaves the photo
    opened = points + [-4.0, -3.0]  # head motion towards the edge pulls in pixels from beyond it
    opened[[65, 66, 67]] += [0, 5.0]
    frame = warp.render(opened)
    assert frame.shape == photo.shape
    border = np.concatenate([frame[:4].reshape(-1, 3), frame[:, :4].reshape(-1, 3)])
    assert border.sum(-1).min() > 3 * 60, border.sum(-1).min()  # the photo's darkest is 3 x 90
    assert not np.array_equal(frame[:4, :40], photo[:4, :40])  # and it did move there
    padded = warp_lib.reflect_pad(photo, (-5, -4, 20, 20))
    np.testing.assert_array_equal(padded[4:, 5:], photo[:20, :20])
    np.testing.assert_array_equal(padded[3, 5:], photo[1, :20])  # reflected about row 0, not repeated
    np.testing.assert_array_equal(padded[4:, 4], photo[:20, 1])


def test_a_large_face_draws_its_warp_smaller_and_samples_the_full_photo():
    photo, points = painted_face(size=(200, 190), centre=(100, 96), scale=46.0)
    warp = generate.PhotoWarp(photo, points, max_face_px=40)
    assert warp.field_scale < 0.5
    np.testing.assert_array_equal(warp.render(points), photo)
    moved = warp.render(points + [1.0, 0.0])
    face = polygon_mask(photo.shape, points[list(range(17)) + [26, 24, 19, 17]])
    # Inside the face the photo moved one pixel right, pixel for pixel (the field is exact there).
    assert np.abs(moved[face].astype(int) - np.roll(photo, 1, axis=1)[face]).max() <= 2


@pytest.mark.parametrize("grey", [False, True])
def test_painting_borrows_the_photos_colours(grey):
    photo, points = painted_face()
    if grey:
        photo = np.repeat(photo.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    warp = generate.PhotoWarp(photo, points)
    opened = points.copy()
    opened[[65, 66, 67]] += [0, 7.0]
    frame = warp.render(opened)
    inside = polygon_mask(photo.shape, opened[60:68])
    spread = np.ptp(frame[inside].astype(int), axis=-1).max()
    assert (spread <= 2) if grey else (spread > 10)
