"""The 68-point iBUG-300W face topology and the geometry built on it.

Conventions used across t2v:
  * points are float arrays `[..., 68, 2]` (or `[..., 68, 3]` for the 3D template);
    every function here takes any leading batch dims, e.g. `[batch, frames, 68, 2]`;
  * the *face frame* is normalised: origin at the face centre, x to the image right,
    y down (image convention), the jaw spanning about [-1, 1] in x; one *face unit* is
    the size of `FRONTAL_TEMPLATE` (see `face_size`);
  * index 0 is the subject's right jaw end, which appears on the image left;
  * pixel coordinates put pixel `(row i, column j)` at `(x, y) = (j, i)`.

Head pose has two descriptions:
  * 2D, `split_pose`: the similarity (log-scale, angle, tx, ty) from the identity's
    frontal reference shape to the frame, fit on the `STABLE` points; what remains is
    the pose-free *expression*;
  * 3D, `head_rotation`: (yaw, pitch, roll) of a weak-perspective fit of a 3D template.
    Signs: yaw > 0 turns the face to the image right (the nose moves right), pitch > 0
    looks down (the nose moves down, the chin back), roll > 0 turns the face clockwise
    in the image. The same convention drives 2D similarity angles: positive = clockwise.

Arrays: numpy inputs are computed on the host with numpy; JAX inputs (traced ones too)
with `jax.numpy`, so losses and metrics can call these functions under `jax.jit`.
Integer inputs become floats; float inputs keep their dtype. Only `draw_keypoints` is
numpy-only. Degenerate faces (all points equal) give finite numbers, never a division
by zero; wrong shapes raise `ValueError`.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw

NUM_POINTS = 68

# Named regions as index ranges into the 68 points (iBUG-300W order).
REGIONS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(0, 17)),
    "right_brow": tuple(range(17, 22)),  # subject's right: image left
    "left_brow": tuple(range(22, 27)),
    "nose_bridge": tuple(range(27, 31)),
    "nose_lower": tuple(range(31, 36)),
    "right_eye": tuple(range(36, 42)),
    "left_eye": tuple(range(42, 48)),
    "outer_lip": tuple(range(48, 60)),
    "inner_lip": tuple(range(60, 68)),
}
MOUTH = REGIONS["outer_lip"] + REGIONS["inner_lip"]  # 20 points, 48..67
EYES = REGIONS["right_eye"] + REGIONS["left_eye"]
BROWS = REGIONS["right_brow"] + REGIONS["left_brow"]

# Points that expressions barely move: jaw tops near the ears, the nose, the eye corners
# (not the lids, which blink). Pose fits and the face size use only these.
STABLE = (0, 1, 15, 16) + REGIONS["nose_bridge"] + REGIONS["nose_lower"] + (36, 39, 42, 45)


def _frontal_template_3d() -> np.ndarray:
    """A hand-built mean frontal face, `[68, 3]`, x right, y down, z towards the camera.

    Proportions follow average adult faces (inter-ocular distance about 0.75 of the jaw
    half-width, mouth at two thirds of the way from eyes to chin). It serves as the
    reference for 3D rotation estimates and as the base shape of synthetic identities.
    """
    p = np.zeros((NUM_POINTS, 3), np.float64)
    # Jaw: a rounded U from the right temple (0) over the chin (8) to the left temple (16).
    a = np.linspace(0.0, np.pi, 17)
    c = np.cos(a)
    p[0:17, 0] = -0.95 * np.sign(c) * np.abs(c) ** 0.8
    p[0:17, 1] = -0.22 + 1.17 * np.sin(a) ** 1.3
    p[0:17, 2] = -0.65 * np.abs(c) ** 1.5 - 0.05
    # Brows, outer to inner on the image left, inner to outer on the image right.
    bx = np.linspace(-0.78, -0.16, 5)
    by = -0.56 - 0.09 * np.sin(np.linspace(0.25, np.pi - 0.1, 5))
    bz = np.linspace(0.05, 0.22, 5)
    p[17:22] = np.stack([bx, by, bz], -1)
    p[22:27] = np.stack([-bx[::-1], by[::-1], bz[::-1]], -1)
    # Nose bridge (27..30, top to tip) and lower nose (31..35, left to right).
    p[27:31] = [[0.0, -0.32, 0.24], [0.0, -0.19, 0.34], [0.0, -0.06, 0.45], [0.0, 0.07, 0.56]]
    p[31:36] = [[-0.19, 0.16, 0.28], [-0.10, 0.19, 0.34], [0.0, 0.21, 0.38], [0.10, 0.19, 0.34], [0.19, 0.16, 0.28]]
    # Eyes: outer corner, two upper-lid points, inner corner, two lower-lid points.
    right_eye = [[-0.56, -0.31, 0.06], [-0.46, -0.37, 0.12], [-0.32, -0.37, 0.13],
                 [-0.21, -0.30, 0.12], [-0.32, -0.26, 0.12], [-0.46, -0.26, 0.11]]
    p[36:42] = right_eye
    left = np.array(right_eye)[[3, 2, 1, 0, 5, 4]]  # mirror keeping iBUG's clockwise order
    left[:, 0] *= -1
    p[42:48] = left
    # Outer lip, clockwise from the right corner (48) over the upper lip to the left corner (54).
    p[48:60] = [[-0.31, 0.50, 0.22], [-0.20, 0.44, 0.30], [-0.08, 0.41, 0.35], [0.0, 0.43, 0.36],
                [0.08, 0.41, 0.35], [0.20, 0.44, 0.30], [0.31, 0.50, 0.22], [0.20, 0.57, 0.28],
                [0.10, 0.60, 0.31], [0.0, 0.61, 0.32], [-0.10, 0.60, 0.31], [-0.20, 0.57, 0.28]]
    # Inner lip with the mouth closed: upper (61..63) and lower (65..67) almost touch.
    p[60:68] = [[-0.26, 0.50, 0.23], [-0.10, 0.495, 0.31], [0.0, 0.495, 0.32], [0.10, 0.495, 0.31],
                [0.26, 0.50, 0.23], [0.10, 0.505, 0.31], [0.0, 0.505, 0.32], [-0.10, 0.505, 0.31]]
    return p.astype(np.float32)


FRONTAL_TEMPLATE_3D: np.ndarray = _frontal_template_3d()
"""Mean frontal face `[68, 3]` in the face frame."""

FRONTAL_TEMPLATE: np.ndarray = FRONTAL_TEMPLATE_3D[:, :2].copy()
"""Its orthographic projection `[68, 2]`."""

# The canonical face crop, one definition for data preparation (data_pipelines/align.py)
# and inference (t2v.generate): a model sees at inference the framing it trained on.
FACE_SCALE = 0.36  # crop pixels per face unit, over the crop size: the jaw spans 0.68 of the crop
FACE_CENTRE = (0.5, 0.52)  # where the face-frame origin sits, as fractions of the crop


def canonical_face(size: int) -> np.ndarray:
    """`FRONTAL_TEMPLATE` `[68, 2]` in the pixels of a `size x size` canonical crop."""
    return (FRONTAL_TEMPLATE * (FACE_SCALE * size) + np.array(FACE_CENTRE) * size).astype(np.float32)

# ---------------------------------------------------------------------------------------
# Array plumbing: numpy or jax.numpy, shape checks.

_EPS = 1e-9  # floor for lengths we divide by: degenerate faces give zeros, not infinities


def _namespace(*arrays: Any):
    """`jax.numpy` when any input is a JAX array (tracers included), else numpy."""
    jax = sys.modules.get("jax")  # if JAX was never imported, no input can be a JAX array
    if jax is not None and any(isinstance(a, jax.Array) for a in arrays):
        return jax.numpy
    return np


def _as_float(array: Any, xp) -> Any:
    array = xp.asarray(array)
    if not xp.issubdtype(array.dtype, xp.floating):
        array = array.astype(xp.result_type(array.dtype, xp.float32))
    return array


def _checked(array: Any, xp, function: str, name: str, shape: tuple[int | None, ...]) -> Any:
    """`array` as floats, after checking that its trailing dims are `shape` (None: any size)."""
    array = xp.asarray(array)
    tail = tuple(array.shape[array.ndim - len(shape):]) if array.ndim >= len(shape) else None
    if tail is None or any(want is not None and got != want for got, want in zip(tail, shape)):
        wanted = ", ".join("N" if d is None else str(d) for d in shape)
        raise ValueError(f"t2v.keypoints.{function}: {name} must have shape [..., {wanted}], got {tuple(array.shape)}")
    return _as_float(array, xp)


def _points(points: Any, xp, function: str, name: str = "points") -> Any:
    return _checked(points, xp, function, name, (NUM_POINTS, 2))


def _reference(reference: Any, like: Any, xp, function: str) -> Any:
    if reference is None:
        return xp.asarray(FRONTAL_TEMPLATE, like.dtype)
    return _points(reference, xp, function, "reference").astype(like.dtype)


def _norm(vectors: Any, xp) -> Any:
    """Length over the last axis; never exactly zero, so its gradient stays finite."""
    return xp.sqrt((vectors**2).sum(-1) + _EPS**2)


# ---------------------------------------------------------------------------------------
# Face size and the normalised face frame.

_STABLE_INDEX = np.array(STABLE)


def _stable_centre_and_spread(points: Any, xp) -> tuple[Any, Any]:
    """Mean `[..., 2]` and RMS distance to it `[...]` of the STABLE points."""
    stable = points[..., _STABLE_INDEX, :]
    centre = stable.mean(-2)
    spread = xp.sqrt(((stable - centre[..., None, :]) ** 2).sum(-1).mean(-1) + _EPS**2)
    return centre, spread


_TEMPLATE_CENTRE, _TEMPLATE_SPREAD = _stable_centre_and_spread(FRONTAL_TEMPLATE.astype(np.float64), np)
_TEMPLATE_SPREAD = float(_TEMPLATE_SPREAD)  # a Python float keeps float32 inputs float32


def face_size(points: Any) -> Any:
    """`[..., 68, 2] -> [...]`: the face's size in the units of `points`; 1 for `FRONTAL_TEMPLATE`.

    The RMS spread of the STABLE points about their mean, relative to the template's.
    Rotation-invariant, and it mixes horizontal and vertical extent, so a turning head
    (yaw) shrinks it far less than it shrinks the inter-ocular distance.
    """
    xp = _namespace(points)
    points = _points(points, xp, "face_size")
    return _stable_centre_and_spread(points, xp)[1] / _TEMPLATE_SPREAD


class FaceFrame(NamedTuple):
    """Where the face frame lies in the image: `pixels = origin + scale * face`.

    A NamedTuple, hence a JAX pytree.
      origin: `[..., 2]` pixel position of the face-frame origin;
      scale:  `[...]` pixels per face unit.
    """

    origin: Any
    scale: Any


def normalise(points_px: Any, shared_axes: int | Sequence[int] = ()) -> tuple[Any, FaceFrame]:
    """`[..., 68, 2]` pixels -> (`[..., 68, 2]` face frame, `FaceFrame`).

    The frame is a translation and a scale, no rotation (roll stays in the points, for
    `split_pose` or `head_rotation` to read): the scale is `face_size` and the origin is
    placed so that the STABLE points' mean lands where it is in `FRONTAL_TEMPLATE`. A
    frontal face therefore comes out on top of the template, its jaw spanning ~[-1, 1].

    `shared_axes` are leading axes over which one frame is shared (averaged), e.g. the
    frames axis of `[batch, frames, 68, 2]` (`shared_axes=1`) so that a clip keeps its
    head motion instead of having it normalised away frame by frame.
    """
    xp = _namespace(points_px)
    points = _points(points_px, xp, "normalise", "points_px")
    axes = (shared_axes,) if isinstance(shared_axes, int) else tuple(shared_axes)
    axes = tuple(a + points.ndim if a < 0 else a for a in axes)
    if any(not 0 <= a < points.ndim - 2 for a in axes):
        raise ValueError(
            f"t2v.keypoints.normalise: shared_axes {shared_axes} must name leading (batch) axes of "
            f"points_px with shape {tuple(points.shape)}, not the last two"
        )
    centre, spread = _stable_centre_and_spread(points, xp)
    if axes:
        centre = centre.mean(axis=axes, keepdims=True)
        spread = spread.mean(axis=axes, keepdims=True)
    scale = xp.maximum(spread / _TEMPLATE_SPREAD, _EPS)
    origin = centre - scale[..., None] * xp.asarray(_TEMPLATE_CENTRE, points.dtype)
    return (points - origin[..., None, :]) / scale[..., None, None], FaceFrame(origin, scale)


def denormalise(points_face: Any, frame: FaceFrame) -> Any:
    """Inverse of `normalise`: `[..., 68, 2]` face frame -> pixels."""
    xp = _namespace(points_face, *frame)
    points = _points(points_face, xp, "denormalise", "points_face")
    origin = _checked(frame.origin, xp, "denormalise", "frame.origin", (2,))
    scale = _as_float(frame.scale, xp)
    return points * scale[..., None, None] + origin[..., None, :]


# ---------------------------------------------------------------------------------------
# 2D similarity: Umeyama, and head pose vs expression.


def _similarity(src: Any, dst: Any, xp) -> tuple[Any, Any, Any]:
    """Least-squares `(a, b, translation)` with `dst ~ [[a, -b], [b, a]] @ src + translation`.

    This is Umeyama (1991) in 2D, where the SVD reduces to a closed form: scale times
    rotation is the complex number `sum(conj(src) * dst) / sum(|src|^2)` on centred points.
    It cannot reflect, and it is cheap and smooth under `jax.jit` and `jax.grad`.
    """
    src_mean, dst_mean = src.mean(-2), dst.mean(-2)
    s = src - src_mean[..., None, :]
    d = dst - dst_mean[..., None, :]
    energy = xp.maximum((s**2).sum((-2, -1)), _EPS)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(-1) / energy
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(-1) / energy
    mean_x, mean_y = src_mean[..., 0], src_mean[..., 1]
    moved_mean = xp.stack([a * mean_x - b * mean_y, b * mean_x + a * mean_y], -1)
    return a, b, dst_mean - moved_mean


def _rotate(points: Any, angle: Any, xp) -> Any:
    """Rotates `[..., N, 2]` by `angle [...]` radians (clockwise in the image for angle > 0)."""
    cos, sin = xp.cos(angle)[..., None], xp.sin(angle)[..., None]
    x, y = points[..., 0], points[..., 1]
    return xp.stack([cos * x - sin * y, sin * x + cos * y], -1)


def umeyama(src: Any, dst: Any) -> tuple[Any, Any, Any]:
    """Least-squares similarity from `src [..., N, 2]` to `dst [..., N, 2]`.

    Returns `(scale [...], rotation [..., 2, 2], translation [..., 2])` minimising
    `sum |dst - (scale * rotation @ src + translation)|^2` with a proper rotation
    (det +1, never a reflection), i.e. `dst ~ scale * src @ rotation.T + translation`.
    """
    xp = _namespace(src, dst)
    src = _checked(src, xp, "umeyama", "src", (None, 2))
    dst = _checked(dst, xp, "umeyama", "dst", (None, 2))
    if src.shape[-2] != dst.shape[-2] or src.shape[-2] < 2:
        raise ValueError(
            f"t2v.keypoints.umeyama: src and dst need the same number (>= 2) of points, got shapes "
            f"{tuple(src.shape)} and {tuple(dst.shape)}"
        )
    a, b, translation = _similarity(src, dst, xp)
    angle = xp.arctan2(b, a)
    cos, sin = xp.cos(angle), xp.sin(angle)
    rotation = xp.stack([xp.stack([cos, -sin], -1), xp.stack([sin, cos], -1)], -2)
    return xp.sqrt(a**2 + b**2), rotation, translation


def split_pose(points: Any, reference: Any = None) -> tuple[Any, Any]:
    """Head pose and pose-free expression of `points [..., 68, 2]`.

    `reference [..., 68, 2]` is the identity's frontal neutral shape (default
    `FRONTAL_TEMPLATE`). Returns
      pose `[..., 4]` = (log_scale, angle_rad, tx, ty): the similarity, fit on the
        STABLE points, taking the reference onto the frame (angle > 0: clockwise);
      expression `[..., 68, 2]`: the frame with that similarity undone, in the
        reference's coordinates, so it equals the reference for a neutral face.
    `compose_pose(pose, expression)` gives `points` back.
    """
    xp = _namespace(points, reference)
    points = _points(points, xp, "split_pose")
    reference = _reference(reference, points, xp, "split_pose")
    a, b, translation = _similarity(reference[..., _STABLE_INDEX, :], points[..., _STABLE_INDEX, :], xp)
    scale = xp.maximum(xp.sqrt(a**2 + b**2), _EPS)
    angle = xp.arctan2(b, a)
    expression = _rotate(points - translation[..., None, :], -angle, xp) / scale[..., None, None]
    pose = xp.stack([xp.log(scale), angle, translation[..., 0], translation[..., 1]], -1)
    return pose, expression


def compose_pose(pose: Any, expression: Any) -> Any:
    """Inverse of `split_pose`: `pose [..., 4]`, `expression [..., 68, 2]` -> points `[..., 68, 2]`."""
    xp = _namespace(pose, expression)
    pose = _checked(pose, xp, "compose_pose", "pose", (4,))
    expression = _points(expression, xp, "compose_pose", "expression")
    scale = xp.exp(pose[..., 0])
    moved = _rotate(expression, pose[..., 1], xp) * scale[..., None, None]
    return moved + pose[..., None, 2:]


# ---------------------------------------------------------------------------------------
# 3D head rotation under weak perspective.


def _matrix(rows: Sequence[Sequence[Any]], xp) -> Any:
    return xp.stack([xp.stack(list(row), -1) for row in rows], -2)


def rotation_matrix(yaw: Any, pitch: Any, roll: Any) -> Any:
    """`[...]` angles in radians -> rotations `[..., 3, 3]` acting on column vectors (x right, y down, z to camera).

    `R = R_roll @ R_pitch @ R_yaw`: yaw about the vertical axis first, then pitch about
    the horizontal one, then roll in the image plane. Signs as in the module docstring.
    """
    xp = _namespace(yaw, pitch, roll)
    yaw, pitch, roll = xp.broadcast_arrays(*(_as_float(angle, xp) for angle in (yaw, pitch, roll)))
    one, zero = xp.ones_like(yaw), xp.zeros_like(yaw)
    cy, sy, cp, sp, cr, sr = xp.cos(yaw), xp.sin(yaw), xp.cos(pitch), xp.sin(pitch), xp.cos(roll), xp.sin(roll)
    r_yaw = _matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]], xp)  # the nose (z > 0) goes to +x
    r_pitch = _matrix([[one, zero, zero], [zero, cp, sp], [zero, -sp, cp]], xp)  # the nose goes to +y (down)
    r_roll = _matrix([[cr, -sr, zero], [sr, cr, zero], [zero, zero, one]], xp)  # +x goes to +y: clockwise
    return r_roll @ r_pitch @ r_yaw


def euler_angles(rotation: Any) -> Any:
    """Inverse of `rotation_matrix`: `[..., 3, 3]` -> (yaw, pitch, roll) `[..., 3]`, pitch in [-pi/2, pi/2]."""
    xp = _namespace(rotation)
    r = _checked(rotation, xp, "euler_angles", "rotation", (3, 3))
    yaw = xp.arctan2(-r[..., 2, 0], r[..., 2, 2])
    pitch = xp.arcsin(xp.clip(-r[..., 2, 1], -1.0, 1.0))
    roll = xp.arctan2(-r[..., 0, 1], r[..., 1, 1])
    return xp.stack([yaw, pitch, roll], -1)


def project(points3d: Any, rotation: Any, scale: Any = 1.0, translation: Any = (0.0, 0.0)) -> Any:
    """Weak-perspective (scaled orthographic) projection.

    `points3d [..., N, 3]`, `rotation [..., 3, 3]`, `scale [...]`, `translation [..., 2]`
    -> `[..., N, 2]` = `scale * (rotation @ p)[:2] + translation` for every point p.
    """
    xp = _namespace(points3d, rotation, scale, translation)
    points3d = _checked(points3d, xp, "project", "points3d", (None, 3))
    rotation = _checked(rotation, xp, "project", "rotation", (3, 3))
    translation = _checked(translation, xp, "project", "translation", (2,))
    scale = _as_float(scale, xp)
    rotated = points3d @ xp.swapaxes(rotation, -1, -2)
    return scale[..., None, None] * rotated[..., :2] + translation[..., None, :]


def _skew(v: Any, xp) -> Any:
    """`[..., 3] -> [..., 3, 3]` with `skew(v) @ w == cross(v, w)`."""
    zero = xp.zeros_like(v[..., 0])
    return _matrix([[zero, -v[..., 2], v[..., 1]], [v[..., 2], zero, -v[..., 0]], [-v[..., 1], v[..., 0], zero]], xp)


def _rodrigues(v: Any, xp) -> Any:
    """Rotation vector `[..., 3]` -> rotation `[..., 3, 3]`."""
    angle = _norm(v, xp)
    k = _skew(v / angle[..., None], xp)
    sin, one_minus_cos = xp.sin(angle)[..., None, None], (1.0 - xp.cos(angle))[..., None, None]
    return xp.eye(3, dtype=v.dtype) + sin * k + one_minus_cos * (k @ k)


def fit_weak_perspective(
    points: Any, template3d: Any = FRONTAL_TEMPLATE_3D, iterations: int = 2
) -> tuple[Any, Any, Any]:
    """Fits `project(template3d, rotation, scale, translation)` to `points [..., 68, 2]`.

    Least squares over the STABLE points, so the mouth and the eyelids do not tilt the
    head. Starts from the affine camera (linear least squares) made orthonormal by SVD,
    which is exact for noise-free projections, then takes Gauss-Newton steps on the
    rotation and scale, which matter when the face deforms or is noisy.
    Returns `(rotation [..., 3, 3], scale [...], translation [..., 2])`.
    """
    xp = _namespace(points, template3d)
    points = _points(points, xp, "fit_weak_perspective")
    template3d = _checked(template3d, xp, "fit_weak_perspective", "template3d", (NUM_POINTS, 3)).astype(points.dtype)
    observed = points[..., _STABLE_INDEX, :]
    model = template3d[..., _STABLE_INDEX, :]
    observed_mean, model_mean = observed.mean(-2), model.mean(-2)
    observed = observed - observed_mean[..., None, :]  # [..., n, 2]
    model = model - model_mean[..., None, :]  # [..., n, 3]

    # Affine camera A [..., 2, 3] with observed ~ model @ A.T, then its nearest scaled rotation.
    affine = xp.swapaxes(xp.linalg.pinv(model) @ observed, -1, -2)
    u, singular, vt = xp.linalg.svd(affine, full_matrices=False)
    rows = u @ vt  # the two image-plane rows of the rotation
    rotation = xp.concatenate([rows, xp.cross(rows[..., 0, :], rows[..., 1, :])[..., None, :]], -2)
    scale = singular.mean(-1)

    # Gauss-Newton on (rotation @ expm(skew(w)), scale * exp(t)) at w = 0, t = 0: the image of
    # model point p moves by scale * (rotation @ (e_k x p))[:2] per unit of w_k.
    basis_cross_model = xp.cross(xp.eye(3, dtype=points.dtype)[:, None, :], model[..., None, :, :])  # [..., 3, n, 3]
    identity4 = xp.eye(4, dtype=points.dtype)
    flat = (2 * model.shape[-2],)  # n points -> 2n residuals
    for _ in range(iterations):
        rotation_t = xp.swapaxes(rotation, -1, -2)
        predicted = scale[..., None, None] * (model @ rotation_t)[..., :2]  # [..., n, 2]
        residual = (predicted - observed).reshape(predicted.shape[:-2] + flat)
        d_rotation = scale[..., None, None, None] * (basis_cross_model @ rotation_t[..., None, :, :])[..., :2]
        jacobian = xp.concatenate([d_rotation, predicted[..., None, :, :]], -3)  # [..., 4, n, 2]
        jacobian = jacobian.reshape(jacobian.shape[:-2] + flat)  # [..., 4, 2n]
        normal_matrix = jacobian @ xp.swapaxes(jacobian, -1, -2)  # [..., 4, 4]
        damping = 1e-6 * xp.trace(normal_matrix, axis1=-2, axis2=-1) / 4 + 1e-12  # keeps degenerate faces solvable
        normal_matrix = normal_matrix + damping[..., None, None] * identity4
        step = -xp.linalg.solve(normal_matrix, jacobian @ residual[..., None])[..., 0]
        rotation = rotation @ _rodrigues(step[..., :3], xp)
        scale = scale * xp.exp(step[..., 3])

    translation = observed_mean - scale[..., None] * (rotation @ model_mean[..., None])[..., :2, 0]
    return rotation, scale, translation


def head_rotation(points: Any, template3d: Any = FRONTAL_TEMPLATE_3D) -> Any:
    """`[..., 68, 2] -> [..., 3]`: (yaw, pitch, roll) in radians of the weak-perspective fit of `template3d`."""
    xp = _namespace(points, template3d)
    points = _points(points, xp, "head_rotation")
    return euler_angles(fit_weak_perspective(points, template3d)[0])


# ---------------------------------------------------------------------------------------
# Mouth, eyes and brows.


def _face_axes(points: Any, xp) -> tuple[Any, Any]:
    """Unit vectors `[..., 2]`: across the face (towards the image right) and down it, from the eye corners."""
    across = points[..., (42, 45), :].mean(-2) - points[..., (36, 39), :].mean(-2)
    across = across / _norm(across, xp)[..., None]
    down = xp.stack([-across[..., 1], across[..., 0]], -1)  # across turned clockwise by 90 degrees
    return across, down


def _along(vectors: Any, direction: Any) -> Any:
    """Components `[..., K]` of `vectors [..., K, 2]` along `direction [..., 2]`."""
    return (vectors * direction[..., None, :]).sum(-1)


def mouth_opening(points: Any) -> Any:
    """`[..., 68, 2] -> [...]`: inner-lip gap in face units (about 0.01 closed, 0.3 wide open).

    The mean of the three upper-to-lower inner-lip distances (61-67, 62-66, 63-65) measured
    along the face's down axis, over `face_size`. Signed: lips pressed past each other read
    below zero; being linear in the points keeps its gradient smooth at a closed mouth.
    """
    xp = _namespace(points)
    points = _points(points, xp, "mouth_opening")
    _, down = _face_axes(points, xp)
    gap = _along(points[..., (67, 66, 65), :] - points[..., (61, 62, 63), :], down).mean(-1)
    return gap / face_size(points)


def mouth_width(points: Any) -> Any:
    """`[..., 68, 2] -> [...]`: outer lip corner distance (48-54) in face units (0.62 for the template)."""
    xp = _namespace(points)
    points = _points(points, xp, "mouth_width")
    return _norm(points[..., 54, :] - points[..., 48, :], xp) / face_size(points)


# (corners, upper lid, lower lid below it) of each eye, subject's right eye first.
_EYE_POINTS = (((36, 39), (37, 38), (41, 40)), ((42, 45), (43, 44), (47, 46)))


def eye_aperture(points: Any) -> Any:
    """`[..., 68, 2] -> [..., 2]` (right, left): eye aspect ratio, about 0.31 open, 0 closed.

    Soukupova and Cech's EAR: mean lid-to-lid height over corner-to-corner width, with
    the heights measured along the face's down axis (so signed and smooth at zero).
    Scale- and rotation-invariant by construction.
    """
    xp = _namespace(points)
    points = _points(points, xp, "eye_aperture")
    _, down = _face_axes(points, xp)
    apertures = []
    for (outer, inner), upper, lower in _EYE_POINTS:
        height = _along(points[..., lower, :] - points[..., upper, :], down).mean(-1)
        apertures.append(height / _norm(points[..., inner, :] - points[..., outer, :], xp))
    return xp.stack(apertures, -1)


def brow_height(points: Any) -> Any:
    """`[..., 68, 2] -> [..., 2]` (right, left): brow height above the eye corners, in face units.

    Mean brow point to the mid-point of the eye corners (not the lids, which blink),
    along the face's up axis; about 0.31 for the template.
    """
    xp = _namespace(points)
    points = _points(points, xp, "brow_height")
    _, down = _face_axes(points, xp)
    heights = []
    for brow, ((outer, inner), _, _) in zip((REGIONS["right_brow"], REGIONS["left_brow"]), _EYE_POINTS):
        eye_middle = points[..., (outer, inner), :].mean(-2)
        heights.append(((eye_middle - points[..., brow, :].mean(-2)) * down).sum(-1))
    return xp.stack(heights, -1) / face_size(points)[..., None]


# ---------------------------------------------------------------------------------------
# Action-unit proxies.

AU_NAMES = ("AU01", "AU02", "AU04", "AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")

# What reads as a strong (1.0) activation of each proxy below: a displacement in face
# units (the template's jaw half-width is 0.95, brow-to-eye 0.31, mouth width 0.62),
# except AU45, a fraction of the neutral eye aperture.
_AU_FULL_SCALE = {
    "AU01": 0.10, "AU02": 0.10, "AU04": 0.10, "AU10": 0.08, "AU12": 0.08, "AU14": 0.05, "AU15": 0.06,
    "AU17": 0.05, "AU20": 0.08, "AU23": 0.08, "AU25": 0.20, "AU26": 0.25, "AU45": 1.0,
}


def au_proxies(points: Any, reference: Any = None) -> Any:
    """`[..., 68, 2] -> [..., 13]`: geometric proxies of the FACS action units `AU_NAMES`.

    `reference [..., 68, 2]` is the identity's neutral face (default `FRONTAL_TEMPLATE`).
    Both are brought into the template's upright frame by similarities fit on the STABLE
    points, so the result ignores the head's 2D position, size and roll. Each proxy is a
    landmark displacement from neutral (up = towards the brows), over `_AU_FULL_SCALE`,
    clipped at 0:

      AU01 inner brow raiser   inner brow points (20, 21, 22, 23) go up
      AU02 outer brow raiser   outer brow points (17, 18, 25, 26) go up
      AU04 brow lowerer        brows go down + inner brow ends (21, 22) come together
      AU10 upper lip raiser    upper lip centre (50-52, 61-63) goes up
      AU12 lip corner puller   lip corners (48, 54) go up
      AU14 dimpler             lips thin beside the corners (49-59, 53-55)
      AU15 lip corner depressor lip corners go down
      AU17 chin raiser         chin (7-9) and lower lip centre (56-58) go up
      AU20 lip stretcher       corners go outwards, beyond any lift (a smile is AU12)
      AU23 lip tightener       red of the lips thins at the centre (51-62, 66-57)
      AU25 lips part           mouth_opening grows
      AU26 jaw drop            chin goes down
      AU45 blink               eye_aperture falls, as a fraction of the neutral one
    """
    xp = _namespace(points, reference)
    points = _points(points, xp, "au_proxies")
    reference = _reference(reference, points, xp, "au_proxies")
    neutral = split_pose(reference)[1]  # the reference in the template's upright frame
    face = split_pose(points, neutral)[1]

    def mean_up(indices: tuple[int, ...]) -> Any:
        return (neutral[..., indices, 1] - face[..., indices, 1]).mean(-1)

    def half_gap_x(p: Any, left: int, right: int) -> Any:
        return (p[..., right, 0] - p[..., left, 0]) / 2

    def lip_thickness(p: Any, pairs: tuple[tuple[int, int], ...]) -> Any:
        return sum(p[..., below, 1] - p[..., above, 1] for above, below in pairs)

    corner_up = mean_up((48, 54))
    corner_out = half_gap_x(face, 48, 54) - half_gap_x(neutral, 48, 54)
    near_corners = ((49, 59), (53, 55))
    centre = ((51, 62), (66, 57))
    chin = (7, 8, 9)
    neutral_eyes = xp.maximum(eye_aperture(neutral), _EPS)
    raw = {
        "AU01": mean_up((20, 21, 22, 23)),
        "AU02": mean_up((17, 18, 25, 26)),
        "AU04": -mean_up(BROWS) + half_gap_x(neutral, 21, 22) - half_gap_x(face, 21, 22),
        "AU10": mean_up((50, 51, 52, 61, 62, 63)),
        "AU12": corner_up,
        "AU14": (lip_thickness(neutral, near_corners) - lip_thickness(face, near_corners)) / 2,
        "AU15": -corner_up,
        "AU17": (mean_up(chin) + mean_up((56, 57, 58))) / 2,
        "AU20": corner_out - xp.maximum(corner_up, 0.0),
        "AU23": lip_thickness(neutral, centre) - lip_thickness(face, centre),
        "AU25": mouth_opening(face) - mouth_opening(neutral),
        "AU26": -mean_up(chin),
        "AU45": 1.0 - (eye_aperture(face) / neutral_eyes).mean(-1),
    }
    proxies = xp.stack([raw[name] / _AU_FULL_SCALE[name] for name in AU_NAMES], -1)
    return xp.maximum(proxies, 0.0)


# ---------------------------------------------------------------------------------------
# Debug drawing.

# (indices, closed) of every polyline drawn.
_POLYLINES = (
    (REGIONS["jaw"], False),
    (REGIONS["right_brow"], False),
    (REGIONS["left_brow"], False),
    (REGIONS["nose_bridge"], False),
    (REGIONS["nose_lower"], False),
    (REGIONS["right_eye"], True),
    (REGIONS["left_eye"], True),
    (REGIONS["outer_lip"], True),
    (REGIONS["inner_lip"], True),
)
_SUPERSAMPLING = 4  # PIL draws aliased shapes: draw 4x larger and box-filter down


def draw_keypoints(
    frame: np.ndarray, points_px: Any, color: Sequence[int] = (0, 255, 0), radius: float | None = None
) -> np.ndarray:
    """Draws the face outline on a copy of `frame` (uint8 `[H, W, 3]`); returns the copy.

    `points_px [68, 2]` in pixels. Regions are polylines (eyes and lips closed) of width
    `radius / 2`, points are discs of `radius` (default: ~1/160 of the smaller side, at
    least 1 px). Anti-aliased by supersampling the face's bounding box only.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"t2v.keypoints.draw_keypoints: frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    points = np.asarray(points_px, np.float64)
    if points.shape != (NUM_POINTS, 2):
        raise ValueError(f"t2v.keypoints.draw_keypoints: points_px must have shape [68, 2], got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("t2v.keypoints.draw_keypoints: points_px has non-finite values")
    color = np.asarray(color, np.float32)
    if color.shape != (3,):
        raise ValueError(f"t2v.keypoints.draw_keypoints: color must be 3 channel values, got {color.shape}")
    height, width = frame.shape[:2]
    radius = max(1.0, min(height, width) / 160) if radius is None else float(radius)
    line_width = max(1.0, radius / 2)

    margin = radius + line_width + 2
    x0, y0 = np.maximum(np.floor(points.min(0) - margin).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(points.max(0) + margin).astype(int) + 1, (width, height))
    out = frame.copy()
    if x0 >= x1 or y0 >= y1:  # the face is off the image
        return out

    ss = _SUPERSAMPLING
    mask = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(mask)
    # Pixel j spans [j - 0.5, j + 0.5]; supersampled pixel k has its centre at k.
    local = (points - (x0, y0) + 0.5) * ss - 0.5
    for indices, closed in _POLYLINES:
        path = [tuple(local[i]) for i in indices + (indices[:1] if closed else ())]
        draw.line(path, fill=255, width=max(1, round(line_width * ss)), joint="curve")
    r = radius * ss
    for x, y in local:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    coverage = np.asarray(mask.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), np.float32)[..., None] / 255

    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.round(region + (color - region) * coverage).astype(np.uint8)
    return out
