"""Does `t2v generate --emotion` show the emotion, keeping lips, identity and pose? Judged
by `t2v.evaluate.emotion_judge` (FACS rules on dlib's 68 landmarks; t2v never trains it and
nothing uses it as a loss) and dlib's ResNet face descriptor (`benchmarks/judges.py`).

    python benchmarks/emotion_generate.py --checkpoint runs/demo --frames-out /tmp/emo_frames

1. The judge on synthetic ground truth: held-out synthetic speakers (1000..), a neutral clip
   and the same clip `synthetic.with_emotion` happy / surprised (intensity 1), rendered with a
   photo texture (the astronaut, Grace Hopper) and painted; the judge's neutral is the
   neutral clip's first 5 frames. Rate of each target on the neutral clip (the input) vs on
   the emotional one.
2. `generate` on the astronaut and Grace Hopper photos with eSpeak NG speech: neutral, then
   `--emotion happy` and `--emotion surprised` (intensity 1, same seed); the judge's neutral
   is the photo. Per output: the judge's happy and surprised rates; against the neutral
   output: correlation of the mouth opening (lips kept), mean |head rotation difference| in
   degrees (pose kept); identity: descriptor distance to the photo's face (< 0.6 same person).

Writes benchmarks/results/emotion_generate.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import judges  # noqa: E402  benchmarks/judges.py

from t2v import audio, video  # noqa: E402
from t2v import keypoints as kp  # noqa: E402
from t2v.data import face_render, speech, synthetic  # noqa: E402
from t2v.evaluate.emotion_judge import EmotionJudge  # noqa: E402

TARGETS = ("happy", "surprised")
RESULTS = ROOT / "benchmarks" / "results" / "emotion_generate.json"


def grace_hopper_path() -> str:
    import matplotlib.cbook

    return str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def photos() -> dict[str, np.ndarray]:
    import skimage.data

    with Image.open(grace_hopper_path()) as image:
        hopper = np.asarray(image.convert("RGB"))
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": hopper}


def validate_judge(judge: EmotionJudge, speakers: int, frames: int) -> list[dict]:
    """Section 1: rows (rendering, clip emotion, target rates) over `speakers` held-out speakers."""
    textures = {"astronaut": face_render.PhotoTexture.astronaut(),
                "grace_hopper": face_render.PhotoTexture.from_file(grace_hopper_path()), "painted": None}
    rows = []
    for name, texture in textures.items():
        labels = {emotion: [] for emotion in ("neutral",) + TARGETS}
        for speaker in range(1000, 1000 + speakers):
            clip = synthetic.make_clip(speaker, speaker=speaker, emotion="neutral", language="en", size=256,
                                       texture=texture)
            neutral = judge.neutral(clip.frames[:5])
            for emotion in labels:
                shown = clip if emotion == "neutral" else synthetic.with_emotion(clip, emotion, 1.0, texture=texture)
                points, found = judge.landmarks(shown.frames[:frames])
                labels[emotion].append(judge.judge_points(points, found, neutral).labels)
        for emotion, parts in labels.items():
            lab = np.concatenate(parts)
            rows.append({"rendering": name, "clip": emotion, "frames": len(lab),
                         **{f"rate_{t}": float(np.mean(lab == t)) for t in TARGETS}})
    return rows


def _identity(frames: np.ndarray, points: np.ndarray, found: np.ndarray, photo_descriptor, every: int) -> float:
    distances = []
    for frame, p, ok in list(zip(frames, points, found))[::every]:
        if ok:
            distances.append(judges.identity_distance(judges.face_descriptor(frame, _box(p)), photo_descriptor))
    return float(np.mean(distances)) if distances else float("nan")


def _box(points: np.ndarray) -> "judges.FaceBox":
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    return judges.FaceBox(float(x0), float(y0), float(x1), float(y1))


def judge_generation(judge: EmotionJudge, checkpoint: str, seconds: float, frames_out: Path | None) -> list[dict]:
    """Section 2: rows (photo, emotion, rates, lips, pose, identity)."""
    from t2v.generate import TalkingHeadGenerator
    from t2v.generate.emotion import EmotionEdit

    generator = TalkingHeadGenerator.from_checkpoint(checkpoint)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        wave = speech.long_speech(seconds, "en", audio.SAMPLE_RATE)
        soundfile.write(folder / "speech.wav", wave, audio.SAMPLE_RATE)
        for name, photo in photos().items():
            Image.fromarray(photo).save(folder / f"{name}.png")
            neutral_points = judge.neutral(photo)
            (photo_points,), _ = judge.landmarks(photo[None])
            photo_descriptor = judges.face_descriptor(photo, _box(photo_points))
            measured, stills = {}, []
            for emotion in (None,) + TARGETS:
                out = folder / f"{name}_{emotion or 'neutral'}.mp4"
                edit = None if emotion is None else EmotionEdit.for_request(emotion, 1.0, checkpoint)
                generator.generate(folder / f"{name}.png", folder / "speech.wav", out, seed=0, keypoint_edit=edit)
                frames = video.read_video(out).frames
                points, found = judge.landmarks(frames)
                result = judge.judge_points(points, found, neutral_points)
                measured[emotion] = (points, found)
                stills.append(frames[len(frames) // 2])
                base_points, base_found = measured[None]
                both = found & base_found
                rotation = np.degrees(kp.head_rotation(points[both].astype(np.float64)) -
                                      kp.head_rotation(base_points[both].astype(np.float64)))
                rows.append({
                    "photo": name, "emotion": emotion or "neutral", "frames": len(frames),
                    "face_found": float(found.mean()),
                    **{f"rate_{t}": result.rate(t) for t in TARGETS},
                    "mouth_open_corr": float(np.corrcoef(kp.mouth_opening(points[both]),
                                                         kp.mouth_opening(base_points[both]))[0, 1]),
                    "pose_diff_deg": float(np.abs(rotation).mean()),
                    "identity_dist": _identity(frames, points, found, photo_descriptor, every=10),
                })
            if frames_out is not None:
                frames_out.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.concatenate(stills, 1)).save(frames_out / f"{name}_neutral_happy_surprised.png")
    return rows


def table(rows: list[dict], keys: list[str]) -> str:
    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(cell(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a t2v demo workdir (motion/ and render/)")
    parser.add_argument("--seconds", type=float, default=4.0, help="of speech per generated video")
    parser.add_argument("--speakers", type=int, default=3, help="held-out synthetic speakers per rendering")
    parser.add_argument("--frames", type=int, default=25, help="judged frames per synthetic clip")
    parser.add_argument("--frames-out", type=Path, help="write each photo's mid frames (neutral|happy|surprised)")
    args = parser.parse_args(argv)
    start = time.time()
    judge = EmotionJudge()
    validation = validate_judge(judge, args.speakers, args.frames)
    print(table(validation, ["rendering", "clip", "frames", "rate_happy", "rate_surprised"]), "\n", flush=True)
    generation = judge_generation(judge, args.checkpoint, args.seconds, args.frames_out)
    print(table(generation, ["photo", "emotion", "frames", "face_found", "rate_happy", "rate_surprised",
                             "mouth_open_corr", "pose_diff_deg", "identity_dist"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python benchmarks/emotion_generate.py " + " ".join(argv or sys.argv[1:]),
                                   "judge_validation": validation, "generation": generation,
                                   "seconds": round(time.time() - start, 1)}, indent=1))
    print(f"wrote {RESULTS} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
