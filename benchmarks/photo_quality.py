"""Does `t2v generate` look like the photo? Five figures from judges t2v never trained with.

    python benchmarks/photo_quality.py --checkpoint runs/demo --label before
    python benchmarks/photo_quality.py --checkpoint runs/demo --label after --frames-out /tmp/pq
    python benchmarks/photo_quality.py --checkpoint runs/demo --cases astronaut --seconds 8

For each case (a photo the project holds and speech eSpeak NG makes) it runs `t2v generate
--checkpoint DIR` as a user would (a subprocess), then judges the mp4 against the photo
with `benchmarks/judges.py` (MediaPipe face detection and FaceMesh, dlib's CNN detector and
ResNet face descriptor; nothing of t2v's own landmark extractor or training):

  * face found: the fraction of frames where MediaPipe finds a face overlapping (IoU >= 0.3)
    the animated face's box in the photo;
  * identity distance: dlib face-descriptor distance from the photo's face to the face in
    16 frames spread over the clip, max and median (< 0.6 same person; the goal is <= 0.35);
  * detail kept: variance of the Laplacian inside the photo's face box, output frame over
    photo, median of the same 16 frames (H.264 compression included: it is what users get);
  * mouth vs speech: Pearson r between FaceMesh's inner-lip gap / inter-ocular distance and
    the RMS envelope of the mp4's own audio per frame, the best r over lags of -2..+2
    frames (40 ms each; the lag is printed: a positive lag means the mouth leads); and the
    std of that mouth opening over the clip;
  * blinks a minute: dips of the eye aspect ratio below 70% of its 2-s running median,
    lasting at most 0.6 s.

In a group photo the animated face is the one whose pixels change most over the clip: the
judges find it themselves rather than trust t2v's choice. A reference row judges t2v's own
synthetic photo warp (astronaut texture, ground-truth motion, written through the same
H.264 encoder): what the figures read when the motion is right and the pixels are the photo.

Cases: astronaut (512x512 colour, English), group (six faces tiled from the astronaut and
matplotlib's Grace Hopper portrait, German), grey112 (a 112x112 grey downscale of the
astronaut, ~23-px face, Japanese in kana); held out (never used to build the photo path):
hopper (matplotlib's Grace Hopper photo alone, Hindi) and camera (scikit-image's
cameraman, grey, face turned past 3/4 view, Greek). Prints a table, writes
benchmarks/results/photo_quality.json (rows of other labels are kept) and the "Photo
quality" section of benchmarks/RESULTS.md; `--frames-out` writes PNGs of judged frames.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import scipy.ndimage
import soundfile
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import judges  # noqa: E402  (benchmarks/, the script's own folder)
from recording import write_record  # noqa: E402
from t2v.data import speech  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLED_FRAMES = 16
SAMPLE_RATE = 16000
CASES = ("astronaut", "group", "grey112", "hopper", "camera")
SECTION = "## Photo quality (independent judges)"

# Everyday Japanese in kana (eSpeak NG's ja dictionary reads kana, not kanji); written for t2v.
JAPANESE = (
    "きょうは とても いい てんき ですね。",
    "えきまで あるいて じゅっぷん です。",
    "あした ともだちと えいがを みに いきます。",
    "この みせの らーめんは おいしい です。",
    "まいあさ こーひーを のみます。",
    "しゅくだいは もう おわりましたか。",
    "でんしゃが すこし おくれて います。",
    "にわに あかい はなが さいて います。",
    "もうすこし ゆっくり はなして ください。",
    "てつだって くれて ほんとうに ありがとう。",
)

# Held out: languages outside the Latin script that t2v never trains on (not in
# `speech.LANGUAGES`), everyday sentences written for t2v.
HINDI = (
    "आज मौसम बहुत अच्छा है।",
    "स्टेशन यहाँ से दस मिनट की दूरी पर है।",
    "कल हम दोस्तों के साथ फ़िल्म देखने जाएँगे।",
    "मुझे सुबह चाय पीना पसंद है।",
    "क्या आपने अपना काम पूरा कर लिया?",
    "बाज़ार में आज बहुत भीड़ है।",
    "कृपया थोड़ा धीरे बोलिए।",
    "मदद के लिए आपका बहुत धन्यवाद।",
)
GREEK = (
    "Σήμερα ο καιρός είναι πολύ ωραίος.",
    "Ο σταθμός είναι δέκα λεπτά με τα πόδια.",
    "Αύριο θα πάμε σινεμά με τους φίλους μας.",
    "Κάθε πρωί πίνω έναν καφέ στο μπαλκόνι.",
    "Τελείωσες την εργασία σου;",
    "Το τρένο έχει λίγη καθυστέρηση σήμερα.",
    "Μίλα λίγο πιο αργά, σε παρακαλώ.",
    "Σε ευχαριστώ πολύ για τη βοήθεια.",
)


# --------------------------------------------------------------------------- inputs


def astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.asarray(image.convert("RGB"))


def _face_tile(image: np.ndarray, face_px: int, tile: int, mirror: bool = False, grey: bool = False,
               tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:  # fmt: skip
    """A `tile x tile` crop of `image` centred on its face, scaled so the face is `face_px` wide."""
    box = judges.detect_faces(image)[0]
    scale = face_px / box.width
    resized = Image.fromarray(image).resize((round(image.shape[1] * scale), round(image.shape[0] * scale)))
    pixels = np.asarray(resized.convert("L").convert("RGB") if grey else resized).astype(np.float64)
    pixels = np.clip(pixels * np.array(tint), 0, 255).astype(np.uint8)
    cx, cy = (c * scale for c in box.centre)
    padded = np.pad(pixels, ((tile, tile), (tile, tile), (0, 0)), mode="edge")
    x0, y0 = int(round(cx - tile / 2)) + tile, int(round(cy - tile * 0.45)) + tile
    crop = padded[y0 : y0 + tile, x0 : x0 + tile]
    return crop[:, ::-1] if mirror else crop


def group_photo() -> np.ndarray:
    """768 x 512: six faces in a 3 x 2 grid, the astronaut's in the middle of the top row the
    largest (150 px wide), the others 90-120 px: two people, mirrored, grey and tinted."""
    a, g, t = astronaut(), grace_hopper(), 256
    tiles = [
        _face_tile(g, 110, t), _face_tile(a, 150, t), _face_tile(g, 100, t, mirror=True, grey=True),
        _face_tile(a, 95, t, mirror=True, tint=(1.0, 0.9, 0.8)), _face_tile(g, 120, t, tint=(0.9, 1.0, 1.05)),
        _face_tile(a, 105, t, grey=True),
    ]  # fmt: skip
    return np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)


def grey_small() -> np.ndarray:
    return np.asarray(Image.fromarray(astronaut()).convert("L").resize((112, 112), Image.LANCZOS).convert("RGB"))


def camera() -> np.ndarray:
    """scikit-image's cameraman (512x512 grey): a face turned well past 3/4 view, ~75 px."""
    import skimage.data

    return np.repeat(skimage.data.camera()[..., None], 3, -1)


