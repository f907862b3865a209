"""What the tiny models learn, recorded: `t2v eval` of a finished `t2v demo` workdir.

    t2v demo --workdir runs/demo && python benchmarks/learning.py --demo runs/demo \
        --demo-note "t2v demo at <commit>, <wall> s, load <1-min load average> on <machine>"

Evaluates the demo's sync expert, sync judge, motion model (under the judge, which never
served as its loss) and renderer with the one harness (`t2v.evaluate`), and writes
`benchmarks/results/learning.json`: for each, the model's, the baselines' and the ground
truth's metrics, the judges' provenance and the pinned clip list's hash, with `--demo-note`
(how the demo ran: its commit, wall time and the machine's load, which the script cannot
see) in each row and the commit the evaluation ran at. The learning figures in RESULTS.md and
the README are copied from this file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recording import write_record  # noqa: E402

KEPT = ("model", "baselines", "ground_truth", "judges", "headline", "strongest_baseline", "step", "num_clips",
        "clips_sha1", "config")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="runs/demo", help="a finished t2v demo workdir")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "learning.json"))
    parser.add_argument("--demo-note", default="", help="how the demo ran (commit, wall time, load), kept per row")
    args = parser.parse_args()
    from t2v import evaluate

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    rows = []
    for name in ("sync", "judge", "motion", "render"):
        workdir = Path(args.demo) / name
        if not (workdir / "config.json").is_file():
            print(f"skipping {workdir}: not there")
            continue
        result = evaluate.evaluate(workdir)
        rows.append({"workdir": name, **({"demo": args.demo_note} if args.demo_note else {}),
                     "eval_commit": commit, **{k: result[k] for k in KEPT if k in result}})
        print(name, {k: round(v, 4) for k, v in result["model"].items() if isinstance(v, float)})
    write_record("learning", rows, args.out)


if __name__ == "__main__":
    main()
