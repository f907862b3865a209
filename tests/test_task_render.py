"""The `render` task: pixel pairs from rendered clips, image losses, perceptual weights, training."""

import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from t2v import config as config_lib
from t2v import keypoints as keypoints_lib
from t2v.data import records, synthetic
from t2v.tasks import get_task
from t2v.tasks import render as render_task
from t2v.train import train_and_evaluate

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
