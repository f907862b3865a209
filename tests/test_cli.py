"""The `t2v` command end to end: synth in both formats and the README demo."""

import json
import subprocess
import sys

import numpy as np
import pytest

from t2v import audio, video
from t2v.data import records


def t2v(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "t2v.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_synth_records_writes_ground_truth_and_config(tmp_path):
    out = tmp_path / "records"
    run = t2v("synth", "--out", out, "--clips", 2, "--langs", "en,de", "--format", "records", "--size", 64,
              "--seed", 3, "--config.synth.shards=2")
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "config.json").read_text())["config"]["synth"]["seed"] == 3
    clips = [records.decode_clip(r) for r in records.read_records(sorted(out.glob("clips.array_record-*")))]
    assert sorted(c["language"] for c in clips) == ["de", "en"]
    for c in clips:
        assert c["frames"].shape[1:] == (64, 64, 3)
        assert len(c["frames"]) == len(c["keypoints"]) == audio.num_video_frames(len(c["audio"]))


def test_synth_voxceleb2_tree_is_playable(tmp_path):
    out = tmp_path / "vox"
    run = t2v("synth", "--out", out, "--clips", 1, "--langs", "fr", "--format", "voxceleb2", "--size", 64)
    assert run.returncode == 0, run.stderr
    (mp4,) = out.glob("id*/*/00001.mp4")
    clip = video.read_video(mp4)
    assert clip.audio is not None and len(clip.frames) == audio.num_video_frames(len(clip.audio))


def test_synth_bad_texture_is_one_line(tmp_path):
    run = t2v("synth", "--out", tmp_path / "x", "--clips", 1, "--texture", tmp_path / "missing.jpg")
    assert run.returncode != 0
    assert "missing.jpg" in run.stderr and run.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_demo_trains_evaluates_and_makes_the_photo_speak(tmp_path):
    work = tmp_path / "demo"
    run = t2v("demo", "--workdir", work, "--config.synth.clips=2", "--config.synth.size=64",
              "--config.sample.size=96", "--config.steps.sync=3", "--config.steps.motion=3",
              "--config.steps.render=3")
    assert run.returncode == 0, run.stderr
    assert json.loads((work / "config.json").read_text())["config"]["synth"]["clips"] == 2
    for task in ("sync", "motion", "render"):
        assert json.loads((work / task / "config.json").read_text())["config"]["task"] == task
    metrics = json.loads((work / "motion" / "eval" / "metrics.json").read_text())
    assert {"static", "energy"} <= set(metrics["baselines"])
    for name in ("samples/synthetic.mp4", "samples/synthetic_keypoints.mp4", "samples/photo.mp4",
                 "generated.mp4", "generated_keypoints.mp4"):
        clip = video.read_video(work / name)
        # Exactly round(25 x seconds) frames, and the speech survives the AAC round trip.
        assert len(clip.frames) == audio.num_video_frames(len(clip.audio)), name
        audio.check_speech(clip.audio, name)
        assert np.sqrt(np.mean(clip.audio ** 2)) > 0.02
    assert video.read_video(work / "generated.mp4").frames.shape[1:] == (512, 512, 3)  # the photo's framing
    # Run again: every stage resumes instead of starting over.
    again = t2v("demo", "--workdir", work, "--config.synth.clips=2", "--config.synth.size=64",
                "--config.sample.size=96", "--config.steps.sync=3", "--config.steps.motion=3",
                "--config.steps.render=3")
    assert again.returncode == 0, again.stderr
    assert "already there" in again.stdout


def test_prepare_a_synthetic_voxceleb2_tree(tmp_path):
    src, out = tmp_path / "vox", tmp_path / "prepared"
    run = t2v("synth", "--out", src, "--clips", 1, "--langs", "en", "--format", "voxceleb2", "--size", 160,
              "--texture", "astronaut")
    assert run.returncode == 0, run.stderr
    run = t2v("prepare", "--dataset", "voxceleb2", "--src", src, "--out", out, "--config.prepare.crop_size=96")
    assert run.returncode == 0, run.stderr
    assert "1 clips kept, 0 skipped" in run.stdout
    (report,) = out.glob("t2v_voxceleb2/*/report.json")
    assert json.loads(report.read_text())["kept"]
    again = t2v("prepare", "--dataset", "voxceleb2", "--src", src, "--out", out)
    assert again.returncode == 2 and "already prepared" in again.stderr
