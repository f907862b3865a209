"""`t2v demo`: the main job end to end on the embedded synthetic data.

    workdir/
      config.json        the resolved demo config and t2v version
      data/              the synthetic ground-truth clips every later stage trains and is
                         evaluated on (ArrayRecord; one folder per split and experiment plan)
      sync/              the tiny lip-sync expert (a task workdir: checkpoints, metrics.jsonl, TensorBoard)
      judge/             a second sync expert, trained on other speakers with another seed: the
                         judge of the motion model's lip sync, never its loss
      motion/            the tiny motion model, trained with the frozen expert (sync/) as a loss
      motion/eval/metrics.json, report.html   held-out metrics: model, baselines, ground truth
      render/            the tiny keypoint-driven renderer
      samples/           synthetic clips a person can watch (painted, keypoints drawn, photo-warped)
      generated.mp4      the photograph speaking new eSpeak NG speech, with the audio muxed

Every stage resumes: re-running with the same workdir skips what is done.
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_collections
import numpy as np

from t2v import config as config_lib

STAGES = ("data", "sync", "judge", "motion", "evaluate", "render", "samples", "generate")
PIXEL_EXPERIMENTS = ("render",)  # their clips carry rendered frames


def run(cfg: ml_collections.ConfigDict, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    config_lib.write(cfg, workdir)
    start = time.perf_counter()

    def stage(name: str, what: str) -> None:
        print(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {what} ({time.perf_counter() - start:.0f} s)", flush=True)

    stage("data", f"synthesizing the talking-head clips every stage reads -> {workdir / 'data'}")
    data = synthesize(cfg, workdir / "data")

    stage("sync", "training the lip-sync expert (a loss for the motion model)")
    train_experiment(cfg, "sync", workdir, data["sync"])

    stage("judge", "training the sync judge (other speakers, another seed: never a loss)")
    train_experiment(cfg, "judge", workdir, data["judge"])

    stage("motion", "training the motion model (frozen sync expert as a loss)")
    train_experiment(cfg, "motion", workdir, data["motion"] + [
        "--config.model.sync_workdir=" + str(workdir / "sync"),
        "--config.eval.sync_judge_workdir=" + str(workdir / "judge")])

    stage("evaluate", "evaluating the motion model on held-out speakers, sentences and a new language")
    report_motion(workdir / "motion")

    stage("render", "training the renderer")
    train_experiment(cfg, "render", workdir, data["render"])

    stage("samples", f"writing synthetic sample clips -> {workdir / 'samples'}")
    write_samples(cfg.sample, workdir / "samples")

    stage("generate", f"making {cfg.generate.photo!r} speak -> {workdir / 'generated.mp4'}")
    generate(cfg.generate, workdir)
    print(f"done in {time.perf_counter() - start:.0f} s: {workdir}")


def experiment_config(cfg: ml_collections.ConfigDict, name: str, overrides=()) -> ml_collections.ConfigDict:
    """The experiment `name` as the demo trains it: its config file, the demo's sizes, overrides."""
    experiment = config_lib.load(cfg.experiments[name], list(overrides))
    steps = cfg.steps[name] or (cfg.steps.sync if name == "judge" else 0)  # a quick sync: a quick judge
    if steps:
        experiment.train.steps = steps
    if cfg.synth.clips:
        experiment.data.train_clips = cfg.synth.clips
    if name in PIXEL_EXPERIMENTS and cfg.synth.size:
        experiment.data.size = cfg.synth.size
    return experiment


def synthesize(cfg: ml_collections.ConfigDict, out: Path) -> dict[str, list[str]]:
    """Writes the train and eval clips of every experiment under `out` (once: experiments with
    the same plan share them) and returns, per experiment, the overrides that make it read
    them (`data.source=records`)."""
    from t2v.data import pipeline

    overrides, made = {}, 0
    for name in cfg.experiments:
        experiment = experiment_config(cfg, name)
        experiment.data.cache_dir = str(out)
        folders = {}
        for split in ("train", "eval"):
            before = set(out.glob("synthetic/*"))
            shards = pipeline.synthetic_shards(experiment.data, split, int(experiment.seed),
                                               render=name in PIXEL_EXPERIMENTS)
            made += len(set(out.glob("synthetic/*")) - before)
            folders[split] = str(Path(shards[0]).parent)
        overrides[name] = ["--config.data.source=records", f"--config.data.path={folders['train']}",
                           f"--config.data.eval_path={folders['eval']}"]
        print(f"      {name}: {folders['train']} (train), {folders['eval']} (eval)")
    if not made:
        print("      already there")
    config_lib.write(cfg, out)
    return overrides


