"""The `render` task: pixel pairs from rendered clips, image losses, perceptual weights, the two
players' gradients and optimizer groups, float32 losses under bf16 compute, training and resuming."""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from t2v import checkpoint as checkpoint_lib
from t2v import config as config_lib
from t2v import keypoints as keypoints_lib
from t2v import optim
from t2v.data import records, synthetic
from t2v.tasks import get_task
from t2v.tasks import render as render_task
from t2v.train import train_and_evaluate
from t2v.train.step import cast_compute_inputs, to_compute_dtype

SMALL_MODEL = [
    "--config.model.features=16", "--config.model.encoder_widths=(8, 8)", "--config.model.motion_widths=(8, 16, 16)",
    "--config.model.motion_features=8", "--config.model.decoder_width=8", "--config.model.memory_slots=8",
    "--config.model.memory_dim=16", "--config.model.refine_widths=(8, 8)", "--config.model.discriminator_widths=(8, 16)",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("render_cache")


def small_config(cache, *overrides):
    return config_lib.load("configs/render.py:tiny", [
        "--config.data.train_clips=4", "--config.data.eval_clips=2", "--config.data.eval_pairs=4",
        "--config.train.batch_size=8", f"--config.data.cache_dir={cache}", *SMALL_MODEL, *overrides,
    ])


def test_pairs_from_rendered_clips(cache):
    task = get_task(small_config(cache))
    train = task.dataset("train", seed=0, process_index=0, process_count=1)
    state = train.get_state()
    batch = next(train)
    shapes = {name: (value.shape, value.dtype) for name, value in batch.items()}
    assert shapes == {
        "reference_image": ((8, 64, 64, 3), np.uint8), "target_image": ((8, 64, 64, 3), np.uint8),
        "reference_keypoints": ((8, 68, 2), np.float32), "target_keypoints": ((8, 68, 2), np.float32),
        "mouth_box": ((8, 4), np.float32),
    }
    assert np.abs(batch["target_keypoints"]).max() < 1.0
    mouth = batch["target_keypoints"][:, list(keypoints_lib.MOUTH)]
    assert np.all(mouth >= batch["mouth_box"][:, None, :2]) and np.all(mouth <= batch["mouth_box"][:, None, 2:])
    # The faces really are there: the image differs at the mouth between frames that move it.
    assert batch["target_image"].std() > 10

    train.set_state(state)  # checkpointable: the same batch again
    jax.tree.map(np.testing.assert_array_equal, next(train), batch)

    # Eval: 2 held-out clips x 4 fixed pairs = one batch, identical every time, frame 0 as reference.
    first, second = (list(task.dataset("eval", seed=0, process_index=0, process_count=1)) for _ in range(2))
    assert len(first) == 1
    jax.tree.map(np.testing.assert_array_equal, first, second)
    np.testing.assert_array_equal(first[0]["reference_image"][0], first[0]["reference_image"][1])
    # Two processes split the eval batch between them.
    halves = [list(task.dataset("eval", seed=0, process_index=i, process_count=2)) for i in range(2)]
    assert [len(h) for h in halves] == [1, 1] and halves[0][0]["target_image"].shape[0] == 4


def test_records_source_resizes_frames_and_keypoints(tmp_path):
    clip = synthetic.make_clip(5, size=96, language="en", render=True)
    records.write_shards(tmp_path / "train", [records.encode_clip(clip.to_record())], num_shards=1)
    config = config_lib.load("configs/render.py:tiny", [
        "--config.data.source=records", f"--config.data.path={tmp_path / 'train'}",
        f"--config.data.eval_path={tmp_path / 'train'}", "--config.data.eval_pairs=2", "--config.train.batch_size=2",
    ])
    (batch,) = list(get_task(config).dataset("eval", seed=0, process_index=0, process_count=1))
    assert batch["target_image"].shape == (2, 64, 64, 3)
    last = clip.num_frames - 1
    np.testing.assert_allclose(batch["target_keypoints"][1], 2 * clip.keypoints[last] / 96 - 1, atol=1e-6)
    np.testing.assert_allclose(batch["reference_keypoints"][0], 2 * clip.keypoints[0] / 96 - 1, atol=1e-6)


def test_ssim_and_psnr_match_their_definitions():
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(2, 32, 40, 3)).astype(np.float32)
    noisy = np.clip(clean + 0.1 * rng.normal(size=clean.shape), 0, 1).astype(np.float32)
    expected = [structural_similarity(clean[i], noisy[i], channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False) for i in range(2)]
    np.testing.assert_allclose(render_task.ssim(clean, noisy), expected, atol=1e-5)
    np.testing.assert_allclose(render_task.ssim(clean, clean), 1.0, atol=1e-5)
    mse = np.mean((clean - noisy) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(render_task.psnr(clean, noisy), -10 * np.log10(mse), rtol=1e-5)


def test_mouth_box_mask_and_weighting():
    mask = render_task.box_mask(jnp.array([[-0.5, 0.0, 0.0, 0.5]]), 8)[0, :, :, 0]  # columns 2-3, rows 4-5
    expected = np.zeros((8, 8))
    expected[4:6, 2:4] = 1
    np.testing.assert_array_equal(mask, expected)
    error = jnp.zeros((1, 8, 8, 1)).at[0, 4, 2, 0].set(1.0)  # one wrong pixel, inside the box
    weights = 1 + 2.0 * mask[None, :, :, None]
    assert float(render_task.weighted_l1(error, 0 * error, weights)) > float(jnp.mean(error))


def test_gan_losses():
    real, fake = jnp.full((4,), 2.0), jnp.full((4,), -2.0)
    assert float(render_task.discriminator_loss("hinge", real, fake)) == 0.0  # beyond the margins
    assert float(render_task.discriminator_loss("lsgan", jnp.ones(4), jnp.zeros(4))) == 0.0
    assert float(render_task.generator_loss("hinge", fake)) == 2.0
    assert float(render_task.generator_loss("lsgan", jnp.ones(4))) == 0.0
    with pytest.raises(ValueError, match="loss.adversarial_loss='wgan'"):
        get_task(config_lib.load("configs/render.py:tiny", ["--config.loss.adversarial_loss=wgan"]))


def made_up_batch(size=64, batch=2, seed=0):
    """A batch shaped like the pipeline's, without rendering clips: random pixels, a
    face-sized keypoint cloud moved a little between reference and target."""
    rng = np.random.default_rng(seed)
    reference = rng.uniform(-0.6, 0.6, (batch, 68, 2)).astype(np.float32)
    return {"reference_image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "target_image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
            "reference_keypoints": reference,
            "target_keypoints": (reference + rng.normal(0, 0.03, reference.shape)).astype(np.float32),
            "mouth_box": np.tile(np.array([[-0.3, 0.2, 0.3, 0.6]], np.float32), (batch, 1))}


def test_each_player_gets_gradients_from_its_own_loss_only(cache):
    """D's loss reaches no renderer parameter and G's loss no discriminator parameter.
    (Compiled for the zero parts alone: a true zero costs XLA nothing to compute.)"""
    task = get_task(small_config(cache, "--config.model.refine=True"))
    batch = made_up_batch()
    params = flax.linen.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    assert set(params) == {"renderer", "discriminator", "refine_discriminator"}

    def gradient(player, part):
        grad = jax.grad(lambda p: task.player_losses(p, batch, jnp.int32(0))[player])
        return jax.jit(lambda p: {k: v for k, v in grad(p).items() if k in part})(params)

    def largest(tree):
        return max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))

    assert largest(gradient(0, {"discriminator", "refine_discriminator"})) == 0.0
    assert largest(gradient(1, {"renderer"})) == 0.0


