"""The keypoint-driven renderer and its discriminator: shapes, axes, warping, motion."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2v import parallel
from t2v.models.discriminator import MultiScalePatchDiscriminator
from t2v.models.renderer import (
    KeypointRenderer,
    RendererSpec,
    grid_sample,
    identity_grid,
    keypoint_heatmaps,
)

SMALL = dict(features=16, encoder_widths=(8, 8), motion_widths=(8, 16, 16), motion_features=8, decoder_blocks=1,
             decoder_width=8, memory_slots=8, memory_dim=16, refine_widths=(8, 16))


def face_keypoints(rng, batch, jitter=0.02):
    """`[batch, 68, 2]` points spread over the middle of the image, in [-1, 1]."""
    base = np.random.default_rng(0).uniform(-0.5, 0.5, size=(68, 2))
    return jnp.asarray(base + jitter * rng.normal(size=(batch, 68, 2)), jnp.float32)


def random_variables(module, *args, scale=0.1):
    """Variables of `module` for `args`, every parameter random (no init to compile or run)."""
    shapes = nn.meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), shapes)


def inputs(size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
    return image, face_keypoints(rng, batch), face_keypoints(rng, batch)


@pytest.mark.parametrize("size", [64, 128, 256])
@pytest.mark.parametrize("refine", [False, True])
def test_output_shapes(size, refine):
    model = KeypointRenderer(RendererSpec(size=size, refine=refine, **SMALL))
    image, reference_keypoints, target_keypoints = inputs(size)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), image, reference_keypoints, target_keypoints)
    out = jax.eval_shape(model.apply, variables, image, reference_keypoints, target_keypoints)
    motion = size // 4
    assert out["frame"].shape == (2, size, size, 3)
    assert out["flow"].shape == (2, motion, motion, 2)
    assert out["occlusion"].shape == (2, motion, motion, 1)
    assert ("refined" in out) == refine
    if refine:
        assert out["refined"].shape == (2, size, size, 3)


def test_forward_values_and_reference_reuse():
    model = KeypointRenderer(RendererSpec(size=64, refine=True, **SMALL))
    image, reference_keypoints, target_keypoints = inputs(64, batch=3)
    variables = random_variables(model, image, reference_keypoints, target_keypoints)
    render = jax.jit(model.apply)
    out = render(variables, image, reference_keypoints, target_keypoints)
    for name in ("frame", "refined"):
        assert np.all(np.isfinite(out[name])) and 0.0 <= float(out[name].min()) and float(out[name].max()) <= 1.0

    # One reference encoding serves every frame of its video: batch 1 broadcasts.
    reference = jax.jit(lambda v, i, k: model.apply(v, i, k, method=model.encode_reference))(
        variables, image[:1], reference_keypoints[:1])
    np.testing.assert_allclose(np.asarray(reference["memory_attention"]).sum(-1), 1.0, rtol=1e-5)
    batched = jax.jit(lambda v, r, k: model.apply(v, r, k, method=model.render_frame))(
        variables, reference, target_keypoints)
    one_by_one = render(variables, jnp.repeat(image[:1], 3, 0), jnp.repeat(reference_keypoints[:1], 3, 0),
                        target_keypoints)
    np.testing.assert_allclose(batched["frame"], one_by_one["frame"], atol=1e-5)
    np.testing.assert_allclose(batched["refined"], one_by_one["refined"], atol=1e-5)


def test_every_parameter_has_logical_axes_and_shards_over_fsdp():
    model = KeypointRenderer(RendererSpec(size=64, refine=True, **SMALL))
    image, reference_keypoints, target_keypoints = inputs(64)
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), image, reference_keypoints, target_keypoints)
    discriminator = MultiScalePatchDiscriminator((8, 16, 16), 2)
    boxed_d = jax.eval_shape(discriminator.init, jax.random.PRNGKey(0), image)
    leaves = jax.tree.leaves({"g": boxed, "d": boxed_d}, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
        if leaf.value.ndim == 4:  # conv kernels: spatial taps never sharded
            assert leaf.names[:2] == (None, None)

    # On an 8-way FSDP mesh every "embed" dim splits and nothing fails to divide.
    mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    rules = [("embed", "fsdp"), ("mlp", "tensor"), ("channels", None)]
    shardings = parallel.logical_to_sharding(boxed, mesh, rules)
    params = jax.device_put(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nn.meta.unbox(boxed)), shardings)
    kernel = params["params"]["encoder"]["down_2"]["kernel"]  # [3, 3, 8 (mlp), 16 (embed)]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor", "fsdp")
    assert kernel.addressable_shards[0].data.shape == (3, 3, 8, 2)


def test_warp_with_the_identity_grid_returns_the_input():
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 24, 5)), jnp.float32)
    # A non-square image: its identity grid from the two axes' pixel centres.
    xs = (2 * jnp.arange(24) + 1) / 24 - 1
    ys = (2 * jnp.arange(16) + 1) / 16 - 1
    grid = jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), -1)[None].repeat(2, 0)
    np.testing.assert_allclose(grid_sample(image, grid), image, atol=1e-5)


def test_warp_by_one_pixel_shifts_the_image_and_clamps_at_the_border():
    image = jnp.asarray(np.random.default_rng(1).normal(size=(1, 8, 8, 2)), jnp.float32)
    shifted = grid_sample(image, identity_grid(8)[None] + jnp.array([2 / 8, 0.0]))  # sample one pixel right
    np.testing.assert_allclose(shifted[:, :, :-1], image[:, :, 1:], atol=1e-6)
    np.testing.assert_allclose(shifted[:, :, -1], image[:, :, -1], atol=1e-6)
    halfway = grid_sample(image, identity_grid(8)[None] + jnp.array([0.0, 1 / 8]))  # half a pixel down
    np.testing.assert_allclose(halfway[:, :-1], (image[:, :-1] + image[:, 1:]) / 2, atol=1e-6)


def test_heatmaps_peak_at_the_keypoints():
    points = jnp.array([[[-0.625, -0.625], [0.125, 0.375]]])  # pixel centres (1, 1) and (x 4, y 5) of 8x8
    maps = keypoint_heatmaps(points, 8, 0.1)
    assert maps.shape == (1, 8, 8, 2)
    assert np.unravel_index(int(jnp.argmax(maps[0, :, :, 0])), (8, 8)) == (1, 1)
    assert np.unravel_index(int(jnp.argmax(maps[0, :, :, 1])), (8, 8)) == (5, 4)  # (row y, column x)
    np.testing.assert_allclose(maps[0, 1, 1, 0], 1.0, atol=1e-6)


def test_identical_keypoints_give_zero_flow_for_any_weights():
    spec = RendererSpec(size=64, **SMALL)
    model = KeypointRenderer(spec)
    image, keypoints, other = inputs(64)
    # Every parameter random, the zero-initialised heads included: the flow must still vanish.
    variables = random_variables(model, image, keypoints, other, scale=0.3)
    reference = jax.jit(lambda v, i, k: model.apply(v, i, k, method=model.encode_reference))(variables, image, keypoints)
    motion = jax.jit(lambda v, r, k: model.apply(v, r, k, method=model.motion))
    flow, _, _ = motion(variables, reference, keypoints)
    assert float(jnp.abs(flow).max()) == 0.0
    moved, _, _ = motion(variables, reference, other)
    assert float(jnp.abs(moved).max()) > 1e-4
    # The flow is a convex combination of the keypoints' displacements (and "no motion").
    assert float(jnp.abs(moved).max()) <= float(jnp.abs(keypoints - other).max()) + 1e-6


def test_discriminator_outputs_per_scale():
    discriminator = MultiScalePatchDiscriminator((8, 16, 16), scales=3)
    images = jnp.zeros((2, 64, 64, 3))
    condition = jnp.zeros((2, 64, 64, 1))
    outputs = jax.eval_shape(discriminator.apply, random_variables(discriminator, images, condition), images, condition)
    assert [logits.shape for _, logits in outputs] == [(2, 16, 16, 1), (2, 8, 8, 1), (2, 4, 4, 1)]
    assert [f.shape[-1] for f in outputs[0][0]] == [8, 16, 16]


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="renderer size 100: must be a multiple of 32"):
        RendererSpec(size=100)
    model = KeypointRenderer(RendererSpec(size=64, **SMALL))
    image, keypoints, _ = inputs(128)
    with pytest.raises(ValueError, match="renderer built for 64x64 images, got 128x128"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), image, keypoints, keypoints)
