"""`t2v personalize`: a general keypoint model fine-tuned on ~12 s of one person (Yi et al. 2020).

    t2v personalize --video person.mp4 --checkpoint runs/pose_lstm --out runs/person
    summary = personalize("person.mp4", "runs/pose_lstm", "runs/person", overrides=[...])

1. The video is prepared as `t2v prepare` prepares a clip (`data_pipelines.clip.extract_clip`:
   dlib landmarks tracked on every frame, gaps filled, smoothed, the aligned crop's
   coordinates, the audio of its own track), its first `personalize.frames / (1 - held_out)`
   frames at most: with the defaults 300 frames (12 s) to fine-tune on, then a held-out tail
   (the last `held_out` fraction) that the fine-tune never sees. Each part is one record
   under OUT/data/.
2. The general workdir's config, on those records, with `personalize.steps`, `lr`,
   `warmup_steps`, `batch_size` and `freeze` (parameter-path regexes: `optimizer.freeze`),
   trains with the standard loop (`t2v.train`) from the general model's parameters and a
   fresh optimizer: the workdir is given a step-0 checkpoint of them, which the loop resumes.
3. On the held-out tail the general model, the personalized one and the person themself get
   head-pose statistics (yaw, pitch, roll std in degrees of a weak-perspective fit;
   `audio_pose_corr`) and the landmark error against the person: OUT/personalize.json. The
   tail is scored with the reference the fine-tune was given (the fine-tune part's pinned
   detected frame, `person_clip`), and the fine-tune's EMA decay is `personalize.ema_decay`
   (0.9) so that the saved model is the tuned one, not mostly the general one.

OUT is a normal task workdir (`t2v eval`, `t2v generate`). What is frozen by default, per
task (`FREEZE`; a task config's `personalize` block or `--config.personalize.*` overrides):
  pose_lstm  the audio front end, the reference input, the LSTM and the data constants
             stay general; the output norm and the pose and expression heads learn the
             person's head motion and how their landmarks read (Yi et al. tune on the
             target's coefficients)
  motion     the audio and identity encoders and the mouth and face heads (lips and face
             shape stay general); the posterior, the pose head and the flow prior tune:
             the head-pose style lives in the latents' prior and their pose decoding
  a2k        the audio and identity encoders; the U-Net and the discriminator tune
Bad input (no face, a video shorter than `personalize.min_seconds`, an unreadable file, a
checkpoint of another task or none, an existing OUT) raises `InputError` and leaves nothing.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import jax
import ml_collections
import numpy as np

from t2v import checkpoint
from t2v import config as config_lib
from t2v.audio import SAMPLES_PER_FRAME
from t2v import keypoints as kp
from t2v.errors import InputError

log = logging.getLogger(__name__)

FREEZE = {
    "pose_lstm": ["^constants/", "^model/(front|reference|lstm_\\d+)/"],
    "motion": ["^audio_encoder/", "^identity_encoder/", "^vae/(mouth_head|face_head)/"],
    "a2k": ["^generator/(audio_encoder|identity_encoder)/"],
}
TASKS = tuple(FREEZE)
DEFAULTS = dict(frames=300, held_out=0.25, min_seconds=8.0, steps=200, lr=5e-4, warmup_steps=20, batch_size=8,
                samples=3, seed=0, ema_decay=0.9)
AXES = ("yaw", "pitch", "roll")


def personalize_config(general: ml_collections.ConfigDict, overrides=()) -> ml_collections.ConfigDict:
    """The general config with a complete `personalize` block (DEFAULTS, FREEZE[task], then the
    config's own block), the overrides applied over it."""
    config = ml_collections.ConfigDict(general.to_dict())
    block = {**DEFAULTS, "freeze": list(FREEZE[config.task]), **config.get("personalize", {})}
    with config.unlocked():
        config.personalize = ml_collections.ConfigDict(block)
    config = config_lib.apply_overrides(config, list(overrides))
    p = config.personalize
    if not 0 < float(p.held_out) < 1 or int(p.frames) < 1 or int(p.steps) < 1:
        raise InputError(f"personalize: held_out must be in (0, 1), frames and steps positive "
                         f"(held_out={p.held_out}, frames={p.frames}, steps={p.steps})")
    return config


def read_general(checkpoint_dir) -> ml_collections.ConfigDict:
    """The general workdir's config, which must be of a task personalize fine-tunes."""
    config = checkpoint.read_config(checkpoint_dir)  # InputError when it is no workdir
    if config.get("task") not in TASKS:
        raise InputError(f"{checkpoint_dir}: task {config.get('task')!r}; t2v personalize fine-tunes {', '.join(TASKS)}")
    checkpoint.saved_steps(checkpoint_dir) or checkpoint.load_params(checkpoint_dir)  # no checkpoints: InputError
    return config


def person_records(video: str, config: ml_collections.ConfigDict, data_dir: Path) -> dict:
    """Prepares the person's video and writes its fine-tune part and held-out tail as one record
    each (`data_dir/{train,eval}`); returns the frame counts."""
    from data_pipelines import clip as clip_lib
    from data_pipelines import landmarks as landmarks_lib
    from data_pipelines.layouts import ClipSource
    from t2v import video as video_lib
    from t2v.data import records

    p = config.personalize
    if not Path(video).is_file():
        raise InputError(f"{video}: no such file")
    max_frames = math.ceil(int(p.frames) / (1.0 - float(p.held_out)))
    min_frames = math.ceil(float(p.min_seconds) * video_lib.FPS)
    options = clip_lib.PrepareOptions(min_frames=min_frames, max_frames=max_frames)
    source = ClipSource(dataset="personal", clip_id=Path(video).stem, path=str(video), relative_path=Path(video).name)
    try:
        prepared = clip_lib.extract_clip(source, landmarks_lib.LandmarkDetector(), options)
    except clip_lib.SkipClip as skip:
        hint = f" (personalize.min_seconds={p.min_seconds})" if skip.reason == "too_short" else ""
        raise InputError(f"{skip.message}{hint}") from None
    fields = {k: v for k, v in prepared.fields.items() if k not in ("frames", "frame_size")}  # keypoints only
    total = len(fields["keypoints"])
    tail = max(int(round(total * float(p.held_out))), int(config.data.window))
    split = total - tail
    if split < int(config.data.window):
        raise InputError(f"{video}: {total} frames leave too few to fine-tune on ({split} < data.window)")
    per_frame = [k for k, v in fields.items() if isinstance(v, np.ndarray) and len(v) == total and k != "audio"]
    for name, (lo, hi) in (("train", (0, split)), ("eval", (split, total))):
        part = {**fields, **{k: fields[k][lo:hi] for k in per_frame}, "split": name,
                "clip_id": f"{source.clip_id}-{name}",
                "audio": fields["audio"][lo * SAMPLES_PER_FRAME : hi * SAMPLES_PER_FRAME]}
        (data_dir / name).mkdir(parents=True)
        records.write_shards(data_dir / name, [records.encode_clip(part)], num_shards=1)
    return {"frames": total, "fine_tune_frames": split, "held_out_frames": tail}


def fine_tune_config(config: ml_collections.ConfigDict, data_dir: Path) -> ml_collections.ConfigDict:
    """What the loop trains: the general model's config on the person's records."""
    p = config.personalize
    tuned = ml_collections.ConfigDict(config.to_dict())
    tuned.seed = int(p.seed)
    tuned.data.update(source="records", path=str(data_dir / "train"), eval_path=str(data_dir / "eval"),
                      workers=0)
    # The EMA (what is saved and scored) must follow a fine-tune of a few hundred steps: the
    # general model's decay (0.99-0.999) would keep most of the general weights.
    tuned.optimizer.update(lr=float(p.lr), warmup_steps=int(p.warmup_steps), freeze=list(p.freeze),
                           ema_decay=float(p.get("ema_decay", DEFAULTS["ema_decay"])))
    steps = int(p.steps)
    # No eval in the loop: the held-out tail is a few windows, scored whole afterwards.
    tuned.train.update(steps=steps, batch_size=int(p.batch_size), log_every=max(1, min(50, steps)),
                       eval_every=0, checkpoint_every=steps, keep=1, best_metric="")
    if "sync_workdir" in tuned.get("model", {}):
        tuned.model.sync_workdir = ""  # a training loss of the general model, not needed to tune the pose
    return tuned


def seed_checkpoint(config: ml_collections.ConfigDict, workdir: Path, params, general_dir) -> None:
    """A step-0 checkpoint of `params` with a fresh optimizer state and the new data's
    iterator, which `t2v.train.train_and_evaluate` then resumes from."""
    from t2v import parallel
    from t2v.tasks import get_task
    from t2v.train import loop
    from t2v.train.state import create_train_state, mesh_context

    task = get_task(config)
    mesh, rules = parallel.make_mesh(config.mesh), [tuple(rule) for rule in config.sharding_rules]
    train_iter = loop.process_dataset(task, config, "train")
    batch = loop.peek_batch(train_iter, mesh)
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
    update = loop.compile_update(task, config, mesh, rules, abstract_batch)
    expected = jax.eval_shape(lambda: update.abstract_state.params)
    params = checkpoint.checked_params(general_dir, params, expected)
    start = _FromParams(task, params)
    init_rng, train_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    with mesh_context(mesh, rules):
        state = jax.jit(lambda a, b, x: create_train_state(start, update.tx, a, b, x),
                        out_shardings=update.shardings)(init_rng, train_rng, batch)
    saver = checkpoint.Checkpointer(workdir, keep=int(config.train.keep))
    try:
        saver.save(0, state, train_iter.get_state(), config)
        saver.wait_until_finished()
    finally:
        saver.close()


class _FromParams:
    """A task whose `init` gives the general model's parameters (the rest is the task's)."""

    def __init__(self, task, params):
        self._task, self._params = task, params

    def init(self, rng, batch):
        return self._params

    def __getattr__(self, name):
        return getattr(self._task, name)


# -- the held-out comparison -------------------------------------------------------------------
def head_pose_stats(points: np.ndarray, clip: dict) -> dict[str, float]:
    """Head-pose statistics and landmark errors of keypoints `[T, 68, 2]` against the clip's
    truth: `{yaw,pitch,roll}_std` (degrees, weak-perspective fit), `audio_pose_corr`, `lmd`,
    `lmd_mouth`, `mouth_corr`."""
    from t2v.evaluate import metrics

    frames = len(points)
    rotation, _, _ = kp.fit_weak_perspective(np.asarray(points, np.float64))
    angles = np.degrees(np.asarray(kp.euler_angles(rotation)))
    stats = {f"{axis}_std": float(angles[:, i].std()) for i, axis in enumerate(AXES)}
    stats["audio_pose_corr"] = metrics.audio_pose_correlation(points, clip["reference"], clip["energy"][:frames])
    mouth = metrics.mouth_metrics(points, clip["keypoints"][:frames], clip["reference"])
    stats.update({k: mouth[k] for k in ("lmd", "lmd_mouth", "mouth_corr")})
    return stats


def model_stats(task, params, clip: dict, samples: int, seed: int) -> dict[str, float]:
    """`head_pose_stats` of audio-driven samples on the clip, averaged over `samples`."""
    frames = len(clip["keypoints"])
    mel, reference = clip["mel"][None, : 4 * frames], clip["reference"][None]
    rows = [head_pose_stats(task.generate_audio_driven(params, jax.random.PRNGKey(seed + s), mel, reference)
                            ["keypoints"][0], clip) for s in range(max(int(samples), 1))]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def compare(general: dict, personal: dict, person: dict) -> dict:
    """How far each model is from the person, and whether the fine-tune moved toward them."""
    def distance(stats):
        return {"pose_std": float(np.mean([abs(stats[f"{a}_std"] - person[f"{a}_std"]) for a in AXES])),
                "audio_pose_corr": abs(stats["audio_pose_corr"] - person["audio_pose_corr"]), "lmd": stats["lmd"]}

    far, near = distance(general), distance(personal)
    return {"distance_general": far, "distance_personalized": near,
            "moved_toward_person": {k: bool(near[k] < far[k]) for k in far}}


def person_clip(config, data_dir: Path) -> dict:
    """The held-out tail, prepared with the fine-tune's reference: the pinned detected frame of
    the fine-tune part, which every fine-tune window was given (one photo of the person, as at
    inference). Its own pinned frame would be another pose, and the model's pose is relative to
    its reference: a fine-tune learns the person's offsets from the reference it saw."""
    from t2v.data import pipeline, records
    from t2v.data.references import reference_frame_index

    clip_config = ml_collections.ConfigDict(config.to_dict())
    clip_config.data.update(source="records", path=str(data_dir / "train"), eval_path=str(data_dir / "eval"))
    raw = {split: records.decode_clip(next(iter(records.read_records(
        pipeline.shard_paths(clip_config, split, int(config.seed))))), decode_frames=False)
        for split in ("train", "eval")}
    train_points = raw["train"]["keypoints"]
    reference_px = train_points[reference_frame_index(raw["train"].get("clip_id"), len(train_points))]
    # prepare_clip's "neutral" mode takes the clip's `neutral_keypoints` as its reference.
    return pipeline.prepare_clip({**raw["eval"], "neutral_keypoints": reference_px}, reference="neutral")


def held_out_report(config, general_params, tuned_params, data_dir: Path) -> dict:
    from t2v.tasks import get_task

    clip = person_clip(config, data_dir)
    task = get_task(config)
    p = config.personalize
    general = model_stats(task, general_params, clip, p.samples, int(p.seed))
    personal = model_stats(task, tuned_params, clip, p.samples, int(p.seed))
    person = head_pose_stats(clip["keypoints"], clip)
    return {"held_out_frames": len(clip["keypoints"]), "person": person, "general": general,
            "personalized": personal, **compare(general, personal, person)}


# -- the command -------------------------------------------------------------------------------
def personalize(video: str, checkpoint_dir: str, out: str, overrides=()) -> dict:
    """Fine-tunes the general workdir `checkpoint_dir` on `video` into the workdir `out`;
    returns personalize.json's content (see the module docstring)."""
    from t2v import train

    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists (t2v personalize writes a new workdir)")
    config = personalize_config(read_general(checkpoint_dir), overrides)
    general_params = checkpoint.load_params(checkpoint_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        counts = person_records(video, config, staging / "data")
        tuned_config = fine_tune_config(config, staging / "data")
        seed_checkpoint(tuned_config, staging, general_params, checkpoint_dir)
        final = train.train_and_evaluate(tuned_config, staging)
        report = {"video": str(video), "general": str(checkpoint_dir), "task": config.task, **counts,
                  "steps": int(final["step"]), "freeze": list(config.personalize.freeze),
                  **held_out_report(tuned_config, general_params, checkpoint.load_params(staging), staging / "data")}
        (staging / "personalize.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        # The workdir's own config names its data where it will be, not where it was staged.
        config_lib.write(fine_tune_config(config, out / "data"), staging)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report