def train_experiment(cfg: ml_collections.ConfigDict, name: str, workdir: Path, overrides=()) -> dict:
    from t2v import train

    metrics = train.train_and_evaluate(experiment_config(cfg, name, overrides), workdir / name)
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith("eval/")}
    print(f"      {name}: step {metrics['step']}, {shown}")
    return metrics


def report_motion(motion_dir: Path) -> dict:
    """`t2v eval` of the motion workdir (its judge named in its config), printed as a table."""
    from t2v import evaluate

    metrics = evaluate.evaluate(motion_dir)
    names = ("mouth_corr", "lmd_mouth", "sync_offset_acc", "sync_distance", "sync_confidence", "pose_diversity",
             "pose_follow")
    rows = [("model", metrics["model"])] + list(metrics["baselines"].items()) + [("truth", metrics["ground_truth"])]
    print("      " + f"{'':12s}" + "".join(f"{n[:15]:>16s}" for n in names))
    for label, values in rows:
        cells = "".join(f"{values[n]:16.3f}" if isinstance(values.get(n), (int, float)) else f"{'-':>16s}"
                        for n in names)
        print(f"      {label:12s}{cells}")
    headline = metrics["headline"]
    print(f"      {headline['metric']}: strongest baseline {headline['strongest_baseline']}, "
          f"beaten by the model: {headline['model_beats_it']}")
    print(f"      -> {motion_dir / 'eval' / 'metrics.json'}, {motion_dir / 'eval' / 'report.html'}")
    return metrics


def write_samples(s: ml_collections.ConfigDict, samples: Path) -> None:
    from t2v import keypoints, video
    from t2v.data import synthetic

    samples.mkdir(parents=True, exist_ok=True)
    clip = synthetic.make_clip(s.seed, language=s.language, size=s.size)
    video.write_video(samples / "synthetic.mp4", clip.frames, clip.audio)
    overlay = np.stack([keypoints.draw_keypoints(f, k) for f, k in zip(clip.frames, clip.keypoints)])
    video.write_video(samples / "synthetic_keypoints.mp4", overlay, clip.audio)
    written = ["synthetic.mp4", "synthetic_keypoints.mp4"]
    try:
        texture = synthetic.load_texture(s.photo)
    except ImportError as e:  # dlib is in the [data] extra
        print(f"      skipping the photo sample: {e}")
        texture = None
    if texture is not None:
        photo = synthetic.make_clip(s.seed, language=s.language, size=s.size, texture=texture)
        video.write_video(samples / "photo.mp4", photo.frames, photo.audio)
        written.append("photo.mp4")
    print(f"      {', '.join(written)}: {clip.transcript!r} ({len(clip.audio) / 16000:.1f} s)")


def generate(g: ml_collections.ConfigDict, workdir: Path) -> None:
    """The photo speaks new eSpeak NG speech, through the same path as `t2v generate`."""
    import skimage.data
    import soundfile
    from PIL import Image

    from t2v import generate as generate_lib
    from t2v.data import speech

    inputs = workdir / "inputs"
    inputs.mkdir(exist_ok=True)
    photo = inputs / "photo.png"
    if g.photo == "astronaut":
        Image.fromarray(skimage.data.astronaut()).save(photo)
    else:
        photo = Path(g.photo)
    spoken = speech.speak(g.text, g.language)
    wav = inputs / "speech.wav"
    soundfile.write(wav, spoken.audio, spoken.sample_rate)
    report = generate_lib.run(photo, wav, workdir / "generated.mp4", checkpoint=workdir, temperature=g.temperature,
                              seed=g.seed, overlay=True, progress=False)
    print(f"      {report.out.name}: {report.frames} frames, {report.audio_seconds:.1f} s, "
          f"{report.photo_size[0]}x{report.photo_size[1]}; with keypoints drawn: {report.overlay_out.name}")
