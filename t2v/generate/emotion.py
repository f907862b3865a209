"""`t2v generate --emotion NAME [--intensity x]`: emotion as a keypoint edit, learnt from data.

Each emotion is a *prototype*: the mean displacement `[68, 2]` of the 68 keypoints from the
same speaker's neutral, in the face frame (`t2v.keypoints.normalise`: face units, pose
removed by `split_pose` on the STABLE points), averaged over the frames of every clip of
that emotion and over speakers, per unit of the clip's intensity. Fit from labelled clips
(`fit_prototypes`: synthetic ones, or any records with `emotion` and `speaker`, as the MEAD
and CREMA-D layouts give them) with

    python -m t2v.generate.emotion --out DIR/emotion_prototypes.json [--data RECORDS ...]

(no `--data`: synthetic speakers `0..--speakers-1`, every emotion at intensity 1, eSpeak NG
speech; `DEFAULT_PATH` is that fit with the defaults, shipped with t2v).

Lips stay with the audio: how the jaw and lip points move per unit of mouth opening over
the neutral clips' frames (a least-squares slope: speech's own opening) is the speech
direction; each prototype loses the multiple of it that leaves the inner-lip gap unchanged,
so an emotion adds its lip corners, spread, brows and lids but never opens or closes the
mouth: the lips keep following the audio.

At generation (`EmotionEdit`), each frame gets `intensity x prototype`, turned and scaled by
that frame's head pose (the similarity from the reference face), before the blinks and the
photo warp. A checkpoint folder's own `emotion_prototypes.json` is used when it has one.
No pickle: the file is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from t2v import keypoints as kp
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError

FILE_NAME = "emotion_prototypes.json"
DEFAULT_PATH = Path(__file__).with_name(FILE_NAME)
FORMAT_VERSION = 1
SPEECH_POINTS = tuple(range(0, 17)) + kp.MOUTH  # where speech moves the face: jaw and lips


@dataclasses.dataclass
class Prototypes:
    """Per-emotion keypoint displacements `[68, 2]` (face units, face frame, intensity 1)."""

    displacements: dict[str, np.ndarray]
    speech_direction: np.ndarray  # [68, 2] per unit of mouth opening; removed from every prototype
    source: str  # what they were fit on
    speakers: int
    frames: dict[str, int]  # frames of each emotion that were averaged

    def to_json(self) -> dict:
        rounded = lambda a: np.round(np.asarray(a, np.float64), 6).tolist()  # noqa: E731
        return {"format": "t2v-emotion-prototypes", "version": FORMAT_VERSION, "source": self.source,
                "speakers": self.speakers, "frames": self.frames,
                "speech_direction": rounded(self.speech_direction),
                "displacements": {name: rounded(d) for name, d in self.displacements.items()}}

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Prototypes":
        try:
            data = json.loads(Path(path).read_text())
            displacements = {name: np.asarray(d, np.float32) for name, d in data["displacements"].items()}
            direction = np.asarray(data["speech_direction"], np.float32)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{os.fspath(path)}: not an emotion prototypes file ({error})") from None
        if data.get("format") != "t2v-emotion-prototypes" or any(d.shape != (kp.NUM_POINTS, 2)
                                                                for d in displacements.values()):
            raise InputError(f"{os.fspath(path)}: not an emotion prototypes file (format or shapes)")
        return cls(displacements, direction, str(data.get("source", "")), int(data.get("speakers", 0)),
                   {k: int(v) for k, v in data.get("frames", {}).items()})


def _pose_free(points_px: np.ndarray, reference_px: np.ndarray) -> np.ndarray:
    """`[T, 68, 2]` pixels -> the pose-free expression in the template's upright frame (face
    units): the frames taken onto the reference, then the reference onto the template, each
    by `split_pose`'s similarity on the STABLE points."""
    reference_px = reference_px.astype(np.float64)
    _, expression = kp.split_pose(points_px.astype(np.float64), np.broadcast_to(reference_px, points_px.shape))
    (log_scale, angle, tx, ty), _ = kp.split_pose(reference_px)
    cos, sin = np.cos(-angle), np.sin(-angle)
    moved = expression - np.array([tx, ty])
    return np.stack([cos * moved[..., 0] - sin * moved[..., 1], sin * moved[..., 0] + cos * moved[..., 1]],
                    -1) / np.exp(log_scale)


