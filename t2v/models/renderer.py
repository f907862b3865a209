"""Keypoint-driven renderer: reference image + its keypoints + target keypoints -> frame.

    model = KeypointRenderer(RendererSpec(size=256))
    reference = model.apply(v, image, reference_keypoints, method=model.encode_reference)  # once per video
    out = model.apply(v, reference, target_keypoints, method=model.render_frame)         # every frame
    out["frame"]        # [batch, S, S, 3] in [0, 1]

Images are `[batch, S, S, 3]` floats in [0, 1]; keypoints are `[batch, 68, 2]` in image
coordinates scaled to [-1, 1] (x right, y down; pixel i's centre is at (2i + 1) / S - 1),
the convention `grid_sample` uses.

Per frame the work happens at M = S / 4 ("motion resolution") wherever it can, which
keeps a 256 x 256 frame near one GFLOP:

  1. dense motion: Gaussian heatmaps of the target keypoints minus the reference's (and
     the reference image at M) -> a small hourglass -> a softmax over 69 candidate motions
     per pixel (no motion, or the translation of keypoint k from target to reference),
     and an occlusion mask. Equal keypoints give zero flow by construction;
  2. the reference's encoder features (computed once per video) are warped with that
     flow and masked by the occlusion;
  3. a decoder upsamples to S / 2, where a sub-pixel convolution predicts full-resolution
     colours and a blend weight for the reference image warped at S (the flow upsampled):
     sharp where the reference holds the answer, generated where it does not (mouth
     interior, disocclusions).

Optional refinement (Yi et al. 2020, memory-augmented GAN): a learned key-value memory
of identity features is read once per video with the reference's appearance vector; a
light full-resolution network modulated by that read sharpens the rendered frame.

Every parameter carries logical axis names; convolution kernels are
`(None, None, in_axis, out_axis)` (spatial taps never sharded).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2v.models import remat as remat_lib
from t2v.models.layers import conv2d, dense, depth_to_space, downsample, leaky_relu, upsample

NUM_KEYPOINTS = 68
MOTION_DOWNSAMPLE = 4  # dense motion, feature warp and most decoding run at S / 4
SIZE_MULTIPLE = 32  # S / 4 must survive the hourglass's three halvings

Reference = dict[str, jax.Array]


# --------------------------------------------------------------------------- blocks


class BottleneckBlock(nn.Module):
    """Residual 1x1 -> 3x3 -> 1x1 block at width `[..., C]` with a C / 2 bottleneck."""

    axis: str = "embed"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        width = x.shape[-1]
        inner = "mlp" if self.axis == "embed" else "embed"
        y = leaky_relu(conv2d(width // 2, 1, (self.axis, inner), dtype=self.dtype, name="reduce")(x))
        y = leaky_relu(conv2d(width // 2, 3, (inner, inner), dtype=self.dtype, name="spatial")(y))
        y = conv2d(width, 1, (inner, self.axis), dtype=self.dtype, kernel_init=nn.initializers.zeros_init(),
                   name="expand")(y)
        return x + y


# --------------------------------------------------------------------------- geometry


def identity_grid(size: int, dtype=jnp.float32) -> jax.Array:
    """Pixel centres of a `size x size` image in [-1, 1] coordinates: `[size, size, 2]` (x, y)."""
    centres = (2 * jnp.arange(size, dtype=dtype) + 1) / size - 1
    x, y = jnp.meshgrid(centres, centres, indexing="xy")
    return jnp.stack([x, y], axis=-1)


def grid_sample(image: jax.Array, grid: jax.Array) -> jax.Array:
    """Bilinear sampling `image [B, H, W, C]` at `grid [B, h, w, 2]` ([-1, 1] x, y) -> `[B, h, w, C]`.

    Points outside the image take the nearest border value. Sampling at
    `identity_grid(H)` returns the image exactly.
    """
    b, h, w, c = image.shape
    x = ((grid[..., 0] + 1) * w - 1) / 2  # [-1, 1] -> pixel index space (centres at integers)
    y = ((grid[..., 1] + 1) * h - 1) / 2
    x = jnp.clip(x, 0, w - 1)
    y = jnp.clip(y, 0, h - 1)
    x0 = jnp.clip(jnp.floor(x), 0, w - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, h - 2).astype(jnp.int32)
    wx = (x - x0)[..., None].astype(image.dtype)
    wy = (y - y0)[..., None].astype(image.dtype)
    flat = image.reshape(b, h * w, c)

    def gather(yi, xi):
        index = (yi * w + xi).reshape(b, -1, 1)
        return jnp.take_along_axis(flat, index, axis=1).reshape(*grid.shape[:-1], c)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x0 + 1) * wx
    bottom = gather(y0 + 1, x0) * (1 - wx) + gather(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def keypoint_heatmaps(keypoints: jax.Array, size: int, std: float) -> jax.Array:
    """Gaussian heatmaps `[B, size, size, K]` of `keypoints [B, K, 2]` ([-1, 1] coordinates)."""
    grid = identity_grid(size, keypoints.dtype)
    squared = jnp.sum(jnp.square(grid[None, :, :, None, :] - keypoints[:, None, None, :, :]), axis=-1)
    return jnp.exp(-squared / (2 * std**2))


def resize_flow(flow: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of a flow `[B, m, m, 2]` (in [-1, 1] units, so values stay) to `size`."""
    return jax.image.resize(flow, (flow.shape[0], size, size, flow.shape[-1]), "linear")


