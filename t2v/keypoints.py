"""The 68-point iBUG-300W face topology and the geometry built on it.

Conventions used across t2v:
  * points are float arrays `[..., 68, 2]` (or `[..., 68, 3]` for the 3D template);
  * the *face frame* is normalised: origin at the face centre, x to the image right,
    y down (image convention), the jaw spanning about [-1, 1] in x;
  * index 0 is the subject's right jaw end, which appears on the image left.
"""

from __future__ import annotations

import numpy as np

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
