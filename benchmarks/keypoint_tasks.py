"""motion, a2k and pose_lstm in one table: the same held-out clips, metrics, judge, 3 seeds.

    python benchmarks/keypoint_tasks.py --workdir runs/keypoint_tasks [--seeds 3] [--steps 500]

Trains the sync judge apart from every model (`configs/sync.py:judge`: its own speakers and
seed; no model here trains against a sync expert), then `t2v sweep`s each task's tiny config
over the seeds; every run is scored by `t2v eval` on the same pinned held-out clips (unseen
speakers, unseen sentences, half of them in the unseen language `data.eval_langs`) with
detected references, beside the baselines (static, energy, retrieval, copy-the-source's-pose)
and the ground truth. Baselines and truth are mean +- std over every run's evaluation (their
energy fit and retrieval database come from each seed's training clips).
Writes `benchmarks/results/keypoint_tasks.json` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import write_record  # noqa: E402

TASKS = ("motion", "a2k", "pose_lstm")
METRICS = ("mouth_corr", "mouth_corr_unseen_language", "lmd_mouth", "lmd", "sync_offset_acc", "sync_distance",
           "audio_pose_corr", "pose_diversity", "identity_err")
BASELINES = ("static", "energy", "retrieval", "source_pose")
# What "beats the strongest trivial baseline" is judged on, and which way is better.
VERDICTS = {"mouth_corr": max, "mouth_corr_unseen_language": max, "sync_offset_acc": max, "lmd_mouth": min}


def mean_std(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def collect(root: Path, task: str) -> dict:
    """Per metric mean +- std of the model, each baseline and the truth over a task's runs."""
    runs = sorted((root / task / "default").glob("seed_*/eval/metrics.json"))
    results = [json.loads(p.read_text()) for p in runs]
    entry = {"runs": [str(p.parent.parent) for p in runs], "clips_sha1": sorted({r["clips_sha1"] for r in results}),
             "step": sorted({r["step"] for r in results})}
    for who in ("model", "ground_truth", *BASELINES):
        rows = [r[who] if who in ("model", "ground_truth") else r["baselines"][who] for r in results]
        entry[who] = {m: mean_std([row[m] for row in rows]) for m in METRICS if all(m in row for row in rows)}
    entry["verdicts"] = {}
    for metric, better in VERDICTS.items():
        scored = {b: entry[b][metric]["mean"] for b in BASELINES if metric in entry[b]}
        if metric not in entry["model"] or not scored:
            continue
        strongest = better(scored, key=scored.get)
        model = entry["model"][metric]["mean"]
        entry["verdicts"][metric] = {"strongest_baseline": strongest, "baseline": scored[strongest], "model": model,
                                     "model_beats_it": bool(better(model, scored[strongest]) == model
                                                            and model != scored[strongest])}
    return entry


def cell(stats: dict, metric: str) -> str:
    return f"{stats[metric]['mean']:.3f} ± {stats[metric]['std']:.3f}" if metric in stats else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/keypoint_tasks")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=500, help="training steps of every task (0: each tiny config's)")
    parser.add_argument("--max-clips", type=int, default=0, help="the first N pinned held-out clips (0: all)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--collect-only", action="store_true",
                        help="train nothing: tabulate the runs of --workdir that have finished")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "keypoint_tasks.json"))
    args = parser.parse_args()
    from t2v import config as config_lib
    from t2v import sweep, train

    root = Path(args.workdir)
    judge = root / "judge"
    if not args.collect_only:
        train.train_and_evaluate(config_lib.load("configs/sync.py:judge"), judge)
    overrides = [f"--config.eval.sync_judge_workdir={judge}"]
    if args.steps:
        overrides.append(f"--config.train.steps={args.steps}")
    if args.max_clips:
        overrides.append(f"--config.eval.max_clips={args.max_clips}")
    tasks = [t for t in args.tasks.split(",") if t]
    table = {}
    for task in tasks:
        if not args.collect_only:
            sweep.run(f"configs/{task}.py:tiny", [], args.seeds, root / task, overrides)
        table[task] = collect(root, task)
    rows = [{"task": task, "steps": args.steps, "seeds_asked": args.seeds, "max_clips": args.max_clips, **entry}
            for task, entry in table.items()]
    write_record("keypoint_tasks", rows, args.out)
    print("| | " + " | ".join(METRICS) + " |")
    print("| --- " * (len(METRICS) + 1) + "|")
    for task, entry in table.items():
        print(f"| {task} | " + " | ".join(cell(entry["model"], m) for m in METRICS) + " |")
    first = table[tasks[0]]
    for who in (*BASELINES, "ground_truth"):
        print(f"| {who} | " + " | ".join(cell(first[who], m) for m in METRICS) + " |")
    print(json.dumps({task: entry["verdicts"] for task, entry in table.items()}, indent=1))


if __name__ == "__main__":
    main()