def case_inputs(case: str, seconds: float) -> tuple[np.ndarray, np.ndarray, str]:
    """(photo uint8 [H, W, 3], speech float32 [S] at 16 kHz, language) of a case."""
    if case == "astronaut":
        return astronaut(), speech.long_speech(seconds, "en", SAMPLE_RATE), "en"
    if case == "group":
        return group_photo(), speech.long_speech(seconds, "de", SAMPLE_RATE), "de"
    if case == "grey112":
        return grey_small(), speech.long_speech(seconds, "ja", SAMPLE_RATE, sentences=JAPANESE), "ja"
    if case == "hopper":  # matplotlib's Grace Hopper photo on its own, at its own size
        return grace_hopper(), speech.long_speech(seconds, "hi", SAMPLE_RATE, sentences=HINDI), "hi"
    if case == "camera":
        return camera(), speech.long_speech(seconds, "el", SAMPLE_RATE, sentences=GREEK), "el"
    raise SystemExit(f"--cases: unknown case {case!r} (known: {', '.join(CASES)})")


# --------------------------------------------------------------------------- video


def read_mp4(path: Path) -> tuple[np.ndarray, float, np.ndarray, int]:
    """(frames uint8 [T, H, W, 3], fps, audio float32 mono [S], its sample rate), with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = stream.rate
    wave = np.concatenate([c.reshape(c.shape[0], -1) if c.ndim > 1 else c[None] for c in chunks], axis=1)
    return frames, fps, wave.astype(np.float32).mean(0), rate


def write_mp4(path: Path, frames: np.ndarray, wave: np.ndarray, fps: int = 25) -> None:
    """H.264 (yuv420p, libx264 defaults) + AAC, as `t2v generate` writes its output."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        samples = (np.clip(wave, -1, 1) * 32767).astype(np.int16)[None]
        audio_frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        audio_frame.sample_rate = SAMPLE_RATE
        container.mux(sound.encode(audio_frame))
        container.mux(sound.encode())


