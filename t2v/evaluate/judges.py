"""Judges: models that score another model and never served as its loss.

A sync judge is a `sync` workdir trained by t2v apart from any loss expert: its own seed and
its own training speakers (`configs/sync.py:judge`: `data.train_speaker_offset`), named in
the evaluated workdir's config as `eval.sync_judge_workdir` (or `t2v eval
--config.eval.sync_judge_workdir=DIR`). `load_sync_judge` refuses, in one line naming both
workdirs, the expert a model trained against (`model.sync_workdir`).

Pinned preprocessing (`FrozenExpert.clip_offset_scores`): the judge's own window W and audio
context M, the non-overlapping W-frame windows of a whole clip from frame M on, the pose-free
mouth relative to the clip's reference. The same judgement is made of the model, of every
baseline and of the ground truth, so they stand side by side:
  sync_offset_acc   fraction of windows whose best-scoring offset among -M..M is 0
  sync_distance     LSE-D analogue: min over offsets of 1 - (mean cosine over the clip's windows)
  sync_confidence   LSE-C analogue: median over offsets of that distance minus its min
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from t2v import checkpoint
from t2v.errors import InputError
from t2v.evaluate import metrics

log = logging.getLogger(__name__)


def _same_path(a: str | Path, b: str | Path) -> bool:
    return str(a).rstrip("/") == str(b).rstrip("/") or (
        "://" not in str(a) and "://" not in str(b) and Path(a).resolve() == Path(b).resolve())


def training_speakers(config) -> tuple[int, int]:
    """First and last synthetic training speaker id of a config (what `synthetic_plan` uses)."""
    first = int(config.data.get("train_speaker_offset", 0))
    return first, first + max(int(config.data.get("train_speakers", 16)), 1) - 1


def provenance(judge_workdir: str, judge_config, loss_config=None) -> dict:
    """What a judge is and how it stands apart from the loss expert (None: the model had none)."""
    first, last = training_speakers(judge_config)
    record = {
        "workdir": str(judge_workdir), "task": judge_config.task, "seed": int(judge_config.seed),
        "step": checkpoint.saved_steps(judge_workdir)[-1], "data_source": str(judge_config.data.source),
        "train_speakers": [first, last], "train_clips": int(judge_config.data.train_clips),
        "window": int(judge_config.model.sync.window), "max_shift": int(judge_config.data.max_shift),
        "loss_expert": None, "disjoint_from_loss_expert": True,
    }
    if loss_config is not None:
        loss_first, loss_last = training_speakers(loss_config)
        same_data = judge_config.data.source == loss_config.data.source
        overlap = same_data and not (last < loss_first or loss_last < first)
        record["loss_expert"] = {"seed": int(loss_config.seed), "train_speakers": [loss_first, loss_last]}
        record["disjoint_from_loss_expert"] = bool(int(loss_config.seed) != int(judge_config.seed) and not overlap)
    return record


def load_sync_judge(judge_workdir: str, model_workdir: str | Path, model_config):
    """(the frozen judge, its provenance) for scoring the model of `model_workdir`.

    InputError when the judge is the sync expert the model trained against, or is not a
    sync workdir. A judge that shares a seed or training speakers with the loss expert is
    scored but marked (`disjoint_from_loss_expert: false`) and warned about.
    """
    from t2v.tasks.sync import load_expert

    loss_workdir = str(model_config.model.get("sync_workdir", "")) if "model" in model_config else ""
    if loss_workdir and _same_path(loss_workdir, judge_workdir):
        raise InputError(f"eval.sync_judge_workdir={judge_workdir}: is the sync expert the model in {model_workdir} "
                         f"trained against (model.sync_workdir={loss_workdir}); a judge must never have been its "
                         f"loss: train one apart (configs/sync.py:judge)")
    try:
        judge_config = checkpoint.read_config(judge_workdir)
    except FileNotFoundError as error:
        raise InputError(f"eval.sync_judge_workdir={judge_workdir}: no trained workdir there ({error})") from None
    if judge_config.task != "sync":
        raise InputError(f"eval.sync_judge_workdir={judge_workdir}: task {judge_config.task!r}, expected a 'sync' workdir")
    loss_config = checkpoint.read_config(loss_workdir) if loss_workdir else None
    record = provenance(judge_workdir, judge_config, loss_config)
    if not record["disjoint_from_loss_expert"]:
        log.warning("sync judge %s shares a seed or training speakers with the loss expert %s", judge_workdir,
                    loss_workdir)
    return load_expert(judge_workdir), record


def judge_clip(judge, clip: dict, points: np.ndarray) -> dict[str, float]:
    """The judge's metrics of one sequence `[T, 68, 2]` with the clip's audio and reference;
    {} when the clip is shorter than one judged window."""
    scores = judge.clip_offset_scores(clip["mel"], points, clip["reference"])
    if scores is None:
        return {}
    from t2v.tasks.sync import offset_metrics

    distance, confidence = metrics.sync_distance_confidence(scores)
    return {"sync_offset_acc": float(offset_metrics(scores, judge.task.max_shift)["sync_offset_acc"]),
            "sync_distance": distance, "sync_confidence": confidence}
