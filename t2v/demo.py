"""`t2v demo`: the main job end to end on the embedded synthetic data.

    workdir/
      config.json             the resolved config and t2v version
      data/                   synthetic ground-truth records (ArrayRecord) + their config
      samples/synthetic.mp4   a painted talking head speaking eSpeak NG speech
      samples/synthetic_keypoints.mp4   the same with its ground-truth keypoints drawn
      samples/photo.mp4       the same motion warping a real photograph (needs the [data] extra)
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_collections
import numpy as np

from t2v import config as config_lib


def run(cfg: ml_collections.ConfigDict, workdir: Path) -> None:
    from t2v import keypoints, video
    from t2v.data import synthetic

    workdir.mkdir(parents=True, exist_ok=True)
    config_lib.write(cfg, workdir)
    start = time.perf_counter()

    print(f"[1/2] synthesizing {cfg.synth.clips} talking-head clips -> {workdir / 'data'}")
    summary = synthetic.synthesize_from_config(cfg.synth, workdir / "data")
    config_lib.write(cfg, workdir / "data")
    print(f"      {summary['clips']} clips, {summary['seconds']:.1f} s of speech")

    print(f"[2/2] writing sample clips -> {workdir / 'samples'}")
    samples = workdir / "samples"
    samples.mkdir(exist_ok=True)
    s = cfg.sample
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
    print(f"done in {time.perf_counter() - start:.0f} s: {workdir}")
