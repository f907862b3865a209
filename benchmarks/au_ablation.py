"""The `au` task with and without AU driving: 3 seeds of configs/au.py:tiny, under an independent AU judge.

    python benchmarks/au_ablation.py [--out runs/au_ablation] [--seeds 3] [--cache-dir DIR]

Trains the loss AU classifier (configs/au.py:cls, seed 0, speakers 0..) and the judge
(configs/au.py:judge, seed 1, speakers 1000..), then one `t2v sweep` of seeds per variant
(`au` = configs/au.py:tiny, `no_au` = configs/au.py:tiny,no_au), every run trained against the
loss classifier and scored by `t2v eval` with the judge on the same pinned held-out clips.
`--only VARIANT` runs one variant's sweep (two processes can share the work); a run without
it runs (or, when finished, collects) both and writes
benchmarks/results/au_ablation.json: per variant the mean, std and per-seed model metrics,
and per variant the baselines' and ground truth's metrics (mean over the seeds: the energy
fit and retrieval use each seed's training clips).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

RESULT = ROOT / "benchmarks" / "results" / "au_ablation.json"
VARIANTS = {"au": "configs/au.py:tiny", "no_au": "configs/au.py:tiny,no_au"}
HEADLINE_METRICS = ("au_corr", "au_f1", "au_err", "au_acc", "mouth_corr", "lmd_mouth", "au_head_au_err",
                    "au_head_au_corr", "proxy_au_corr")


def train_classifier(variant: str, workdir: Path, overrides: list[str]) -> dict:
    from t2v import config as config_lib
    from t2v import train

    final = train.train_and_evaluate(config_lib.load(f"configs/au.py:{variant}", overrides), workdir)
    return {k: float(v) for k, v in final.items() if k.startswith("eval/")}


def final_eval(workdir: Path) -> dict:
    """The last `eval/*` metrics a finished run logged (metrics.jsonl)."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {k: float(v) for k, v in [r for r in rows if "eval" in r][-1]["eval"].items()}


def others(run_dirs: list[Path]) -> dict:
    """Mean +- std over runs of each baseline's and the ground truth's metrics (from metrics.json)."""
    tables: dict[str, dict[str, list[float]]] = {}
    for run_dir in run_dirs:
        m = json.loads((run_dir / "eval" / "metrics.json").read_text())
        for name, scores in {**m["baselines"], "ground_truth": m["ground_truth"]}.items():
            for key, value in scores.items():
                tables.setdefault(name, {}).setdefault(key, []).append(float(value))
    return {name: {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                   for k, v in t.items()} for name, t in tables.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/au_ablation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--only", choices=sorted(VARIANTS), help="run this variant's sweep only; write nothing")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: summarise the runs that finished (incomplete variants marked)")
    parser.add_argument("overrides", nargs="*", help="extra --config.* overrides for every run")
    args = parser.parse_args(argv)
    from t2v import sweep

    out = Path(args.out)
    data = [f"--config.data.cache_dir={args.cache_dir}"] if args.cache_dir else []
    started = time.time()
    classifier, judge = out / "au_cls", out / "au_judge"
    if args.collect:
        cls_metrics = final_eval(classifier)
        judge_metrics = final_eval(judge)
    else:
        cls_metrics = train_classifier("cls", classifier, data)
        judge_metrics = train_classifier("judge", judge, data)
    overrides = [*data, f"--config.model.au_classifier_workdir={classifier.resolve()}",
                 f"--config.eval.au_judge_workdir={judge.resolve()}", *args.overrides]
    variants = {}
    for name, spec in VARIANTS.items():
        if args.only and name != args.only:
            continue
        if args.collect:
            plan = sweep.plan(spec, [], args.seeds, overrides)
            found = {s: json.loads((out / name / "default" / f"seed_{s}" / "result.json").read_text())
                     for s in plan["seeds"] if (out / name / "default" / f"seed_{s}" / "result.json").is_file()}
            v = sweep.summarise(plan, {"default": found})["variants"]["default"]
        else:
            v = sweep.run(spec, [], args.seeds, out / name, overrides)["variants"]["default"]
        runs = [out / name / "default" / f"seed_{s}" for s in range(args.seeds)
                if (out / name / "default" / f"seed_{s}" / "result.json").is_file()]
        variants[name] = {"config": spec, "mean": v["mean"], "std": v["std"], "seeds": v["seeds"],
                          "complete": v["complete"], "baselines_and_ground_truth": others(runs)}
    if args.only:
        return
    judge_record = json.loads((out / "au" / "default" / "seed_0" / "eval" / "metrics.json").read_text())["judges"]
    result = {"variants_configs": VARIANTS, "seeds": list(range(args.seeds)),
              "overrides": [o for o in overrides if "cache_dir" not in o and "workdir" not in o],
              "loss_classifier_eval": cls_metrics, "judge_eval": judge_metrics, "judges": judge_record,
              "variants": variants, "wall_s": round(time.time() - started, 1)}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    for name, v in variants.items():
        print(name, {k: f"{v['mean'][k]:.3f} +- {v['std'][k]:.3f}" for k in HEADLINE_METRICS if k in v["mean"]})
    print(f"wrote {RESULT} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
