"""`t2v demo`: the main job end to end on the embedded synthetic data.

    workdir/
      config.json        the resolved demo config and t2v version
      data/              a small synthetic ground-truth dataset (ArrayRecord), as `t2v synth` writes it
      sync/              the tiny lip-sync expert (a task workdir: checkpoints, metrics.jsonl, TensorBoard)
      motion/            the tiny motion model, trained with the frozen expert as a loss
      motion/eval/metrics.json   held-out metrics against the static and energy baselines
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

STAGES = ("data", "sync", "motion", "evaluate", "render", "samples", "generate")


def run(cfg: ml_collections.ConfigDict, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    config_lib.write(cfg, workdir)
    start = time.perf_counter()

    def stage(name: str, what: str) -> None:
        print(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {what} ({time.perf_counter() - start:.0f} s)", flush=True)

    stage("data", f"synthesizing {cfg.synth.clips} talking-head clips -> {workdir / 'data'}")
    synthesize(cfg, workdir / "data")

    stage("sync", "training the lip-sync expert")
    train_experiment(cfg, "sync", workdir)

    stage("motion", "training the motion model (frozen sync expert as a loss)")
    train_experiment(cfg, "motion", workdir, ["--config.model.sync_workdir=" + str(workdir / "sync")])

    stage("evaluate", "evaluating the motion model on held-out speakers, sentences and a new language")
    report_motion(workdir / "motion", workdir / "sync")

    stage("render", "training the renderer")
    train_experiment(cfg, "render", workdir)

    stage("samples", f"writing synthetic sample clips -> {workdir / 'samples'}")
    write_samples(cfg.sample, workdir / "samples")

    stage("generate", f"making {cfg.generate.photo!r} speak -> {workdir / 'generated.mp4'}")
    generate(cfg.generate, workdir)
    print(f"done in {time.perf_counter() - start:.0f} s: {workdir}")


def synthesize(cfg: ml_collections.ConfigDict, out: Path) -> None:
    from t2v.data import synthetic

    if (out / "synth.json").exists():
        print("      already there")
        return
    summary = synthetic.synthesize_from_config(cfg.synth, out)
    config_lib.write(cfg, out)
    print(f"      {summary['clips']} clips, {summary['seconds']:.1f} s of speech")


def train_experiment(cfg: ml_collections.ConfigDict, name: str, workdir: Path, overrides=()) -> dict:
    from t2v import train

    experiment = config_lib.load(cfg.experiments[name], list(overrides))
    if cfg.steps[name]:
        experiment.train.steps = cfg.steps[name]
    metrics = train.train_and_evaluate(experiment, workdir / name)
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith("eval/")}
    print(f"      {name}: step {metrics['step']}, {shown}")
    return metrics


def report_motion(motion_dir: Path, sync_dir: Path) -> dict:
    from t2v import evaluate

    metrics = evaluate.evaluate(motion_dir, sync_workdir=str(sync_dir))
    names = ("mouth_corr", "sync_offset_acc", "lmd_mouth", "pose_diversity", "pose_follow")
    rows = [("model", metrics)] + list(metrics.get("baselines", {}).items())
    print("      " + f"{'':8s}" + "".join(f"{n:>16s}" for n in names))
    for label, values in rows:
        cells = "".join(f"{values[n]:16.3f}" if isinstance(values.get(n), (int, float)) else f"{'-':>16s}"
                        for n in names)
        print(f"      {label:8s}{cells}")
    print(f"      -> {motion_dir / 'eval' / 'metrics.json'}")
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
