"""Data-preparation throughput: clips (and frames) per second on one CPU core.

Renders synthetic VoxCeleb2-style clips (astronaut photo texture, ground truth beside
each mp4), then prepares them one after another in this process, as one Beam worker
or one local build would, and times each stage. It also reports the keypoint error
against the ground truth, so a speed-up that costs accuracy shows.

    python benchmarks/prepare_throughput.py --clips 4 --size 224 --detect-every 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: numpy and scipy must not spread out

import numpy as np  # noqa: E402: after the thread limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="source frame size (VoxCeleb2 is 224)")
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()

    from data_pipelines import align, clip, landmarks, layouts
    from t2v.data import records, synthetic
    from t2v.data.face_render import PhotoTexture

    with tempfile.TemporaryDirectory() as root:
        synthetic.synthesize(root, args.clips, fmt="voxceleb2", texture=PhotoTexture.astronaut(), size=args.size,
                             seed=args.seed, progress=False)  # fmt: skip
        sources = layouts.list_clips("voxceleb2", root)
        options = clip.PrepareOptions(detect_every=args.detect_every)
        detector = landmarks.LandmarkDetector(args.detect_every)
        stage_seconds = {"decode": 0.0, "landmarks": 0.0, "crop_and_labels": 0.0, "encode": 0.0}
        frames = 0
        errors_iod = []
        start = time.perf_counter()
        for source in sources:
            began = time.perf_counter()
            video_frames, _ = clip.decode_media(source, options)
            decoded = time.perf_counter()
            detector.track(video_frames)
            tracked = time.perf_counter()
            # The whole per-clip path (decoding and tracking again): what it takes beyond
            # those two is the crop, pose and AU work.
            prepared = clip.extract_clip(source, detector, options)
            extracted = time.perf_counter()
            records.encode_clip(prepared.fields)
            encoded = time.perf_counter()
            stage_seconds["decode"] += decoded - began
            stage_seconds["landmarks"] += tracked - decoded
            stage_seconds["crop_and_labels"] += (extracted - tracked) - (decoded - began) - (tracked - decoded)
            stage_seconds["encode"] += encoded - extracted
            frames += len(video_frames)
            truth = np.load(Path(source.path).with_suffix(".npz"))["keypoints"][: len(prepared.landmarks)]
            crop_truth = align.transform_points(truth, prepared.fields["crop_transform"])
            error = np.linalg.norm(prepared.fields["keypoints"] - crop_truth, axis=-1).mean(-1)
            iod = np.linalg.norm(crop_truth[:, 36:42].mean(1) - crop_truth[:, 42:48].mean(1), axis=-1)
            errors_iod.append(error / iod)
        seconds = sum(stage_seconds.values())  # one pass per clip, as a build makes
        wall = time.perf_counter() - start

    result = {
        "clips": len(sources),
        "frames": frames,
        "source_size": args.size,
        "detect_every": args.detect_every,
        "clips_per_second_per_core": round(len(sources) / seconds, 3),
        "frames_per_second_per_core": round(frames / seconds, 1),
        "seconds_per_stage": {name: round(value, 3) for name, value in stage_seconds.items()},
        "keypoint_error_percent_inter_ocular": round(100 * float(np.concatenate(errors_iod).mean()), 2),
        "benchmark_wall_seconds": round(wall, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
