"""Drawing talking-head frames from 68 keypoints.

Both renderers share one convention: keypoints are float `[68, 2]` in pixels of the
`size x size` output (x right, y down, pixel centres at integer coordinates), frames
are uint8 `[size, size, 3]`.

* `render_face` draws a stylised head (hair, shaded skin, eyes with lids, brows, nose,
  lips, an open mouth with teeth, neck and shoulders) with PIL on a supersampled
  canvas. Every shape is placed from the points, so head pose, identity and
  expression come from the keypoints alone.
* `PhotoTexture` warps a real face photograph piecewise-affinely onto the keypoints and
  paints what a closed-mouth, open-eyed photo cannot show: the inside of an open mouth
  and closed eyelids.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import Delaunay

from t2v.keypoints import FRONTAL_TEMPLATE, NUM_POINTS

Colour = tuple[int, int, int]

# Points that barely move with expression (jaw, nose, eye corners): pose fits use them.
_STABLE = np.array([*range(0, 17), *range(27, 36), 36, 39, 42, 45])
_RIGHT_EYE = np.arange(36, 42)
_LEFT_EYE = np.arange(42, 48)
_INNER_LIP = np.arange(60, 68)
# Light from the upper left, in front of the face (image frame: x right, y down, z out).
_LIGHT = np.array([-0.38, -0.5, 0.78]) / np.linalg.norm([-0.38, -0.5, 0.78])


# --------------------------------------------------------------------------- geometry


def _check_keypoints(keypoints: np.ndarray) -> np.ndarray:
    points = np.asarray(keypoints, np.float64)
    if points.shape != (NUM_POINTS, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"keypoints must be finite [{NUM_POINTS}, 2] pixels, got shape {points.shape}")
    return points


@dataclasses.dataclass(frozen=True)
class _Similarity:
    """`x -> x @ matrix.T + offset` with `matrix` a scaled rotation (points `[..., 2]`)."""

    matrix: np.ndarray
    offset: np.ndarray

    @classmethod
    def fit(cls, source: np.ndarray, target: np.ndarray, *, rotate: bool = True) -> "_Similarity":
        """Least-squares similarity taking `source` `[n, 2]` onto `target` `[n, 2]`.

        With `rotate=False` it keeps only the scale and the translation: the frame then
        follows the head's position and size but not its roll, as a body or camera would.
        """
        source_mean, target_mean = source.mean(0), target.mean(0)
        a = (source - source_mean) @ np.array([1, 1j])
        b = (target - target_mean) @ np.array([1, 1j])
        # In the complex plane the best similarity is z -> w z + c, w = <a, b> / <a, a>.
        w = np.vdot(a, b) / np.vdot(a, a)
        if not rotate:
            w = abs(w)
        matrix = np.array([[w.real, -w.imag], [w.imag, w.real]])
        return cls(matrix, target_mean - source_mean @ matrix.T)

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix))))

    def __call__(self, points) -> np.ndarray:
        return np.asarray(points, np.float64) @ self.matrix.T + self.offset

    def inverse(self) -> "_Similarity":
        inverse = np.linalg.inv(self.matrix)
        return _Similarity(inverse, -self.offset @ inverse.T)


def _ellipse(centre, radii, start=0.0, stop=2 * np.pi, n=24) -> np.ndarray:
    """Points `[n, 2]` on an axis-aligned ellipse arc (angles in the y-down frame)."""
    angle = np.linspace(start, stop, n)
    return np.asarray(centre) + np.stack([np.cos(angle), np.sin(angle)], -1) * radii


def _offset_polyline(points: np.ndarray, widths) -> np.ndarray:
    """A closed outline `[2n, 2]` of a stroke along `points` `[n, 2]` with per-point widths."""
    tangent = np.gradient(points, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
    half = 0.5 * np.asarray(widths, np.float64)[:, None] * normal
    return np.concatenate([points + half, (points - half)[::-1]])


def _flat(points: np.ndarray) -> list[float]:
    return np.asarray(points, np.float64).ravel().tolist()


def _scaled(colour, factor: float, alpha: int | None = None) -> tuple[int, ...]:
    rgb = tuple(int(np.clip(c * factor, 0, 255)) for c in colour)
    return rgb if alpha is None else (*rgb, alpha)


def _mix(a, b, t: float) -> Colour:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


def _eye_aperture(points: np.ndarray, eye: np.ndarray) -> float:
    """Lid gap over eye width: about 0.3 open, 0 when the lids meet."""
    e = points[eye]
    gap = 0.5 * (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4]))
    return float(gap / (np.linalg.norm(e[3] - e[0]) + 1e-9))


def _mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap over mouth width: 0 closed, about 0.3 wide open."""
    gap = np.linalg.norm(points[[61, 62, 63]] - points[[67, 66, 65]], axis=-1).mean()
    return float(gap / (np.linalg.norm(points[54] - points[48]) + 1e-9))


# ------------------------------------------------------------------------- appearance

