"""Model modules: shapes, PIV invariance, streaming equivalence, bf16, logical axes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType

from configs.base import get_config
from t2v.keypoints import FRONTAL_TEMPLATE
from t2v.models.audio_encoder import AudioEncoder, encode_in_chunks
from t2v.models.identity import IdentityEncoder, canonical_shape
from t2v.models.motion_vae import MotionModel, build_motion_model, generate_chunked
from t2v.models.sync_expert import SyncExpert

BATCH = 2
LOGICAL_AXES = {"batch", "time", "embed", "mlp", "heads", "kv", "channels", None}

TINY = dict(
    audio=dict(features=32, num_layers=2, num_heads=4, window=3),
    identity=dict(features=32, hidden_features=(64,)),
    vae=dict(latent_dim=8, features=32, posterior_layers=2, decoder_hidden=(64,)),
    prior=dict(hidden_features=32, num_couplings=2, coupling_hidden=(32,)),
)


def randomised(variables, seed, scale=0.05):
    """Unboxed variables moved off their init, so zero-initialised heads do something."""
    return _perturb(nn.meta.unbox(variables), jax.random.key(seed), scale)


@functools.partial(jax.jit, static_argnums=2)
def _perturb(params, key, scale):
    flat, unflatten = ravel_pytree(params)  # one random draw compiles far faster than one per leaf
    return unflatten(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


def faces(seed, batch=BATCH):
    """Face-like reference shapes `[batch, 68, 2]`: the frontal template, jittered."""
    noise = 0.03 * jax.random.normal(jax.random.key(seed), (batch, 68, 2))
    return jnp.asarray(FRONTAL_TEMPLATE)[None] + noise


def inputs(frames, seed=0):
    k_mel, k_kp = jax.random.split(jax.random.key(seed))
    mel = jax.random.normal(k_mel, (BATCH, 4 * frames, 80))
    reference = faces(seed + 1)
    keypoints = reference[:, None] + 0.02 * jax.random.normal(k_kp, (BATCH, frames, 68, 2))
    return mel, reference, keypoints


@pytest.fixture(scope="module")
def motion():
    model = build_motion_model(**TINY)
    mel, reference, keypoints = inputs(12)
    variables = jax.jit(model.init)({"params": jax.random.key(0), "latent": jax.random.key(1)},
                                    mel, reference, keypoints)
    return model, variables


# -- shapes -----------------------------------------------------------------------------

def test_motion_model_shapes(motion):
    model, variables = motion
    frames = 12
    mel, reference, keypoints = inputs(frames, seed=3)
    out = jax.jit(model.apply)(variables, mel, reference, keypoints, rngs={"latent": jax.random.key(2)})
    z_dim = TINY["vae"]["latent_dim"]
    assert out["audio_feats"].shape == (BATCH, frames, TINY["audio"]["features"])
    assert out["identity"].shape == (BATCH, TINY["identity"]["features"])
    for name in ("mean", "logvar", "z"):
        assert out[name].shape == (BATCH, frames, z_dim)
    assert out["keypoints"].shape == out["offsets"].shape == (BATCH, frames, 68, 2)
    assert out["pose"].shape == (BATCH, frames, 4)
    assert out["prior_log_prob"].shape == (BATCH,)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(out))
    # A fresh decoder starts at the reference pose, near the reference shape.
    np.testing.assert_allclose(out["pose"], 0.0)
    assert float(jnp.max(jnp.abs(out["keypoints"] - reference[:, None]))) < 0.5

    generate = jax.jit(functools.partial(model.apply, method=MotionModel.generate))
    generated, carry = generate(variables, jax.random.key(4), mel, reference, 0.7)
    assert generated["keypoints"].shape == (BATCH, frames, 68, 2) and int(carry["frame"]) == frames


def test_mouth_branch_ignores_the_latent_and_the_rest_ignores_audio(motion):
    """The disentanglement the paper relies on: lips from audio, everything else from z."""
    model, variables = motion
    variables = randomised(variables, 5)
    frames = 6
    mel, reference, _ = inputs(frames, seed=6)
    feats = jax.jit(functools.partial(model.apply, method=MotionModel.encode_audio))(variables, mel)
    z = jax.random.normal(jax.random.key(7), (BATCH, frames, TINY["vae"]["latent_dim"]))
    decode = functools.partial(jax.jit(functools.partial(model.apply, method=MotionModel.decode)), variables)
    base, other_z, other_audio = decode(z, feats, reference), decode(-z, feats, reference), decode(z, -feats, reference)
    mouth = slice(48, 68)
    np.testing.assert_allclose(other_z["offsets"][:, :, mouth], base["offsets"][:, :, mouth], atol=1e-6)
    np.testing.assert_allclose(other_audio["offsets"][:, :, :48], base["offsets"][:, :, :48], atol=1e-6)
    np.testing.assert_allclose(other_audio["pose"], base["pose"], atol=1e-6)
    assert float(jnp.max(jnp.abs(other_z["offsets"][:, :, :48] - base["offsets"][:, :, :48]))) > 1e-3
    assert float(jnp.max(jnp.abs(other_audio["offsets"][:, :, mouth] - base["offsets"][:, :, mouth]))) > 1e-3


@pytest.mark.parametrize("window,use_image", [(5, True), (16, False)])
def test_sync_expert_shapes(window, use_image):
    expert = SyncExpert(window=window, features=16, width=32, num_layers=1, use_image=use_image,
                        image_channels=(8, 16))
    mel = jax.random.normal(jax.random.key(0), (3, 4 * window, 80))
    mouth = faces(1, batch=3)[:, 48:68][:, None].repeat(window, axis=1)
    images = jax.random.uniform(jax.random.key(2), (3, window, 24, 32, 3))
    out, variables = jax.jit(expert.init_with_output)(jax.random.key(3), mel, mouth, images)
    assert ("image" in out) == use_image
    for name in ("audio", "mouth", "image")[:3 if use_image else 2]:
        assert out[name].shape == (3, 16)
        np.testing.assert_allclose(jnp.linalg.norm(out[name], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)
    logits = expert.apply(variables, out["audio"], out["mouth"], method="similarity")
    assert logits.shape == (3, 3) and float(jnp.max(jnp.abs(logits))) <= 1 / 0.07 + 1e-3
    with pytest.raises(ValueError, match="SyncExpert: mel must be"):
        expert.apply(variables, mel[:, :-4], method="embed_audio")


# -- pose invariance ------------------------------------------------------------------------

def similarity_transforms(seed, count):
    """`count` random (rotation angle, scale, translation) triples."""
    k_angle, k_scale, k_shift = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.uniform(k_angle, (count,), minval=-np.pi, maxval=np.pi),
            jnp.exp(jax.random.uniform(k_scale, (count,), minval=-1.5, maxval=1.5)),
            jax.random.uniform(k_shift, (count, 2), minval=-3.0, maxval=3.0))


def transform(points, angle, scale, shift):
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.array([[cos, -sin], [sin, cos]])
    return scale * points @ rotation.T + shift


@pytest.mark.parametrize("seed", [0, 1])
def test_identity_encoder_is_similarity_invariant(seed):
    encoder = IdentityEncoder(features=16, hidden_features=(32, 32))
    reference = faces(10 + seed)
    variables = jax.jit(encoder.init)(jax.random.key(seed), reference)
    if seed:  # invariance holds by construction, at any parameter values
        variables = randomised(variables, seed, scale=0.5)
    embed = jax.jit(encoder.apply)
    expected = embed(variables, reference)
    for angle, scale, shift in zip(*similarity_transforms(seed, 6)):
        moved = jax.vmap(lambda p: transform(p, angle, scale, shift))(reference)
        np.testing.assert_allclose(embed(variables, moved), expected, atol=1e-4)
    # ...and it still tells identities apart.
    assert float(jnp.max(jnp.abs(embed(variables, faces(99)) - expected))) > 1e-2


def test_canonical_shape_turns_faces_upright():
    face = jnp.asarray(FRONTAL_TEMPLATE)
    tilted = transform(face, 2.5, 0.3, jnp.array([1.0, -2.0]))
    upright = canonical_shape(tilted)
    np.testing.assert_allclose(jnp.mean(upright, axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(jnp.sum(upright**2, -1)), 1.0, atol=1e-5)
    assert float(upright[45, 0]) > float(upright[36, 0])  # left eye corner right of the right one
    assert float(upright[57, 1]) > float(upright[27, 1])  # chin-side lip below the nose bridge


# -- streaming ------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_audio_encoder_chunks_match_one_pass(causal):
    encoder = AudioEncoder(features=32, num_layers=2, num_heads=4, window=3, causal=causal)
    frames = 41
    mel = jax.random.normal(jax.random.key(0), (1, 4 * frames, 80))
    variables = randomised(jax.jit(encoder.init)(jax.random.key(1), mel), 2)
    whole = jax.jit(encoder.apply)(variables, mel)
    np.testing.assert_allclose(encode_in_chunks(encoder, variables, mel, chunk_frames=13), whole, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_audio_encoder_context_is_exact(causal):
    """`context_frames` is the true receptive field: not an over- nor an under-estimate."""
    encoder = AudioEncoder(features=32, num_layers=2, num_heads=4, window=3, causal=causal)
    frames, t = 24, 11
    mel = jax.random.normal(jax.random.key(0), (1, 4 * frames, 80))
    variables = randomised(jax.jit(encoder.init)(jax.random.key(1), mel), 2)
    grad = jax.jit(jax.grad(lambda m: jnp.sum(encoder.apply(variables, m)[0, t])))(mel)
    frame_has_influence = np.abs(np.asarray(grad[0])).reshape(frames, 4 * 80).max(axis=1) > 0
    reached = np.flatnonzero(frame_has_influence)
    before, after = encoder.context_frames()
    assert (t - reached[0], reached[-1] - t) == (before, after)


def test_chunked_generation_matches_one_pass(motion):
    model, variables = motion
    variables = randomised(variables, 11)
    frames = 47
    mel, reference, _ = inputs(frames, seed=12)
    rng = jax.random.key(13)
    whole, _ = jax.jit(functools.partial(model.apply, method=MotionModel.generate))(
        variables, rng, mel, reference, 0.8)
    chunked = generate_chunked(model, variables, rng, mel, reference, chunk_frames=17, temperature=0.8)
    assert float(jnp.std(whole["pose"])) > 1e-3  # the pose head is live, not at its zero init
    for name in ("z", "keypoints", "offsets", "pose"):
        assert chunked[name].shape[:2] == (BATCH, frames)
        np.testing.assert_allclose(chunked[name], whole[name], atol=1e-5, err_msg=name)


# -- precision and sharding ------------------------------------------------------------------

def relative_error(low, high):
    return float(jnp.max(jnp.abs(low.astype(jnp.float32) - high)) / jnp.max(jnp.abs(high)))


def test_bfloat16_forward_is_close_to_float32(motion):
    model, variables = motion
    frames = 12
    mel, reference, keypoints = inputs(frames, seed=14)
    low_model = build_motion_model(**TINY, dtype=jnp.bfloat16)
    high = jax.jit(functools.partial(model.apply, sample_latent=False))(variables, mel, reference, keypoints)
    low = jax.jit(functools.partial(low_model.apply, sample_latent=False))(variables, mel, reference, keypoints)
    assert low["audio_feats"].dtype == jnp.float32  # outputs come back in float32
    for name in ("audio_feats", "identity", "mean", "keypoints"):
        assert relative_error(low[name], high[name]) < 0.05, name
    assert np.all(np.isfinite(low["prior_log_prob"]))

    expert, low_expert = SyncExpert(features=16, width=32), SyncExpert(features=16, width=32, dtype=jnp.bfloat16)
    mel5, mouth = mel[:, :20], keypoints[:, :5, 48:68]
    sync_variables = jax.jit(expert.init)(jax.random.key(0), mel5, mouth)
    high = jax.jit(expert.apply)(sync_variables, mel5, mouth)
    low = jax.jit(low_expert.apply)(sync_variables, mel5, mouth)
    for name in ("audio", "mouth"):
        assert relative_error(low[name], high[name]) < 0.05, name


def abstract_params(module, *args):
    return jax.eval_shape(functools.partial(module.init, {"params": jax.random.key(0), "latent": jax.random.key(1)}),
                          *args)["params"]


def all_modules():
    mel, reference, keypoints = inputs(8)
    window = 5
    return {
        "motion": (build_motion_model(**TINY), (mel, reference, keypoints)),
        "sync": (SyncExpert(window=window, use_image=True),
                 (mel[:, :4 * window], keypoints[:, :window, 48:68], jnp.zeros((BATCH, window, 16, 16, 3)))),
    }


@pytest.mark.parametrize("name", ["motion", "sync"])
def test_every_parameter_has_logical_axes(name):
    module, args = all_modules()[name]
    params = abstract_params(module, *args)
    boxed = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    unannotated = [x for x in boxed if not isinstance(x, nn.Partitioned)]
    assert not unannotated, f"{len(unannotated)} parameters without logical axes"
    for spec in jax.tree.leaves(nn.get_partition_spec(params), is_leaf=lambda x: isinstance(x, jax.P)):
        assert set(spec) <= LOGICAL_AXES, spec
        named = [axis for axis in spec if axis is not None]
        assert len(named) == len(set(named)), f"axis named twice in {spec}"


@pytest.mark.parametrize("mesh_shape", [(1, 8, 1), (2, 2, 2)], ids=["fsdp8", "data2-fsdp2-tensor2"])
def test_motion_model_inits_and_applies_under_a_global_mesh(mesh_shape):
    """As in t2v.train: the mesh and the base rules are set while the model is traced, so
    every logical sharding constraint must meet its parameter at its real rank (tracing is
    where a mismatch fails; compiling the model would only add time)."""
    model = build_motion_model(**TINY)
    mel, reference, keypoints = inputs(8)
    mesh = jax.make_mesh(mesh_shape, ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    rules = [tuple(rule) for rule in get_config().sharding_rules]
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        variables = jax.eval_shape(model.init, {"params": jax.random.key(0), "latent": jax.random.key(1)},
                                   mel, reference, keypoints)
        out = jax.eval_shape(functools.partial(model.apply, rngs={"latent": jax.random.key(2)}),
                             variables, mel, reference, keypoints)
        generated, _ = jax.eval_shape(functools.partial(model.apply, method=MotionModel.generate),
                                      variables, jax.random.key(3), mel, reference)
    assert out["keypoints"].shape == generated["keypoints"].shape == (BATCH, 8, 68, 2)
    # The attention kernels are made at their real rank, with one logical axis per dim.
    query = variables["params"]["audio_encoder"]["block_0_attention"]["query"]["kernel"]
    features, heads = TINY["audio"]["features"], TINY["audio"]["num_heads"]
    assert query.value.shape == (features, heads, features // heads)
    assert query.names == ("embed", "heads", "kv")


def test_base_rules_shard_the_parameters_on_an_fsdp_tensor_mesh():
    """With the base config's rules on a 2x2x2 mesh, every sharded dim divides evenly."""
    module = build_motion_model(audio=dict(features=64, num_heads=4), identity=dict(features=64),
                                vae=dict(latent_dim=16, features=64), prior=dict(hidden_features=64))
    mel, reference, keypoints = inputs(8)
    params = abstract_params(module, mel, reference, keypoints)
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    rules = [tuple(rule) for rule in get_config().sharding_rules]
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(params), mesh, rules)
    sharded_dims = 0
    for value, sharding in zip(jax.tree.leaves(nn.meta.unbox(params)), jax.tree.leaves(shardings)):
        for size, axis in zip(value.shape, sharding.spec):
            if axis is not None:
                sharded_dims += 1
                assert size % mesh.shape[axis] == 0, (value.shape, sharding.spec)
    assert sharded_dims > 0