def test_adversarial_terms_pull_the_image_and_the_critic_apart(cache):
    """Where the players meet: the generator's terms move the image and not the critic,
    the critic's loss moves the critic and not the image."""
    task = get_task(small_config(cache))
    rng = np.random.default_rng(0)
    image, target = (jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32) for _ in range(2))
    condition = jnp.zeros((2, 16, 16, 1))
    critic = flax.linen.meta.unbox(task.discriminator.init(jax.random.PRNGKey(1), image, condition))["params"]

    def player(index):
        terms = lambda c, x: task._adversarial_terms("", c, x, target, condition, jnp.float32(1))[index]  # noqa: E731
        return jax.jit(jax.grad(terms, argnums=(0, 1)))(critic, image)

    def largest(tree):
        return max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))

    (g_critic, g_image), (d_critic, d_image) = player(0), player(1)
    assert largest(g_critic) == 0.0 and largest(g_image) > 0
    assert largest(d_image) == 0.0 and largest(d_critic) > 0


def test_bfloat16_compute_keeps_the_targets_and_computes_the_losses_in_float32(cache):
    batch = made_up_batch()
    tasks = {dtype: get_task(small_config(cache, f"--config.train.compute_dtype={dtype}"))
             for dtype in ("float32", "bfloat16")}
    params = flax.linen.meta.unbox(tasks["float32"].init(jax.random.PRNGKey(0), batch))
    # What the update step hands the loss: bf16 params, the batch cast only where the task asks.
    seen = cast_compute_inputs(tasks["bfloat16"], batch, jnp.bfloat16)
    assert all(seen[name] is batch[name] for name in batch)  # images, keypoints, mouth box untouched

    def loss(dtype):
        task = tasks[dtype]
        return jax.jit(lambda p: task.loss(to_compute_dtype(p, jnp.dtype(dtype)), seen, None, jnp.int32(0)))(params)

    (low, low_metrics), (full, full_metrics) = loss("bfloat16"), loss("float32")
    assert low.dtype == jnp.float32 and {m.dtype for m in low_metrics.values()} == {jnp.dtype(jnp.float32)}
    assert float(low) != float(full)  # really computed in bfloat16 ...
    assert float(low) == pytest.approx(float(full), rel=0.05)  # ... and still the same loss
    assert low_metrics["l1"] == pytest.approx(float(full_metrics["l1"]), rel=0.05)


