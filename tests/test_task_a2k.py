"""The a2k task (Audio2Keypoint GAN): the U-Net chunks exactly, each player gets only its own
gradients, a sharded step on 8 devices resumes exactly, and (slow) the tiny config learns:
on held-out speakers and the unseen language its lips beat the static and energy baselines."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2v import config as config_lib
from t2v import train, video
from t2v.data import pipeline
from t2v.evaluate import baselines, metrics
from t2v.models.a2k import KeypointUNet, build_a2k_generator, generate_chunked
from t2v.tasks import get_task


def micro_config(cache_dir, *overrides):
    """The tiny config shrunk to compile and run in seconds."""
    return config_lib.load("configs/a2k.py:tiny", [
        "--config.data.window=8", "--config.data.train_clips=8", "--config.data.eval_clips=4",
        "--config.model.audio.features=16", "--config.model.identity.features=16",
        "--config.model.unet.widths=(16, 16)", "--config.model.discriminator.widths=(16, 16)",
        "--config.train.steps=3", "--config.train.batch_size=8", "--config.train.log_every=1",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=2", "--config.loss.adversarial_start_step=0",
        f"--config.data.cache_dir={cache_dir}", *overrides])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "t2v-cache"


def held_out_comparison(workdir, config) -> dict:
    """The model and the static and energy baselines on every held-out clip (unseen speakers,
    sentences, and the unseen language), scored by `t2v.evaluate.metrics.mouth_metrics` with
    the references taken as inference takes them: {method: averaged metrics}."""
    from t2v import checkpoint

    config.data.reference = "detected"
    task = get_task(config)
    params = checkpoint.load_params(workdir)
    fit = baselines.fit_energy_to_opening(pipeline.load_clips(config, "train"))
    unseen = set(pipeline._languages(config.data.eval_langs))
    rows = {"model": [], "static": [], "energy": []}
    for index, clip in enumerate(pipeline.load_clips(config, "eval")):
        frames = len(clip["keypoints"])
        generated = task.generate_audio_driven(params, jax.random.PRNGKey(index), clip["mel"][None, : 4 * frames],
                                               clip["reference"][None])["keypoints"][0]
        outputs = {"model": generated, "static": baselines.static_baseline(clip),
                   "energy": baselines.energy_baseline(clip, fit)}
        for name, points in outputs.items():
            row = metrics.mouth_metrics(points, clip["keypoints"], clip["reference"])
            if clip.get("language") in unseen:
                row["mouth_corr_unseen_language"] = row["mouth_corr"]
            rows[name].append(row)
    return {name: metrics.average(r) for name, r in rows.items()}


def assert_beats_the_baselines(result: dict, label: str) -> None:
    model, static, energy = result["model"], result["static"], result["energy"]
    keys = ("mouth_corr", "mouth_corr_unseen_language", "lmd_mouth", "lmd", "identity_err")
    print(f"{label} tiny held-out:", json.dumps({name: {k: round(m[k], 4) for k in keys} for name, m in result.items()}))
    assert model["mouth_corr"] > energy["mouth_corr"] + 0.1 and model["mouth_corr"] > static["mouth_corr"] + 0.3
    assert model["mouth_corr_unseen_language"] > energy["mouth_corr_unseen_language"]
    assert model["lmd_mouth"] < min(static["lmd_mouth"], energy["lmd_mouth"])


def small_generator(widths=(8, 8, 8), noise_dim=2):
    return build_a2k_generator({"features": 8, "num_layers": 1, "num_heads": 2, "window": 3},
                               {"features": 8, "hidden_features": (8,)}, {"widths": widths}, noise_dim)


def test_any_length_generation_is_chunked_exactly():
    model = small_generator()
    frames = 150  # not a multiple of the pooling grid (4)
    mel = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4 * frames, 80)), jnp.float32)
    reference = jnp.asarray(np.random.default_rng(1).normal(size=(2, 68, 2)), jnp.float32)
    rng = jax.random.PRNGKey(3)
    variables = model.init(jax.random.PRNGKey(0), rng, mel[:, :64], reference)
    one_pass = jax.jit(lambda m: model.apply(variables, rng, m, reference))(mel)["keypoints"]
    assert model.unet.context_frames() % 4 == 0
    for chunk in (16, 37, 64):  # 37 is rounded up to the grid
        chunked = generate_chunked(model, variables, rng, mel, reference, chunk)["keypoints"]
        np.testing.assert_allclose(chunked, np.asarray(one_pass), atol=1e-5)
    # The noise matters (other rng, other motion) and vanishes at temperature 0.
    other = generate_chunked(model, variables, jax.random.PRNGKey(4), mel, reference, 64)["keypoints"]
    assert np.abs(other - np.asarray(one_pass)).max() > 1e-6
    cold = [generate_chunked(model, variables, r, mel, reference, 64, 0.0)["keypoints"] for r in (rng, jax.random.PRNGKey(4))]
    np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)


def test_unet_keeps_any_length_and_starts_at_the_reference():
    unet = KeypointUNet(widths=(8, 8))
    x = jnp.ones((1, 13, 5))
    variables = unet.init(jax.random.PRNGKey(0), x)
    out = unet.apply(variables, x)
    assert out.shape == (1, 13, 68, 2) and float(jnp.abs(out).max()) < 0.1  # small initial offsets


def test_each_player_gets_only_its_own_gradients(cache_dir):
    task = get_task(micro_config(cache_dir))
    batch = next(task.dataset("train", seed=0, process_index=0, process_count=1))
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    rng, step = jax.random.PRNGKey(1), jnp.asarray(10)

    def grads_of(metric):
        return jax.grad(lambda p: task.loss(p, batch, rng, step)[1][metric])(params)

    def norm(tree):
        return float(optax_norm(tree))

    d_grads, g_grads = grads_of("d_loss"), grads_of("g_adversarial")
    assert norm(d_grads["generator"]) == 0.0 and norm(d_grads["discriminator"]) > 0
    assert norm(g_grads["discriminator"]) == 0.0 and norm(g_grads["generator"]) > 0
    assert norm(grads_of("piv_identity")["generator"]["unet"]) > 0  # the generator learns to keep the identity
    assert norm(grads_of("piv_invariance")["discriminator"]) == 0.0


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@pytest.mark.slow  # three runs of the loop compiled for 8 devices: ~60 s on a loaded 2-core machine
def test_sharded_training_resumes_on_the_same_batches_and_writes_samples(tmp_path, cache_dir):
    full = train.train_and_evaluate(micro_config(cache_dir, "--config.train.steps=4", "--config.train.eval_every=4",
                                                 "--config.train.eval_batches=1"), tmp_path / "full")
    assert full["step"] == 4 and len(jax.devices()) == 8
    for name in ("train/loss", "train/l1", "train/d_loss", "train/g_adversarial", "train/piv_identity",
                 "eval/mouth_corr", "eval/lmd_mouth"):
        assert np.isfinite(full[name]), name
    sample = video.read_video(tmp_path / "full" / "samples" / "step_4" / "a2k_sample_0.mp4")
    assert sample.frames.shape[2] == 2 * sample.frames.shape[1] and np.sqrt(np.mean(sample.audio**2)) > 0.01

    # Stopped after the checkpoint at step 2, then resumed: the same losses as the run that went through.
    train.train_and_evaluate(micro_config(cache_dir, "--config.train.steps=2"), tmp_path / "resumed")
    train.train_and_evaluate(micro_config(cache_dir, "--config.train.steps=4"), tmp_path / "resumed")
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if "loss" in r} for run in ("full", "resumed")]
    assert sorted(losses[1]) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses[1][s] for s in range(1, 5)], [losses[0][s] for s in range(1, 5)], rtol=1e-5)


@pytest.mark.slow
def test_tiny_model_beats_the_baselines_on_held_out_speakers_and_language(tmp_path_factory, cache_dir,
                                                                          train_as_a_user_would):
    workdir = tmp_path_factory.mktemp("a2k_tiny")
    overrides = [f"--config.data.cache_dir={cache_dir}"]
    train_as_a_user_would("configs/a2k.py:tiny", workdir, overrides)
    result = held_out_comparison(workdir, config_lib.load("configs/a2k.py:tiny", overrides))
    assert_beats_the_baselines(result, "a2k")


def check_eval_and_generation(workdir) -> None:
    """`t2v eval` writes metrics.json as for motion (model, the four baselines, the truth, the
    headline), and the workdir serves `t2v.generate.models.KeypointGenerator`, the interface
    `t2v generate` drives: speech + pixel reference -> pixel keypoints of any length."""
    from t2v import audio, checkpoint, cli
    from t2v import keypoints as kp
    from t2v.generate.models import KeypointGenerator

    assert cli.main(["eval", "--workdir", str(workdir), "--config.eval.max_clips=2", "--config.eval.samples=2"]) == 0
    result = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert set(result["baselines"]) == {"static", "energy", "retrieval", "source_pose"} and result["num_clips"] == 2
    assert result["headline"]["metric"] == "mouth_corr" and result["ground_truth"]["lmd"] == 0
    for name in ("mouth_corr", "lmd_mouth", "audio_pose_corr", "pose_diversity", "identity_err"):
        assert np.isfinite(result["model"][name]), name
    assert "pose_follow" in result["baselines"]["source_pose"] and "pose_follow" not in result["model"]

    config = checkpoint.read_config(workdir)
    clip = pipeline.load_clips(config, "eval", limit=1, keep_audio=True)[0]
    wave = clip["audio"][: 37 * audio.SAMPLES_PER_FRAME]  # 37 frames: not a multiple of any chunk or grid
    reference_px = kp.denormalise(clip["reference"], kp.FaceFrame(np.float32([100, 90]), np.float32(40)))
    params = checkpoint.load_params(workdir)
    points = [KeypointGenerator(get_task(config), params, chunk_frames=chunk)(wave, reference_px, seed=3)
              for chunk in (16, 256)]
    assert points[0].shape == (37, 68, 2) and np.isfinite(points[0]).all()
    np.testing.assert_allclose(points[0], points[1], atol=1e-3)  # pixels: chunked = one pass


@pytest.mark.slow  # a micro run, then t2v eval on 2 clips: ~40 s on a loaded 2-core machine
def test_t2v_eval_and_the_generate_interface(tmp_path, cache_dir):
    train.train_and_evaluate(micro_config(cache_dir), tmp_path / "a2k")
    check_eval_and_generation(tmp_path / "a2k")
