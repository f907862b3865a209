"""Evaluation of a `render` workdir: held-out frame pairs through the renderer, image metrics.

The pairs are the render task's own pinned eval pairs (`RenderTask.eval_pairs`: unseen
speakers, frame 0 of each clip as the reference photo, targets spread over the clip). Per
pair, numpy metrics from `t2v.evaluate.metrics` (PSNR and SSIM as scikit-image computes
them), for the renderer (and its refinement stage when on) and for the baseline:
  copy   the reference frame itself: a renderer that moves nothing
Metrics: psnr, ssim, l1 (mean absolute error in [0, 1]), mouth_l1 (inside the target's mouth box).
"""

from __future__ import annotations

import jax
import numpy as np

from t2v.evaluate import metrics

BATCH = 8  # pairs per renderer call: one compilation


def image_metrics(image: np.ndarray, target: np.ndarray, mouth_box: np.ndarray) -> dict[str, float]:
    """`[S, S, 3]` images in [0, 1], the target's mouth box `[4]` in [-1, 1] image coordinates."""
    size = target.shape[0]
    x0, y0, x1, y1 = np.clip(np.round((np.asarray(mouth_box) + 1) / 2 * size), 0, size).astype(int)
    error = np.abs(image - target)
    mouth = error[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return {"psnr": metrics.psnr(image, target), "ssim": metrics.ssim(image, target), "l1": float(error.mean()),
            "mouth_l1": float(mouth.mean()) if mouth.size else float(error.mean())}


def evaluate_render(workdir, config, params, settings: dict, seed: int) -> dict:
    from t2v.tasks import get_task

    task = get_task(config)
    source, pairs = task.eval_pairs(settings["clips_seed"])
    if settings["max_clips"]:
        records = sorted({p[0] for p in pairs})[: settings["max_clips"]]
        pairs = [p for p in pairs if p[0] in records]
    if not pairs:
        from t2v.errors import InputError

        raise InputError(f"{workdir}: the render task's eval split has no usable frame pairs")
    render = jax.jit(task.render)
    rows = {"model": [], "refined": [], "copy": []}
    frames = []
    for lo in range(0, len(pairs), BATCH):
        chunk = pairs[lo : lo + BATCH]
        examples = [task.eval_example(source, p) for p in chunk]
        examples += [examples[-1]] * (BATCH - len(examples))  # one shape, one compilation
        batch = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
        out = render(params, batch)
        targets = batch["target_image"].astype(np.float64) / 255.0
        references = batch["reference_image"].astype(np.float64) / 255.0
        for i in range(len(chunk)):
            box = batch["mouth_box"][i]
            rows["model"].append(image_metrics(np.asarray(out["frame"][i], np.float64), targets[i], box))
            if "refined" in out:
                rows["refined"].append(image_metrics(np.asarray(out["refined"][i], np.float64), targets[i], box))
            rows["copy"].append(image_metrics(references[i], targets[i], box))
            if len(frames) < 4:
                frames.append({"model": np.asarray(out["frame"][i]), "truth": targets[i], "reference": references[i]})
    model = metrics.average(rows["model"])
    baselines = {"copy": metrics.average(rows["copy"])}
    result = {
        "model": model if not rows["refined"] else {**model, **{f"refined_{k}": v for k, v in
                                                            metrics.average(rows["refined"]).items()}},
        "baselines": baselines,
        "ground_truth": {"ssim": 1.0, "l1": 0.0, "mouth_l1": 0.0},  # PSNR of the truth is infinite
        "judges": {},
        "clips": [{"record": int(r), "reference_frame": int(a), "target_frame": int(b)} for r, a, b in pairs],
        "traces": [{"frames_png": write_frames(workdir, frames)}],
    }
    return result


def write_frames(workdir, frames: list[dict]) -> str:
    """`eval/frames.png`: one row per pair, reference | truth | rendered; returns its path."""
    from pathlib import Path

    from PIL import Image

    rows = [np.concatenate([f[k] for k in ("reference", "truth", "model")], axis=1) for f in frames]
    out = Path(workdir) / "eval" / "frames.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(np.concatenate(rows) * 255), 0, 255).astype(np.uint8)).save(out)
    return str(out)