# --------------------------------------------------------------------------- judging


def animated_face(photo: np.ndarray, frames: np.ndarray) -> judges.FaceBox:
    """The photo's face whose box changes most over the clip (mean |frame - photo|)."""
    faces = judges.detect_faces(photo)
    if not faces:
        raise SystemExit("the judge finds no face in the photo")
    if len(faces) == 1 or frames.shape[1:3] != photo.shape[:2]:
        return faces[0]
    sample = frames[np.linspace(0, len(frames) - 1, 8).astype(int)].astype(np.float64)
    change = [np.abs(box.pixels(sample.transpose(1, 2, 0, 3)) - box.pixels(photo)[:, :, None]).mean() for box in faces]
    return faces[int(np.argmax(change))]


def judge(photo: np.ndarray, frames: np.ndarray, fps: float, wave: np.ndarray, rate: int,
          photo_for_identity: np.ndarray | None = None) -> dict:  # fmt: skip
    """The five figures (and what they rest on) for `frames` [T, H, W, 3] made from `photo`."""
    box = animated_face(photo, frames)
    found = [judges.find_face(frame, box) for frame in frames]
    points = [judges.face_landmarks(frame, face or box) for frame, face in zip(frames, found)]
    measured = np.array([p is not None for p in points])
    mouth = np.array([judges.mouth_opening(p) if p is not None else np.nan for p in points])
    ear = np.array([judges.eye_aspect_ratio(p) if p is not None else np.nan for p in points])
    envelope = judges.speech_envelope(wave, rate, len(frames), fps)
    r, lag = judges.lagged_correlation(mouth, envelope)
    r0, _ = judges.lagged_correlation(mouth, envelope, max_lag=0)
    blink_frames = judges.blinks(ear, fps)

    reference = photo if photo_for_identity is None else photo_for_identity
    reference_box = box if photo_for_identity is None else judges.detect_faces(reference)[0]
    photo_descriptor = judges.face_descriptor(reference, reference_box)
    photo_detail = judges.laplacian_variance(box.pixels(photo))
    sampled = np.linspace(0, len(frames) - 1, SAMPLED_FRAMES).astype(int)
    distances = [judges.identity_distance(photo_descriptor, judges.face_descriptor(frames[i], found[i] or box))
                 for i in sampled]  # fmt: skip
    detail = [judges.laplacian_variance(box.pixels(frames[i])) / photo_detail for i in sampled]
    minutes = len(frames) / fps / 60
    return {
        "frames": len(frames), "seconds": len(frames) / fps, "face_px": round(box.width),
        "face_found": float(np.mean([f is not None for f in found])), "landmarks_found": float(measured.mean()),
        "identity_max": float(np.max(distances)), "identity_median": float(np.median(distances)),
        "detail_kept": float(np.median(detail)), "mouth_r": r, "mouth_lag_frames": lag, "mouth_r_lag0": r0,
        "mouth_std": float(np.nanstd(mouth)), "blinks_per_minute": len(blink_frames) / minutes,
        "_series": {"mouth": mouth, "ear": ear, "envelope": envelope, "blinks": blink_frames, "box": box,
                    "distances": dict(zip(sampled.tolist(), distances))},
    }  # fmt: skip