# Skin tones from very light to very dark; a random face picks a point along them.
_SKIN_TONES = np.array([(250, 222, 200), (238, 196, 166), (224, 172, 135), (198, 140, 100),
                        (160, 106, 72), (120, 76, 50), (84, 54, 38)], np.float64)
_HAIR_COLOURS = [(22, 18, 16), (45, 30, 22), (85, 55, 35), (125, 80, 45), (150, 70, 40),
                 (200, 165, 105), (225, 200, 150), (160, 155, 150), (70, 65, 62)]
_IRIS_COLOURS = [(70, 45, 25), (100, 65, 35), (120, 95, 50), (80, 110, 140), (70, 120, 90),
                 (105, 120, 125), (45, 30, 20)]


@dataclasses.dataclass(frozen=True)
class Appearance:
    """Colours and hair of one synthetic person (RGB 0..255)."""

    skin: Colour
    lips: Colour
    iris: Colour
    brows: Colour
    hair: Colour
    background: Colour
    sclera: Colour = (242, 238, 232)
    teeth: Colour = (236, 230, 214)
    mouth_interior: Colour = (36, 11, 15)
    shirt: Colour = (60, 80, 120)
    hair_length: float = 0.3  # 0: cropped, 1: shoulder length
    hairline: float = 1.0  # scales the hairline's height above the face centre (1: one jaw half-width)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Appearance":
        """A plausible person: skin from light to dark, natural hair and iris colours."""
        tone = rng.uniform(0, len(_SKIN_TONES) - 1)
        skin_rgb = np.array([np.interp(tone, np.arange(len(_SKIN_TONES)), channel) for channel in _SKIN_TONES.T])
        skin_rgb = skin_rgb * rng.uniform(0.95, 1.05) + rng.normal(0, 4, 3)
        skin = tuple(int(c) for c in np.clip(skin_rgb, 0, 255))
        lip_tint = (190, 80, 90) if tone < 3 else (120, 50, 55)
        lips = _scaled(_mix(skin, lip_tint, rng.uniform(0.3, 0.55)), rng.uniform(0.85, 0.95))
        # Darker skin goes mostly with dark hair and eyes; lighter skin with anything.
        dark_only = tone > 3.5 and rng.random() < 0.9
        hair = _HAIR_COLOURS[rng.integers(0, 3 if dark_only else len(_HAIR_COLOURS))]
        iris = _IRIS_COLOURS[rng.choice([0, 1, 6]) if dark_only else rng.integers(0, len(_IRIS_COLOURS))]
        brows = _scaled(hair, 0.75 if sum(hair) > 300 else 0.95)
        background = _hsv_colour(rng.uniform(0, 1), rng.uniform(0.1, 0.45), rng.uniform(0.35, 0.9))
        shirt = _hsv_colour(rng.uniform(0, 1), rng.uniform(0.1, 0.7), rng.uniform(0.15, 0.85))
        return cls(
            skin=skin, lips=lips, iris=iris, brows=brows, hair=hair, background=background,
            teeth=_scaled((236, 230, 214), rng.uniform(0.9, 1.02)),
            mouth_interior=_scaled((36, 11, 15), rng.uniform(0.7, 1.1)),
            shirt=shirt, hair_length=float(rng.uniform(0, 1)), hairline=float(rng.uniform(0.85, 1.15)),
        )


def _hsv_colour(hue: float, saturation: float, value: float) -> Colour:
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), int(saturation * 255), int(value * 255))).convert("RGB")
    return rgb.getpixel((0, 0))


# ------------------------------------------------------------------------ render_face


@functools.lru_cache(maxsize=32)
def _background(size: int, colour: Colour) -> Image.Image:
    """A studio backdrop: `colour`, lighter behind the head, darker towards the corners."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    glow = 1.12 - 0.35 * ((x - 0.45) ** 2 + (y - 0.35) ** 2) - 0.1 * y
    return Image.fromarray(np.clip(np.array(colour) * glow[..., None], 0, 255).astype(np.uint8))


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> np.ndarray:
    """Pixel centres `[size, size, 2]` as (x, y)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([x, y], -1)