def vgg_like_weights(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"conv1_1": (3, 8), "conv1_2": (8, 8), "conv2_1": (8, 16), "conv3_1": (16, 16)}
    return {name: {"kernel": rng.normal(scale=0.3, size=(3, 3, i, o)).astype(np.float32),
                   "bias": np.zeros(o, np.float32)} for name, (i, o) in shapes.items()}


def write_npz(path, weights):
    np.savez(path, **{f"{layer}/{leaf}": value for layer, leaves in weights.items() for leaf, value in leaves.items()})
    return str(path)


def test_perceptual_loss_from_user_weights(tmp_path):
    weights = vgg_like_weights()
    from_npz = render_task.PerceptualFeatures(write_npz(tmp_path / "vgg.npz", weights), blocks=2)
    (tmp_path / "vgg.msgpack").write_bytes(flax.serialization.msgpack_serialize(weights))
    from_msgpack = render_task.PerceptualFeatures(str(tmp_path / "vgg.msgpack"), blocks=2)
    assert [len(block) for block in from_npz.blocks] == [2, 1]  # conv3_1 is past `blocks`

    images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 16, 16, 3)), jnp.float32)
    features = from_npz(images)
    assert [f.shape for f in features] == [(2, 16, 16, 8), (2, 8, 8, 16)]
    assert float(from_npz.loss(images, images)) == 0.0
    loss = float(from_npz.loss(images, images[::-1]))
    assert loss > 0 and loss == pytest.approx(float(from_msgpack.loss(images, images[::-1])))


def test_bad_perceptual_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz: model.perceptual_weights names no file"):
        render_task.PerceptualFeatures(str(tmp_path / "missing.npz"), 4)
    weights = vgg_like_weights()
    weights["conv1_2"]["kernel"] = weights["conv1_2"]["kernel"].transpose(3, 2, 0, 1)  # OIHW, PyTorch-style
    with pytest.raises(ValueError, match=r"oihw.npz: conv1_2/kernel reads 8 channels but the layer before gives 8"
                                         r"|oihw.npz: conv1_2/kernel reads 3 channels"):
        render_task.PerceptualFeatures(write_npz(tmp_path / "oihw.npz", weights), 4)
    with pytest.raises(ValueError, match="odd.npz: entry 'fc6' is not a conv<block>_<index> layer"):
        render_task.PerceptualFeatures(write_npz(tmp_path / "odd.npz", {"fc6": {"kernel": np.zeros((2, 2)),
                                                                                 "bias": np.zeros(2)}}), 4)
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="weights.pt: perceptual weights must be .npz or .msgpack"):
        render_task.PerceptualFeatures(str(tmp_path / "weights.pt"), 4)