def _opening(displacement: np.ndarray) -> float:
    """Mouth opening (inner-lip gap, face units) a displacement adds to the template: linear."""
    return float(kp.mouth_opening(kp.FRONTAL_TEMPLATE + displacement) - kp.mouth_opening(kp.FRONTAL_TEMPLATE))


def speech_direction(neutral_frames: np.ndarray) -> np.ndarray:
    """`[68, 2]`: how the jaw and lip points of pose-free neutral frames `[N, 68, 2]` move per
    unit of mouth opening (least squares over the frames): speech's own mouth movement."""
    opening = kp.mouth_opening(neutral_frames)
    centred_opening = opening - opening.mean()
    slope = np.einsum("n,npc->pc", centred_opening, neutral_frames - neutral_frames.mean(0))
    slope /= max(float(np.sum(centred_opening**2)), 1e-12)
    mask = np.zeros((kp.NUM_POINTS, 1))
    mask[list(SPEECH_POINTS)] = 1.0
    return slope * mask


def without_opening(displacement: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """`displacement` less the multiple of `direction` that leaves the mouth opening unchanged
    (three rounds: the opening is measured along the eye line, which the displacement moves)."""
    for _ in range(3):
        displacement = displacement - _opening(displacement) / _opening(direction) * direction
    return displacement


def fit_prototypes(clips: Iterable[dict], source: str) -> Prototypes:
    """Prototypes from clips: dicts with `keypoints [T, 68, 2]` (pixels), `emotion`,
    `speaker`, optional `emotion_intensity` (0..1; missing or 0 for an emotional clip: 1).
    Every speaker needs at least one neutral clip; speakers without one are skipped."""
    by_speaker: dict[object, list[dict]] = defaultdict(list)
    for clip in clips:
        if clip["emotion"] in EMOTIONS:
            by_speaker[clip["speaker"]].append(clip)
    sums: dict[str, list[np.ndarray]] = defaultdict(list)
    frames: dict[str, int] = defaultdict(int)
    neutral_frames, speakers = [], 0
    for speaker_clips in by_speaker.values():
        neutral = [c for c in speaker_clips if c["emotion"] == "neutral"]
        if not neutral:
            continue
        speakers += 1
        reference = np.median(np.concatenate([c["keypoints"] for c in neutral]), axis=0)
        means: dict[str, list[np.ndarray]] = defaultdict(list)
        for clip in speaker_clips:
            face = _pose_free(np.asarray(clip["keypoints"]), reference)
            intensity = float(clip.get("emotion_intensity") or 1.0)
            means[clip["emotion"]].append((face.mean(0), intensity))
            frames[clip["emotion"]] += len(face)
            if clip["emotion"] == "neutral":
                neutral_frames.append(face)
        rest = np.mean([m for m, _ in means["neutral"]], axis=0)
        for name, pairs in means.items():
            if name != "neutral":
                sums[name].append(np.mean([(m - rest) / i for m, i in pairs], axis=0))
    if not speakers or not sums:
        raise InputError(f"{source}: no speaker with both neutral and emotional clips to fit emotion prototypes on")
    direction = speech_direction(np.concatenate(neutral_frames))
    displacements = {"neutral": np.zeros((kp.NUM_POINTS, 2), np.float32)}
    for name in EMOTIONS[1:]:
        if name in sums:
            mean = np.mean(sums[name], axis=0)
            displacements[name] = without_opening(mean, direction).astype(np.float32)
    return Prototypes(displacements, direction.astype(np.float32), source, speakers, dict(frames))


def synthetic_clips(speakers: int, first_speaker: int = 0, seed: int = 0) -> Iterable[dict]:
    """Keypoint-only synthetic clips: every emotion of every speaker at intensity 1 (neutral
    twice, so that the neutral reference rests on more speech)."""
    from t2v.data import synthetic

    for speaker in range(first_speaker, first_speaker + speakers):
        for index, emotion in enumerate(("neutral",) + EMOTIONS):
            clip = synthetic.make_clip(synthetic.clip_seed(seed, speaker * 16 + index), speaker=speaker,
                                       emotion=emotion, intensity=None if emotion == "neutral" else 1.0,
                                       render=False, language="en")
            yield {"keypoints": clip.keypoints, "emotion": clip.emotion, "speaker": clip.speaker,
                   "emotion_intensity": clip.emotion_intensity}


def record_clips(paths: list[str]) -> Iterable[dict]:
    """Clips of ArrayRecord files (or folders of them) that carry `emotion` and `speaker`."""
    from t2v.data import records

    files = []
    for path in paths:
        files += sorted(str(p) for p in Path(path).glob("*.array_record*")) if os.path.isdir(path) else [path]
    for record in records.read_records(files):
        clip = records.decode_clip(record, decode_frames=False)
        if clip.get("emotion") and clip.get("speaker") is not None:
            yield clip


def load_prototypes(checkpoint: str | os.PathLike | None = None) -> Prototypes:
    """The checkpoint folder's own `emotion_prototypes.json` if it has one, else `DEFAULT_PATH`."""
    own = None if checkpoint is None else Path(checkpoint) / FILE_NAME
    return Prototypes.load(own if own is not None and own.is_file() else DEFAULT_PATH)


@dataclasses.dataclass
class EmotionEdit:
    """`edit(points, reference)`: face-frame keypoints `[T, 68, 2]` with the emotion added."""

    emotion: str
    intensity: float
    prototypes: Prototypes

    @classmethod
    def for_request(cls, emotion: str, intensity: float, checkpoint=None) -> "EmotionEdit":
        """InputError (one line) for an unknown emotion or an intensity outside 0..1."""
        if emotion not in EMOTIONS:
            raise InputError(f"--emotion {emotion!r}: not one of {','.join(EMOTIONS)}")
        if not 0.0 <= intensity <= 1.0:
            raise InputError(f"--intensity {intensity:g}: must be in 0..1")
        prototypes = load_prototypes(checkpoint)
        if emotion not in prototypes.displacements:
            raise InputError(f"--emotion {emotion}: the emotion prototypes ({prototypes.source}) have no {emotion!r}")
        return cls(emotion, float(intensity), prototypes)

    def displacement(self, points: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """`[T, 68, 2]`: the prototype x intensity, turned and scaled by each frame's pose (the
        template's upright frame -> the reference -> the frame)."""
        reference = np.asarray(reference, np.float64)
        pose, _ = kp.split_pose(np.asarray(points, np.float64), np.broadcast_to(reference, np.shape(points)))
        own, _ = kp.split_pose(reference)
        scale, angle = np.exp(pose[:, 0] + own[0]), pose[:, 1] + own[1]
        cos, sin = np.cos(angle), np.sin(angle)
        rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [T, 2, 2]
        proto = self.intensity * self.prototypes.displacements[self.emotion].astype(np.float64)
        return scale[:, None, None] * np.einsum("tij,pj->tpi", rotation, proto)

    def __call__(self, points: np.ndarray, reference: np.ndarray) -> np.ndarray:
        return (np.asarray(points) + self.displacement(points, reference)).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t2v.generate.emotion", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help=f"the JSON to write (a checkpoint folder's {FILE_NAME})")
    parser.add_argument("--data", nargs="*", help="ArrayRecord files or folders with emotion labels "
                                                  "(default: synthetic speakers)")
    parser.add_argument("--speakers", type=int, default=24, help="synthetic speakers 0..N-1 (default 24)")
    args = parser.parse_args(argv)
    if args.data:
        prototypes = fit_prototypes(record_clips(args.data), source=" ".join(args.data))
    else:
        prototypes = fit_prototypes(synthetic_clips(args.speakers),
                                    source=f"synthetic speakers 0-{args.speakers - 1}, every emotion at intensity 1")
    prototypes.save(args.out)
    print(f"{args.out}: {len(prototypes.displacements) - 1} emotion prototypes from {prototypes.speakers} speakers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
