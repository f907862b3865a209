"""Input-pipeline throughput per CPU core, next to what a train step consumes.

    python benchmarks/pipeline_throughput.py
    python benchmarks/pipeline_throughput.py --examples 400 --sizes 64,128

Measures, in one process and one thread, warm (the synthetic cache is built and, for
windows, every clip's features are prepared before timing), the example makers the
training pipelines run for every example:
  windows   `pipeline.WindowMaker` on the motion tiny config: keypoint + mel windows
  pairs     `pipeline.PairMaker` on the render config at 64 / 128 / 256 px, with and
            without `data.augment` (`pipeline.PairAugment`): record decode, two JPEG
            decodes, resize, and the warp + colour jitter when on
Per core = examples / CPU seconds of the process (the figure that divides over Grain
workers); wall examples/s is printed too. Batching (a `np.stack` per batch) is included.

Next to each row: the examples/s a train step consumes, read from
benchmarks/results/train_throughput.json (`step_examples_per_s`) and, for pixel pairs, from
benchmarks/results/render_speed.json (renderer forward frames/s at batch 8: an upper bound
on a train step, which also runs backward and the discriminator), or n/a when not recorded.
Prints a table and writes benchmarks/results/pipeline_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t2v import config as config_lib  # noqa: E402
from t2v.data import pipeline  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def timed(make_example, num_examples: int, batch_size: int) -> dict:
    """Run `make_example(i, rng)` `num_examples` times, stacking batches: per-core and wall rates."""
    rng = np.random.default_rng(0)
    batch = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(num_examples):
        batch.append(make_example(i, rng))
        if len(batch) == batch_size:
            {name: np.stack([e[name] for e in batch]) for name in batch[0]}
            batch = []
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"examples": num_examples, "per_core_examples_per_s": num_examples / cpu,
            "wall_examples_per_s": num_examples / wall}


def window_row(examples: int, cache_dir: str, train_clips: int) -> dict:
    config = config_lib.load("configs/motion.py:tiny", [
        f"--config.data.train_clips={train_clips}", f"--config.data.cache_dir={cache_dir}"])
    maker = pipeline.WindowMaker(int(config.data.window), int(config.data.max_shift))
    maker.source = pipeline.record_source(pipeline.shard_paths(config, "train", 0))
    count = len(maker.source)
    for i in range(count):  # warm: every clip's features prepared once, as in a long run
        maker.clip(i)
    result = timed(lambda i, rng: maker(i % count, rng), examples, int(config.train.batch_size))
    return {"what": "keypoint windows", "config": "motion:tiny", "window": int(config.data.window),
            "size": 0, "augment": False, **result}


def pair_rows(examples: int, cache_dir: str, train_clips: int, size: int) -> list[dict]:
    config = config_lib.load("configs/render.py:tiny", [
        f"--config.data.size={size}", f"--config.data.train_clips={train_clips}", f"--config.data.cache_dir={cache_dir}"])
    source = pipeline.record_source(pipeline.shard_paths(config, "train", 0, render=True))
    records = [source[i] for i in range(len(source))]  # reading bytes is the storage's cost, not ours
    rows = []
    for augment in (None, pipeline.PairAugment.from_config(config.data)):
        maker = pipeline.PairMaker(size, float(config.loss.mouth_margin), augment=augment)
        maker((0, records[0]), np.random.default_rng(0))  # warm
        result = timed(lambda i, rng: maker((i, records[i % len(records)]), rng), examples,
                       int(config.train.batch_size))
        rows.append({"what": "pixel pairs", "config": "render:tiny", "size": size,
                     "augment": augment is not None, **result})
    return rows


def train_consumption() -> dict:
    """{(task, size): (examples/s, where from)} of recorded train-step measurements."""
    found = {}
    train = RESULTS / "train_throughput.json"
    if train.exists():
        for r in json.loads(train.read_text())["results"]:
            found[(r["task"], r["variant"])] = (r["step_examples_per_s"], f"{r['task']}:{r['variant']} train step")
    render = RESULTS / "render_speed.json"
    if render.exists():
        for r in json.loads(render.read_text())["results"]:
            if r["batch"] == 8 and not r["refine"]:
                found[("render", r["size"])] = (r["frames_per_sec"], f"render forward {r['size']} px, batch 8")
    return found


def consumer(row: dict, recorded: dict) -> list[tuple[float, str]]:
    if row["what"] == "keypoint windows":
        keys = [("motion", "tiny"), ("motion", "base"), ("sync", "tiny"), ("sync", "base")]
    else:
        keys = [("render", "tiny" if row["size"] == 64 else "base"), ("render", row["size"])]
    return [recorded[k] for k in keys if k in recorded]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="examples timed per row (pairs: a fifth)")
    parser.add_argument("--sizes", default="64,128,256", help="pixel sizes of the frame-pair rows")
    parser.add_argument("--train-clips", type=int, default=8, help="synthetic clips to build (small: quick)")
    parser.add_argument("--cache-dir", default="", help="synthetic cache ('' = $T2V_CACHE or ~/.cache/t2v)")
    args = parser.parse_args()

    rows = [window_row(args.examples, args.cache_dir, args.train_clips)]
    for size in (int(s) for s in args.sizes.split(",")):
        rows += pair_rows(max(args.examples // 5, 16), args.cache_dir, args.train_clips, size)
    recorded = train_consumption()
    for row in rows:
        row["train_step_consumes"] = [{"examples_per_s": rate, "measured": what} for rate, what in consumer(row, recorded)]

    print(f"{'examples':<18}{'size':>5}{'augment':>9}{'per core/s':>12}{'wall/s':>9}   a train step consumes (examples/s)")
    for row in rows:
        consumes = "; ".join(f"{c['examples_per_s']:.0f} ({c['measured']})" for c in row["train_step_consumes"]) or "n/a"
        print(f"{row['what']:<18}{row['size'] or '-':>5}{'on' if row['augment'] else 'off':>9}"
              f"{row['per_core_examples_per_s']:>12.0f}{row['wall_examples_per_s']:>9.0f}   {consumes}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "pipeline_throughput.json"
    out.write_text(json.dumps({
        "benchmark": "pipeline_throughput", "machine": platform.machine(), "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
