"""The emotion task (Wav2Lip-Emotion): paired crops of one clip in two emotions, the masks, an
untrained translator that copies its input, a sharded run with the classifier loss that
resumes on the same batches, `t2v emotion`'s input errors and output, and `t2v eval`
refusing the loss classifier as its judge."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2v import cli, video
from t2v import config as config_lib
from t2v import evaluate, train
from t2v.data import synthetic
from t2v.errors import InputError
from t2v.tasks import emotion as emotion_task
from t2v.tasks import get_task


def micro_config(cache_dir, *overrides):
    return config_lib.load("configs/emotion.py:tiny", [
        "--config.data.size=32", "--config.data.crop=32", "--config.model.translator.widths=(8, 8)",
        "--config.model.translator.embed=8", "--config.data.train_clips=4", "--config.data.eval_clips=2",
        "--config.data.frames_per_clip=2", "--config.train.steps=4", "--config.train.batch_size=8",
        "--config.train.log_every=1", "--config.train.eval_every=4", "--config.train.eval_batches=1",
        "--config.train.checkpoint_every=2", f"--config.data.cache_dir={cache_dir}", *overrides])


def classifier_config(cache_dir, *overrides):
    return config_lib.load("configs/emotion_cls.py:tiny", [
        "--config.data.size=32", "--config.data.crop=32", "--config.model.classifier.widths=(8, 8, 8)",
        "--config.data.train_clips=8", "--config.data.eval_clips=4", "--config.data.eval_frames=2",
        "--config.train.steps=2", "--config.train.batch_size=8", "--config.train.eval_every=0",
        "--config.train.checkpoint_every=2", f"--config.data.cache_dir={cache_dir}", *overrides])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "t2v-cache"


def test_lower_half_mask_keeps_the_upper_face():
    mask = emotion_task.region_mask(32, "lower_half")
    assert mask.shape == (32, 32, 1) and mask[:12].max() == 0.0 and mask[20:].min() == 1.0
    assert emotion_task.region_mask(8, "full").min() == 1.0
    with pytest.raises(ValueError, match="model.mask"):
        emotion_task.region_mask(8, "eyes")


@pytest.mark.slow  # clips, pairs and one compilation: ~20 s on a quiet 2-core machine, minutes on a loaded one
def test_pairs_hold_every_emotion_of_one_clip_and_an_untrained_model_copies(cache_dir):
    config = micro_config(cache_dir)
    task = get_task(config)
    pairs = emotion_task.make_pairs(config.data, "eval", 0)
    clips, frames = pairs["source"].shape[:2]
    assert pairs["targets"].shape == (clips, len(synthetic.EMOTIONS), frames, 32, 32, 3)
    own = pairs["source_emotion"][0]
    if own != synthetic.EMOTIONS.index("neutral"):  # the clip's own emotion at its own level renders the source
        assert np.abs(pairs["targets"][0, own].astype(int) - pairs["source"][0]).mean() < 3
    batch = next(task.dataset("train", seed=0, process_index=0, process_count=1))
    params = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
    source = jnp.asarray(batch["source"], jnp.float32) / 255.0
    np.testing.assert_allclose(jax.jit(task.translate)(params, source, batch["emotion"], batch["intensity"]), source, atol=1e-6)


@pytest.mark.slow  # a classifier, then two emotion runs, compiled for 8 devices
def test_sharded_training_with_the_classifier_loss_resumes_exactly(tmp_path, cache_dir):
    train.train_and_evaluate(classifier_config(cache_dir), tmp_path / "cls")
    loss_cls = f"--config.model.emotion_cls_workdir={tmp_path / 'cls'}"
    full = train.train_and_evaluate(micro_config(cache_dir, loss_cls), tmp_path / "full")
    assert full["step"] == 4 and len(jax.devices()) == 8
    for name in ("train/loss", "train/l1", "train/classifier_ce", "eval/l1", "eval/copy_l1", "eval/loss_cls_acc"):
        assert np.isfinite(full[name]), name
    assert (tmp_path / "full" / "samples" / "step_4" / "emotion_samples.png").is_file()
    train.train_and_evaluate(micro_config(cache_dir, loss_cls, "--config.train.steps=2"), tmp_path / "resumed")
    train.train_and_evaluate(micro_config(cache_dir, loss_cls), tmp_path / "resumed")
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if "loss" in r} for run in ("full", "resumed")]
    assert sorted(losses[1]) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses[1][s] for s in range(1, 5)], [losses[0][s] for s in range(1, 5)], rtol=1e-5)

    # The loss classifier is never the judge.
    with pytest.raises(InputError, match="trained against"):
        evaluate.evaluate(tmp_path / "full", report=False,
                          config=config_lib.apply_overrides(micro_config(cache_dir, loss_cls),
                                                            [f"--config.eval.emotion_judge_workdir={tmp_path / 'cls'}"]))

    # A judge trained apart scores the outputs, the input and the truth side by side.
    train.train_and_evaluate(classifier_config(cache_dir, "--config.seed=1", "--config.data.train_speaker_offset=1000"),
                             tmp_path / "judge")
    judged = evaluate.evaluate(tmp_path / "full", report=False, config=config_lib.apply_overrides(
        micro_config(cache_dir, loss_cls), [f"--config.eval.emotion_judge_workdir={tmp_path / 'judge'}",
                                            "--config.eval.max_clips=1", "--config.eval.frames=3"]))
    assert judged["judges"]["emotion"]["disjoint_from_loss_classifier"] is True
    for method in (judged["model"], judged["baselines"]["copy_input"], judged["ground_truth"]):
        assert 0.0 <= method["target_acc"] <= 1.0 and set(synthetic.EMOTIONS) <= {
            k.removeprefix("target_acc_") for k in method}
    assert judged["headline"]["metric"] == "target_acc"

    # t2v emotion: a synthetic talking clip -> the same size, length and audio.
    clip = synthetic.make_clip(9, language="en", speaker=5, emotion="neutral", size=96)
    source = tmp_path / "in.mp4"
    video.write_video(source, clip.frames[:20], audio=clip.audio[: 20 * 640])
    out = tmp_path / "out.mp4"
    assert cli.main(["emotion", "--checkpoint", str(tmp_path / "full"), "--video", str(source), "--to", "happy",
                     "--intensity", "0.7", "--out", str(out)]) == 0
    read = video.read_video(out)
    assert read.frames.shape == (20, 96, 96, 3) and read.audio is not None
    assert not list(tmp_path.glob(".out*"))  # no staging file left behind


def test_emotion_command_input_errors_are_one_line(tmp_path, capsys):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"")
    cases = [(["--to", "joy"], "unknown emotion; valid: neutral,happy"),
             (["--to", "happy", "--intensity", "1.5"], "must be in [0, 1]"),
             (["--to", "happy", "--video", str(tmp_path / "missing.mp4")], "no such video"),
             (["--to", "happy", "--out", str(tmp_path / "out.avi")], "must be an .mp4"),
             (["--to", "happy"], "not a trained workdir")]
    for extra, expected in cases:
        args = {"--checkpoint": str(tmp_path / "nowhere"), "--video": str(source), "--out": str(tmp_path / "o.mp4")}
        for flag, value in zip(extra[::2], extra[1::2]):
            args[flag] = value
        argv = ["emotion", *[x for pair in args.items() for x in pair]]
        assert cli.main(argv) == 2, extra
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and expected in error, (extra, error)