# --------------------------------------------------------------------------- cases


def run_generate(photo_path: Path, speech_path: Path, out: Path, checkpoint: str) -> float:
    """`t2v generate` in a subprocess of this checkout; returns its wall time in seconds."""
    command = [sys.executable, "-c", "import sys; from t2v.cli import main; sys.exit(main())", "generate",
               "--image", str(photo_path), "--audio", str(speech_path), "--out", str(out), "--checkpoint", checkpoint]  # fmt: skip
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"t2v generate failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - start


def reference_row(seconds: float, scratch: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """t2v's synthetic photo warp judged like a generated video (see the module docstring).
    Its "photo" for detail is the texture rendered on the clip's neutral face; identity is
    measured against the astronaut photo itself."""
    from t2v.data import face_render, synthetic

    texture = face_render.PhotoTexture.astronaut()
    clips = [synthetic.make_clip(seed, language="en", speaker=3, emotion="neutral", size=256, texture=texture)
             for seed in range(100, 100 + max(1, int(seconds // 3)))]  # fmt: skip
    frames = np.concatenate([c.frames for c in clips])
    wave = np.concatenate([c.audio for c in clips])
    neutral = texture.render(clips[0].neutral_keypoints, 256)
    write_mp4(scratch / "reference.mp4", frames, wave)
    frames, fps, wave, rate = read_mp4(scratch / "reference.mp4")
    return judge(neutral, frames, fps, wave, rate, photo_for_identity=astronaut()), neutral, frames


def write_pngs(folder: Path, case: str, photo: np.ndarray, frames: np.ndarray, row: dict) -> None:
    """The photo, and frames at the widest and narrowest mouth, a blink, the worst identity."""
    series = row["_series"]
    box, mouth = series["box"], series["mouth"]
    picks = {"photo": None}
    if np.isfinite(mouth).any():
        picks["mouth_widest"] = int(np.nanargmax(mouth))
        picks["mouth_closed"] = int(np.nanargmin(mouth))
    if series["blinks"]:
        picks["blink"] = series["blinks"][0]
    picks["identity_worst"] = max(series["distances"], key=series["distances"].get)
    folder.mkdir(parents=True, exist_ok=True)
    for name, index in picks.items():
        image = Image.fromarray(photo if index is None else frames[index])
        draw = ImageDraw.Draw(image)
        draw.rectangle([box.x0, box.y0, box.x1, box.y1], outline=(255, 0, 0))
        if index is not None:
            draw.text((2, 2), f"frame {index} mouth {mouth[index]:.3f}", fill=(255, 255, 0))
        image.save(folder / f"{case}_{name}.png")


def run_case(case: str, checkpoint: str, seconds: float, scratch: Path, frames_out: Path | None) -> dict:
    photo, wave, language = case_inputs(case, seconds)
    photo_path, speech_path, out = scratch / f"{case}.png", scratch / f"{case}.wav", scratch / f"{case}.mp4"
    Image.fromarray(photo).save(photo_path)
    soundfile.write(speech_path, wave, SAMPLE_RATE)
    generate_s = run_generate(photo_path, speech_path, out, checkpoint)
    frames, fps, audio_track, rate = read_mp4(out)
    row = judge(photo, frames, fps, audio_track, rate)
    if frames_out:
        write_pngs(frames_out, case, photo, frames, row)
    description = {"astronaut": "the astronaut, 512x512", "group": "group photo of six faces, 768x512",
                   "grey112": "112x112 grey portrait", "hopper": "Grace Hopper, 512x600 (held out)",
                   "camera": "cameraman, 512x512 grey (held out)"}[case]  # fmt: skip
    return {"case": case, "photo": description, "photo_size": list(photo.shape[1::-1]), "language": language,
            "generate_seconds": generate_s, **row}  # fmt: skip


# --------------------------------------------------------------------------- report

FIGURES = (
    ("face found in the frames", lambda r: f"{r['face_found']:.2f}"),
    ("identity distance to the photo, max / median (< 0.6 same person)",
     lambda r: f"{r['identity_max']:.2f} / {r['identity_median']:.2f}"),
    ("detail kept: Laplacian variance in the face box, output / photo", lambda r: f"{r['detail_kept']:.2f}"),
    ("mouth opening vs speech envelope, r (lag in frames)", lambda r: f"{r['mouth_r']:.2f} ({r['mouth_lag_frames']:+d})"),
    ("std of mouth opening, inner-lip gap / inter-ocular", lambda r: f"{r['mouth_std']:.3f}"),
    ("blinks a minute", lambda r: f"{r['blinks_per_minute']:.0f}"),
)  # fmt: skip


def table(rows: list[dict]) -> str:
    header = ["", *(f"{r['label']}: {r['photo']}; {r['seconds']:.0f} s {r['language']}" for r in rows)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for name, show in FIGURES:
        lines.append("| " + " | ".join([name, *(show(r) for r in rows)]) + " |")
    return "\n".join(lines)


def merge_record(path: Path, rows: list[dict]) -> list[dict]:
    """The rows of `path` under labels `rows` do not have, then `rows`."""
    labels, kept = {r["label"] for r in rows}, []
    if path.exists():
        kept = [r for r in json.loads(path.read_text()).get("results", []) if r.get("label") not in labels]
    return kept + rows


def write_section(rows: list[dict], checkpoint: str) -> None:
    """Replaces (or appends) this benchmark's section of benchmarks/RESULTS.md."""
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    failures = [f"{r['label']} {r['case']}: {r['error'].splitlines()[-1]}" for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    labels = sorted({r["label"] for r in rows})
    body = (f"{SECTION}\n\n`python benchmarks/photo_quality.py --checkpoint DIR --label LABEL` "
            f"({time.strftime('%Y-%m-%d %H:%M')}, checkpoint `{checkpoint}`, labels {', '.join(labels)}). "
            "Judges apart from t2v (benchmarks/judges.py): MediaPipe face detection and FaceMesh, dlib's CNN "
            "detector and ResNet face descriptor. The reference column is t2v's own synthetic photo warp "
            "(ground-truth motion) judged the same way. Goals (issue 8): face found >= 0.95, identity "
            "<= 0.35, detail >= 0.6, r >= 0.4, std >= 0.025, 5-40 blinks a minute.\n\n"
            f"{table(rows)}\n" + "".join(f"\nNot judged: {f}\n" for f in failures))  # fmt: skip
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: body.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote the {SECTION[3:]!r} section of {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a `t2v demo` workdir (motion/ and render/)")
    parser.add_argument("--label", default="current", help="names these rows, e.g. before / after")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seconds", type=float, default=20.0, help="of speech per case")
    parser.add_argument("--no-reference", action="store_true", help="skip the synthetic-warp reference row")
    parser.add_argument("--frames-out", type=Path, help="write PNGs of judged frames here")
    parser.add_argument("--out", type=Path, default=RESULTS / "photo_quality.json")
    parser.add_argument("--no-results-md", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="t2v-photo-quality-") as scratch:
        scratch = Path(scratch)
        for case in args.cases.split(","):
            try:
                row = run_case(case, args.checkpoint, args.seconds, scratch, args.frames_out)
            except SystemExit as failure:  # t2v refused the case (e.g. no face found): recorded as such
                print(f"{case}: {failure}", flush=True)
                failed.append({"label": args.label, "case": case, "error": str(failure).strip()[-500:]})
                continue
            rows.append({"label": args.label, **row})
            print(table(rows[-1:]), flush=True)
        if not args.no_reference:
            row, neutral, frames = reference_row(min(args.seconds, 12.0), scratch)
            rows.append({"label": "reference", "case": "synthetic_warp", "photo": "synthetic astronaut warp, 256x256",
                         "photo_size": [256, 256], "language": "en", **row})  # fmt: skip
            if args.frames_out:
                write_pngs(args.frames_out, "reference", neutral, frames, row)
            print(table(rows[-1:]), flush=True)
    for row in rows:
        row.pop("_series")
    print(table(rows))
    all_rows = merge_record(args.out, rows + failed)
    write_record("photo_quality", all_rows, args.out)
    if not args.no_results_md:
        write_section(all_rows, args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
