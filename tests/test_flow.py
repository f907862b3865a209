"""The conditional flow prior: exact inverse, exact log-determinant, streaming sampling."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from t2v.models.flow import ConditionalFlow, FlowPrior, standard_normal_log_prob

LATENT, AUDIO, BATCH, FRAMES = 5, 8, 2, 13


def randomised(variables, seed, scale=0.1):
    """Unboxed variables with every leaf moved off its init (zero-init heads would make
    every coupling the identity and the tests vacuous)."""
    return _perturb(nn.meta.unbox(variables), jax.random.key(seed), scale)


@functools.partial(jax.jit, static_argnums=2)
def _perturb(params, key, scale):
    flat, unflatten = ravel_pytree(params)  # one random draw compiles far faster than one per leaf
    return unflatten(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


@pytest.fixture(scope="module")
def flow():
    module = ConditionalFlow(LATENT, num_couplings=4, hidden_features=(16, 16))
    x = jax.random.normal(jax.random.key(0), (BATCH, FRAMES, LATENT))
    cond = jax.random.normal(jax.random.key(1), (BATCH, FRAMES, 6))
    return module, randomised(module.init(jax.random.key(2), x, cond), 3), x, cond


@pytest.fixture(scope="module")
def prior():
    module = FlowPrior(latent_dim=LATENT, hidden_features=16, num_couplings=4, coupling_hidden=(16,))
    z = jnp.zeros((BATCH, FRAMES, LATENT))
    audio = jax.random.normal(jax.random.key(4), (BATCH, FRAMES, AUDIO))
    return module, randomised(module.init(jax.random.key(5), z, audio), 6), audio


def test_flow_inverse_undoes_forward(flow):
    module, variables, x, cond = flow
    y, logdet = module.apply(variables, x, cond, method="forward")
    assert y.shape == x.shape and logdet.shape == x.shape[:2]
    assert float(jnp.max(jnp.abs(y - x))) > 0.1  # not the identity
    back = module.apply(variables, y, cond, method="inverse")
    np.testing.assert_allclose(back, x, atol=1e-5)


def test_flow_logdet_matches_numerical_jacobian(flow):
    module, variables, x, cond = flow

    @jax.jit
    def logdets(x_t, cond_t):
        jacobian = jax.jacfwd(lambda v: module.apply(variables, v, cond_t, method="forward")[0])(x_t)
        return module.apply(variables, x_t, cond_t, method="forward")[1], jnp.linalg.slogdet(jacobian)

    for b, t in [(0, 0), (1, 7)]:
        logdet, (sign, expected) = logdets(x[b, t], cond[b, t])
        assert float(sign) > 0 and abs(float(expected)) > 0.01
        np.testing.assert_allclose(logdet, expected, atol=1e-4)


def test_prior_samples_have_finite_log_prob(prior):
    module, variables, audio = prior
    z, _ = module.apply(variables, jax.random.key(7), audio, 0.8, method="sample")
    log_prob = module.apply(variables, z, audio, method="log_prob")
    assert z.shape == (BATCH, FRAMES, LATENT) and log_prob.shape == (BATCH,)
    assert np.all(np.isfinite(log_prob))


def test_sample_is_the_inverse_of_to_noise(prior):
    """Sampling draws frame t's noise from fold_in(rng, t); teacher-forced to_noise recovers it."""
    module, variables, audio = prior
    rng = jax.random.key(8)
    z, _ = module.apply(variables, rng, audio, 1.0, method="sample")
    noise, _, _ = module.apply(variables, z, audio, method="to_noise")
    expected = jnp.stack([jax.random.normal(jax.random.fold_in(rng, t), (BATCH, LATENT)) for t in range(FRAMES)], 1)
    np.testing.assert_allclose(noise, expected, atol=1e-5)


def test_sample_from_noise_inverts_to_noise_from_any_carry(prior):
    """The deterministic direction serving uses: given noise (and a carry mid-sequence),
    the latents whose teacher-forced to_noise is that noise; `sample` is it at temperature 0.5."""
    module, variables, audio = prior
    _, carry = module.apply(variables, jax.random.key(10), audio[:, :4], 1.0, method="sample")
    noise = jax.random.normal(jax.random.key(11), (BATCH, FRAMES - 4, LATENT))
    z, after = module.apply(variables, noise, audio[:, 4:], carry, method="sample_from_noise")
    back, _, to_noise_after = module.apply(variables, z, audio[:, 4:], carry, method="to_noise")
    np.testing.assert_allclose(back, noise, atol=1e-5)
    assert int(after["frame"]) == FRAMES
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), after, to_noise_after)

    rng = jax.random.key(12)
    sampled, _ = module.apply(variables, rng, audio, 0.5, method="sample")
    drawn = jnp.stack([jax.random.normal(jax.random.fold_in(rng, t), (BATCH, LATENT)) for t in range(FRAMES)], 1)
    from_noise, _ = module.apply(variables, 0.5 * drawn, audio, method="sample_from_noise")
    np.testing.assert_allclose(sampled, from_noise, atol=1e-6)


def test_chunked_sampling_equals_one_pass(prior):
    module, variables, audio = prior
    sample = jax.jit(functools.partial(module.apply, method="sample"))
    rng = jax.random.key(9)
    carry = module.initial_carry(BATCH)
    whole, _ = sample(variables, rng, audio, 1.0, carry)
    parts = []
    for start, stop in [(0, 5), (5, 10), (10, FRAMES)]:
        part, carry = sample(variables, rng, audio[:, start:stop], 1.0, carry)
        parts.append(part)
    assert int(carry["frame"]) == FRAMES
    np.testing.assert_allclose(jnp.concatenate(parts, axis=1), whole, atol=1e-5)

    # The likelihood streams the same way.
    per_frame, _ = module.apply(variables, whole, audio, method="frame_log_prob")
    first, carry = module.apply(variables, whole[:, :4], audio[:, :4], method="frame_log_prob")
    rest, _ = module.apply(variables, whole[:, 4:], audio[:, 4:], carry, method="frame_log_prob")
    np.testing.assert_allclose(jnp.concatenate([first, rest], axis=1), per_frame, atol=1e-4)


def test_log_prob_is_normalised():
    """With Z = 2 and one frame, the density integrates to one over a fine grid."""
    module = FlowPrior(latent_dim=2, hidden_features=8, num_couplings=3, coupling_hidden=(8,), scale_limit=0.5)
    audio = jax.random.normal(jax.random.key(10), (1, 1, 3))
    variables = randomised(module.init(jax.random.key(11), jnp.zeros((1, 1, 2)), audio), 12, scale=0.3)
    axis = jnp.linspace(-15.0, 15.0, 301)
    grid = jnp.stack(jnp.meshgrid(axis, axis), axis=-1).reshape(-1, 1, 2)  # [points, 1 frame, 2]
    log_prob = jax.jit(lambda z: module.apply(
        variables, z, jnp.broadcast_to(audio, (z.shape[0], 1, 3)), method="log_prob"))(grid)
    mass = float(jnp.sum(jnp.exp(log_prob)) * (axis[1] - axis[0]) ** 2)
    assert abs(mass - 1.0) < 1e-3
    # ...and it is not the base density: the flow really moved it.
    assert float(jnp.max(jnp.abs(log_prob - standard_normal_log_prob(grid[:, 0])))) > 0.1
