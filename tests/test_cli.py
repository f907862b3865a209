"""The `t2v` command: synth in both formats and the README demo end to end; every command's
overrides applied or rejected in one line; bad input one line, a bug a traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest

from t2v import audio, cli, video
from t2v import config as config_lib
from t2v.data import records


def t2v(*args, cwd=None):
    """Runs `t2v ARGS` with stdout and stderr piped; decoded by hand so a '\\r' stays visible."""
    run = subprocess.run([sys.executable, "-m", "t2v.cli", *map(str, args)], capture_output=True, cwd=cwd)
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(), run.stderr.decode())


def test_synth_records_writes_ground_truth_and_config(tmp_path):
    out = tmp_path / "records"
    run = t2v("synth", "--out", out, "--clips", 2, "--langs", "en,de", "--format", "records", "--size", 64,
              "--seed", 3, "--config.synth.shards=2")
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stdout + run.stderr  # piped: progress lines, no carriage-return frames
    assert json.loads((out / "config.json").read_text())["config"]["synth"]["seed"] == 3
    assert len(list(out.glob("clips.array_record-*"))) == 2  # --config.synth.shards=2 applied
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
    assert "\r" not in run.stdout + run.stderr
    assert "1 clips kept, 0 skipped" in run.stdout
    (report,) = out.glob("t2v_voxceleb2/*/report.json")
    report = json.loads(report.read_text())
    assert report["kept"] and report["options"]["crop_size"] == 96
    again = t2v("prepare", "--dataset", "voxceleb2", "--src", src, "--out", out)
    assert again.returncode == 2 and "already prepared" in again.stderr


# --------------------------------------------------------------------------- overrides, per command
# Each command's work is replaced by a recorder: what matters here is what reaches it.


def _record_call(monkeypatch, target: str, result):
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    monkeypatch.setattr(target, record)
    return calls


def _saved_workdir(tmp_path):
    workdir = tmp_path / "motion"
    config_lib.write(config_lib.load("configs/motion.py:tiny"), workdir)
    return workdir


def test_train_applies_overrides(monkeypatch, tmp_path):
    calls = _record_call(monkeypatch, "t2v.train.train_and_evaluate", {"step": 0})
    assert cli.main(["train", "--config", "configs/motion.py:tiny", "--workdir", str(tmp_path),
                     "--config.train.steps=7"]) == 0
    ((cfg, workdir), _), = calls
    assert cfg.train.steps == 7 and workdir == str(tmp_path)


def test_eval_applies_overrides_over_the_workdir_config(monkeypatch, tmp_path):
    workdir = _saved_workdir(tmp_path)
    calls = _record_call(monkeypatch, "t2v.evaluate.evaluate", {})
    assert cli.main(["eval", "--workdir", str(workdir), "--config.data.eval_clips=3"]) == 0
    ((_, cfg), _), = calls
    assert cfg.task == "motion" and cfg.data.eval_clips == 3  # the saved config, overridden
    assert cfg.model.vae.latent_dim == config_lib.load("configs/motion.py:tiny").model.vae.latent_dim


def test_generate_maps_flags_and_overrides_onto_run(monkeypatch, capsys):
    report = type("Report", (), dict(out="o.mp4", frames=25, audio_seconds=1.0, photo_size=(64, 48)))
    calls = _record_call(monkeypatch, "t2v.generate.run", report)
    assert cli.main(["generate", "--image", "face.png", "--audio", "speech.wav", "--out", "o.mp4",
                     "--checkpoint", "ckpt", "--temperature", "0.5", "--overlay",
                     "--config.generate.render_batch=2", "--config.generate.seed=4", "--config.generate.face=1"]) == 0
    (args, kwargs), = calls
    assert args == ("face.png", "speech.wav", "o.mp4")
    assert kwargs == dict(checkpoint="ckpt", pose_from=None, keypoints_out=None, temperature=0.5, seed=4,
                          overlay=True, max_seconds=None, render_batch=2, motion="motion",
                          face=1)  # unset renderer, add_blinks, emotion: run's own
    printed = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    assert printed["generate"]["render_batch"] == 2


@pytest.mark.parametrize("argv, onnx", [([], True), (["--no-onnx"], False), (["--config.export.onnx=false"], False)])
def test_export_maps_overrides_onto_export(monkeypatch, tmp_path, argv, onnx):
    calls = _record_call(monkeypatch, "t2v.export.export", {"tasks": {}})
    assert cli.main(["export", "--checkpoint", "ckpt", "--out", str(tmp_path), *argv]) == 0
    (args, kwargs), = calls
    assert args == ("ckpt", str(tmp_path))
    assert kwargs == {"onnx": onnx, "platforms": ("cpu", "cuda", "tpu"), "external_data_threshold": 1 << 30}


def test_export_maps_platforms_and_external_data_threshold(monkeypatch, tmp_path):
    calls = _record_call(monkeypatch, "t2v.export.export", {"tasks": {}})
    argv = ["--config.export.platforms=cpu, tpu", "--config.export.external_data_threshold=1000"]
    assert cli.main(["export", "--checkpoint", "ckpt", "--out", str(tmp_path), *argv]) == 0
    (_, kwargs), = calls
    assert kwargs["platforms"] == ("cpu", "tpu") and kwargs["external_data_threshold"] == 1000


def test_demo_applies_overrides(monkeypatch, tmp_path):
    calls = _record_call(monkeypatch, "t2v.demo.run", None)
    assert cli.main(["demo", "--workdir", str(tmp_path), "--config.steps.sync=2"]) == 0
    ((cfg, _), _), = calls
    assert cfg.steps.sync == 2


@pytest.mark.parametrize("command, typed_field, type_name", [
    (["demo", "--workdir", "W"], "synth.clips", "int"),
    (["train", "--config", "configs/motion.py:tiny", "--workdir", "W"], "train.steps", "int"),
    (["eval", "--workdir", "SAVED"], "train.steps", "int"),
    (["prepare", "--dataset", "voxceleb2", "--src", "S", "--out", "O"], "prepare.crop_size", "int"),
    (["generate", "--image", "I", "--audio", "A", "--out", "O.mp4", "--checkpoint", "C"], "generate.temperature", "float"),
    (["export", "--checkpoint", "C", "--out", "O"], "export.onnx", "bool"),
    (["synth", "--out", "O"], "synth.size", "int"),
    (["config", "--config", "configs/synth.py"], "synth.size", "int"),
])
def test_every_command_rejects_a_bad_override_in_one_line(command, typed_field, type_name, tmp_path, capsys, monkeypatch):
    command = [str(_saved_workdir(tmp_path)) if a == "SAVED" else a for a in command]
    for target in ("t2v.train.train_and_evaluate", "t2v.evaluate.evaluate", "t2v.demo.run"):
        _record_call(monkeypatch, target, {})  # never reached: the override fails first
    for override, problem in [("--config.nope.x=1", "config has no field 'nope.x'"),
                              (f"--config.{typed_field}=x", f"cannot parse 'x' as {type_name}")]:
        assert cli.main([*command, override]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"t2v {command[0]}: error: {override}: {problem}") and err.count("\n") == 1, err


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        return {}["missing"]  # a programming error, not bad input

    monkeypatch.setattr("t2v.export.export", broken)
    with pytest.raises(KeyError, match="missing"):
        cli.main(["export", "--checkpoint", "C", "--out", "O"])


def test_a_bug_prints_a_traceback_from_the_command_line(tmp_path):
    # A mis-built config (a bug in the experiment file, not bad input) must not read as one line.
    (tmp_path / "broken.py").write_text("def get_config(arg=None):\n    return {}['missing']\n")
    run = t2v("config", "--config", tmp_path / "broken.py")
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr and "KeyError: 'missing'" in run.stderr
