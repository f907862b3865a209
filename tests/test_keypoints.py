"""t2v.keypoints: face frame, similarity and 3D pose fits, mouth/eye/brow geometry, AU proxies, drawing."""

import numpy as np
import pytest

from t2v import keypoints as kp

TEMPLATE = kp.FRONTAL_TEMPLATE.astype(np.float64)
DEGREE = np.pi / 180


# -- faces with known changes -------------------------------------------------------------


def similarity(points, log_scale, angle, translation):
    """Applies scale * rotation (clockwise for angle > 0) + translation to `[..., N, 2]`."""
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    x, y = points[..., 0], points[..., 1]
    rotated = np.stack([cos * x - sin * y, sin * x + cos * y], -1)
    return np.exp(log_scale)[..., None, None] * rotated + np.asarray(translation)[..., None, :]


def random_poses(rng, count):
    """`[count, 4]` poses (log_scale, angle, tx, ty): face sizes from 0.5 to 300, any roll."""
    return np.stack(
        [rng.uniform(np.log(0.5), np.log(300.0), count), rng.uniform(-3.0, 3.0, count),
         rng.uniform(-500, 500, count), rng.uniform(-500, 500, count)], -1,
    )


def posed(points, pose):
    return similarity(points, pose[..., 0], pose[..., 1], pose[..., 2:])


def open_jaw(points, amount):
    """Drops the chin by `amount` face units, the lower lips with it."""
    points = points.copy()
    jaw_weight = np.sin(np.linspace(0, np.pi, 9))  # jaw points 4..12, most at the chin
    points[4:13, 1] += amount * jaw_weight
    points[55:60, 1] += 0.8 * amount
    points[65:68, 1] += 0.8 * amount
    return points


def close_eyes(points, fraction):
    """Moves each upper lid `fraction` of the way down to the lower lid."""
    points = points.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        points[upper] += fraction * (points[lower] - points[upper])
    return points


def raise_inner_brows(points, amount):
    points = points.copy()
    points[[20, 21, 22, 23], 1] -= amount
    return points


def pull_corners(points, up, out):
    points = points.copy()
    points[[48, 54], 1] -= up
    points[48, 0] -= out
    points[54, 0] += out
    return points


def smile(points, amount):
    """Lip corners up by `amount`, out by half of it."""
    return pull_corners(points, amount, amount / 2)


def au(values, name):
    return values[..., kp.AU_NAMES.index(name)]


# -- shapes and degenerate input ----------------------------------------------------------

POINT_FUNCTIONS = [
    kp.face_size, kp.normalise, kp.split_pose, kp.head_rotation, kp.fit_weak_perspective,
    kp.mouth_opening, kp.mouth_width, kp.eye_aperture, kp.brow_height, kp.au_proxies,
]


@pytest.mark.parametrize("function", POINT_FUNCTIONS, ids=lambda f: f.__name__)
def test_wrong_shapes_raise_a_clear_error(function):
    with pytest.raises(ValueError, match=rf"t2v\.keypoints\.{function.__name__}: .*\[\.\.\., 68, 2\], got \(4, 67, 2\)"):
        function(np.zeros((4, 67, 2)))
    with pytest.raises(ValueError, match=r"got \(68,\)"):
        function(np.zeros(68))


def test_wrong_shapes_of_other_arguments_raise():
    with pytest.raises(ValueError, match=r"umeyama: src and dst need the same number"):
        kp.umeyama(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"compose_pose: pose must have shape \[\.\.\., 4\]"):
        kp.compose_pose(np.zeros(3), TEMPLATE)
    with pytest.raises(ValueError, match=r"project: rotation must have shape \[\.\.\., 3, 3\]"):
        kp.project(kp.FRONTAL_TEMPLATE_3D, np.eye(2))
    with pytest.raises(ValueError, match=r"normalise: shared_axes"):
        kp.normalise(np.zeros((2, 68, 2)), shared_axes=1)
    with pytest.raises(ValueError, match=r"split_pose: reference must have shape"):
        kp.split_pose(TEMPLATE, np.zeros((60, 2)))
    with pytest.raises(ValueError, match=r"draw_keypoints: frame must be uint8"):
        kp.draw_keypoints(np.zeros((8, 8, 3), np.float32), TEMPLATE)