# --------------------------------------------------------------------------- modules


@dataclasses.dataclass(frozen=True)
class RendererSpec:
    """Sizes of a `KeypointRenderer`; widths used with logical axes should divide by the
    FSDP size (multiples of 8 are safe)."""

    size: int = 256
    features: int = 64                     # warped encoder features at S / 4
    encoder_widths: tuple[int, int] = (16, 32)  # at S and S / 2
    motion_widths: tuple[int, int, int] = (32, 64, 128)  # hourglass at M / 2, M / 4, M / 8
    motion_features: int = 16              # hourglass output at M, also fed to the decoder
    decoder_blocks: int = 2
    decoder_width: int = 32                # at S / 2
    heatmap_std: float = 0.06              # Gaussian std in [-1, 1] units
    refine: bool = False
    memory_slots: int = 64
    memory_dim: int = 64
    refine_widths: tuple[int, int] = (16, 32)  # at S / 2 and S / 4
    remat: str = "none"                    # dense motion and decoder rematerialised (t2v.models.remat)

    def __post_init__(self):
        if self.size % SIZE_MULTIPLE or self.size < 2 * SIZE_MULTIPLE:
            raise ValueError(f"renderer size {self.size}: must be a multiple of {SIZE_MULTIPLE}, at least 64")

    @property
    def motion_size(self) -> int:
        return self.size // MOTION_DOWNSAMPLE


class ReferenceEncoder(nn.Module):
    """`[B, S, S, 3]` -> features `[B, S/4, S/4, features]` and appearance `[B, features]`."""

    spec: RendererSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image):
        s, d = self.spec, self.dtype
        x = leaky_relu(conv2d(s.encoder_widths[0], 3, ("channels", "embed"), dtype=d, name="stem")(image))
        x = leaky_relu(conv2d(s.encoder_widths[1], 3, ("embed", "mlp"), stride=2, dtype=d, name="down_1")(x))
        x = leaky_relu(conv2d(s.features, 3, ("mlp", "embed"), stride=2, dtype=d, name="down_2")(x))
        x = BottleneckBlock("embed", dtype=d, name="block")(x)
        return x, jnp.mean(x, axis=(1, 2))


class DenseMotion(nn.Module):
    """Heatmap differences + reference at M -> per-pixel motion weights, occlusion, features.

    Input `[B, M, M, 68 + 3]`; returns `weights [B, M, M, 69]` (softmax: no motion, then
    one per keypoint), `occlusion [B, M, M, 1]` in (0, 1) and `features [B, M, M, motion_features]`.
    """

    spec: RendererSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        s, d = self.spec, self.dtype
        w0, w1, w2 = s.motion_widths
        down_1 = leaky_relu(conv2d(w0, 3, ("channels", "embed"), stride=2, dtype=d, name="down_1")(x))
        down_2 = leaky_relu(conv2d(w1, 3, ("embed", "mlp"), stride=2, dtype=d, name="down_2")(down_1))
        down_3 = leaky_relu(conv2d(w2, 3, ("mlp", "embed"), stride=2, dtype=d, name="down_3")(down_2))
        up = leaky_relu(conv2d(w1, 3, ("embed", "mlp"), dtype=d, name="up_3")(upsample(down_3))) + down_2
        up = leaky_relu(conv2d(w0, 3, ("mlp", "embed"), dtype=d, name="up_2")(upsample(up))) + down_1
        features = leaky_relu(conv2d(s.motion_features, 3, ("embed", "mlp"), dtype=d, name="up_1")(upsample(up)))
        # Zero-initialised heads: training starts from the mean keypoint translation
        # (about the head's own motion) and an all-visible occlusion map.
        weights = conv2d(NUM_KEYPOINTS + 1, 1, ("mlp", "channels"), dtype=d,
                         kernel_init=nn.initializers.zeros_init(), name="weights")(features)
        occlusion = conv2d(1, 1, ("mlp", "channels"), dtype=d, kernel_init=nn.initializers.zeros_init(),
                           bias_init=nn.initializers.constant(3.0), name="occlusion")(features)
        return nn.softmax(weights, axis=-1), nn.sigmoid(occlusion), features


