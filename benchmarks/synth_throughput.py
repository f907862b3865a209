"""How fast the synthetic talking heads are made: seconds of clip per CPU second.

    python benchmarks/synth_throughput.py [--clips 24] [--size 224] [--out benchmarks/results/synth_throughput.json]

Modes: keypoints only (`render=False`, the fast path for keypoint training), painted
frames (`render_face`), frames warped from the astronaut photograph (`PhotoTexture`,
needs the [data] extra), and painted frames encoded as a record (JPEG + msgpack).
CPU time is `time.process_time()` of this process (all threads), so the figures do not
depend on what else runs on the machine; wall time is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from t2v.data import records, synthetic


def measure(name: str, num_clips: int, make) -> dict:
    """Runs `make(seed)` for `num_clips` seeds; returns the mode's figures."""
    make(10_000)  # warm-up: imports, numba and FFT plans, caches of identities
    cpu, wall, seconds, frames = 0.0, 0.0, 0.0, 0
    for seed in range(num_clips):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        clip = make(seed)
        cpu += time.process_time() - cpu_start
        wall += time.perf_counter() - wall_start
        seconds += len(clip.audio) / synthetic.SAMPLE_RATE
        frames += clip.num_frames
    return {
        "mode": name, "clips": num_clips, "clip_seconds": round(seconds, 2), "frames": frames,
        "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3),
        "clip_seconds_per_cpu_second": round(seconds / cpu, 2), "frames_per_cpu_second": round(frames / cpu, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="clips for keypoints only; a quarter of it for pixels")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "synth_throughput.json"))
    args = parser.parse_args()
    pixel_clips = max(1, args.clips // 4)

    def keypoints_only(seed):
        return synthetic.make_clip(seed, render=False)

    def painted(seed):
        return synthetic.make_clip(seed, size=args.size)

    class Encoded:  # a rendered clip written as a record, as `t2v synth --format records` does
        def __init__(self, seed):
            clip = painted(seed)
            self.record = records.encode_clip(clip.to_record())
            self.audio, self.num_frames = clip.audio, clip.num_frames

    results = [
        measure("keypoints only", args.clips, keypoints_only),
        measure(f"painted {args.size}px", pixel_clips, painted),
        measure(f"painted {args.size}px + record", pixel_clips, Encoded),
    ]
    note = ""
    try:
        from t2v.data.face_render import PhotoTexture

        start = time.process_time()
        texture = PhotoTexture.astronaut()
        note = f"photo texture set-up (landmarks of the photograph): {time.process_time() - start:.2f} CPU s"
        results.append(measure(f"photo {args.size}px", pixel_clips,
                               lambda seed: synthetic.make_clip(seed, size=args.size, texture=texture)))  # fmt: skip
    except ImportError as error:  # dlib comes with the [data] extra
        note = f"photo texture skipped: {error}"

    header = ("mode", "clips", "clip s", "CPU s", "wall s", "clip s / CPU s", "frames / CPU s")
    rows = [(r["mode"], r["clips"], r["clip_seconds"], r["cpu_seconds"], r["wall_seconds"],
             r["clip_seconds_per_cpu_second"], r["frames_per_cpu_second"]) for r in results]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    if note:
        print(note)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    report = {
        "benchmark": "synth_throughput", "results": results, "note": note,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