@pytest.mark.parametrize("function", POINT_FUNCTIONS, ids=lambda f: f.__name__)
def test_degenerate_faces_give_finite_numbers(function):
    collapsed = np.full((2, 68, 2), 7.0)  # every landmark on one pixel
    with np.errstate(all="raise"):
        result = function(collapsed)
    arrays = [result]
    while arrays:
        array = arrays.pop()
        if isinstance(array, tuple):  # results, FaceFrame
            arrays += array
        else:
            assert np.isfinite(array).all()


# -- face frame ---------------------------------------------------------------------------


def test_normalise_puts_a_frontal_face_onto_the_template():
    sizes = np.array([0.7, 45.0, 180.0])
    points_px = TEMPLATE * sizes[:, None, None] + np.array([320.0, 240.0])
    points_face, frame = kp.normalise(points_px)
    np.testing.assert_allclose(points_face, np.broadcast_to(TEMPLATE, points_face.shape), atol=1e-6)
    np.testing.assert_allclose(frame.scale, sizes, rtol=1e-6)
    np.testing.assert_allclose(frame.origin, [[320.0, 240.0]] * 3, atol=1e-4)
    np.testing.assert_allclose(points_face[0, [0, 16], 0], [-0.95, 0.95], atol=1e-6)  # the jaw spans [-1, 1]


def test_normalise_keeps_roll_and_denormalise_inverts_it():
    rng = np.random.default_rng(0)
    poses = random_poses(rng, 6)
    points_px = posed(TEMPLATE + rng.normal(0, 0.02, (6, 68, 2)), poses)
    points_face, frame = kp.normalise(points_px)
    np.testing.assert_allclose(kp.denormalise(points_face, frame), points_px, rtol=1e-9, atol=1e-9)
    # Scale and translation are gone, the roll is not: it is left for split_pose to read.
    np.testing.assert_allclose(kp.face_size(points_face), 1.0, rtol=1e-9)
    np.testing.assert_allclose(kp.split_pose(points_face)[0][:, 1], poses[:, 1], atol=0.05)


def test_normalise_shared_over_frames_keeps_head_motion():
    frames = 5
    motion = np.linspace(0, 1, frames)
    clip = TEMPLATE * (100 + 20 * motion)[:, None, None] + np.stack([200 + 30 * motion, 150 - 10 * motion], -1)[:, None]
    clips = np.stack([clip, clip * 0.5])  # [batch 2, frames 5, 68, 2]
    per_frame, _ = kp.normalise(clips)
    np.testing.assert_allclose(per_frame, np.broadcast_to(TEMPLATE, per_frame.shape), atol=1e-6)
    shared, frame = kp.normalise(clips, shared_axes=-3)
    assert frame.scale.shape == (2, 1) and frame.origin.shape == (2, 1, 2)
    sizes = kp.face_size(shared)
    assert np.all(np.diff(sizes, axis=1) > 0)  # the face still grows over the clip
    np.testing.assert_allclose(sizes.mean(1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(shared[0], shared[1], atol=1e-9)  # the same motion at half the size
    np.testing.assert_allclose(kp.denormalise(shared, frame), clips, atol=1e-9)


# -- 2D similarity and pose / expression --------------------------------------------------


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(4, 20, 2))
    poses = random_poses(rng, 4)
    scale, rotation, translation = kp.umeyama(src, posed(src, poses))
    np.testing.assert_allclose(scale, np.exp(poses[:, 0]), rtol=1e-9)
    np.testing.assert_allclose(np.arctan2(rotation[:, 1, 0], rotation[:, 0, 0]), poses[:, 1], atol=1e-9)
    np.testing.assert_allclose(translation, poses[:, 2:], atol=1e-7)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-12)