class FrameDecoder(nn.Module):
    """Warped features `[B, M, M, C]` + motion features + warped reference `[B, S, S, 3]`
    -> colours `[B, S, S, 3]` and a blend weight `[B, S, S, 1]` for the warped reference.

    No convolution runs at S: the last one, at S / 2, predicts each pixel's 2x2 block
    (sub-pixel convolution). Few-channel convolutions at full resolution cost more time
    than their FLOPs say; the full-resolution detail comes from the warped reference.
    """

    spec: RendererSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, warped_features, motion_features, warped_reference):
        s, d = self.spec, self.dtype
        x = conv2d(s.features, 1, ("channels", "embed"), dtype=d, name="merge")(
            jnp.concatenate([warped_features, motion_features], axis=-1))
        for i in range(s.decoder_blocks):
            x = BottleneckBlock("embed", dtype=d, name=f"block_{i}")(x)
        x = conv2d(s.decoder_width, 1, ("embed", "mlp"), dtype=d, name="narrow")(x)  # before the 4x larger grid
        x = jnp.concatenate([upsample(x), downsample(warped_reference, 2).astype(x.dtype)], axis=-1)
        x = leaky_relu(conv2d(s.decoder_width, 3, ("channels", "embed"), dtype=d, name="up")(x))
        # Starts as "mostly the warped reference" (blend logit 3: 95%).
        out = conv2d(4 * 4, 3, ("embed", "channels"), dtype=d, kernel_init=nn.initializers.zeros_init(),
                     bias_init=lambda key, shape, dtype=jnp.float32: jnp.tile(jnp.array([0, 0, 0, 3], dtype), 4),
                     name="out")(x)
        out = depth_to_space(out)
        return nn.sigmoid(out[..., :3]), nn.sigmoid(out[..., 3:])


class IdentityMemory(nn.Module):
    """Learned key-value memory of identity features, read by attention.

    `query [B, D]` -> `read [B, D]`, `attention [B, slots]`. Keys and values are trained by
    gradient like any parameter; each slot ends up holding an appearance prototype.
    """

    slots: int
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query):
        keys = self.param("keys", nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
                          (self.slots, self.dim))
        values = self.param("values", nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
                            (self.slots, self.dim))
        query = query.astype(self.dtype)
        logits = query @ keys.astype(self.dtype).T / math.sqrt(self.dim)
        attention = nn.softmax(logits, axis=-1)
        return attention @ values.astype(self.dtype), attention


class MemoryRefiner(nn.Module):
    """Sharpens a rendered frame `[B, S, S, 3]` given the memory read `[B, D]` -> `[B, S, S, 3]`.

    A small U-Net whose S / 4 features are instance-normalised and re-styled by the read
    (AdaIN), predicting a residual over the frame (zero at initialisation) from S / 2.
    """

    spec: RendererSpec
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frame, memory_read):
        s, d = self.spec, self.dtype
        r0, r1 = s.refine_widths
        down_1 = leaky_relu(conv2d(r0, 3, ("channels", "embed"), stride=2, dtype=d, name="down_1")(frame))
        x = leaky_relu(conv2d(r1, 3, ("embed", "mlp"), stride=2, dtype=d, name="down_2")(down_1))
        mean = jnp.mean(x, axis=(1, 2), keepdims=True)
        std = jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + 1e-5)
        style = dense(2 * r1, ("embed", "mlp"), dtype=d, kernel_init=nn.initializers.zeros_init(),
                      name="style")(memory_read)
        scale, shift = jnp.split(style[:, None, None, :], 2, axis=-1)
        x = (x - mean) / std * (1 + scale) + shift
        x = BottleneckBlock("mlp", dtype=d, name="block")(x)
        x = leaky_relu(conv2d(r0, 3, ("mlp", "embed"), dtype=d, name="up")(upsample(x))) + down_1
        # Sub-pixel output at S / 2, as in FrameDecoder: no convolution at S.
        x = jnp.concatenate([x, downsample(frame, 2)], axis=-1)
        residual = conv2d(4 * 3, 3, ("channels", "channels"), dtype=d, kernel_init=nn.initializers.zeros_init(),
                          name="out")(x)
        return jnp.clip(frame + depth_to_space(residual), 0.0, 1.0)


