"""The `render` task: keypoint-driven frame synthesis, with an optional memory-augmented
refinement GAN (Yi et al. 2020). Models in `t2v.models.renderer` / `t2v.models.discriminator`.

A training example is a pair of frames of one clip at S = `data.size` pixels, made by
`t2v.data.pipeline.PairMaker` (fields in `t2v.data.pipeline`): the renderer sees the
reference frame, its keypoints and the target's keypoints, and must produce the target.

Sources (`data.source`): "synthetic" renders clips of `t2v.data.synthetic` (painted faces,
or a photo warped with `data.texture`) for the plan of `t2v.data.pipeline.synthetic_plan`
(held-out speakers for "eval"), cached as ArrayRecord shards
(`pipeline.synthetic_shards(..., render=True)`); "records" reads `data.path` /
`data.eval_path` shards whose clips have frames. Train pairs are drawn at random; eval
pairs are fixed: frame 0 of each held-out clip against `data.eval_pairs` frames spread
over the clip (`pipeline.eval_pair_indices`).

Losses: mouth-weighted L1, SSIM, adversarial (hinge or LSGAN) against a multi-scale patch
discriminator conditioned on the target keypoints, discriminator feature matching, and a
perceptual loss when `model.perceptual_weights` names VGG-style weights the user holds.
With `model.refine` the refined frame gets its own L1/SSIM and its own discriminator.

Both players train in one optimizer step: each sees the other through `stop_gradient`,
so the summed loss gives the generator only generator gradients and the discriminators
only discriminator gradients (simultaneous gradient descent). Each player has its own
optimizer group (`optimizer.groups.discriminator` in `configs/render.py`): its own clip,
schedule and AdamW; the EMA (evaluation, export, generation) holds the renderer alone.
Losses are computed in float32 whatever `train.compute_dtype`: the models' outputs are
cast up before they meet the targets.

Eval metrics (held-out speakers): `l1`, `ssim`, `psnr`, `mouth_l1`, the copy-the-reference
baseline `copy_l1` / `copy_ssim` / `copy_psnr`, and `refined_*` when refinement is on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from t2v.data import pipeline
from t2v.data.pipeline import PairMaker, eval_pair_indices
from t2v.errors import InputError, MissingInput
from t2v.models.discriminator import MultiScalePatchDiscriminator
from t2v.models.renderer import MOTION_DOWNSAMPLE, KeypointRenderer, RendererSpec, keypoint_heatmaps
from t2v.tasks import Task, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- image losses (traced)


def to_unit(image: jax.Array, dtype) -> jax.Array:
    """uint8 `[..., 3]` -> `dtype` in [0, 1]."""
    return image.astype(dtype) / 255.0


def box_mask(boxes: jax.Array, size: int) -> jax.Array:
    """`[B, 4]` boxes (x0, y0, x1, y1 in [-1, 1]) -> `[B, S, S, 1]` 1 inside, 0 outside."""
    centres = (2 * jnp.arange(size, dtype=boxes.dtype) + 1) / size - 1
    inside_x = (centres[None, :] >= boxes[:, 0:1]) & (centres[None, :] <= boxes[:, 2:3])  # [B, S]
    inside_y = (centres[None, :] >= boxes[:, 1:2]) & (centres[None, :] <= boxes[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :])[..., None].astype(boxes.dtype)


def weighted_l1(prediction, target, weights):
    """Per-pixel weighted mean absolute error, normalised by the mean weight."""
    return jnp.mean(weights * jnp.abs(prediction - target)) / jnp.mean(weights)


def _blur_matrix(length: int, taps: int = 11, std: float = 1.5) -> np.ndarray:
    """`[length - taps + 1, length]` banded matrix: a "VALID" 1D Gaussian blur as a matmul."""
    x = np.arange(taps, dtype=np.float32) - (taps - 1) / 2
    window = np.exp(-(x**2) / (2 * std**2))
    matrix = np.zeros((length - taps + 1, length), np.float32)
    for row in range(len(matrix)):
        matrix[row, row : row + taps] = window / window.sum()
    return matrix


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean structural similarity of `[B, H, W, C]` images in [0, 1] (11x11 Gaussian, std 1.5,
    as skimage's `gaussian_weights=True`): `[B]`."""
    # Separable blur as two matmuls: XLA's CPU depthwise convolution and the gradient of
    # shifted slices are both an order of magnitude slower.
    rows = jnp.asarray(_blur_matrix(x.shape[1]), x.dtype)
    columns = jnp.asarray(_blur_matrix(x.shape[2]), x.dtype)

    def blur(image):
        return jnp.einsum("ow,bhwc->bhoc", columns, jnp.einsum("oh,bhwc->bowc", rows, image))

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    covariance = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return jnp.mean(score, axis=(1, 2, 3))


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB of `[B, H, W, C]` images in [0, 1]: `[B]`."""
    mse = jnp.mean(jnp.square(x - y), axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1 - real_logits)) + jnp.mean(jax.nn.relu(1 + fake_logits))
    return jnp.mean(jnp.square(real_logits - 1)) + jnp.mean(jnp.square(fake_logits))


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
    if kind == "hinge":
        return -jnp.mean(fake_logits)
    return jnp.mean(jnp.square(fake_logits - 1))


ADVERSARIAL_LOSSES = ("hinge", "lsgan")


# --------------------------------------------------------------------------- perceptual loss


class PerceptualFeatures:
    """A VGG-style convolution stack the user holds, frozen: images -> block feature maps.

    The file is `.npz` with arrays `conv{block}_{index}/kernel` (HWIO, `[3, 3, in, out]`) and
    `conv{block}_{index}/bias`, or `.msgpack` (`flax.serialization.msgpack_serialize` of
    `{"conv1_1": {"kernel": ..., "bias": ...}, ...}`). Layers run in (block, index) order
    with ReLU, 2x2 max-pooling between blocks; the output of each of the first `blocks`
    blocks is a feature map. Inputs are RGB in [0, 1], normalised by the ImageNet mean and
    std (the torchvision convention: convert Caffe-style weights before use).
    """

    _NAME = re.compile(r"^conv(\d+)_(\d+)$")

    def __init__(self, path: str, blocks: int):
        self.path = path
        layers = self._load(Path(path))
        self.blocks: list[list[tuple[np.ndarray, np.ndarray]]] = []
        current_block, previous_out = None, 3
        for (block, index), (kernel, bias) in sorted(layers.items()):
            if block != current_block:
                if len(self.blocks) == blocks:
                    break
                self.blocks.append([])
                current_block = block
            name = f"conv{block}_{index}"
            if kernel.ndim != 4:
                raise InputError(f"{path}: {name}/kernel has shape {kernel.shape}, expected HWIO [k, k, in, out]")
            if kernel.shape[2] != previous_out:
                raise InputError(f"{path}: {name}/kernel reads {kernel.shape[2]} channels but the layer before "
                                 f"gives {previous_out} (kernels must be HWIO, layers conv<block>_<index>)")
            if bias.shape != (kernel.shape[3],):
                raise InputError(f"{path}: {name}/bias has shape {bias.shape}, expected ({kernel.shape[3]},)")
            self.blocks[-1].append((kernel.astype(np.float32), bias.astype(np.float32)))
            previous_out = kernel.shape[3]

    def _load(self, path: Path) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        if not path.is_file():
            raise MissingInput(f"{path}: model.perceptual_weights names no file")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                flat = {name: archive[name] for name in archive.files}
            nested: dict[str, dict[str, np.ndarray]] = {}
            for name, array in flat.items():
                layer, _, leaf = name.partition("/")
                nested.setdefault(layer, {})[leaf] = array
        elif path.suffix == ".msgpack":
            try:
                nested = flax.serialization.msgpack_restore(path.read_bytes())
            except Exception as error:  # msgpack raises many types for damaged bytes
                raise InputError(f"{path}: not a msgpack file of weights ({type(error).__name__})") from error
        else:
            raise InputError(f"{path}: perceptual weights must be .npz or .msgpack")
        layers = {}
        for name, leaves in nested.items():
            match = self._NAME.match(name)
            if not match or not isinstance(leaves, dict) or set(leaves) != {"kernel", "bias"}:
                raise InputError(f"{path}: entry {name!r} is not a conv<block>_<index> layer with kernel and bias")
            layers[(int(match[1]), int(match[2]))] = (np.asarray(leaves["kernel"]), np.asarray(leaves["bias"]))
        if not layers:
            raise InputError(f"{path}: no conv<block>_<index> layers")
        return layers

    def __call__(self, images: jax.Array) -> list[jax.Array]:
        """`[B, H, W, 3]` in [0, 1] -> one `[B, h, w, C]` feature map per block."""
        mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
        std = jnp.asarray(IMAGENET_STD, images.dtype)
        x = (images - mean) / std
        outputs = []
        for i, block in enumerate(self.blocks):
            if i:
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            for kernel, bias in block:
                x = jax.lax.conv_general_dilated(x, jnp.asarray(kernel, x.dtype), (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
                x = jax.nn.relu(x + jnp.asarray(bias, x.dtype))
            outputs.append(x)
        return outputs

    def loss(self, prediction: jax.Array, target: jax.Array) -> jax.Array:
        """Mean over blocks of the L1 distance between feature maps (target side frozen)."""
        together = self(jnp.concatenate([prediction, jax.lax.stop_gradient(target)], axis=0))
        batch = prediction.shape[0]
        # The features may be in a compute dtype; the distance is float32.
        together = [f.astype(jnp.float32) for f in together]
        return sum(jnp.mean(jnp.abs(f[:batch] - f[batch:])) for f in together) / len(together)


# --------------------------------------------------------------------------- the task


def renderer_spec(config: ml_collections.ConfigDict) -> RendererSpec:
    m = config.model
    return RendererSpec(
        size=int(config.data.size), features=m.features, encoder_widths=tuple(m.encoder_widths),
        motion_widths=tuple(m.motion_widths), motion_features=m.motion_features, decoder_blocks=m.decoder_blocks,
        decoder_width=m.decoder_width, heatmap_std=float(m.heatmap_std), refine=bool(m.refine),
        memory_slots=m.memory_slots, memory_dim=m.memory_dim, refine_widths=tuple(m.refine_widths),
    )


def build_renderer(config: ml_collections.ConfigDict, dtype=jnp.float32) -> KeypointRenderer:
    return KeypointRenderer(renderer_spec(config), dtype)


@register("render")
class RenderTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        dtype = self.compute_dtype = jnp.dtype(config.train.compute_dtype)
        self.spec = renderer_spec(config)
        self.renderer = KeypointRenderer(self.spec, dtype)
        m = config.model
        self.discriminator = MultiScalePatchDiscriminator(tuple(m.discriminator_widths), m.discriminator_scales, dtype)
        self.weights = config.loss
        if self.weights.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise InputError(f"loss.adversarial_loss={self.weights.adversarial_loss!r}: expected one of {ADVERSARIAL_LOSSES}")
        self.perceptual = PerceptualFeatures(m.perceptual_weights, m.perceptual_blocks) if m.perceptual_weights else None

    # -- data ------------------------------------------------------------------------------
    def _shards(self, split: str, seed: int) -> list[str]:
        return pipeline.shard_paths(self.config, split, seed, render=True)

    def _pair_maker(self) -> PairMaker:
        return PairMaker(self.spec.size, float(self.config.loss.mouth_margin),
                         augment=pipeline.PairAugment.from_config(self.config.data))

    def eval_pairs(self, seed: int) -> tuple[Any, list[tuple[int, int, int]]]:
        """The eval source and its fixed pairs `(record, reference frame, target frame)`, in
        order: the same list on every process. Pixels are decoded only when a pair is read."""
        source = pipeline.record_source(self._shards("eval", seed))
        maker = self._pair_maker()
        pairs = []
        for i in range(len(source)):
            clip = maker.decode(source[i], f"eval record {i}")
            if clip is not None:
                pairs.extend((i, r, t) for r, t in eval_pair_indices(len(clip["frames"]), int(self.config.data.eval_pairs)))
        return source, pairs

    def eval_example(self, source, pair: tuple[int, int, int]) -> dict:
        index, reference_index, target_index = pair
        maker = self._pair_maker()
        return maker.pair(maker.decode(source[index], f"eval record {index}"), reference_index, target_index)

    def dataset(self, split, *, seed, process_index, process_count):
        shares = dict(global_batch_size=int(self.config.train.batch_size), process_index=process_index,
                      process_count=process_count, what=pipeline.source_name(self.config, split))
        if split == "train":
            source = pipeline.record_source(self._shards("train", seed))
            indexed = grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
            return pipeline.train_batches(indexed, self._pair_maker(), seed=seed, threads=2,
                                          workers=int(self.config.data.get("workers", 0)), **shares)
        if split != "eval":
            raise ValueError(f"render task: unknown split {split!r}: expected 'train' or 'eval'")
        source, pairs = self.eval_pairs(seed)
        return pipeline.eval_batches(pairs, lambda p: self.eval_example(source, p), **shares)

    # -- model -----------------------------------------------------------------------------
    def _condition(self, target_keypoints):
        """The discriminators' view of the target keypoints: `[B, S, S, 1]`, their Gaussian
        bumps at the motion resolution, upsampled (nearest)."""
        bumps = keypoint_heatmaps(target_keypoints, self.spec.motion_size, self.spec.heatmap_std).max(-1, keepdims=True)
        return jnp.repeat(jnp.repeat(bumps, MOTION_DOWNSAMPLE, axis=1), MOTION_DOWNSAMPLE, axis=2)

    def init(self, rng, batch):
        renderer_rng, discriminator_rng, refine_rng = jax.random.split(rng, 3)
        dtype = batch["reference_keypoints"].dtype
        reference = to_unit(batch["reference_image"], dtype)
        params = {"renderer": self.renderer.init(renderer_rng, reference, batch["reference_keypoints"],
                                                 batch["target_keypoints"])["params"]}
        condition = self._condition(batch["target_keypoints"])
        params["discriminator"] = self.discriminator.init(discriminator_rng, reference, condition)["params"]
        if self.spec.refine:
            params["refine_discriminator"] = self.discriminator.init(refine_rng, reference, condition)["params"]
        return params

    def render(self, params, batch) -> dict[str, jax.Array]:
        """A batch -> the renderer's outputs (`frame`, and `refined` when refinement is on)."""
        dtype = batch["reference_keypoints"].dtype
        return self.renderer.apply({"params": params["renderer"]}, to_unit(batch["reference_image"], dtype),
                                   batch["reference_keypoints"], batch["target_keypoints"])

    def _image_terms(self, prefix: str, image, target, pixel_weights) -> tuple[jax.Array, dict]:
        w = self.weights
        l1 = weighted_l1(image, target, pixel_weights)
        ssim_loss = 1.0 - jnp.mean(ssim(image, target))
        total = w.l1 * l1 + w.ssim * ssim_loss
        metrics = {f"{prefix}l1": l1, f"{prefix}ssim_loss": ssim_loss}
        if self.perceptual is not None:  # the frozen VGG runs in the compute dtype
            perceptual = self.perceptual.loss(image.astype(self.compute_dtype), target.astype(self.compute_dtype))
            total += w.perceptual * perceptual
            metrics[f"{prefix}perceptual"] = perceptual
        return total, metrics

    def _adversarial_terms(self, prefix: str, d_params, image, target, condition,
                           gan_on) -> tuple[jax.Array, jax.Array, dict]:
        """(generator terms: adversarial + feature matching, D frozen; the D loss, G frozen; metrics)."""
        w, kind = self.weights, self.weights.adversarial_loss

        def apply(p, x):  # features and logits in float32, whatever the compute dtype
            return jax.tree.map(lambda y: y.astype(jnp.float32), self.discriminator.apply({"params": p}, x, condition))

        real = apply(d_params, target)
        fake_for_d = apply(d_params, jax.lax.stop_gradient(image))
        fake_for_g = apply(jax.lax.stop_gradient(d_params), image)
        d_loss = sum(discriminator_loss(kind, r[1], f[1]) for r, f in zip(real, fake_for_d)) / len(real)
        g_adversarial = sum(generator_loss(kind, f[1]) for f in fake_for_g) / len(fake_for_g)
        matching = [jnp.mean(jnp.abs(jax.lax.stop_gradient(rf) - ff))
                    for (real_features, _), (fake_features, _) in zip(real, fake_for_g)
                    for rf, ff in zip(real_features, fake_features)]
        feature_matching = sum(matching) / len(matching)
        adversarial_weight = w.refine_adversarial if prefix else w.adversarial
        g_loss = gan_on * (adversarial_weight * g_adversarial + w.feature_matching * feature_matching)
        metrics = {
            f"{prefix}g_adversarial": g_adversarial,
            f"{prefix}feature_matching": feature_matching,
            f"{prefix}d_loss": d_loss,
            f"{prefix}d_real": jnp.mean(real[0][1]),
            f"{prefix}d_fake": jnp.mean(fake_for_d[0][1]),
        }
        return g_loss, d_loss, metrics

    def player_losses(self, params, batch, step) -> tuple[jax.Array, jax.Array, dict]:
        """(the generator's loss, the discriminators' loss, metrics), all float32. The first
        has gradients for `params["renderer"]` only, the second for the discriminators only."""
        w = self.weights
        target = to_unit(batch["target_image"], jnp.float32)
        out = jax.tree.map(lambda x: x.astype(jnp.float32), self.render(params, batch))
        pixel_weights = 1.0 + (w.mouth_weight - 1.0) * box_mask(batch["mouth_box"].astype(jnp.float32), self.spec.size)
        condition = self._condition(batch["target_keypoints"])
        gan_on = (step >= w.adversarial_start_step).astype(jnp.float32)

        stages = [("", "discriminator", "frame")] + ([("refined_", "refine_discriminator", "refined")]
                                                      if self.spec.refine else [])
        generator, discriminator, metrics = jnp.zeros(()), jnp.zeros(()), {}
        for prefix, critic, output in stages:
            image_loss, image_metrics = self._image_terms(prefix, out[output], target, pixel_weights)
            g_loss, d_loss, adversarial_metrics = self._adversarial_terms(
                prefix, params[critic], out[output], target, condition, gan_on)
            generator += image_loss + g_loss
            discriminator += d_loss
            metrics.update(image_metrics)
            metrics.update(adversarial_metrics)
        return generator, discriminator, metrics

    def loss(self, params, batch, rng, step):
        generator, discriminator, metrics = self.player_losses(params, batch, step)
        return generator + discriminator, metrics

    def eval_metrics(self, params, batch, rng):
        target = to_unit(batch["target_image"], jnp.float32)
        reference = to_unit(batch["reference_image"], jnp.float32)
        out = jax.tree.map(lambda x: x.astype(jnp.float32), self.render(params, batch))
        mouth = box_mask(batch["mouth_box"].astype(jnp.float32), self.spec.size)

        def scores(prefix, image):
            return {
                f"{prefix}l1": jnp.mean(jnp.abs(image - target)),
                f"{prefix}ssim": jnp.mean(ssim(image, target)),
                f"{prefix}psnr": jnp.mean(psnr(image, target)),
                f"{prefix}mouth_l1": jnp.sum(mouth * jnp.abs(image - target)) / (3 * jnp.sum(mouth) + 1e-6),
            }

        metrics = {**scores("", out["frame"]), **scores("copy_", reference)}
        if self.spec.refine:
            metrics.update(scores("refined_", out["refined"]))
        return metrics

    # -- reports ---------------------------------------------------------------------------
    def write_samples(self, params, out_dir, step):
        """`samples.png`: rows of reference | target | rendered (| refined) for 4 held-out pairs."""
        source, pairs = self.eval_pairs(self.config.seed)
        examples = [self.eval_example(source, p) for p in pairs[:: max(1, int(self.config.data.eval_pairs))][:4]]
        if not examples:
            return
        batch = {name: np.stack([e[name] for e in examples]) for name in examples[0]}
        out = jax.jit(self.render)(params, batch)
        images = [out["frame"]] + ([out["refined"]] if self.spec.refine else [])
        images = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in images]
        if jax.process_index() != 0:
            return
        columns = [batch["reference_image"], batch["target_image"],
                   *[(np.clip(x, 0, 1) * 255).round().astype(np.uint8) for x in images]]
        grid = np.concatenate([np.concatenate(list(column), axis=0) for column in columns], axis=1)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(Path(out_dir) / "samples.png")