def test_umeyama_never_reflects():
    src = TEMPLATE
    mirrored = src * np.array([-1.0, 1.0])
    scale, rotation, translation = kp.umeyama(src, mirrored)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-12)
    fitted = scale * src @ rotation.T + translation
    assert np.abs(fitted - mirrored).max() > 0.1  # a reflection would have fit it exactly


def test_split_and_compose_pose_round_trip():
    rng = np.random.default_rng(2)
    poses = random_poses(rng, 64)
    points = posed(TEMPLATE + rng.normal(0, 0.05, (64, 68, 2)), poses).reshape(8, 8, 68, 2)
    reference = TEMPLATE * np.array([1.1, 0.95])  # another identity
    pose, expression = kp.split_pose(points, reference)
    assert pose.shape == (8, 8, 4) and expression.shape == (8, 8, 68, 2)
    np.testing.assert_allclose(kp.compose_pose(pose, expression), points, rtol=1e-5, atol=1e-5)


def test_split_pose_separates_pose_from_expression():
    rng = np.random.default_rng(3)
    reference = TEMPLATE * np.array([0.9, 1.05]) + 0.02 * rng.normal(size=(68, 2))
    # Expression moves brows, lids and lips only: the STABLE points keep the head pose exact.
    offsets = np.zeros((10, 68, 2))
    moving = list(kp.BROWS + kp.MOUTH + (37, 38, 40, 41, 43, 44, 46, 47))
    offsets[:, moving] = rng.normal(0, 0.05, (10, len(moving), 2))
    poses = random_poses(rng, 10)
    pose, expression = kp.split_pose(posed(reference + offsets, poses), reference)
    np.testing.assert_allclose(pose, poses, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(expression, reference + offsets, atol=1e-9)


# -- 3D head rotation ---------------------------------------------------------------------


def test_rotation_matrix_is_a_rotation_with_the_documented_signs():
    rng = np.random.default_rng(4)
    angles = rng.uniform(-1.2, 1.2, (50, 3))
    rotation = kp.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    np.testing.assert_allclose(rotation @ rotation.transpose(0, 2, 1), np.tile(np.eye(3), (50, 1, 1)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-12)
    np.testing.assert_allclose(kp.euler_angles(rotation), angles, atol=1e-9)

    def nose_tip(yaw=0.0, pitch=0.0, roll=0.0):
        return kp.project(kp.FRONTAL_TEMPLATE_3D, kp.rotation_matrix(yaw, pitch, roll))[30]

    assert nose_tip(yaw=0.3)[0] > nose_tip()[0] + 0.1  # yaw > 0: the nose tip goes to the image right
    assert nose_tip(pitch=0.3)[1] > nose_tip()[1] + 0.1  # pitch > 0: it goes down (looking down)
    right_ear = kp.project(kp.FRONTAL_TEMPLATE_3D, kp.rotation_matrix(0.0, 0.0, 0.3))[16]
    assert right_ear[1] > kp.FRONTAL_TEMPLATE[16, 1] + 0.2  # roll > 0: clockwise, the image-right side goes down


def test_head_rotation_recovers_projected_angles():
    rng = np.random.default_rng(5)
    count = 64
    angles = rng.uniform(-30, 30, (count, 3)) * DEGREE
    rotation = kp.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    scale, translation = rng.uniform(20, 300, count), rng.uniform(0, 500, (count, 2))
    points = kp.project(kp.FRONTAL_TEMPLATE_3D.astype(np.float64), rotation, scale, translation)
    np.testing.assert_allclose(kp.head_rotation(points), angles, atol=0.01 * DEGREE)
    fitted_rotation, fitted_scale, fitted_translation = kp.fit_weak_perspective(points)
    np.testing.assert_allclose(fitted_scale, scale, rtol=1e-6)
    np.testing.assert_allclose(fitted_translation, translation, atol=1e-4)


def test_head_rotation_ignores_expression_and_landmark_noise():
    rng = np.random.default_rng(6)
    count = 64
    angles = rng.uniform(-30, 30, (count, 3)) * DEGREE
    talking = kp.FRONTAL_TEMPLATE_3D.astype(np.float64).copy()
    talking[:, :2] = close_eyes(pull_corners(open_jaw(TEMPLATE, 0.25), 0.05, 0.04), 0.8)
    points = kp.project(talking, kp.rotation_matrix(angles[:, 0], angles[:, 1], angles[:, 2]), 150.0, (300.0, 200.0))
    points += rng.normal(0, 1.0, points.shape)  # 1 px noise on a face ~300 px wide
    errors = np.abs(kp.head_rotation(points) - angles) / DEGREE
    assert errors.max() < 2.0, errors.max()


# -- geometry -----------------------------------------------------------------------------


def test_template_geometry():
    np.testing.assert_allclose(kp.face_size(TEMPLATE), 1.0, rtol=1e-9)
    np.testing.assert_allclose(kp.mouth_opening(TEMPLATE), TEMPLATE[66, 1] - TEMPLATE[62, 1], atol=1e-6)
    np.testing.assert_allclose(kp.mouth_width(TEMPLATE), TEMPLATE[54, 0] - TEMPLATE[48, 0], atol=1e-6)
    eye_height = TEMPLATE[41, 1] - TEMPLATE[37, 1]
    eye_width = np.linalg.norm(TEMPLATE[39] - TEMPLATE[36])
    # atol: the heights run along the face's down axis, the eye's own axis is slightly tilted.
    np.testing.assert_allclose(kp.eye_aperture(TEMPLATE), [eye_height / eye_width] * 2, atol=1e-3)
    brow = TEMPLATE[17:22, 1].mean()
    np.testing.assert_allclose(kp.brow_height(TEMPLATE), [TEMPLATE[[36, 39], 1].mean() - brow] * 2, atol=1e-6)


def test_geometry_is_invariant_to_the_head_similarity():
    rng = np.random.default_rng(7)
    faces = close_eyes(open_jaw(TEMPLATE, 0.2), 0.3) + rng.normal(0, 0.01, (16, 68, 2))
    moved = posed(faces, random_poses(rng, 16))
    for function in (kp.mouth_opening, kp.mouth_width, kp.eye_aperture, kp.brow_height):
        np.testing.assert_allclose(function(moved), function(faces), rtol=1e-6, atol=1e-9, err_msg=function.__name__)


def test_geometry_follows_the_face():
    jaw_steps = np.stack([open_jaw(TEMPLATE, amount) for amount in (0.0, 0.1, 0.2, 0.3)])
    assert np.all(np.diff(kp.mouth_opening(jaw_steps)) > 0.05)
    lid_steps = np.stack([close_eyes(TEMPLATE, fraction) for fraction in (0.0, 0.3, 0.6, 1.0)])
    apertures = kp.eye_aperture(lid_steps)
    assert np.all(np.diff(apertures, axis=0) < 0)
    np.testing.assert_allclose(apertures[-1], 0.0, atol=1e-9)
    raised = TEMPLATE.copy()
    raised[kp.BROWS, 1] -= 0.1
    np.testing.assert_allclose(kp.brow_height(raised) - kp.brow_height(TEMPLATE), 0.1, atol=1e-6)
    wider = pull_corners(TEMPLATE, 0.0, 0.05)
    np.testing.assert_allclose(kp.mouth_width(wider), kp.mouth_width(TEMPLATE) + 0.1, atol=1e-6)


# -- action units -------------------------------------------------------------------------


def test_neutral_faces_have_no_action_units():
    assert kp.AU_NAMES == (
        "AU01", "AU02", "AU04", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45"
    )
    rng = np.random.default_rng(8)
    identity = TEMPLATE * np.array([1.15, 0.9]) + rng.normal(0, 0.02, (68, 2))
    pose = random_poses(rng, 3)
    np.testing.assert_allclose(kp.au_proxies(TEMPLATE), 0.0, atol=1e-9)
    np.testing.assert_allclose(kp.au_proxies(posed(identity, pose), reference=identity), 0.0, atol=1e-9)


@pytest.mark.parametrize(
    "change, amounts, rising, still",
    [
        (open_jaw, (0.05, 0.15, 0.3), ("AU25", "AU26"), ("AU01", "AU02", "AU04", "AU10", "AU12", "AU17", "AU45")),
        (close_eyes, (0.3, 0.6, 1.0), ("AU45",), ("AU01", "AU04", "AU12", "AU25", "AU26")),
        (raise_inner_brows, (0.03, 0.06, 0.1), ("AU01",), ("AU04", "AU12", "AU25", "AU26", "AU45")),
        (smile, (0.02, 0.05, 0.08), ("AU12",), ("AU15", "AU20", "AU25", "AU26", "AU45")),
    ],
    ids=["jaw_drop", "blink", "inner_brow_raise", "smile"],
)
def test_action_units_follow_the_face(change, amounts, rising, still):
    faces = np.stack([TEMPLATE] + [change(TEMPLATE, amount) for amount in amounts])
    values = kp.au_proxies(faces)
    assert np.all(values >= 0)
    for name in rising:
        assert np.all(np.diff(au(values, name)) > 0.05), (name, au(values, name))
        assert 0.5 < au(values, name)[-1] < 2.0, (name, au(values, name))  # the strongest change reads ~1
    for name in still:
        np.testing.assert_allclose(au(values, name), 0.0, atol=1e-6, err_msg=name)


def test_closed_eyes_read_as_a_full_blink():
    np.testing.assert_allclose(au(kp.au_proxies(close_eyes(TEMPLATE, 1.0)), "AU45"), 1.0, atol=1e-6)


def test_action_units_ignore_head_position_size_and_roll():
    rng = np.random.default_rng(9)
    identity = TEMPLATE * np.array([1.05, 0.95])
    smiling_surprise = pull_corners(raise_inner_brows(identity, 0.05), 0.04, 0.02)
    faces = np.stack([open_jaw(identity, 0.2), close_eyes(identity, 0.5), smiling_surprise])
    expected = kp.au_proxies(faces, identity)
    assert expected.max() > 0.3
    moved = kp.au_proxies(posed(faces, random_poses(rng, 3)), posed(identity, random_poses(rng, 1)[0]))
    np.testing.assert_allclose(moved, expected, atol=1e-6)


# -- JAX ----------------------------------------------------------------------------------


def test_geometry_runs_under_jit_and_differentiates():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(10)
    # Faces ~80 px wide in a 224 px crop: float32 pixels keep ~1e-5 face units of precision.
    pixel_poses = np.stack([np.log(rng.uniform(60, 100, 4)), rng.uniform(-0.5, 0.5, 4),
                            rng.uniform(80, 140, 4), rng.uniform(80, 140, 4)], -1)
    faces = posed(close_eyes(open_jaw(TEMPLATE, 0.1), 0.4) + rng.normal(0, 0.01, (4, 68, 2)), pixel_poses)
    pose_3d = kp.project(kp.FRONTAL_TEMPLATE_3D, kp.rotation_matrix(0.3, -0.2, 0.1), 80.0, (100.0, 90.0))
    for function, points in [
        (kp.mouth_opening, faces), (kp.mouth_width, faces), (kp.eye_aperture, faces), (kp.brow_height, faces),
        (lambda p: kp.au_proxies(p, TEMPLATE * 1.02), faces), (lambda p: kp.split_pose(p)[1], faces),
        (lambda p: kp.normalise(p)[0], faces), (kp.head_rotation, pose_3d),
    ]:
        result = jax.jit(function)(jnp.asarray(points, jnp.float32))
        assert isinstance(result, jax.Array)
        np.testing.assert_allclose(np.asarray(result), function(points), rtol=2e-3, atol=2e-4)

    closed = TEMPLATE.copy()
    closed[65:68, 1] = closed[[63, 62, 61], 1]  # lips touching exactly: where a norm's gradient is NaN

    def speech_loss(points):
        geometry = kp.mouth_opening(points) + kp.mouth_width(points) + kp.eye_aperture(points).sum()
        return geometry + kp.au_proxies(points).sum()

    gradient = jax.jit(jax.grad(speech_loss))(jnp.asarray(closed, jnp.float32))
    assert np.isfinite(np.asarray(gradient)).all() and np.abs(np.asarray(gradient)).max() > 0


# -- drawing ------------------------------------------------------------------------------


def distance_to_outline(pixels, points):
    """Distance `[M]` from pixel positions `[M, 2]` to the nearest drawn segment or point."""
    starts, ends = [], []
    for indices, closed in ((kp.REGIONS[name], name.endswith(("eye", "lip"))) for name in kp.REGIONS):
        path = list(indices) + ([indices[0]] if closed else [])
        starts += path[:-1]
        ends += path[1:]
    a, b = points[starts], points[ends]  # [S, 2]
    along = np.clip(((pixels[:, None] - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0, 1)
    return np.linalg.norm(pixels[:, None] - (a + along[..., None] * (b - a)), axis=-1).min(1)


def test_draw_keypoints_draws_near_the_points_only():
    rng = np.random.default_rng(11)
    frame = rng.integers(0, 200, (120, 160, 3), dtype=np.uint8)
    before = frame.copy()
    points = TEMPLATE * 40 + np.array([80.0, 60.0])
    radius = 1.5
    drawn = kp.draw_keypoints(frame, points, color=(255, 0, 255), radius=radius)
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(frame, before)  # the input is untouched

    rows, cols = np.nonzero((drawn != frame).any(-1))
    changed = np.stack([cols, rows], -1).astype(np.float64)
    assert len(changed) > 300
    assert distance_to_outline(changed, points).max() <= radius + 1.0
    nearest = np.round(points).astype(int)
    centres = drawn[nearest[:, 1], nearest[:, 0]].astype(int)
    assert np.all(np.abs(centres - [255, 0, 255]).max(-1) < 60)  # every point is drawn, in colour


def test_draw_keypoints_clips_to_the_image():
    frame = np.zeros((50, 60, 3), np.uint8)
    half_out = kp.draw_keypoints(frame, TEMPLATE * 40 + np.array([0.0, 25.0]))
    assert half_out[:, :30].any() and not half_out[:, 45:].any()
    np.testing.assert_array_equal(kp.draw_keypoints(frame, TEMPLATE * 10 - 500), frame)


def test_canonical_face_is_one_definition_for_preparation_and_inference():
    from data_pipelines import align

    assert align.FACE_SCALE is kp.FACE_SCALE and align.FACE_CENTRE is kp.FACE_CENTRE
    np.testing.assert_array_equal(align.canonical_face(96), kp.canonical_face(96))
    face = kp.canonical_face(200)
    assert face.shape == (68, 2) and face.dtype == np.float32
    # The face-frame origin lands at FACE_CENTRE of the crop, one face unit is FACE_SCALE of its side.
    np.testing.assert_allclose(face.mean(0), (np.array(kp.FACE_CENTRE) + kp.FACE_SCALE * kp.FRONTAL_TEMPLATE.mean(0)) * 200,
                               atol=1e-3)
    np.testing.assert_allclose(face[16, 0] - face[0, 0], kp.FACE_SCALE * 200 * (kp.FRONTAL_TEMPLATE[16, 0] - kp.FRONTAL_TEMPLATE[0, 0]),
                               rtol=1e-5)
