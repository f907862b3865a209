"""`t2v sweep`: every variant of a grid x every seed, then mean +- std per metric.

    t2v sweep --config configs/motion.py:tiny --grid 'loss.piv_weight=0,0.1' --grid 'model.sync_workdir=,/x' \\
              --seeds 3 --workdir runs/ablation [--config.train.steps=500 ...] [--launch]

Layout of the sweep folder S:
    S/plan.json                       the variants, seeds and overrides (a rerun must match it)
    S/<variant>/seed_<k>/             one task workdir per run (`config.seed = k`)
    S/<variant>/seed_<k>/result.json  the run's metrics, written when it finished
    S/sweep.json                      per variant: overrides, per-seed metrics, mean, std
    S/report.html                     a mean +- std table per metric, with plots
    S/jobs/*.sh                       with --launch: one script per run (train, then eval)

Runs go one after another in this process; an interrupted sweep resumes: finished runs
(`result.json`) are skipped and an unfinished one resumes from its last checkpoint. A run's
metrics are `t2v eval`'s model metrics for tasks with a harness (`t2v.evaluate`), else the
training loop's final `eval/*` metrics. sweep.json holds only these (no timings), with keys
sorted, so a sweep run twice on one machine gives the same file. With --launch the runs are
not run here: each becomes `S/jobs/<variant>__seed<k>.sh` (submit them through `launch/`,
e.g. `python launch/local.py -n 2 -- sh S/jobs/x.sh`, or a cluster's array job); a later
`t2v sweep` without --launch, same arguments, collects them (and runs what is missing).
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import numpy as np

from t2v import config as config_lib
from t2v.errors import InputError


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`['a.b=1,2', 'c=x']` -> `[('a.b', ['1', '2']), ('c', ['x'])]`; InputError on a bad item."""
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or key.startswith("--"):
            raise InputError(f"--grid {item}: expected 'a.b=v1,v2'")
        grid.append((key.strip(), values.split(",")))
    if len({key for key, _ in grid}) < len(grid):
        raise InputError(f"--grid: a key is given twice ({', '.join(key for key, _ in grid)})")
    return grid


def variant_name(assignment: dict[str, str]) -> str:
    """A folder name for one variant: `a.b=1,c=x` -> `a.b-1_c-x` (path-safe)."""
    if not assignment:
        return "default"
    text = "_".join(f"{key}-{value or 'none'}" for key, value in assignment.items())
    return re.sub(r"[^A-Za-z0-9._+-]+", "+", text)[:120]


def plan(spec: str, grid_items: list[str], seeds: int, overrides: list[str]) -> dict:
    """The sweep's variants x seeds, each with its full override list; checked against the config."""
    if seeds < 1:
        raise InputError(f"--seeds {seeds}: expected at least 1")
    grid = parse_grid(grid_items)
    variants = []
    for values in itertools.product(*[v for _, v in grid]):
        assignment = dict(zip([k for k, _ in grid], values))
        variant_overrides = list(overrides) + [f"--config.{k}={v}" for k, v in assignment.items()]
        config_lib.load(spec, variant_overrides)  # a bad key or value fails now, not after hours
        variants.append({"name": variant_name(assignment), "assignment": assignment, "overrides": variant_overrides})
    names = [v["name"] for v in variants]
    if len(set(names)) < len(names):
        raise InputError(f"--grid: two variants share the folder name {names}")
    return {"config": spec, "seeds": list(range(seeds)), "variants": variants}


def run_one(spec: str, variant: dict, seed: int, workdir: Path) -> dict:
    """Trains (or resumes) and evaluates one run; its metrics, also saved as result.json."""
    from t2v import evaluate, train

    done = workdir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = config_lib.load(spec, variant["overrides"] + [f"--config.seed={seed}"])
    final = train.train_and_evaluate(config, workdir)
    if config.task in evaluate.EVALUATED_TASKS:
        metrics = evaluate.evaluate(workdir, seed=seed)["model"]
    else:
        metrics = {k[len("eval/"):]: float(v) for k, v in final.items() if k.startswith("eval/")}
    result = {"variant": variant["name"], "seed": seed, "metrics": metrics}
    done.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def summarise(sweep_plan: dict, results: dict[str, dict[int, dict]]) -> dict:
    """Per variant: per-seed metrics, and the mean and std (ddof 1; 0 for one seed) of each."""
    variants = {}
    for variant in sweep_plan["variants"]:
        per_seed = results.get(variant["name"], {})
        names = sorted({k for r in per_seed.values() for k, v in r["metrics"].items() if isinstance(v, (int, float))})
        table = {k: [float(per_seed[s]["metrics"][k]) for s in sorted(per_seed) if k in per_seed[s]["metrics"]]
                 for k in names}
        variants[variant["name"]] = {
            "assignment": variant["assignment"],
            "seeds": {str(s): per_seed[s]["metrics"] for s in sorted(per_seed)},
            "mean": {k: float(np.mean(v)) for k, v in table.items()},
            "std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in table.items()},
            "complete": len(per_seed) == len(sweep_plan["seeds"]),
        }
    return {"config": sweep_plan["config"], "seeds": sweep_plan["seeds"], "variants": variants}