class _FacePainter:
    """Draws one head on a supersampled canvas; shapes are laid out in the template's face
    frame (jaw half-width 1, y down) and mapped by the head's fitted similarity."""

    def __init__(self, points: np.ndarray, canvas_size: int, appearance: Appearance):
        self.p = points
        self.look = appearance
        self.head = _Similarity.fit(FRONTAL_TEMPLATE[_STABLE], points[_STABLE])
        self.body = _Similarity.fit(FRONTAL_TEMPLATE[_STABLE], points[_STABLE], rotate=False)
        self.unit = self.head.scale  # canvas pixels per face half-width
        self.down = self.head.matrix @ np.array([0.0, 1.0]) / self.unit
        # The skull is anchored on the jaw ends rather than on the nose, so that a turned
        # head keeps its hair and ears around the skull while the features slide across.
        self.temples_mid = (points[0] + points[16]) / 2
        self.half_chord = (points[16] - points[0]) / 2
        self.canvas = _background(canvas_size, appearance.background).copy()
        self.draw = ImageDraw.Draw(self.canvas, "RGBA")
        self.silhouette = Image.new("L", (canvas_size, canvas_size), 0)
        self.silhouette_draw = ImageDraw.Draw(self.silhouette)

    def skull(self, q) -> np.ndarray:
        """Template face-frame coordinates `[n, 2]` placed on the skull spanned by the temples."""
        q = np.asarray(q, np.float64)
        template_temple = FRONTAL_TEMPLATE[16].astype(np.float64)
        return (self.temples_mid + (q[:, :1] / template_temple[0]) * self.half_chord
                + (q[:, 1:] - template_temple[1]) * self.unit * self.down)

    def fill(self, polygon: np.ndarray, colour, *, silhouette: bool = False) -> None:
        self.draw.polygon(_flat(polygon), fill=colour)
        if silhouette:
            self.silhouette_draw.polygon(_flat(polygon), fill=255)

    def line(self, points: np.ndarray, colour, width: float) -> None:
        self.draw.line(_flat(points), fill=colour, width=max(1, int(round(width))), joint="curve")

    def paint(self) -> None:
        self.back_hair()
        self.shoulders()
        self.ears()
        self.face()
        self.front_hair()
        self.eye(_RIGHT_EYE)
        self.eye(_LEFT_EYE)
        self.brow(np.arange(17, 22), inner_last=True)
        self.brow(np.arange(22, 27), inner_last=False)
        self.nose()
        self.mouth()

    # Hair is an ellipse over the skull; its length lets it fall behind the neck.
    def _hair_outline(self, bulge: float) -> np.ndarray:
        return _ellipse((0.0, -0.38), (1.13 + bulge, 1.1 + bulge), np.pi, 2 * np.pi, 25)

    def back_hair(self) -> None:
        look = self.look
        top = self._hair_outline(0.03)
        bottom = -0.35 + 2.0 * look.hair_length
        flare = 0.12 * look.hair_length
        right = [[1.16 + flare, bottom - 0.1], [1.0 + flare, bottom]]
        left = [[-1.0 - flare, bottom], [-1.16 - flare, bottom - 0.1]]
        outline = np.concatenate([left, top, right])
        self.fill(self.skull(outline), _scaled(look.hair, 0.8), silhouette=True)

    def shoulders(self) -> None:
        look = self.look
        # The neck joins the head under the jaw and the body below: the body does not roll.
        neck = np.concatenate([self.head([[-0.45, 0.3], [0.45, 0.3]]),
                               self.body([[0.5, 2.2], [-0.5, 2.2]])])
        self.fill(neck, _scaled(look.skin, 0.88), silhouette=True)
        shirt = self.body(np.array([[-2.6, 5.0], [-2.5, 2.4], [-2.25, 1.95], [-1.7, 1.72], [-0.95, 1.55],
                                    [-0.52, 1.42], [-0.25, 1.62], [0.0, 1.78], [0.25, 1.62], [0.52, 1.42],
                                    [0.95, 1.55], [1.7, 1.72], [2.25, 1.95], [2.5, 2.4], [2.6, 5.0]]) - [0, 0.12])
        self.fill(shirt, look.shirt)
        # Folds at the collar and a darker side away from the light.
        self.line(self.body([[-0.52, 1.3], [0.0, 1.66], [0.52, 1.3]]), _scaled(look.shirt, 0.7), 0.06 * self.unit)
        self.fill(self.body([[1.7, 1.6], [2.25, 1.83], [2.5, 2.28], [2.6, 5.0], [1.9, 5.0], [1.95, 2.18]]),
                  (0, 0, 0, 45))
        # The chin casts a shadow on the upper neck.
        top, bottom = neck[:2], neck[[3, 2]]
        self.fill(np.concatenate([top, (0.6 * top + 0.4 * bottom)[::-1]]), _scaled(look.skin, 0.4, 110))

    def ears(self) -> None:
        skin = self.look.skin
        for side in (-1, 1):
            ear = _ellipse((side * 0.97, -0.1), (0.13, 0.24))
            self.fill(self.skull(ear), _scaled(skin, 0.92), silhouette=True)
            fold = _ellipse((0.0, 0.0), (0.06, 0.15), -np.pi / 2, np.pi / 2, 10) * [side, 1] + [side * 0.99, -0.1]
            self.line(self.skull(fold), _scaled(skin, 0.65, 150), 0.03 * self.unit)

    def face(self) -> None:
        p, look = self.p, self.look
        # The forehead is a half ellipse over the temples (jaw points 0 and 16).
        angle = np.linspace(0, np.pi, 15)[1:-1, None]
        up = -self.down * self.unit * 1.02
        forehead = self.temples_mid + self.half_chord * np.cos(angle) + up * np.sin(angle)
        self.fill(np.concatenate([p[0:17], forehead]), look.skin, silhouette=True)
        for side in (-1, 1):  # cheeks: stacked translucent ellipses make a soft blush
            for grow in (1.0, 0.75, 0.5):
                self.fill(self.head(_ellipse((side * 0.5, 0.2), (0.22 * grow, 0.14 * grow))), (*look.lips, 12))

    def front_hair(self) -> None:
        look = self.look
        h = look.hairline
        hairline = np.array([[1.0, -0.2], [0.96, -0.55], [0.82, -0.85 * h], [0.5, -1.0 * h],
                             [0.12, -0.98 * h], [-0.08, -1.06 * h], [-0.45, -1.0 * h],
                             [-0.8, -0.88 * h], [-0.96, -0.55], [-1.0, -0.2]])
        outline = np.concatenate([hairline, self._hair_outline(0.0)[1:-1]])
        self.fill(self.skull(outline), look.hair, silhouette=True)
        # A few strands catching the light.
        for start in (-0.5, -0.1, 0.3):
            strand = _ellipse((start + 0.25, -0.6), (0.45, 0.62), 1.15 * np.pi, 1.45 * np.pi, 6)
            self.line(self.skull(strand), _scaled(look.hair, 1.35, 70), 0.035 * self.unit)

    def eye(self, index: np.ndarray) -> None:
        look, e = self.look, self.p[index]
        width = float(np.linalg.norm(e[3] - e[0]))
        origin = np.floor(e.min(0) - 2).astype(int)
        extent = np.ceil(e.max(0) + 2).astype(int) - origin
        patch = Image.new("RGB", tuple(extent), look.sclera)
        pd = ImageDraw.Draw(patch, "RGBA")
        local = e - origin
        centre = local.mean(0)
        iris_r, pupil_r = 0.27 * width, 0.12 * width
        pd.ellipse(_flat([centre - iris_r, centre + iris_r]), fill=look.iris,
                   outline=_scaled(look.iris, 0.55), width=max(1, int(0.04 * width)))
        pd.ellipse(_flat([centre - pupil_r, centre + pupil_r]), fill=(14, 12, 12))
        glint = centre + np.array([-0.35, -0.4]) * iris_r
        pd.ellipse(_flat([glint - 0.06 * width, glint + 0.06 * width]), fill=(255, 255, 255, 220))
        pd.line(_flat(local[0:4]), fill=(40, 20, 20, 70), width=max(1, int(0.16 * width)))  # lid shadow
        mask = Image.new("L", patch.size, 0)
        ImageDraw.Draw(mask).polygon(_flat(local), fill=255)
        self.canvas.paste(patch, tuple(origin), mask)
        # Lids: a crease above, lashes on the upper lid, a soft lower lid.
        crease = e[0:4] - self.down * 0.2 * width
        crease[[0, 3]] = e[[0, 3]] - self.down * 0.05 * width
        self.line(crease, _scaled(look.skin, 0.7, 140), 0.05 * width)
        self.line(e[[3, 4, 5, 0]], _scaled(look.skin, 0.7, 170), 0.05 * width)
        self.line(e[0:4], (25, 18, 18), 0.09 * width)

    def brow(self, index: np.ndarray, *, inner_last: bool) -> None:
        points = self.p[index]
        widths = np.linspace(0.035, 0.09, 5) * self.unit
        self.fill(_offset_polyline(points, widths if inner_last else widths[::-1]), self.look.brows)

    def nose(self) -> None:
        p, skin, unit = self.p, self.look.skin, self.unit
        # The flank of the nose away from the light is in shadow; the ridge catches light.
        away = -np.sign(_LIGHT[0]) * self.head.matrix @ np.array([1.0, 0.0])  # one face unit
        wing_away = 35 if _LIGHT[0] < 0 else 31
        flank = np.stack([p[28] + away * 0.03, p[30] + away * 0.05, p[wing_away], p[30] + away * 0.15,
                          p[28] + away * 0.09])
        self.fill(flank, _scaled(skin, 0.5, 40))
        self.line(p[28:31] - away * 0.02, _scaled(skin, 1.3, 60), 0.03 * unit)
        tip = p[30] + self.down * 0.02 * unit - away * 0.02
        radii = np.array([0.05, 0.04]) * unit
        self.draw.ellipse(_flat([tip - radii, tip + radii]), fill=_scaled(skin, 1.3, 60))
        # Shadow under the tip, wings and nostrils.
        base = p[31:36]
        self.fill(np.concatenate([base, (base + self.down * 0.07 * unit)[::-1]]), _scaled(skin, 0.5, 80))
        for wing, inner in ((31, 32), (35, 34)):
            curve = np.stack([p[wing] - self.down * 0.1 * unit + (p[wing] - p[inner]) * 0.3,
                              p[wing] + (p[wing] - p[inner]) * 0.35, p[wing], p[inner]])
            self.line(curve, _scaled(skin, 0.6, 150), 0.03 * unit)
        for a, b in ((31, 32), (35, 34)):
            centre = 0.45 * p[a] + 0.55 * p[b] - self.down * 0.015 * unit
            radii = np.array([0.05, 0.03]) * unit
            self.draw.ellipse(_flat([centre - radii, centre + radii]), fill=_scaled(skin, 0.35))

    def mouth(self) -> None:
        p, look, unit = self.p, self.look, self.unit
        self.fill(p[[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]], _scaled(look.lips, 0.85))
        self.fill(p[[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]], look.lips)
        shine = 0.5 * (p[57] + p[66])
        radii = np.array([0.09, 0.02]) * unit
        self.draw.ellipse(_flat([shine - radii, shine + radii]), fill=(255, 255, 255, 28))
        dimple = p[57] + self.down * 0.07 * unit
        radii = np.array([0.11, 0.04]) * unit
        self.draw.ellipse(_flat([dimple - radii, dimple + radii]), fill=_scaled(look.skin, 0.5, 35))
        _paint_mouth_interior(self.canvas, p[_INNER_LIP], self.down, unit, look.mouth_interior, look.teeth,
                              look.lips)
        self.line(p[60:65], _scaled(look.lips, 0.5, 200), 0.025 * unit)  # where the lips meet
        for corner in (48, 54):
            radius = 0.015 * unit
            self.draw.ellipse(_flat([p[corner] - radius, p[corner] + radius]), fill=_scaled(look.lips, 0.5, 90))


