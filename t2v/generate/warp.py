"""Photo-native rendering: the photo's own face moved along the keypoints, at its own size.

    warp = PhotoWarp(photo, landmarks)            # uint8 [H, W, 3], the photo's [68, 2] pixels
    frame = warp.render(points)                   # points [68, 2] photo pixels -> uint8 [H, W, 3]

The warp is piecewise affine over a fixed triangulation of the 68 points and three rings
of anchors around the head (`RINGS`): the inner ring moves with the head's similarity, the
middle one half as much, the outer one not at all, so head motion fades out smoothly and
pixels beyond the outer ring are the photo's, exactly. Per frame each pixel of the face
region is sampled (bicubic) from the photo through the affine of the target triangle
covering it (a backward warp); the triangle map is drawn at a resolution whose face is at
most `max_face_px` wide and its sample positions upsampled, the pixels always come from
the full-size photo. Where the photo has no pixels they are painted: a mouth cavity with
teeth when the lips part further than in the photo. Closing eyelids are the photo's own
lid skin, stretched down over the eye by the mesh (its lash line at the lower edge): flat
painted lids read as another person to a face-recognition model (benchmarks/RESULTS.md).
Outside the photo the face region is its reflection.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
from PIL import Image, ImageDraw
from scipy.spatial import Delaunay

from t2v import keypoints

_STABLE = np.asarray(keypoints.STABLE)
_INNER_LIP = np.arange(60, 68)
_EYES = (np.arange(36, 42), np.arange(42, 48))

# Anchor rings in the template's face frame (jaw half-width ~1): (radii x, y) of ellipses
# about RING_CENTRE and how much of the head's motion each follows.
RING_CENTRE = (0.0, -0.1)
RINGS = (((1.30, 1.45), 1.0), ((1.62, 1.82), 0.5), ((1.95, 2.20), 0.0))
_RING_POINTS = 24
DEFAULT_MAX_FACE_PX = 512  # the triangle map is drawn at most this face width (pixels of the jaw)
_SUPERSAMPLE = 4  # painted masks are drawn this much larger, then box-filtered


def _ring_layout() -> np.ndarray:
    """The anchors `[rings * points, 2]` in the face frame."""
    angles = np.linspace(0.0, 2 * np.pi, _RING_POINTS, endpoint=False)
    unit = np.stack([np.cos(angles), np.sin(angles)], -1)
    return np.concatenate([unit * radii + RING_CENTRE for radii, _ in RINGS])


@functools.lru_cache(maxsize=1)
def warp_triangles() -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(triangles `[n, 3]` into the 68 points then the anchors, in drawing order; the mouth
    interior's triangle numbers; each eye's interior triangle numbers).

    The topology is fixed on the template with its mouth open, so no triangle bridges the
    lips whatever the photo's or the frame's mouth does. Anchor triangles are drawn first,
    the face over them, eye and mouth interiors last: where a strong motion folds the mesh,
    the face wins.
    """
    layout = keypoints.FRONTAL_TEMPLATE.astype(np.float64).copy()
    layout[[65, 66, 67]] += [0.0, 0.06]
    layout[list(range(55, 60))] += [0.0, 0.08]
    triangles = Delaunay(np.concatenate([layout, _ring_layout()])).simplices
    in_set = lambda index: np.isin(triangles, index).all(1)  # noqa: E731
    mouth, eyes = in_set(_INNER_LIP), [in_set(eye) for eye in _EYES]
    rank = np.where(triangles.max(1) >= keypoints.NUM_POINTS, 0, 1) + 2 * (mouth | eyes[0] | eyes[1])
    triangles = triangles[np.argsort(rank, kind="stable")]
    in_set = lambda index: np.flatnonzero(np.isin(triangles, index).all(1))  # noqa: E731
    return triangles.astype(np.int32), in_set(_INNER_LIP), (in_set(_EYES[0]), in_set(_EYES[1]))


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(matrix `[2, 2]`, offset `[2]`) of the least-squares similarity source -> target."""
    scale, rotation, translation = keypoints.umeyama(np.asarray(source, np.float64), np.asarray(target, np.float64))
    return float(scale) * np.asarray(rotation), np.asarray(translation)


def _affines(source: np.ndarray, target: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target -> source affines `[n, 3, 2]` (`[x, y, 1] @ A`) of each triangle, which of
    them are drawn `[n]`): a collapsed target triangle (closed lips) covers no pixel and is
    not drawn, else its outline would show what the lips closed over."""
    t = np.concatenate([target[triangles], np.ones((len(triangles), 3, 1))], -1)
    drawn = np.abs(np.linalg.det(t)) > 0.05  # twice the area, in pixels
    affines = np.broadcast_to(np.array([[1.0, 0], [0, 1], [0, 0]]), (len(triangles), 3, 2)).copy()
    affines[drawn] = np.linalg.solve(t[drawn], source[triangles][drawn])
    return affines, drawn


