"""`DIR/eval/report.html`: one self-contained, offline page a person can read.

Plots are matplotlib PNGs inlined as base64 (no script, no network): loss curves from the
workdir's `metrics.jsonl`, metric bars of the model against every baseline and the ground
truth, and, for keypoint models, mouth opening over time against the truth, head-pose
trajectories and faces of model and truth side by side; for the renderer, reference | truth |
rendered frames.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from etils import epath

COLORS = {"model": "#1f77b4", "ground_truth": "#222222"}
POSE_NAMES = ("log-scale", "angle (rad)", "tx", "ty")


def _figure(width=7.0, height=3.0, rows=1, cols=1):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def png_base64(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: the rest still plot
    return rows


def loss_curves(rows: list[dict]) -> str | None:
    """Training loss and eval metrics over steps, from `metrics.jsonl` rows."""
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
    evals = {}
    for r in rows:
        for key, value in r.items():
            if key.startswith("eval/") and isinstance(value, (int, float)):
                evals.setdefault(key, []).append((r["step"], value))
    if not train and not evals:
        return None
    fig, axes = _figure(9, 3, 1, 2)
    if train:
        steps, loss = zip(*train)
        axes[0][0].plot(steps, loss, color=COLORS["model"])
        axes[0][0].set(title="training loss", xlabel="step", yscale="log" if min(loss) > 0 else "linear")
    for key, points in sorted(evals.items())[:6]:
        steps, values = zip(*points)
        axes[0][1].plot(steps, values, marker="o", label=key[5:])
    axes[0][1].set(title="held-out metrics during training", xlabel="step")
    if evals:
        axes[0][1].legend(fontsize=7)
    return png_base64(fig)


def metric_bars(result: dict) -> str | None:
    """One panel per metric: the model, every baseline and the ground truth."""
    methods = {"model": result["model"], **result.get("baselines", {}), "ground_truth": result.get("ground_truth", {})}
    names = [k for k in result["model"] if isinstance(result["model"][k], (int, float)) and np.isfinite(result["model"][k])
             and k != "chance"]
    if not names:
        return None
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = _figure(11, 2.3 * rows, rows, cols)
    for ax, name in zip(axes.flat, names):
        labels = [m for m, values in methods.items() if isinstance(values.get(name), (int, float))
                  and np.isfinite(values[name])]
        values = [methods[m][name] for m in labels]
        colors = [COLORS.get(m, "#bbbbbb") for m in labels]
        ax.bar(range(len(labels)), values, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return png_base64(fig)


def confusion_plot(confusion: list, classes: list[str]) -> str:
    """A classifier's confusion counts, true class (rows) against the called one (columns)."""
    counts = np.asarray(confusion, np.float64)
    fig, axes = _figure(4.8, 4.2)
    ax = axes[0][0]
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                color="white" if value > counts.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="called", ylabel="true")
    return png_base64(fig)


def mouth_plot(trace: dict) -> str:
    fig, axes = _figure(9, 2.6)
    ax = axes[0][0]
    for method, values in trace["mouth_opening"].items():
        style = dict(color=COLORS.get(method), linewidth=2) if method in COLORS else dict(linewidth=0.8, alpha=0.7)
        ax.plot(np.arange(len(values)) / 25.0, values, label=method, **style)
    ax.set(title=f"mouth opening over time, clip {trace['clip_id']}", xlabel="seconds", ylabel="face units")
    ax.legend(fontsize=7, ncol=3)
    return png_base64(fig)


def pose_plot(trace: dict) -> str:
    fig, axes = _figure(11, 2.4, 1, 4)
    for method in ("model", "ground_truth", "source_pose"):
        pose = np.asarray(trace["head_pose"].get(method, []))
        if pose.size == 0:
            continue
        for k in range(4):
            axes[0][k].plot(np.arange(len(pose)) / 25.0, pose[:, k], label=method, color=COLORS.get(method))
    for k, name in enumerate(POSE_NAMES):
        axes[0][k].set(title=f"head pose: {name}", xlabel="seconds")
    axes[0][0].legend(fontsize=7)
    return png_base64(fig)


def faces_png(trace: dict) -> str:
    """Model (green) and truth (white) keypoints drawn side by side at a few instants."""
    from PIL import Image

    from t2v.tasks.motion import GENERATED_COLOR, TRUE_COLOR, draw_face

    model, truth = (np.asarray(trace["keypoints"][m], np.float32) for m in ("model", "ground_truth"))
    tiles = [np.concatenate([draw_face(g, GENERATED_COLOR), draw_face(t, TRUE_COLOR)], axis=0)
             for g, t in zip(model, truth)]
    buffer = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, axis=1)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def file_png(path: str) -> str | None:
    p = epath.Path(path)
    return base64.b64encode(p.read_bytes()).decode() if p.is_file() else None


def table(result: dict) -> str:
    methods = {"model": result["model"], **result.get("baselines", {}), "ground truth": result.get("ground_truth", {})}
    names = sorted({k for v in methods.values() for k, x in v.items() if isinstance(x, (int, float))})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = ""
    for method, values in methods.items():
        cells = "".join(f"<td>{values[n]:.4g}</td>" if isinstance(values.get(n), (int, float)) else "<td>-</td>"
                        for n in names)
        body += f"<tr><th>{html.escape(method)}</th>{cells}</tr>"
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def write_report(workdir: str | Path, result: dict, traces: list[dict]) -> Path:
    """Writes `workdir/eval/report.html` and returns its path."""
    workdir = epath.Path(workdir)  # gs:// too
    sections = [f"<h1>t2v eval: {html.escape(str(workdir))}</h1>",
                f"<p>task <b>{html.escape(result['task'])}</b>, step {result['step']}, {result['num_clips']} held-out "
                f"clips (sha1 {result['clips_sha1'][:12]}). Headline: {html.escape(json.dumps(result['headline']))}</p>",
                "<h2>Metrics</h2>", table(result),
                f"<p>Judges: <code>{html.escape(json.dumps(result.get('judges', {})))}</code></p>"]
    truth = result.get("ground_truth", {})
    if truth.get("scored") is False:  # a classifier's labels: no figure, only where they come from
        sections.append(f"<p>Ground truth: {html.escape(str(truth.get('note', '')))}; labels from "
                        f"{html.escape(str(truth.get('label_source', '')))}</p>")
    images = [("Training", loss_curves(read_jsonl(workdir / "metrics.jsonl"))), ("Model, baselines and truth",
                                                                                  metric_bars(result))]
    if isinstance(result["model"].get("confusion"), list) and result.get("classes"):
        images.append(("Confusion of the held-out frames: true (rows) vs called (columns)",
                       confusion_plot(result["model"]["confusion"], result["classes"])))
    for trace in traces:
        if "mouth_opening" in trace:
            images += [(f"Mouth, clip {trace['clip_id']}", mouth_plot(trace)), ("Head pose", pose_plot(trace)),
                       ("Faces: model (top, green) and truth (bottom, white)", faces_png(trace))]
        if "frames_png" in trace:
            images.append(("Frames: reference | truth | rendered", file_png(trace["frames_png"])))
    for title, data in images:
        if data:
            sections.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                            f"src='data:image/png;base64,{data}'>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 5px;text-align:right}img{max-width:100%}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>t2v eval</title><style>{style}</style></head>" \
           f"<body>{''.join(sections)}</body></html>\n"
    out = workdir / "eval" / "report.html"
    out.write_text(page)
    return out