def _paint_mouth_interior(canvas: Image.Image, inner_lip: np.ndarray, down: np.ndarray, unit: float,
                          interior: Colour, teeth: Colour, lips: Colour, alpha: float = 1.0) -> None:
    """Fills the inner-lip polygon `[8, 2]` (canvas pixels) with a dark mouth, teeth and a tongue."""
    origin = np.floor(inner_lip.min(0) - 2).astype(int)
    extent = np.ceil(inner_lip.max(0) + 2).astype(int) - origin
    local = inner_lip - origin
    patch = Image.new("RGB", tuple(extent), interior)
    pd = ImageDraw.Draw(patch, "RGBA")
    tongue_centre = local[[5, 6, 7]].mean(0) - down * 0.02 * unit
    tongue_radii = np.array([0.14, 0.06]) * unit
    pd.ellipse(_flat([tongue_centre - tongue_radii, tongue_centre + tongue_radii]), fill=_mix(interior, lips, 0.3))
    # Teeth show a little of their height: most of a wide-open mouth stays dark.
    gap = float(np.linalg.norm(local[[1, 2, 3]] - local[[7, 6, 5]], axis=-1).mean())
    upper_height, lower_height = min(0.06 * unit, 0.25 * gap), min(0.04 * unit, 0.12 * gap)
    # The rows stop short of the corners, where the lips close over them.
    upper = np.stack([0.5 * (local[0] + local[1]), local[1], local[2], local[3], 0.5 * (local[3] + local[4])])
    upper_teeth = np.concatenate([upper, (upper + down * upper_height)[::-1]])
    pd.polygon(_flat(upper_teeth), fill=_scaled(teeth, 0.9))
    for between in (0.5 * (upper[1] + upper[2]), upper[2], 0.5 * (upper[2] + upper[3])):
        pd.line(_flat([between, between + down * upper_height]), fill=_scaled(teeth, 0.75),
                width=max(1, int(0.012 * unit)))
    lower = local[[5, 6, 7]]
    lower_teeth = np.concatenate([lower, (lower - down * lower_height)[::-1]])
    pd.polygon(_flat(lower_teeth), fill=_scaled(teeth, 0.7))
    # Darker towards the corners of the mouth, where less light reaches.
    for corner, inner in ((0, 1), (4, 3)):
        pd.polygon(_flat([local[corner], local[inner] + down * 0.08 * unit, local[inner] - down * 0.08 * unit]),
                   fill=(0, 0, 0, 90))
    mask = Image.new("L", patch.size, 0)
    ImageDraw.Draw(mask).polygon(_flat(local), fill=int(255 * alpha))
    canvas.paste(patch, tuple(origin), mask)