def write_jobs(sweep_plan: dict, out: Path) -> list[Path]:
    """One shell script per run: `t2v train` then `t2v eval` (for tasks that have a harness)."""
    jobs = out / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    scripts = []
    for variant in sweep_plan["variants"]:
        for seed in sweep_plan["seeds"]:
            run_dir = out / variant["name"] / f"seed_{seed}"
            args = [*variant["overrides"], f"--config.seed={seed}"]
            train_cmd = shlex.join(["t2v", "train", "--config", sweep_plan["config"], "--workdir", str(run_dir), *args])
            script = jobs / f"{variant['name']}__seed{seed}.sh"
            script.write_text(f"#!/bin/sh\nset -e\n{train_cmd}\n"
                              f"t2v eval --workdir {shlex.quote(str(run_dir))} || true  # tasks without a harness\n")
            script.chmod(0o755)
            scripts.append(script)
    (jobs / "commands.txt").write_text("".join(f"sh {shlex.quote(str(s))}\n" for s in scripts))
    return scripts


def run(spec: str, grid_items: list[str], seeds: int, workdir: str | Path, overrides: list[str] = (),
        launch: bool = False) -> dict:
    """Runs (or, with `launch`, writes the jobs of) a sweep; returns sweep.json's content."""
    out = Path(workdir)
    sweep_plan = plan(spec, list(grid_items), int(seeds), list(overrides))
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()) != sweep_plan:
        raise InputError(f"{plan_file}: this folder holds another sweep (other config, grid, seeds or overrides)")
    plan_file.write_text(json.dumps(sweep_plan, indent=1, sort_keys=True) + "\n")
    if launch:
        scripts = write_jobs(sweep_plan, out)
        print(f"wrote {len(scripts)} job scripts: {out / 'jobs' / 'commands.txt'}")
    results: dict[str, dict[int, dict]] = {}
    total = len(sweep_plan["variants"]) * len(sweep_plan["seeds"])
    done = 0
    for variant in sweep_plan["variants"]:
        for seed in sweep_plan["seeds"]:
            run_dir = out / variant["name"] / f"seed_{seed}"
            if launch and not (run_dir / "result.json").is_file():
                continue  # submitted as a job; collected by a later sweep without --launch
            done += 1
            print(f"[{done}/{total}] {variant['name']} seed {seed} -> {run_dir}", flush=True)
            results.setdefault(variant["name"], {})[seed] = run_one(spec, variant, seed, run_dir)
    summary = summarise(sweep_plan, results)
    (out / "sweep.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    write_report(summary, out / "report.html")
    return summary


def write_report(summary: dict, out: Path) -> None:
    """A mean +- std table per metric and a bar chart with error bars per metric."""
    import html

    from t2v.evaluate.report import _figure, png_base64

    variants = summary["variants"]
    names = sorted({k for v in variants.values() for k in v["mean"]})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(v)}</th>" + "".join(
            f"<td>{d['mean'][n]:.4g} &plusmn; {d['std'][n]:.2g}</td>" if n in d["mean"] else "<td>-</td>" for n in names)
        + "</tr>" for v, d in variants.items())
    images = ""
    if names and variants:
        cols = min(4, len(names))
        fig, axes = _figure(11, 2.4 * -(-len(names) // cols), -(-len(names) // cols), cols)
        labels = list(variants)
        for ax, name in zip(axes.flat, names):
            means = [variants[v]["mean"].get(name, np.nan) for v in labels]
            stds = [variants[v]["std"].get(name, 0.0) for v in labels]
            ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#1f77b4")
            ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=6)
            ax.set_title(name, fontsize=9)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        images = f"<img alt='metrics' style='max-width:100%' src='data:image/png;base64,{png_base64(fig)}'>"
    seeds = len(summary["seeds"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>t2v sweep</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 5px}</style></head><body>"
            f"<h1>t2v sweep: {html.escape(summary['config'])}</h1><p>{len(variants)} variants x {seeds} seeds; "
            f"mean &plusmn; std over seeds</p><table><tr><th></th>{head}</tr>{rows}</table>{images}</body></html>\n")
    out.write_text(page)
