"""The ablation the motion model owes, at tiny scale, 3 seeds: mean +- std of each metric.

    python benchmarks/ablation.py --workdir runs/ablation [--seeds 3] [--steps 1000]

Trains the tiny lip-sync expert (the sync loss) and, apart from it, the sync judge
(`configs/sync.py:judge`), then `t2v sweep`s `configs/motion.py:tiny` one factor at a time
against the full model (flow prior, PIV loss, sync loss, detected references):
  flow        model.prior.num_couplings = 2 (full) | 0 (no flow: a standard normal prior)
  piv         loss.piv_weight = 0.1 (full) | 0 (no PIV identity loss)
  sync        model.sync_workdir = the expert (full) | "" (no sync loss)
  reference   data.reference = detected (full) | neutral (trained on the privileged neutral face)
Every run is scored by `t2v eval` on the same pinned held-out clips with detected references and
the independent judge. The full model's runs are shared by the four sweeps (one set of seeds).
Writes `benchmarks/results/ablation.json` (every seed's metrics, mean, std) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import write_record  # noqa: E402

SPEC = "configs/motion.py:tiny"
METRICS = ("mouth_corr", "mouth_corr_unseen_language", "lmd_mouth", "sync_offset_acc", "sync_distance",
           "sync_confidence", "pose_diversity", "pose_follow", "identity_err")


def factors(expert: str) -> dict[str, tuple[str, str, str]]:
    """factor -> (key, full value, ablated value)."""
    return {"flow": ("model.prior.num_couplings", "2", "0"), "piv": ("loss.piv_weight", "0.1", "0"),
            "sync": ("model.sync_workdir", expert, ""), "reference": ("data.reference", "detected", "neutral")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="motion steps (0: the tiny config's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation.json"))
    args = parser.parse_args()
    from t2v import config as config_lib
    from t2v import sweep, train

    root = Path(args.workdir)
    expert, judge = root / "experts" / "sync", root / "experts" / "judge"
    for spec, where in (("configs/sync.py:tiny", expert), ("configs/sync.py:judge", judge)):
        train.train_and_evaluate(config_lib.load(spec), where)
    base = [f"--config.eval.sync_judge_workdir={judge}"] + ([f"--config.train.steps={args.steps}"] if args.steps else [])
    table, full_runs = {}, None
    for name, (key, on, off) in factors(str(expert)).items():
        others = [f"--config.{k}={v}" for n, (k, v, _) in factors(str(expert)).items() if n != name]
        folder = root / name
        full_name = sweep.variant_name({key: on})
        if full_runs is not None and not (folder / full_name).exists():
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(full_runs.resolve(), folder / full_name)  # the same runs: same config, same seeds
        summary = sweep.run(SPEC, [f"{key}={on},{off}"], args.seeds, folder, base + others)
        full_runs = full_runs or folder / full_name
        table[name] = {"key": key, "full": summary["variants"][full_name],
                       "ablated": summary["variants"][sweep.variant_name({key: off})], "ablated_value": off}
    rows = [{"variant": "full" if kind == "full" else f"no {name}" if name != "reference" else "neutral reference",
             "factor": name, "mean": entry[kind]["mean"], "std": entry[kind]["std"], "seeds": entry[kind]["seeds"]}
            for name, entry in table.items() for kind in ("full", "ablated") if kind == "ablated" or name == "flow"]
    write_record("ablation", rows, args.out)
    print("| variant | " + " | ".join(METRICS) + " |")
    for row in rows:
        cells = [f"{row['mean'][m]:.3f} ± {row['std'][m]:.3f}" if m in row["mean"] else "-" for m in METRICS]
        print(f"| {row['variant']} | " + " | ".join(cells) + " |")
    print(json.dumps({"seeds": args.seeds, "workdir": str(root)}))


if __name__ == "__main__":
    main()