@pytest.mark.slow  # ~100 s on a loaded 2-core machine, mostly compiling the GAN step
def test_short_training_run_with_every_loss(cache, tmp_path):
    perceptual = write_npz(tmp_path / "vgg.npz", vgg_like_weights())
    config = small_config(cache, "--config.model.refine=True", f"--config.model.perceptual_weights={perceptual}",
                          "--config.model.perceptual_blocks=2", "--config.loss.adversarial_loss=lsgan",
                          "--config.train.steps=2", "--config.train.eval_every=2", "--config.train.eval_batches=1",
                          "--config.train.checkpoint_every=2", "--config.train.log_every=1")
    final = train_and_evaluate(config, tmp_path / "run")
    assert final["step"] == 2 and final["nonfinite_total"] == 0
    for name in ("train/l1", "train/perceptual", "train/d_loss", "train/refined_d_loss", "train/refined_l1",
                 "eval/l1", "eval/psnr", "eval/copy_l1", "eval/refined_l1", "eval/refined_ssim"):
        assert np.isfinite(final[name]), name
    assert (tmp_path / "run/samples/step_2/samples.png").exists()


@pytest.mark.slow
def test_tiny_training_beats_copying_the_reference_and_reports_the_refinement_ablation(tmp_path):
    """The tiny config (64 px, refinement on), a few minutes: held-out L1 well under the
    copy-the-reference baseline. Prints the refinement ablation (same renderer, refined or not)."""
    config = config_lib.load("configs/render.py:tiny", ["--config.model.refine=True",
                                                        f"--config.data.cache_dir={tmp_path / 'cache'}"])
    final = train_and_evaluate(config, tmp_path / "run")
    rows = [("copy reference", "copy_"), ("rendered (refine off)", ""), ("refined (refine on)", "refined_")]
    print("\nheld-out speakers, 64 px          L1      SSIM    PSNR   mouth L1")
    for label, prefix in rows:
        print(f"{label:28s} " + " ".join(f"{final[f'eval/{prefix}{m}']:7.4f}" for m in ("l1", "ssim", "psnr", "mouth_l1")))
    print(json.dumps({k: v for k, v in final.items() if k.startswith("eval/")}, sort_keys=True))
    assert final["eval/l1"] < 0.8 * final["eval/copy_l1"]
    assert final["eval/ssim"] > final["eval/copy_ssim"] and final["eval/mouth_l1"] < final["eval/copy_mouth_l1"]
    assert final["eval/refined_l1"] < 0.8 * final["eval/copy_l1"]


@pytest.mark.slow  # three short GAN runs on 8 fake devices: 16 min on 2 cores shared with ~8 other jobs
def test_a_stopped_gan_run_resumes_exactly_with_its_two_optimizer_groups(cache, tmp_path):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path.parent / "t2v-render-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    settings = ["--config.train.steps=3", "--config.train.eval_every=0", "--config.train.log_every=1",
                "--config.train.checkpoint_every=2", "--config.loss.adversarial_start_step=0",
                # The discriminators' own schedule: another peak and warmup. (Both players stay in
                # warmup, whose rates do not depend on train.steps, which the stopped run changes.)
                "--config.optimizer.groups.discriminator.warmup_steps=10",
                "--config.optimizer.groups.discriminator.lr=4e-3"]
    config = small_config(cache, *settings)
    schedules = {name: optim.learning_rate_schedule(group, 3)
                 for name, group in optim.group_settings(config.optimizer).items()}
    full = train_and_evaluate(config, tmp_path / "full")
    train_and_evaluate(small_config(cache, *settings, "--config.train.steps=2"), tmp_path / "resumed")
    resumed = train_and_evaluate(small_config(cache, *settings), tmp_path / "resumed")
    assert full["step"] == resumed["step"] == 3

    logs = [{r["step"]: r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())}
            for run in ("full", "resumed")]
    assert sorted(logs[1]) == [1, 2, 3]
    for step in (1, 2, 3):
        assert logs[1][step]["loss"] == logs[0][step]["loss"], step
        groups = logs[0][step]["metrics"]
        assert groups["grad_norm/generator"] > 0 and groups["grad_norm/discriminator"] > 0
        assert groups["lr/discriminator"] == pytest.approx(float(schedules["discriminator"](step - 1)), rel=1e-6)
        assert groups["lr/discriminator"] == pytest.approx(4e-3 * step / 10, rel=1e-5)
        assert groups["lr/generator"] == pytest.approx(2e-3 * step / 30, rel=1e-5) == logs[0][step]["lr"]
    for ema in (False, True):
        trees = [checkpoint_lib.load_params(tmp_path / run, ema=ema) for run in ("full", "resumed")]
        jax.tree.map(np.testing.assert_array_equal, trees[1], trees[0])
    assert set(checkpoint_lib.load_params(tmp_path / "full")) == {"renderer"}  # no EMA of the discriminators