def _eye_frame(points: np.ndarray, eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outer corner, corner-to-corner vector) of an eye."""
    return points[eye[0]], points[eye[3]] - points[eye[0]]


def _aperture(points: np.ndarray, eye: np.ndarray) -> float:
    corner, along = _eye_frame(points, eye)
    across = np.array([-along[1], along[0]]) / max(float(np.dot(along, along)), 1e-9)
    return float(np.dot(points[eye[[5, 4]]] - points[eye[[1, 2]]], across).mean())


def _mouth_gap(points: np.ndarray) -> float:
    """The inner-lip gap over the inter-ocular distance (signed)."""
    return float(keypoints.mouth_opening(points)) * float(keypoints.face_size(points)) / _interocular(points)


def _interocular(points: np.ndarray) -> float:
    return max(float(np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))), 1e-6)


def _soft_mask(shape: tuple[int, int], polygons, feather: float) -> np.ndarray:
    """float32 `[h, w]` in [0, 1]: the polygons (lists of `[k, 2]` pixel points) anti-aliased
    and blurred by `feather` pixels, so that painted parts have no hard edge."""
    h, w = shape
    image = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(image)
    for polygon in polygons:
        draw.polygon([tuple(p) for p in ((np.asarray(polygon) + 0.5) * _SUPERSAMPLE - 0.5).tolist()], fill=255)
    mask = np.asarray(image.reduce(_SUPERSAMPLE), np.float32) / 255.0
    return scipy.ndimage.gaussian_filter(mask, feather) if feather > 0 else mask


def _median_colour(photo: np.ndarray, points: np.ndarray, radius: int = 1) -> np.ndarray:
    h, w = photo.shape[:2]
    picks = [photo[min(max(int(round(y)) + dy, 0), h - 1), min(max(int(round(x)) + dx, 0), w - 1)]
             for x, y in points for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    return np.median(np.asarray(picks, np.float32), 0)


CUBIC_A = -0.75  # the sharper of the usual bicubic kernels (OpenCV's); -0.5 is Catmull-Rom


def _cubic_weights(t):
    """The 4 Keys-cubic weights of taps at offsets -1, 0, 1, 2 for fractions `t`."""
    a = CUBIC_A
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1  # noqa: E731  |d| <= 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # noqa: E731  1 < |d| < 2
    return far(1 + t), near(t), near(1 - t), far(2 - t)


@functools.partial(jax.jit, static_argnames=("box_shape", "source_width"))
def _warp_region(source, ids, table, *, field_x, field_y, box_x, box_y, mask, photo, box_shape, source_width):
    """The warped box uint8 `[h, w, 3]`: each pixel sampled (bicubic) from `source`
    (float32 `[rh * rw, 3]`, the padded region) at its triangle's affine image, the
    displacements computed on the field grid (`ids [gh, gw]`, `table [1 + n, 6]`) and
    upsampled; blended into the `photo` box by `mask [h, w, 1]`."""
    coefficients = table[ids]
    x, y = field_x[None, :], field_y[:, None]
    dx = x * (coefficients[..., 0] - 1) + y * coefficients[..., 2] + coefficients[..., 4]
    dy = x * coefficients[..., 1] + y * (coefficients[..., 3] - 1) + coefficients[..., 5]
    if ids.shape != box_shape:  # displacements are smooth: bilinear is enough
        dx, dy = jax.image.resize(dx, box_shape, "linear"), jax.image.resize(dy, box_shape, "linear")
    source_height = source.shape[0] // source_width
    # Bicubic (Keys, a = CUBIC_A): bilinear taps at a half-pixel offset would halve the
    # photo's fine detail; the source is padded by 2 pixels so the 4 x 4 taps stay inside.
    x = jnp.clip(box_x[None, :] + dx, 1, source_width - 3.001)
    y = jnp.clip(box_y[:, None] + dy, 1, source_height - 3.001)
    ix, iy = jnp.floor(x).astype(jnp.int32), jnp.floor(y).astype(jnp.int32)
    wx, wy = _cubic_weights(x - ix), _cubic_weights(y - iy)
    sampled = 0.0
    for j in range(4):
        row = (iy + (j - 1)) * source_width + ix
        across = sum(wx[i][..., None] * source[row + (i - 1)] for i in range(4))
        sampled = sampled + wy[j][..., None] * across
    blended = photo + mask * (sampled - photo)
    return jnp.clip(jnp.round(blended), 0, 255).astype(jnp.uint8)


def reflect_pad(photo: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The photo's pixels in `box` (x0, y0, x1, y1; may leave the photo), reflected where it
    leaves the photo (never black, never a smear of the edge row)."""
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = box
    pads = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
    inside = photo[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    mode = "reflect" if min(inside.shape[:2]) > 1 else "edge"
    return np.pad(inside, pads, mode=mode)


class PhotoWarp:
    """The photo's face region warped so that its landmarks land on each frame's keypoints.

    Everything fixed per photo is prepared once: the anchors, the region (the outer ring's
    box, reflected where it leaves the photo), the triangle map's resolution, the paste
    mask, and the colours painting borrows from the photo (lips, skin). `render` returns
    the whole frame; only pixels inside the outer ring can differ from the photo.
    """

    def __init__(self, photo: np.ndarray, landmarks: np.ndarray, *, max_face_px: float = DEFAULT_MAX_FACE_PX):
        self.photo = np.ascontiguousarray(photo, np.uint8)
        self.landmarks = np.asarray(landmarks, np.float64).reshape(keypoints.NUM_POINTS, 2)
        height, width = self.photo.shape[:2]
        self._triangles, self._mouth_triangles, self._eye_triangles = warp_triangles()
        matrix, offset = _similarity(keypoints.FRONTAL_TEMPLATE[_STABLE], self.landmarks[_STABLE])
        self._anchors = _ring_layout() @ matrix.T + offset
        self._follow = np.repeat([follow for _, follow in RINGS], _RING_POINTS)[:, None]
        self._source_vertices = np.concatenate([self.landmarks, self._anchors])
        self._down = matrix @ np.array([0.0, 1.0]) / np.linalg.norm(matrix @ np.array([0.0, 1.0]))
        self.face_px = 2.0 * float(keypoints.face_size(self.landmarks))  # ~ the jaw's width

        # The region: the outer ring's box; the part inside the photo is what can change.
        x0, y0 = np.floor(self._anchors.min(0)).astype(int) - 1
        x1, y1 = np.ceil(self._anchors.max(0)).astype(int) + 2
        self.region = (int(x0), int(y0), int(x1), int(y1))
        pad = 2  # the bicubic taps' reach beyond the region
        source = reflect_pad(self.photo, (x0 - pad, y0 - pad, x1 + pad, y1 + pad))
        self._source = jnp.asarray(source.reshape(-1, 3), jnp.float32)
        self.box = (max(0, int(x0)), max(0, int(y0)), min(width, int(x1)), min(height, int(y1)))
        bx0, by0, bx1, by1 = self.box
        if bx0 >= bx1 or by0 >= by1:
            raise ValueError("the face region lies outside the photo")
        self._box_shape = (by1 - by0, bx1 - bx0)
        self.field_scale = min(1.0, max_face_px / max(self.face_px, 1.0))
        self._field_shape = tuple(max(2, int(np.ceil(n * self.field_scale))) for n in self._box_shape)
        fy, fx = (np.asarray(self._box_shape) / np.asarray(self._field_shape))  # photo pixels per field pixel
        self._field_x = (bx0 + (np.arange(self._field_shape[1]) + 0.5) * fx - 0.5).astype(np.float32)
        self._field_y = (by0 + (np.arange(self._field_shape[0]) + 0.5) * fy - 0.5).astype(np.float32)
        self._to_field = np.array([1 / fx, 1 / fy])

        outer = self._anchors[-_RING_POINTS:]
        inset = outer + 0.03 * (self._anchors[:_RING_POINTS] - outer)  # a hair inside the fixed ring
        mask = _soft_mask(self._box_shape, [inset - [bx0, by0]], feather=1.0)[..., None]
        # What `_warp_region` needs besides the frame's triangles: box positions in the
        # padded region's pixels, the paste mask, the photo under the box.
        self._fixed = dict(field_x=jnp.asarray(self._field_x), field_y=jnp.asarray(self._field_y),
                           box_x=jnp.arange(bx0 - x0 + pad, bx1 - x0 + pad, dtype=jnp.float32),
                           box_y=jnp.arange(by0 - y0 + pad, by1 - y0 + pad, dtype=jnp.float32),
                           mask=jnp.asarray(mask),
                           photo=jnp.asarray(self.photo[by0:by1, bx0:bx1], jnp.float32),
                           box_shape=self._box_shape, source_width=source.shape[1])
        self._feather = float(np.clip(0.008 * self.face_px, 0.4, 3.0))
        self._photo_gap = _mouth_gap(self.landmarks)
        self._photo_apertures = [_aperture(self.landmarks, eye) for eye in _EYES]
        self._eye_shapes = [self._eye_coordinates(self.landmarks, eye) for eye in _EYES]
        self._colours = self._photo_colours()
        self._canvas = self.photo.copy()

    # ------------------------------------------------------------------ what the photo lends

    def _photo_colours(self) -> dict:
        """Lip, skin, cavity and teeth colours `[3]` float, from the photo's own pixels
        (a grey photo gets grey ones)."""
        p = self.landmarks
        lips = _median_colour(self.photo, 0.5 * (p[[56, 57, 58]] + p[[65, 66, 67]]))
        skin = _median_colour(self.photo, 0.5 * (p[[31, 35, 2, 14]] + p[[48, 54, 30, 30]]), radius=2)
        # Teeth: near white, tinted a little by the face's own colour balance.
        teeth = 0.82 * 228.0 + 0.18 * skin
        cavity = 0.22 * lips + 0.04 * skin
        return {"lips": lips, "skin": skin, "teeth": teeth, "cavity": cavity}

    @staticmethod
    def _eye_coordinates(points: np.ndarray, eye: np.ndarray) -> np.ndarray:
        """The eye's six points `[6, 2]` as (along, across) in units of its corner distance."""
        corner, along = _eye_frame(points, eye)
        across = np.array([-along[1], along[0]])
        relative = points[eye] - corner
        return np.stack([relative @ along, relative @ across], -1) / max(float(along @ along), 1e-9)

    def _open_eye(self, points: np.ndarray, k: int) -> np.ndarray:
        """Where eye `k`'s six points would be, at the photo's lid opening, on `points`' corners."""
        corner, along = _eye_frame(points, _EYES[k])
        across = np.array([-along[1], along[0]])
        shape = self._eye_shapes[k]
        return corner + shape[:, :1] * along + shape[:, 1:] * across

    # ------------------------------------------------------------------ one frame

    def render(self, points: np.ndarray) -> np.ndarray:
        """The frame uint8 `[H, W, 3]` whose face has keypoints `points [68, 2]` (photo pixels).

        The same buffer every call, valid until the next one: write it or copy it.
        """
        points = np.asarray(points, np.float64).reshape(keypoints.NUM_POINTS, 2)
        matrix, offset = _similarity(self.landmarks[_STABLE], points[_STABLE])
        anchors = self._anchors + self._follow * (self._anchors @ matrix.T + offset - self._anchors)
        target = np.concatenate([points, anchors])
        affines, drawn = _affines(self._source_vertices, target, self._triangles)
        for k, eye in enumerate(_EYES):
            closure = float(np.clip(1.0 - _aperture(points, eye) / max(self._photo_apertures[k], 1e-6), 0.0, 1.0))
            if closure > 0.02:
                # A closing eye is not squashed: what is left open shows the photo's eye
                # unsquashed, and the lid above it is the photo's own lid skin, stretched
                # down by the mesh with its lash line at its lower edge.
                open_eye = np.concatenate([self._open_eye(points, k), np.ones((6, 1))], -1)
                affines[self._eye_triangles[k]] = np.linalg.lstsq(open_eye, self.landmarks[eye], rcond=None)[0]
        if _mouth_gap(points) > self._photo_gap:
            # Wider than the photo: what the photo shows between its lips (the upper teeth)
            # moves with the upper lip, the jaw opens below it (painted, `_paint_mouth`).
            upper_matrix, upper_offset = _similarity(points[60:65], self.landmarks[60:65])
            affines[self._mouth_triangles] = np.vstack([upper_matrix.T, upper_offset])
        table = np.concatenate([[[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]], affines.reshape(len(affines), 6)])
        region = np.asarray(_warp_region(self._source, jnp.asarray(self._triangle_map(target, drawn)),
                                         jnp.asarray(table, jnp.float32), **self._fixed))
        bx0, by0, bx1, by1 = self.box
        view = self._canvas[by0:by1, bx0:bx1]
        view[...] = region
        down = matrix @ self._down
        down /= max(float(np.linalg.norm(down)), 1e-9)
        self._paint_mouth(view, points, down)
        return self._canvas

    def _triangle_map(self, target: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        """int32 `[gh, gw]`: 1 + the number of the target triangle covering each field pixel
        (0 outside the mesh), drawn in the triangles' order so the face wins over anchors."""
        bx0, by0 = self.box[:2]
        ids = Image.new("I", self._field_shape[::-1], 0)
        draw = ImageDraw.Draw(ids)
        corners = (target[self._triangles] - [bx0 - 0.5, by0 - 0.5]) * self._to_field - 0.5
        for number in np.flatnonzero(drawn):
            draw.polygon([tuple(p) for p in corners[number].tolist()], fill=int(number) + 1, outline=int(number) + 1)
        return np.asarray(ids)

    # ------------------------------------------------------------------ what the photo lacks

    def _patch(self, points: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
        """The box-relative patch (x0, y0, x1, y1) around `points [k, 2]`, or None off the box."""
        bx0, by0, bx1, by1 = self.box
        x0, y0 = np.floor(points.min(0) - margin).astype(int) - [bx0, by0]
        x1, y1 = np.ceil(points.max(0) + margin).astype(int) + 1 - [bx0, by0]
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(bx1 - bx0, x1), min(by1 - by0, y1)
        return (int(x0), int(y0), int(x1), int(y1)) if x0 < x1 and y0 < y1 else None

    def _paint_mouth(self, region: np.ndarray, points: np.ndarray, down: np.ndarray) -> None:
        """Where the lips part further than in the photo: below the photo's own gap (which
        moves with the upper lip), a mouth cavity, upper teeth where the photo showed none,
        and a dimmer row of lower teeth."""
        interocular = _interocular(points)
        strength = float(np.clip((_mouth_gap(points) - self._photo_gap - 0.005) / 0.03, 0.0, 1.0))
        lip = points[_INNER_LIP]
        patch = self._patch(lip, 3 + 2 * self._feather)
        if strength <= 0 or patch is None:
            return
        x0, y0, x1, y1 = patch
        local = lip - [self.box[0] + x0, self.box[1] + y0]
        shape = (y1 - y0, x1 - x0)
        gap = max(float(((local[[7, 6, 5]] - local[[1, 2, 3]]) @ down).mean()), 0.0)
        width = float(np.linalg.norm(local[4] - local[0]))
        mouth = _soft_mask(shape, [local], 0.5 * self._feather)
        band = lambda curve, start, end: [np.concatenate([curve + down * start, (curve + down * end)[::-1]])]  # noqa: E731
        # Teeth stop short of the corners, where the lips close over them.
        upper = np.stack([0.5 * (local[0] + local[1]), local[1], local[2], local[3], 0.5 * (local[3] + local[4])])
        lower = np.stack([0.5 * (local[4] + local[5]), local[5], local[6], local[7], 0.5 * (local[7] + local[0])])
        kept = max(self._photo_gap, 0.0) * interocular  # the photo's own interior, in this frame's pixels
        photo_band = _soft_mask(shape, band(local[[0, 1, 2, 3, 4]], -1.0, kept), 0.5 * self._feather) if kept > 0.5 \
            else np.zeros(shape, np.float32)
        upper_band = min(0.4 * gap, 0.09 * width)
        upper_teeth = (_soft_mask(shape, band(upper, kept, upper_band), 0.4 * self._feather) if upper_band > kept
                       else np.zeros(shape, np.float32))
        lower_teeth = _soft_mask(shape, band(lower, 0.0, -min(0.18 * gap, 0.04 * width)), 0.4 * self._feather)
        visible = float(np.clip(gap / (0.12 * interocular + 1e-6), 0.0, 1.0))
        teeth = np.clip(0.9 * visible * upper_teeth + 0.55 * visible * lower_teeth, 0, 1)[..., None]
        # Darker towards the corners, where less light reaches.
        centre = local[[0, 4]].mean(0)
        side = np.abs((np.arange(shape[1]) - centre[0]) / max(0.5 * width, 1.0))[None, :, None]
        light = np.clip(1.0 - 0.45 * side**2, 0.35, 1.0)
        colours = self._colours
        painted = (colours["cavity"] * (1 - teeth) + colours["teeth"] * teeth) * light
        alpha = strength * (mouth * (1 - photo_band))[..., None]
        view = region[y0:y1, x0:x1].astype(np.float32)
        view += alpha * (painted - view)
        region[y0:y1, x0:x1] = np.clip(view + 0.5, 0, 255).astype(np.uint8)
