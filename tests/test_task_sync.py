"""The sync task: shifted audio windows, offset metrics, training through the generic loop."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from t2v import config as config_lib
from t2v import evaluate, train
from t2v.data import pipeline
from t2v.tasks import sync


def micro_config(cache_dir, **overrides):
    """The tiny config shrunk to compile and run in seconds."""
    c = config_lib.load("configs/sync.py:tiny", [
        "--config.model.sync.window=5", "--config.data.window=5", "--config.data.max_shift=6",
        "--config.model.sync.features=16", "--config.model.sync.width=16", "--config.model.sync.num_layers=1",
        "--config.data.train_clips=8", "--config.data.eval_clips=4", "--config.loss.shifted_negatives=2",
        "--config.train.steps=3", "--config.train.batch_size=8", "--config.train.log_every=1",
        "--config.train.eval_every=3", "--config.train.eval_batches=1", "--config.train.checkpoint_every=3",
        f"--config.data.cache_dir={cache_dir}"])
    c.train.update(overrides)
    return c


def test_shifted_mels_slide_over_the_context():
    window, max_shift = 3, 4
    context = np.arange(4 * (window + 2 * max_shift), dtype=np.float32)[None, :, None].repeat(2, axis=2)
    shifts = np.array([[-4, 0, 2, 4]])
    out = np.asarray(sync.shifted_mels(jnp.asarray(context), jnp.asarray(shifts), window, max_shift))
    for k, s in enumerate(shifts[0]):
        start = 4 * (max_shift + s)
        np.testing.assert_array_equal(out[0, k], context[0, start : start + 4 * window])
    every = np.asarray(sync.all_offsets(jnp.asarray(context), window, max_shift))
    assert every.shape == (1, 2 * max_shift + 1, 4 * window, 2)
    np.testing.assert_array_equal(every[0, max_shift], context[0, 4 * max_shift : 4 * (max_shift + window)])


def test_offset_metrics():
    max_shift = 3
    perfect = -np.abs(np.arange(-max_shift, max_shift + 1, dtype=np.float32))[None].repeat(4, axis=0)
    m = sync.offset_metrics(perfect, max_shift)
    assert m["sync_offset_acc"] == 1.0 and m["sync_offset_err"] == 0.0 and m["sync_auc"] == 1.0
    late = np.roll(perfect, 2, axis=1)  # best offset +2 everywhere
    m = sync.offset_metrics(late, max_shift)
    assert m["sync_offset_acc"] == 0.0 and m["sync_offset_err"] == 2.0 and m["sync_auc"] < 0.5


@pytest.mark.slow  # mostly compiling on the 8 test devices: 48 s measured on a loaded 2-core machine
def test_trains_through_the_generic_loop_and_loads_frozen(tmp_path):
    config = micro_config(tmp_path / "cache")
    result = train.train_and_evaluate(config, tmp_path / "run")
    assert result["step"] == 3
    for name in ("train/loss", "train/in_batch_acc", "eval/sync_offset_acc", "eval/sync_auc"):
        assert np.isfinite(result[name]), name
    assert 0.0 <= result["eval/sync_offset_acc"] <= 1.0
    # The eval step wrote the offset-score curves of two held-out windows.
    samples = tmp_path / "run" / "samples" / "step_3"
    report = json.loads((samples / "sync_offsets.json").read_text())
    assert report["offsets"] == list(range(-6, 7)) and len(report["windows"]) == 2
    for window in report["windows"]:
        assert len(window["scores"]) == 13 and max(map(abs, window["scores"])) <= 1.0 + 1e-4
        assert window["best_offset"] == report["offsets"][int(np.argmax(window["scores"]))]
    assert np.asarray(Image.open(samples / "sync_offsets.png")).shape == (2 * 80, 13 * 8, 3)

    expert = sync.load_expert(tmp_path / "run")
    batch = next(pipeline.window_batches(config, "eval", seed=0))
    score = expert.score(jnp.asarray(batch["mel"]), jnp.asarray(batch["keypoints"]), jnp.asarray(batch["reference"]))
    assert score.shape == (8,) and np.all(np.abs(np.asarray(score)) <= 1.0 + 1e-5)


def test_refuses_a_window_mismatch(tmp_path):
    config = micro_config(tmp_path / "cache")
    config.data.window = 7
    with pytest.raises(ValueError, match="must equal model.sync.window"):
        sync.SyncTask(config)


@pytest.mark.slow
def test_tiny_expert_finds_the_true_offset_on_held_out_clips(tmp_path_factory, train_as_a_user_would):
    """Shown to learn: the tiny config, trained, beats chance (1/31) by far on unseen speakers,
    sentences and language."""
    workdir = tmp_path_factory.mktemp("sync_tiny")
    train_as_a_user_would("configs/sync.py:tiny", workdir,
                          [f"--config.data.cache_dir={tmp_path_factory.getbasetemp() / 't2v-cache'}"])
    result = evaluate.evaluate(workdir)
    metrics, energy = result["model"], result["baselines"]["energy"]
    chance = 1 / 31
    print("sync tiny held-out:", metrics, "energy detector:", energy)
    assert metrics["chance"] == pytest.approx(chance) and result["baselines"]["chance"]["sync_offset_acc"] == chance
    assert metrics["sync_offset_acc"] > 5 * chance and metrics["sync_offset_acc"] > energy["sync_offset_acc"]
    assert metrics["sync_auc"] > 0.8
    assert (workdir / "eval" / "report.html").is_file()