class KeypointRenderer(nn.Module):
    """The renderer; `__call__` = `render_frame(encode_reference(...), ...)`."""

    spec: RendererSpec
    dtype: Any = jnp.float32

    def setup(self):
        self.encoder = ReferenceEncoder(self.spec, self.dtype)
        # The per-frame modules at the largest resolutions hold most activations.
        self.dense_motion = remat_lib.remat(DenseMotion, self.spec.remat)(self.spec, self.dtype)
        self.decoder = remat_lib.remat(FrameDecoder, self.spec.remat)(self.spec, self.dtype)
        if self.spec.refine:
            self.appearance = dense(self.spec.memory_dim, ("embed", "mlp"), dtype=self.dtype, name="appearance")
            self.memory = IdentityMemory(self.spec.memory_slots, self.spec.memory_dim, self.dtype)
            self.refiner = MemoryRefiner(self.spec, self.dtype)

    def encode_reference(self, image: jax.Array, keypoints: jax.Array) -> Reference:
        """Everything per video: `image [B, S, S, 3]`, `keypoints [B, 68, 2]` -> a dict of arrays."""
        s = self.spec
        if image.shape[1:3] != (s.size, s.size):
            raise ValueError(f"renderer built for {s.size}x{s.size} images, got {image.shape[1]}x{image.shape[2]}")
        image = image.astype(self.dtype)
        features, appearance = self.encoder(image)
        reference = {
            "image": image,
            "image_small": downsample(image, MOTION_DOWNSAMPLE),
            "features": features,
            "keypoints": keypoints.astype(self.dtype),
            "heatmaps": keypoint_heatmaps(keypoints.astype(self.dtype), s.motion_size, s.heatmap_std),
        }
        if s.refine:
            reference["memory_read"], reference["memory_attention"] = self.memory(self.appearance(appearance))
        return reference

    def motion(self, reference: Reference, target_keypoints: jax.Array):
        """Sampling flow `[B, M, M, 2]` (offset from the identity grid, in [-1, 1] units),
        occlusion `[B, M, M, 1]` and motion features, for `target_keypoints [B, 68, 2]`."""
        s = self.spec
        target_keypoints = target_keypoints.astype(self.dtype)
        heatmaps = keypoint_heatmaps(target_keypoints, s.motion_size, s.heatmap_std)
        inputs = jnp.concatenate([heatmaps - reference["heatmaps"], reference["image_small"]], axis=-1)
        weights, occlusion, features = self.dense_motion(inputs)
        # Candidate k moves like keypoint k: a target pixel samples the reference where
        # the keypoint was. Candidate 0 does not move (background).
        displacement = reference["keypoints"] - target_keypoints  # [B, 68, 2]
        flow = jnp.einsum("bhwk,bkd->bhwd", weights[..., 1:], displacement)
        return flow, occlusion, features

    def render_frame(self, reference: Reference, target_keypoints: jax.Array) -> dict[str, jax.Array]:
        """`target_keypoints [B, 68, 2]` -> `frame [B, S, S, 3]` and the intermediates.

        A reference of batch 1 serves a batch of any size (one video, many frames).
        """
        s = self.spec
        batch = target_keypoints.shape[0]
        reference = jax.tree.map(lambda x: jnp.broadcast_to(x, (batch, *x.shape[1:])), reference)
        flow, occlusion, motion_features = self.motion(reference, target_keypoints)
        small_grid = identity_grid(s.motion_size, flow.dtype) + flow
        warped_features = grid_sample(reference["features"], small_grid) * occlusion
        full_grid = identity_grid(s.size, flow.dtype) + resize_flow(flow, s.size)
        warped_reference = grid_sample(reference["image"], full_grid)
        colours, blend = self.decoder(warped_features, motion_features, warped_reference)
        frame = blend * warped_reference + (1 - blend) * colours
        out = {"frame": frame, "flow": flow, "occlusion": occlusion, "warped_reference": warped_reference}
        if s.refine:
            # The refiner learns from its own losses only: the renderer under it is the
            # same whether refinement is on or off, which keeps the ablation honest.
            out["refined"] = self.refiner(jax.lax.stop_gradient(frame), reference["memory_read"])
        return out

    def __call__(self, reference_image, reference_keypoints, target_keypoints):
        return self.render_frame(self.encode_reference(reference_image, reference_keypoints), target_keypoints)
