"""The online input pipeline: clips -> examples -> batches (Grain).

    batches = window_batches(config, "train", seed=0, process_index=0, process_count=1)
    batch = next(batches)                  # dict of numpy arrays, leading axis = local batch
    state = batches.get_state()            # JSON-able; set_state(state) resumes exactly there

Sources, splits, the fields and shapes of window and frame-pair examples, augmentation,
how the stream splits over processes and workers, and what happens to unusable records:
docs/pipeline.md. `train_batches` / `eval_batches` are the one place batches are split
over processes, for every task.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import grain
import ml_collections
import numpy as np
from etils import epath
from PIL import Image

from t2v import audio, keypoints
from t2v.errors import InputError
from t2v.data import records, references

log = logging.getLogger(__name__)

HELD_OUT_SENTENCE_EVERY = 4  # sentence i of a language is held out for eval when i % 4 == 0
EVAL_SPEAKER_OFFSET = 100_000  # eval speaker ids start here: never a training speaker
PLAN_VERSION = 1  # bump when the plan or the generator's meaning changes: new cache key
PIXEL_CACHE_VERSION = 1  # bump when the rendered pixels change meaning: new cache key


# --------------------------------------------------------------------------- clip features


def prepare_clip(clip: dict, keep_audio: bool = False, reference: str = "detected") -> dict:
    """A decoded clip (records.decode_clip or synthetic) -> whole-clip training features.

    Returns `mel [4T, 80]`, `keypoints [T, 68, 2]` and `reference [68, 2]` in the
    reference's face frame, `pose [T, 4]`, `mouth [T, 20, 2]`, `energy [T]` (frame RMS),
    plus `clip_id`, `speaker`, `language` when the clip has them, and with `keep_audio`
    the waveform `audio [samples]` and its `sample_rate` (for sample videos; training
    needs only the mel). The reference is taken as inference takes it, from a pinned frame
    of the clip (`reference="detected"`, its index in `reference_frame`), or is the clip's
    neutral face (`"neutral"`, an ablation): `t2v.data.references`.
    """
    points_px = np.asarray(clip["keypoints"], np.float32)
    reference_px, reference_index = references.reference_keypoints(clip, points_px, reference)
    reference, frame = keypoints.normalise(reference_px)
    points = (points_px - frame.origin) / frame.scale
    pose, _ = keypoints.split_pose(points, reference)
    wave = np.asarray(clip["audio"], np.float32)
    rate = int(clip["sample_rate"])
    prepared = {
        "mel": audio.log_mel(wave, rate),
        "keypoints": points.astype(np.float32),
        "reference": reference.astype(np.float32),
        "pose": pose.astype(np.float32),
        "mouth": pose_free_mouth(points, reference).astype(np.float32),
        "energy": audio.frame_energy(wave, rate),
    }
    if reference_index is not None:
        prepared["reference_frame"] = reference_index
    for name in ("clip_id", "speaker", "language", "transcript", "frames", "aus"):
        if clip.get(name) is not None:
            prepared[name] = clip[name]
    if keep_audio:
        prepared.update(audio=wave, sample_rate=rate)
    return prepared


def pose_free_mouth(points, reference):
    """The mouth with head pose removed, relative to the speaker's neutral mouth.

    points `[..., 68, 2]`, reference `[..., 68, 2]` (broadcast) -> `[..., 20, 2]`: the
    MOUTH points of `split_pose`'s expression minus the reference's. numpy or jax.
    """
    _, expression = keypoints.split_pose(points, reference)
    index = np.asarray(keypoints.MOUTH)
    return expression[..., index, :] - reference[..., index, :]


def mel_span(mel: np.ndarray, start_frame: int, num_frames: int) -> np.ndarray:
    """Mel rows of video frames [start, start + num_frames), silence outside the clip: `[4n, 80]`."""
    per = audio.MELS_PER_FRAME
    out = np.full((per * num_frames, mel.shape[1]), audio.SILENCE_LOG_MEL, np.float32)
    lo, hi = max(start_frame, 0), min(start_frame + num_frames, len(mel) // per)
    if hi > lo:
        out[per * (lo - start_frame) : per * (hi - start_frame)] = mel[per * lo : per * hi]
    return out


# --------------------------------------------------------------------------- windows


@dataclasses.dataclass
class WindowMaker:
    """Record index (+ a numpy Generator) -> one window example, or None for a bad record.

    Training windows start at random, keeping `max_shift` frames of real audio either
    side when the clip is long enough (so shifted sync negatives are speech, not
    silence); `example(clip, start)` makes the window at a given start (eval windows).
    Prepared clips are cached (LRU, `cache_clips`), so the features of a clip are made
    once per process, not once per window. Worker processes get a copy without the cache.
    """

    window: int
    max_shift: int = 0
    source: Any = None  # random access to record bytes: set by `window_batches`
    reference_frame: bool = False
    cache_clips: int = 4096  # prepared clips kept per process: features are made once per clip, not per window
    keypoint_noise: float = 0.0  # std of Gaussian jitter on training keypoints, face-frame units (0 = off)
    reference: str = "detected"  # data.reference: "detected" (a pinned frame, as at inference) or "neutral"
    action_units: bool = False  # data.action_units: windows carry `au [T, 9]` (t2v.au.clip_speech_aus)
    skipped: int = 0
    skip_reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    longest_short_clip: int = 0  # frames of the longest clip skipped as shorter than the window
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _cache: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict, repr=False)

    def __getstate__(self):  # for Grain's worker processes: no lock, no cache
        state = dict(self.__dict__)
        state.pop("_lock"), state.pop("_cache")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock(), _cache=collections.OrderedDict())

    def decode(self, record: bytes, where: str, keep_audio: bool = False) -> dict | None:
        """The prepared clip of `record`, or None (counted in `skipped`) if it is corrupt."""
        try:
            return prepare_clip(records.decode_clip(record, decode_frames=self.reference_frame), keep_audio,
                                self.reference)
        except (records.RecordError, ValueError) as error:
            self.count_skip("undecodable")
            log.warning("skipping %s: %s", where, error)
            return None

    def count_skip(self, reason: str, frames: int = 0) -> None:
        with self._lock:
            self.skipped += 1
            self.skip_reasons[reason] += 1
            self.longest_short_clip = max(self.longest_short_clip, frames)

    def skip_summary(self) -> str:
        """Why records were dropped, e.g. '40 shorter than data.window=32 frames (the longest has 29)'."""
        parts = []
        for reason, count in sorted(self.skip_reasons.items()):
            if reason == "short":
                parts.append(f"{count} shorter than data.window={self.window} frames "
                             f"(the longest has {self.longest_short_clip})")
            else:
                parts.append(f"{count} {reason}")
        return "; ".join(parts) or "no record was read"

    def example(self, clip: dict, start: int) -> dict:
        t = self.window
        num_frames = len(clip["keypoints"])
        if num_frames < t:
            raise InputError(f"clip {clip.get('clip_id', '?')}: {num_frames} frames, shorter than data.window={t}")
        start = int(np.clip(start, 0, num_frames - t))
        example = {
            "mel": mel_span(clip["mel"], start, t),
            "keypoints": clip["keypoints"][start : start + t],
            "reference": clip["reference"],
            "pose": clip["pose"][start : start + t],
            "mouth": clip["mouth"][start : start + t],
        }
        if self.max_shift > 0:
            example["mel_context"] = mel_span(clip["mel"], start - self.max_shift, t + 2 * self.max_shift)
        if self.action_units:
            from t2v.au import clip_speech_aus

            aus = clip.get("aus")
            example["au"] = clip_speech_aus({"keypoints": example["keypoints"], "reference": clip["reference"],
                                             "aus": None if aus is None else aus[start : start + t]})
        return example

    def random_start(self, num_frames: int, rng: np.random.Generator) -> int:
        margin = self.max_shift if num_frames >= self.window + 2 * self.max_shift else 0
        return int(rng.integers(margin, max(num_frames - self.window - margin, margin) + 1))

    def __call__(self, index: int, rng: np.random.Generator) -> dict | None:
        """Window of record `index` of `self.source` (read only when the clip is not cached)."""
        clip = self.clip(int(index))
        if clip is None:
            return None
        example = self.example(clip, self.random_start(len(clip["keypoints"]), rng))
        if self.reference_frame:
            if "frames" not in clip:
                raise InputError(f"record {index}: data.reference_frame is set but the clip has no frames")
            example["reference_image"] = clip["frames"][rng.integers(len(clip["frames"]))]
        if self.keypoint_noise > 0:
            example = jitter_keypoints(example, self.keypoint_noise, rng)
        return example

    def clip(self, index: int) -> dict | None:
        """The prepared clip of record `index`, or None (counted) if corrupt or too short."""
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        clip = self.decode(self.source[index], f"record {index} of {self.source}")
        if clip is not None and len(clip["keypoints"]) < self.window:
            self.count_skip("short", len(clip["keypoints"]))
            log.warning("skipping record %d: %d frames, shorter than the window %d",
                        index, len(clip["keypoints"]), self.window)
            clip = None
        if clip is not None and self.cache_clips > 0:
            with self._lock:
                self._cache[index] = clip
                while len(self._cache) > self.cache_clips:
                    self._cache.popitem(last=False)
        return clip


def jitter_keypoints(example: dict, std: float, rng: np.random.Generator) -> dict:
    """A window with Gaussian noise (`std`, face-frame units) on its `keypoints [T, 68, 2]`, and
    `pose` / `mouth` recomputed from them so the fields still agree. The reference is kept."""
    points = (example["keypoints"] + rng.normal(0.0, std, example["keypoints"].shape)).astype(np.float32)
    pose, _ = keypoints.split_pose(points, example["reference"])
    return {**example, "keypoints": points, "pose": pose.astype(np.float32),
            "mouth": pose_free_mouth(points, example["reference"]).astype(np.float32)}


def eval_windows(clip: dict, window: int, max_shift: int, per_clip: int) -> list[int]:
    """Deterministic eval window starts: up to `per_clip` non-overlapping windows, leaving
    `max_shift` frames of audio either side when the clip allows."""
    num_frames = len(clip["keypoints"])
    margin = max_shift if num_frames >= window + 2 * max_shift else 0
    starts = list(range(margin, num_frames - window - margin + 1, window))
    return starts[:per_clip] or [0]


# --------------------------------------------------------------------------- frame pairs


def image_keypoints(points_px: np.ndarray, size: int) -> np.ndarray:
    """Pixel keypoints of a `size x size` frame -> [-1, 1] image coordinates (the renderer's)."""
    return (2.0 * np.asarray(points_px, np.float32) / size - 1.0).astype(np.float32)


def mouth_box(points: np.ndarray, margin: float) -> np.ndarray:
    """`[68, 2]` keypoints -> `[4]` box (x0, y0, x1, y1) around the mouth, grown by `margin`
    of its size on every side."""
    mouth = points[np.asarray(keypoints.MOUTH)]
    low, high = mouth.min(axis=0), mouth.max(axis=0)
    pad = margin * (high - low)
    return np.concatenate([low - pad, high + pad]).astype(np.float32)


class FrameRecords:
    """Reads clip records with their frames left as JPEG bytes, counting what it skips and why."""

    def __init__(self):
        self.skipped = 0
        self.skip_reasons = collections.Counter()

    def count_skip(self, reason: str) -> None:
        self.skipped += 1
        self.skip_reasons[reason] += 1

    def skip_summary(self) -> str:
        """Why records were dropped, e.g. '3 undecodable; 5 without one frame per keypoint frame'."""
        return "; ".join(f"{n} {reason}" for reason, n in sorted(self.skip_reasons.items())) or "no record was read"

    def decode(self, record: bytes, where: str) -> dict | None:
        """The clip with its frames still JPEG bytes, or None (counted) if it is unusable."""
        try:
            clip = records.decode_clip(record, decode_frames=False)
        except records.RecordError as error:
            self.count_skip("undecodable")
            log.warning("skipping %s: %s", where, error)
            return None
        if not clip.get("frames") or len(clip["frames"]) != len(clip["keypoints"]):
            self.count_skip("without one frame per keypoint frame")
            log.warning("skipping %s (clip %s): no frames, or not one per keypoint frame", where, clip.get("clip_id"))
            return None
        return clip


class PairMaker(FrameRecords):
    """(record index, record bytes) + a numpy Generator -> one frame-pair example at `size`
    pixels (fields in the module doc), or None for an unusable record.

    Frames stay JPEG bytes until a pair reads them; `pair(clip, reference, target)`
    makes the pair of given frames (eval pairs, never augmented). Random pairs (`__call__`,
    training) go through `augment` when one is given (`PairAugment.from_config`).
    """

    def __init__(self, size: int, mouth_margin: float, augment: PairAugment | None = None):
        self.size = size
        self.mouth_margin = mouth_margin
        self.augment = augment
        super().__init__()

    def frame(self, clip: dict, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame `index` resized to `size`: uint8 `[S, S, 3]` and keypoints `[68, 2]` in [-1, 1]."""
        image = records.decode_jpegs([clip["frames"][index]])[0]
        height, width = image.shape[:2]
        if height != width:
            raise InputError(f"clip {clip.get('clip_id', '?')}: frames are {width}x{height}; the renderer needs square crops")
        if height != self.size:
            image = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.BILINEAR))
        return image, image_keypoints(clip["keypoints"][index], height)

    def pair(self, clip: dict, reference_index: int, target_index: int) -> dict:
        reference_image, reference_keypoints = self.frame(clip, reference_index)
        target_image, target_keypoints = self.frame(clip, target_index)
        return {
            "reference_image": reference_image,
            "reference_keypoints": reference_keypoints,
            "target_keypoints": target_keypoints,
            "target_image": target_image,
            "mouth_box": mouth_box(target_keypoints, self.mouth_margin),
        }

    def __call__(self, indexed_record: tuple[int, bytes], rng: np.random.Generator) -> dict | None:
        index, record = indexed_record
        clip = self.decode(record, f"record {index}")
        if clip is None:
            return None  # Grain drops it
        reference_index, target_index = rng.integers(len(clip["frames"]), size=2)
        example = self.pair(clip, int(reference_index), int(target_index))
        if self.augment is not None:
            example = self.augment(example, rng)
            example["mouth_box"] = mouth_box(example["target_keypoints"], self.mouth_margin)
        return example

# --------------------------------------------------------------------------- augmentation


def augment_config(data_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    """`data.augment` when it is there and enabled, else None (configs without the key: off)."""
    augment = data_config.get("augment")
    return augment if augment is not None and augment.get("enabled", False) else None


def similarity(scale: float, angle_rad: float, shift: tuple[float, float]) -> np.ndarray:
    """`[2, 3]` matrix of `p -> scale * R(angle) p + shift` on `[..., 2]` points (x, y)."""
    cos, sin = scale * np.cos(angle_rad), scale * np.sin(angle_rad)
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]], np.float64)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`[..., 2]` points moved by a `[2, 3]` affine matrix (same dtype as `points`)."""
    moved = np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return moved.astype(np.asarray(points).dtype)


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 `[S, S, 3]` image warped (bilinear) by the `[2, 3]` affine `matrix` of its [-1, 1]
    image coordinates, so content at `p` moves to `matrix @ p`, exactly as `transform_points`
    moves keypoints. Pixels from outside the frame repeat its edge, not black, so the border
    holds no new edges for the model to learn."""
    size = image.shape[0]
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    # In pixels ([-1, 1] -> [0, S]) the inverse keeps its linear part; only the offset changes.
    linear = inverse[:, :2]
    offset = size / 2 * (1.0 + inverse[:, 2] - linear.sum(axis=1))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ linear.T + offset
    pad = int(np.ceil(max(0.0, -corners.min(), corners.max() - size))) + 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    # PIL maps each output pixel centre through (a, b, c, d, e, f) to input coordinates.
    coefficients = (*linear[0], offset[0] + pad, *linear[1], offset[1] + pad)
    warped = Image.fromarray(padded).transform((size, size), Image.Transform.AFFINE, coefficients,
                                               resample=Image.BILINEAR)
    return np.asarray(warped)


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 grey


def jitter_colours(images: list[np.ndarray], brightness: float, contrast: float, saturation: float) -> list[np.ndarray]:
    """uint8 `[H, W, 3]` images recoloured by one shared per-pixel mapping: times `brightness`,
    contrast by `contrast` about the first image's mean grey, saturation by `saturation`
    (1 = unchanged). One mapping for all, so the frames of a pair stay colour-consistent."""
    if brightness == contrast == saturation == 1.0:
        return images
    mean_grey = float((images[0].astype(np.float32) @ LUMA).mean()) * brightness
    out = []
    for image in images:
        x = image.astype(np.float32) * brightness
        x = mean_grey + contrast * (x - mean_grey)
        grey = (x @ LUMA)[..., None]
        x = grey + saturation * (x - grey)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return out


@dataclasses.dataclass(frozen=True)
class PairAugment:
    """Random augmentation of a frame pair (`PairMaker` fields) that keeps keypoints on their pixels.

    One similarity per pair, drawn uniformly: zoom in `[1 - scale, 1 + scale]`, rotation in
    `+-rotation_deg`, shift in `+-translate` of the frame size per axis, about the frame
    centre; it warps both images and moves both keypoint sets. One colour jitter per pair:
    factors in `[1 - x, 1 + x]` for x = `brightness`, `contrast`, `saturation`, applied to
    both frames alike; keypoints untouched. The caller recomputes the mouth box.
    """

    scale: float = 0.1
    rotation_deg: float = 8.0
    translate: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    @classmethod
    def from_config(cls, data_config: ml_collections.ConfigDict) -> PairAugment | None:
        """The augmentation of `data.augment`, or None when it is absent or not enabled."""
        augment = augment_config(data_config)
        if augment is None:
            return None
        fields = {f.name: float(augment.get(f.name, f.default)) for f in dataclasses.fields(cls)}
        for name, value in fields.items():
            if value < 0 or (name != "rotation_deg" and value >= 1):
                raise InputError(f"data.augment.{name}={value}: expected >= 0{'' if name == 'rotation_deg' else ' and < 1'}")
        return cls(**fields)

    def draw_similarity(self, rng: np.random.Generator) -> np.ndarray:
        """A random `[2, 3]` similarity of [-1, 1] image coordinates (the frame spans 2 units)."""
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        angle = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg))
        shift = 2.0 * rng.uniform(-self.translate, self.translate, size=2)
        return similarity(scale, angle, tuple(shift))

    def draw_colour_factors(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """Random (brightness, contrast, saturation) factors."""
        spread = np.array([self.brightness, self.contrast, self.saturation])
        return tuple(float(f) for f in 1.0 + rng.uniform(-spread, spread))

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        matrix = self.draw_similarity(rng)
        factors = self.draw_colour_factors(rng)
        images = [warp_image(example[name], matrix) for name in ("reference_image", "target_image")]
        reference_image, target_image = jitter_colours(images, *factors)
        return {
            **example,
            "reference_image": reference_image,
            "target_image": target_image,
            "reference_keypoints": transform_points(example["reference_keypoints"], matrix),
            "target_keypoints": transform_points(example["target_keypoints"], matrix),
        }


def eval_pair_indices(num_frames: int, pairs: int) -> list[tuple[int, int]]:
    """Fixed eval pairs of a clip: frame 0 as the reference, `pairs` targets spread over the rest."""
    targets = np.linspace(0, num_frames - 1, pairs + 1)[1:].round().astype(int)
    return [(0, int(t)) for t in targets]


# --------------------------------------------------------------------------- sources


def synthetic_plan(data_config: ml_collections.ConfigDict, split: str, seed: int) -> list[dict]:
    """The clips the synthetic source makes for `split`: a list of `make_clip` arguments.

    Pure and cheap (no audio is made), so the cache key is a hash of it.
    """
    from t2v.data import speech

    train_langs = _languages(data_config.langs)
    eval_langs = _languages(data_config.eval_langs)
    if split == "train":
        count, langs, speakers = int(data_config.train_clips), train_langs, int(data_config.get("train_speakers", 16))
        # data.train_speaker_offset: a sync judge trains on speakers no loss expert saw.
        first_speaker, held_out = int(data_config.get("train_speaker_offset", 0)), False
    elif split == "eval":
        # Alternate the unseen language(s) with the training ones (on held-out sentences).
        count, held_out = int(data_config.eval_clips), True
        langs = tuple(x for pair in zip(eval_langs * len(train_langs), train_langs * len(eval_langs)) for x in pair)
        speakers, first_speaker = int(data_config.get("eval_speakers", 8)), EVAL_SPEAKER_OFFSET
    else:
        raise ValueError(f"unknown split {split!r}: expected 'train' or 'eval'")
    if not langs:
        raise InputError(f"data.langs={data_config.langs!r} / data.eval_langs={data_config.eval_langs!r}: no languages")
    rng = np.random.default_rng([seed, PLAN_VERSION, 0 if split == "train" else 1])
    plan = []
    for i in range(count):
        language = langs[i % len(langs)]
        if language not in speech.SENTENCES:
            raise InputError(f"data.langs: no sentences for language {language!r} (known: {sorted(speech.SENTENCES)})")
        sentences = [s for j, s in enumerate(speech.SENTENCES[language]) if (j % HELD_OUT_SENTENCE_EVERY == 0) == held_out]
        plan.append({
            "seed": int(rng.integers(2**31)),
            "language": language,
            "speaker": first_speaker + i % max(speakers, 1),
            "text": sentences[int(rng.integers(len(sentences)))],
        })
    return plan


def _languages(spec: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in str(spec).split(",") if x.strip())


def cache_dir(data_config: ml_collections.ConfigDict) -> Path:
    configured = data_config.get("cache_dir", "") or os.environ.get("T2V_CACHE", "")
    return Path(configured or Path.home() / ".cache" / "t2v").expanduser()


def synthetic_shards(data_config: ml_collections.ConfigDict, split: str, seed: int, *,
                     render: bool = False) -> list[str]:
    """ArrayRecord shards of the synthetic split, generated once and cached.

    Keypoints and audio only, or with `render` the frames too, at `data.size` pixels,
    painted or warped from the photo `data.texture` ("astronaut": scikit-image's).
    The folder name is a hash of the plan (and of the size and texture), so a different
    plan never reads stale clips; it is written under a temporary name and renamed, so
    concurrent runs never see half.
    """
    from t2v.data import synthetic

    plan = synthetic_plan(data_config, split, seed)
    if render:
        size, texture_name = int(data_config.size), str(data_config.get("texture", ""))
        key_fields = {"plan": plan, "version": [PLAN_VERSION, PIXEL_CACHE_VERSION], "size": size,
                      "texture": texture_name}
        prefix = f"{split}-pixels{size}"
    else:
        size, texture_name = int(data_config.get("size", 0)) or 224, ""  # pixels the keypoints refer to
        key_fields = {"plan": plan, "version": PLAN_VERSION}
        prefix = split
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir(data_config) / "synthetic" / f"{prefix}-{key}"
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        texture = synthetic.load_texture(texture_name)
        log.info("making %d synthetic %s clips%s into %s", len(plan), split,
                 f" with {size} px frames" if render else "", folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        clips = (records.encode_clip(synthetic.make_clip(size=size, texture=texture, render=render, **kw).to_record())
                 for kw in plan)
        records.write_shards(staging, clips, num_shards=1)
        (staging / "plan.json").write_text(json.dumps(key_fields, indent=1))
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: use theirs
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()
    return sorted(str(p) for p in folder.glob(f"{records.SHARD_BASENAME}-*"))


def record_shards(path: str, what: str, cache: Path | None = None) -> list[str]:
    """The ArrayRecord files of a records folder (or a single file / shard prefix).

    A cloud URL (`gs://bucket/records`, anything `etils.epath` / fsspec reads) is listed
    there and each file is copied once into `cache` (`remote_copy`): ArrayRecord reads
    local files only.
    """
    if not path:
        raise InputError(f"{what} is empty: the records source needs a folder of ArrayRecord shards")
    p = epath.Path(path)
    if p.is_file():
        found = [p]
    elif p.is_dir():
        found = sorted(p.glob("*.array_record*"))
    else:
        found = sorted(p.parent.glob(p.name + "*"))
    if not found:
        raise InputError(f"{what}={path}: no ArrayRecord files")
    if not is_remote(path):
        return [str(f) for f in found]
    return [str(remote_copy(f, (cache or Path.home() / ".cache" / "t2v") / "remote")) for f in found]


def is_remote(path) -> bool:
    """True for a cloud URL (gs://, s3://, ...), False for a local path."""
    return "://" in os.fspath(path)


def remote_copy(url: epath.Path, folder: Path) -> Path:
    """A local copy of the file at `url`, made once: its name holds a hash of the URL, size and
    modification time, so a changed file is fetched again. Written under a temporary name
    and renamed, so concurrent readers never see half."""
    stat = url.stat()
    key = hashlib.sha1(json.dumps([os.fspath(url), stat.length, stat.mtime]).encode()).hexdigest()[:16]
    local = folder / f"{key}-{url.name}"
    if not local.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log.info("copying %s (%d bytes) to %s", url, stat.length, local)
        staging = Path(tempfile.mkstemp(prefix=f".{local.name}-", dir=folder)[1])
        with url.open("rb") as source, staging.open("wb") as target:
            while chunk := source.read(1 << 24):
                target.write(chunk)
        staging.rename(local)
    return local


def source_name(config: ml_collections.ConfigDict, split: str) -> str:
    """The flag naming where `split` comes from, for messages: 'data.path=/x', 'synthetic train clips'."""
    data = config.data
    if data.source == "records":
        key = "path" if split == "train" else "eval_path"
        return f"data.{key}={data.get(key, '')}"
    return f"data.source={data.source} ({split} clips)"


def shard_paths(config: ml_collections.ConfigDict, split: str, seed: int, *, render: bool = False) -> list[str]:
    """The ArrayRecord files of `split`; `render`: synthetic clips with frames (records have
    frames or not, as they were written)."""
    data = config.data
    if data.source == "synthetic":
        return synthetic_shards(data, split, seed, render=render)
    if data.source == "records":
        key = "path" if split == "train" else "eval_path"
        return record_shards(data.get(key, ""), f"data.{key}", cache_dir(data))
    raise InputError(f"data.source={data.source!r}: expected 'synthetic' or 'records'")


def record_source(paths: list[str]) -> grain.sources.ArrayRecordDataSource:
    """A random-access source over ArrayRecord files; a file that is not one raises naming it."""
    for path in paths:
        try:
            grain.sources.ArrayRecordDataSource([path])
        except Exception as error:  # array_record raises RuntimeError/ValueError with long texts
            raise InputError(f"{path}: not a readable ArrayRecord file ({str(error).splitlines()[0][:200]})") from error
    return grain.sources.ArrayRecordDataSource(paths)


def load_clips(config: ml_collections.ConfigDict, split: str, seed: int | None = None, *,
               limit: int | None = None, keep_audio: bool = False) -> list[dict]:
    """The clips of `split`, prepared (`prepare_clip`), corrupt records skipped: for evaluation.

    Every clip, or the first `limit` readable ones; `keep_audio` keeps each clip's waveform.
    """
    seed = config.seed if seed is None else seed
    maker = WindowMaker(int(config.data.window), cache_clips=0, reference=str(config.data.get("reference", "detected")))
    source = record_source(shard_paths(config, split, seed))
    clips = []
    for i in range(len(source)):
        if limit is not None and len(clips) >= limit:
            break
        clip = maker.decode(source[i], f"record {i} of {source}", keep_audio)
        if clip is not None:
            clips.append(clip)
    return clips


# --------------------------------------------------------------------------- processes and batches


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    """This process's share of `train.batch_size`; InputError if it does not split evenly."""
    local, remainder = divmod(int(global_batch_size), process_count)
    if remainder or local == 0:
        raise InputError(f"train.batch_size={global_batch_size}: does not split over {process_count} processes")
    return local


class ProcessShare(grain.MapDataset):
    """Process `p`'s part of every global batch: elements `[b*G + p*L, b*G + (p+1)*L)` of the
    parent for local batch `b` (L = local batch, G = L * process count).

    Contiguous blocks, not `[p::n]`, so the global batch (`jax.make_array_from_process_local_data`
    concatenates in process order) is the one a single process would draw, element for element.
    """

    def __init__(self, parent: grain.MapDataset, local_batch: int, process_index: int, process_count: int):
        super().__init__(parent)
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
        self._local, self._count, self._index = int(local_batch), int(process_count), int(process_index)

    def __len__(self) -> int:
        return len(self._parent) // (self._local * self._count) * self._local

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        batch, offset = divmod(int(index), self._local)
        return self._parent[(batch * self._count + self._index) * self._local + offset]

    def __str__(self) -> str:
        return f"ProcessShare(process {self._index} of {self._count}, local batch {self._local})"


class FilterGuard:
    """An example maker `(element, rng) -> example | None` that cannot spin forever.

    Grain drops the Nones of a map, so a source whose every record is filtered out (clips
    shorter than the window, ...) would loop without end. After as many misses in a row as
    there are records, before any example came out, every record is tried once: if none
    gives an example, InputError names the source and the filter (`maker.skip_summary()`).
    Runs in each reader thread / worker process; the check costs one pass, once.
    """

    def __init__(self, maker, elements: grain.MapDataset, what: str):
        self.maker, self.elements, self.what = maker, elements, what
        self.found = False
        self.misses = 0

    def __call__(self, element, rng: np.random.Generator):
        example = self.maker(element, rng)
        if example is not None:
            self.found = True
        elif not self.found:
            self.misses += 1
            if self.misses >= len(self.elements):
                self.check_every_record(rng)
        return example

    def check_every_record(self, rng: np.random.Generator) -> None:
        self.maker.skip_reasons.clear()  # count each record once in the message
        for i in range(len(self.elements)):
            if self.maker(self.elements[i], rng) is not None:
                self.found = True
                return
        raise InputError(f"{self.what}: all {len(self.elements)} records are filtered out "
                         f"({self.maker.skip_summary()})")


def train_batches(elements: grain.MapDataset, maker, *, seed: int, global_batch_size: int, process_index: int,
                  process_count: int, threads: int = 1, workers: int = 0, what: str = "the training data") -> Iterator[dict]:
    """Infinite, checkpointable batches of `maker(element, rng)` over `elements` for this process.

    The random ops (epoch shuffles, the example's rng) come BEFORE the split over processes,
    so element j of the global stream has the rng of j whichever process reads it: processes
    (and Grain workers, which slice this process's stream) draw distinct windows and
    augmentations, 2 processes x 4 devices see the global batches of 1 x 8, and a resumed
    iterator (`get_state` / `set_state`) continues exactly. With workers each batches its own
    slice: batches then depend on the worker count (still deterministically).
    """
    local = local_batch_size(global_batch_size, process_count)
    guard = FilterGuard(maker, elements, what)
    ds = elements.shuffle(seed=seed).repeat().random_map(guard, seed=seed)
    ds = ProcessShare(ds, local, process_index, process_count)
    # Few threads: this machine may have 2 cores; workers (processes) scale further.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * local))
    ds = ds.batch(local, drop_remainder=True)
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return iter(ds)


def eval_batches(items: list, make_example, *, global_batch_size: int, process_index: int, process_count: int,
                 what: str = "the eval data") -> Iterator[dict]:
    """Finite, fixed batches of `make_example(item)` for this process's share of `items`.

    The global remainder is dropped first, so every process sees the same number of
    batches (a collective per batch must not wait for a process that has none).
    """
    local = local_batch_size(global_batch_size, process_count)
    global_batch = local * process_count
    kept = len(items) // global_batch * global_batch
    if kept < len(items):
        log.info("%s: %d of %d eval examples kept (whole global batches of %d)", what, kept, len(items), global_batch)
    ds = ProcessShare(grain.MapDataset.source(list(items[:kept])), local, process_index, process_count)
    return iter(ds.map(make_example).batch(local, drop_remainder=True).to_iter_dataset())


# --------------------------------------------------------------------------- windows datasets


def window_batches(
    config: ml_collections.ConfigDict, split: str, *, seed: int, process_index: int = 0, process_count: int = 1,
    maker: WindowMaker | None = None,
) -> Iterator[dict]:
    """This process's batches of `split` (fields: docs/pipeline.md).

    "train": infinite, reshuffled every epoch, random windows, checkpointable iterator.
    "eval": finite and fixed (`data.eval_windows` windows per clip), the same every call.
    The local batch is `train.batch_size // process_count`.
    """
    data = config.data
    augment = augment_config(data)
    maker = maker or WindowMaker(int(data.window), int(data.get("max_shift", 0)),
                                 reference_frame=bool(data.get("reference_frame", False)),
                                 keypoint_noise=float(augment.get("keypoint_noise", 0.0)) if augment else 0.0,
                                 reference=str(data.get("reference", "detected")),
                                 action_units=bool(data.get("action_units", False)))
    maker.source = record_source(shard_paths(config, split, seed))
    what = source_name(config, split)
    shares = dict(global_batch_size=int(config.train.batch_size), process_index=process_index,
                  process_count=process_count, what=what)
    if split == "train":
        return train_batches(grain.MapDataset.range(len(maker.source)), maker, seed=seed,
                             threads=int(data.get("threads", 1)), workers=int(data.get("workers", 0)), **shares)
    per_clip = int(data.get("eval_windows", 2))
    starts = []  # (record, window start): the same list on every process
    for index in range(len(maker.source)):
        clip = maker.clip(index)
        if clip is not None:
            starts.extend((index, s) for s in eval_windows(clip, maker.window, maker.max_shift, per_clip))
    if not starts:
        raise InputError(f"{what}: all {len(maker.source)} records are filtered out ({maker.skip_summary()})")
    return eval_batches(starts, lambda item: maker.example(maker.clip(item[0]), item[1]), **shares)