def _shading(size: int, head: _Similarity) -> np.ndarray:
    """Lambertian light on an ellipsoid enclosing the head: `[size, size]` gain around 1."""
    to_face = head.inverse()
    grid = _pixel_grid(size)
    q = grid @ to_face.matrix.T.astype(np.float32) + to_face.offset.astype(np.float32)
    u = (q[..., 0] - 0.0) / 1.12
    v = (q[..., 1] + 0.3) / 1.35
    r2 = u * u + v * v
    rim = np.minimum(r2, 1.0)
    inv_r = 1.0 / np.sqrt(np.maximum(r2 / rim, 1.0))  # normalises the normal beyond the rim
    nz = np.sqrt(1.0 - rim)
    rotation = head.matrix / head.scale
    light_xy = rotation.T @ _LIGHT[:2]  # the light, seen in the face frame
    lambert = np.maximum(0.0, (u * light_xy[0] + v * light_xy[1]) * inv_r + nz * _LIGHT[2])
    gain = 0.7 + 0.42 * lambert
    # Fade the modelling out beyond the head so the body keeps its own flat light.
    fade = np.clip((1.3 - np.sqrt(r2)) / 0.3, 0.0, 1.0)
    return 1.0 + fade * (gain - 1.0)


def render_face(keypoints: np.ndarray, size: int, appearance: Appearance, *, supersample: int = 2) -> np.ndarray:
    """A stylised talking-head frame.

    Args:
      keypoints: float `[68, 2]`, pixels of the output frame.
      size: output width and height.
      appearance: colours and hair of the person.
      supersample: canvas oversampling for anti-aliasing (1 disables it).

    Returns:
      uint8 `[size, size, 3]`.
    """
    points = _check_keypoints(keypoints)
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    painter = _FacePainter((points + 0.5) * supersample - 0.5, size * supersample, appearance)
    painter.paint()
    canvas, silhouette = painter.canvas, painter.silhouette
    if supersample > 1:
        canvas, silhouette = canvas.reduce(supersample), silhouette.reduce(supersample)
    head = _Similarity.fit(FRONTAL_TEMPLATE[_STABLE], points[_STABLE])
    weight = np.asarray(silhouette, np.float32) * (1 / 255)
    gain = 1.0 + weight * (_shading(size, head) - 1.0)
    frame = np.asarray(canvas, np.float32) * gain[..., None]
    return np.clip(frame, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------- PhotoTexture

# Beyond the 68 points the warp mesh has a ring that moves rigidly with the head (over
# the forehead and hair, and around the jaw) and a square frame that follows only the
# head's position and size, as a face-tracking camera would; outside the frame the
# photo is moved by that same similarity. Coordinates are in the template's face frame.
_HEAD_RING = np.concatenate([
    [[-1.05, -0.45], [-0.9, -1.0], [-0.5, -1.35], [0.0, -1.45], [0.5, -1.35], [0.9, -1.0], [1.05, -0.45]],
    (FRONTAL_TEMPLATE[1:16] - [0.0, -0.1]) * 1.3 + [0.0, -0.1],
])
_FRAME = np.concatenate([
    np.stack([np.linspace(-2.4, 2.4, 7), np.full(7, -2.3)], -1),
    np.stack([np.full(5, 2.4), np.linspace(-1.5, 1.7, 5)], -1),
    np.stack([np.linspace(2.4, -2.4, 7), np.full(7, 2.5)], -1),
    np.stack([np.full(5, -2.4), np.linspace(1.7, -1.5, 5)], -1),
])


# Painted into photos: a mouth in shadow, teeth a little greyer than in `Appearance`.
_PHOTO_MOUTH, _PHOTO_TEETH = (48, 18, 22), (214, 206, 192)


@functools.lru_cache(maxsize=1)
def _warp_triangles() -> np.ndarray:
    """Vertex indices `[triangles, 3]` into (68 points, head ring, frame).

    The topology is fixed once, on the template with its mouth open, so that no triangle
    bridges the lips whatever the photo's or the frame's mouth does.
    """
    layout = FRONTAL_TEMPLATE.astype(np.float64).copy()
    layout[[65, 66, 67]] += [0.0, 0.06]
    layout[[55, 56, 57, 58, 59]] += [0.0, 0.08]
    return Delaunay(np.concatenate([layout, _HEAD_RING, _FRAME])).simplices.astype(np.int32)


def _detect_landmarks(image: np.ndarray, name: str) -> np.ndarray:
    """The 68 iBUG landmarks `[68, 2]` of the largest face dlib finds in `image`."""
    from t2v.landmarks import LandmarkDetector

    return LandmarkDetector().largest_face(image, name)[0].astype(np.float64)


@functools.lru_cache(maxsize=1)
def _astronaut_landmarks() -> np.ndarray:
    import skimage.data

    return _detect_landmarks(skimage.data.astronaut(), "skimage.data.astronaut()")


def _eye_shape(points: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """The eye's six points `[6, 2]` in units of eye width, along and across the corner line."""
    e = points[eye]
    along = e[3] - e[0]
    width = np.linalg.norm(along)
    along = along / width
    across = np.array([-along[1], along[0]])  # points down the face
    return np.stack([(e - e[0]) @ along, (e - e[0]) @ across], -1) / width


def _affine_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares affine `[3, 2]` with `target ≈ [source, 1] @ affine`."""
    return np.linalg.lstsq(np.c_[source, np.ones(len(source))], target, rcond=None)[0]


def _median_colour(photo: np.ndarray, points: np.ndarray) -> Colour:
    h, w = photo.shape[:2]
    samples = [photo[min(max(int(y) + dy, 0), h - 1), min(max(int(x) + dx, 0), w - 1)]
               for x, y in points for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return tuple(int(c) for c in np.median(np.array(samples), 0))


@dataclasses.dataclass(frozen=True)
class _PhotoEye:
    """What a blink needs to know about one eye of the photo."""

    index: np.ndarray  # its six landmark indices
    shape: np.ndarray  # `[6, 2]` the open eye in units of eye width (see `_eye_shape`)
    aperture: float  # the photo's lid gap over eye width
    interior: np.ndarray  # the warp triangles inside the eye
    lid_colour: Colour  # skin between the lashes and the brow

    @classmethod
    def measure(cls, image, landmarks, index, brow, triangles) -> "_PhotoEye":
        lid = 0.7 * landmarks[index[[0, 1, 2, 3]]] + 0.3 * landmarks[brow]
        return cls(index, _eye_shape(landmarks, index), _eye_aperture(landmarks, index),
                   np.flatnonzero(np.isin(triangles, index).all(1)), _median_colour(image, lid))


class PhotoTexture:
    """A real face photograph warped along the keypoints.

    The warp is piecewise affine over a fixed triangulation of the 68 landmarks, a ring of
    points that moves rigidly with the head and a frame that follows the head's position
    and size; what a still photo lacks is painted: a dark mouth with teeth when the
    lips part, skin-coloured lids when the eyes close.
    """

    _SUPERSAMPLE = 4  # for the painted mouth and lids

    def __init__(self, image: np.ndarray, landmarks: np.ndarray):
        """`image` uint8 `[H, W, 3]`; `landmarks` float `[68, 2]` pixels in that image."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"PhotoTexture needs a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
        self.image = image
        self.landmarks = _check_keypoints(landmarks)
        h, w = image.shape[:2]
        self._packed = np.concatenate([image, np.zeros((h, w, 1), np.uint8)], -1).reshape(-1).view(np.uint32)
        self._head = _Similarity.fit(FRONTAL_TEMPLATE[_STABLE], self.landmarks[_STABLE])
        self._frame = _Similarity.fit(FRONTAL_TEMPLATE[_STABLE], self.landmarks[_STABLE], rotate=False)
        self._vertices = np.concatenate([self.landmarks, self._head(_HEAD_RING), self._frame(_FRAME)])
        self._triangles = _warp_triangles()
        self._eyes = [_PhotoEye.measure(image, self.landmarks, eye, brow, self._triangles)
                      for eye, brow in ((_RIGHT_EYE, [18, 19, 20, 21]), (_LEFT_EYE, [22, 23, 24, 25]))]
        self._mouth_opening = _mouth_opening(self.landmarks)
        lower_lip = 0.5 * (self.landmarks[[56, 57, 58]] + self.landmarks[[65, 66, 67]])
        self._lip_colour = _median_colour(image, lower_lip)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PhotoTexture":
        """Loads a photo and finds its landmarks with dlib (the largest face)."""
        image = np.asarray(Image.open(path).convert("RGB"))
        return cls(image, _detect_landmarks(image, os.fspath(path)))

    @classmethod
    def astronaut(cls) -> "PhotoTexture":
        """Eileen Collins' NASA portrait (public domain), shipped with scikit-image."""
        import skimage.data

        return cls(skimage.data.astronaut(), _astronaut_landmarks())

    @property
    def face_shape(self) -> np.ndarray:
        """The photo's landmarks `[68, 2]` in the face frame of `t2v.keypoints` (centred, jaw
        half-width about 1): drive the photo from this shape and its own smile, mouth width
        and eye spacing stay where the photo has them."""
        return self._head.inverse()(self.landmarks)

    def render(self, keypoints: np.ndarray, size: int) -> np.ndarray:
        """The photo warped so that its landmarks land on `keypoints` `[68, 2]` (pixels of the
        `size x size` output). Returns uint8 `[size, size, 3]`."""
        points = _check_keypoints(keypoints)
        head = _Similarity.fit(self.landmarks[_STABLE], points[_STABLE])
        frame = _Similarity.fit(self.landmarks[_STABLE], points[_STABLE], rotate=False)
        vertices = np.concatenate([points, head(self._vertices[68:68 + len(_HEAD_RING)]),
                                   frame(self._vertices[68 + len(_HEAD_RING):])])
        open_eyes = [self._open_eye(points, eye) for eye in self._eyes]
        affines = self._affines(vertices, frame.inverse(), open_eyes)
        frame_pixels = self._sample(self._triangle_map(vertices, size), affines, size)
        return self._paint(frame_pixels, points, head, open_eyes)

    @staticmethod
    def _open_eye(points: np.ndarray, eye: _PhotoEye) -> np.ndarray:
        """Where the eye's six points `[6, 2]` would be with the photo's lid opening: the
        eye itself is not squashed by a blink but hidden by the lids."""
        e = points[eye.index]
        if _eye_aperture(points, eye.index) >= eye.aperture:
            return e
        along = e[3] - e[0]
        across = np.array([-along[1], along[0]])
        return e[0] + eye.shape[:, :1] * along + eye.shape[:, 1:] * across

    def _affines(self, vertices: np.ndarray, output_to_photo: _Similarity, open_eyes) -> np.ndarray:
        """Per-triangle output-to-photo affines `[1 + triangles, 3, 2]`; entry 0 is the
        similarity used outside the mesh."""
        outside = np.vstack([output_to_photo.matrix.T, output_to_photo.offset])
        target = np.concatenate([vertices[self._triangles], np.ones((len(self._triangles), 3, 1))], -1)
        source = self._vertices[self._triangles]
        area = np.abs(np.linalg.det(target))
        solvable = area > 1e-6
        affines = np.broadcast_to(outside, (len(self._triangles), 3, 2)).copy()
        affines[solvable] = np.linalg.solve(target[solvable], source[solvable])
        for eye, open_eye in zip(self._eyes, open_eyes):
            affines[eye.interior] = _affine_fit(open_eye, self.landmarks[eye.index])
        return np.concatenate([outside[None], affines]).astype(np.float32)

    def _triangle_map(self, vertices: np.ndarray, size: int) -> np.ndarray:
        """For each output pixel, 1 + the index of the triangle covering it, or 0: `[size, size]`."""
        index_map = Image.new("L" if len(self._triangles) < 255 else "I", (size, size), 0)
        draw = ImageDraw.Draw(index_map)
        for number, triangle in enumerate(vertices[self._triangles], start=1):
            draw.polygon(_flat(triangle), fill=number, outline=number)
        return np.asarray(index_map)

    def _sample(self, triangle_map: np.ndarray, affines: np.ndarray, size: int) -> np.ndarray:
        """Bilinear samples of the photo at the affinely mapped pixel centres: float `[size, size, 3]`."""
        coefficients = affines.reshape(len(affines), 6).T[:, triangle_map]  # [6, size, size]
        grid = _pixel_grid(size)
        x_out, y_out = grid[..., 0], grid[..., 1]
        h, w = self.image.shape[:2]
        x = np.clip(x_out * coefficients[0] + y_out * coefficients[2] + coefficients[4], 0, w - 1.001)
        y = np.clip(x_out * coefficients[1] + y_out * coefficients[3] + coefficients[5], 0, h - 1.001)
        x0, y0 = x.astype(np.int32), y.astype(np.int32)
        fx, fy = x - x0, y - y0
        corner = y0 * w + x0
        # Four gathers of whole RGBX pixels packed in uint32 are much cheaper than per channel.
        samples = np.zeros((size, size, 4), np.float32)
        for offset, weight in ((0, (1 - fx) * (1 - fy)), (1, fx * (1 - fy)), (w, (1 - fx) * fy), (w + 1, fx * fy)):
            pixels = self._packed[corner + offset].view(np.uint8).reshape(size, size, 4)
            samples += pixels * weight[..., None]
        return samples[..., :3]

    def _paint(self, frame_pixels: np.ndarray, points: np.ndarray, head: _Similarity, open_eyes) -> np.ndarray:
        frame = np.clip(frame_pixels + 0.5, 0, 255).astype(np.uint8)
        unit = head.scale * self._head.scale
        down = head.matrix @ self._head.matrix @ np.array([0.0, 1.0]) / unit
        # The photo's lips are (nearly) closed: once they part beyond it, show a mouth.
        opening = _mouth_opening(points) - self._mouth_opening
        if opening > 0.005:
            alpha = min(1.0, opening / 0.06)
            self._paint_patch(frame, points[_INNER_LIP], lambda canvas, lip, scale: _paint_mouth_interior(
                canvas, lip, down, unit * scale, _PHOTO_MOUTH, _PHOTO_TEETH, self._lip_colour, alpha))
        for eye, open_eye in zip(self._eyes, open_eyes):
            e = points[eye.index]
            if np.allclose(open_eye, e):
                continue
            closure = 1.0 - _eye_aperture(points, eye.index) / eye.aperture
            self._paint_patch(frame, np.concatenate([open_eye, e]), lambda canvas, both, scale: _paint_lids(
                canvas, both[:6], both[6:], eye.lid_colour, closure))
        return frame

    def _paint_patch(self, frame: np.ndarray, points: np.ndarray, painter) -> None:
        """Runs `painter(canvas, points_on_canvas, scale)` on a supersampled copy of the
        frame around `points`, then writes the anti-aliased result back."""
        size = frame.shape[0]
        x0, y0 = np.clip(np.floor(points.min(0) - 3).astype(int), 0, size)
        x1, y1 = np.clip(np.ceil(points.max(0) + 4).astype(int), 0, size)
        if x1 <= x0 or y1 <= y0:
            return
        ss = self._SUPERSAMPLE
        patch = Image.fromarray(frame[y0:y1, x0:x1]).resize(((x1 - x0) * ss, (y1 - y0) * ss), Image.NEAREST)
        painter(patch, (points - [x0, y0] + 0.5) * ss - 0.5, ss)
        frame[y0:y1, x0:x1] = np.asarray(patch.reduce(ss))


def _paint_lids(canvas: Image.Image, open_eye: np.ndarray, eye: np.ndarray, lid: Colour, closure: float) -> None:
    """Skin-coloured lids `[6, 2]` covering an open eye down to the closing lid line `eye`."""
    draw = ImageDraw.Draw(canvas, "RGBA")
    width = float(np.linalg.norm(eye[3] - eye[0]))
    draw.polygon(_flat(np.concatenate([open_eye[[0, 1, 2, 3]], eye[[2, 1]]])), fill=lid)
    draw.polygon(_flat(np.concatenate([open_eye[[3, 4, 5, 0]], eye[[5, 4]]])), fill=lid)
    lashes = (30, 22, 22, int(120 + 135 * closure))
    draw.line(_flat(eye[[0, 1, 2, 3]]), fill=lashes, width=max(1, int(round(0.07 * width))), joint="curve")
