"""Real tasks (sync, motion with its frozen sync expert, render) trained a few steps with the
loop's own compiled update on every mesh the config can name: the losses equal one device's,
FSDP really shards the parameters, and the frozen expert lives on the mesh."""

from functools import partial

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from t2v import config as config_lib
from t2v import parallel
from t2v.tasks import get_task
from t2v.tasks import sync as sync_task
from t2v.train.loop import compile_update
from t2v.train.state import create_train_state, mesh_context

STEPS = 3
BATCH = 8  # divisible by data x fsdp on every mesh below
MESHES = {
    "data8": dict(data=8, fsdp=1, tensor=1),
    "fsdp8": dict(data=1, fsdp=8, tensor=1),
    "d2f2t2": dict(data=2, fsdp=2, tensor=2),
}
# fp32 throughout; on other meshes XLA sums the batch and the sharded contractions in
# another order, which moves the loss by ~1e-7 relative per step. After 3 AdamW steps
# (whose first updates are sign-like, lr * g / |g|) that stays well under 1e-4.
RTOL = 1e-4
COMMON = [f"--config.train.batch_size={BATCH}", "--config.optimizer.warmup_steps=1", "--config.data.eval_clips=2"]


def sync_config(cache):
    return config_lib.load("configs/sync.py:tiny", [
        "--config.model.sync.window=5", "--config.data.window=5", "--config.data.max_shift=4",
        "--config.model.sync.features=16", "--config.model.sync.width=16", "--config.model.sync.num_layers=1",
        "--config.data.train_clips=4", "--config.loss.shifted_negatives=2", f"--config.data.cache_dir={cache}",
        *COMMON])


def motion_config(cache):
    return config_lib.load("configs/motion.py:tiny", [
        "--config.data.window=8", "--config.data.train_clips=4", "--config.model.audio.features=16",
        "--config.model.identity.features=16", "--config.model.identity.hidden_features=(16,)",
        "--config.model.vae.features=16", "--config.model.vae.latent_dim=4", "--config.model.vae.decoder_hidden=(16,)",
        "--config.model.prior.hidden_features=16", "--config.model.prior.coupling_hidden=(16,)",
        "--config.loss.kl_warmup_steps=1", f"--config.data.cache_dir={cache}", *COMMON])


def render_config(cache):
    return config_lib.load("configs/render.py:tiny", [
        "--config.model.features=16", "--config.model.encoder_widths=(8, 8)", "--config.model.motion_widths=(8, 16, 16)",
        "--config.model.motion_features=8", "--config.model.decoder_width=8", "--config.model.discriminator_widths=(8, 16)",
        "--config.data.train_clips=4", "--config.data.augment.enabled=False", f"--config.data.cache_dir={cache}",
        *COMMON])


CONFIGS = {"sync": sync_config, "motion": motion_config, "render": render_config}


def with_expert(task, config):
    """`task` (motion) given a frozen sync expert as `load_expert` gives one: freshly
    initialised parameters (any fixed values do), committed to one device."""
    expert_config = sync_config(config.data.cache_dir)
    expert_config.model.sync.window = expert_config.data.window = 4
    expert = sync_task.SyncTask(expert_config)
    w = expert.window
    example = {"mel": np.zeros((1, 4 * w, 80), np.float32), "mouth": np.zeros((1, w, 20, 2), np.float32)}
    params = jax.device_put(nn.meta.unbox(expert.init(jax.random.PRNGKey(7), example)), jax.devices()[0])
    task.sync_expert = sync_task.FrozenExpert(expert, params, "in-memory expert")
    return task


def make_task(name, config):
    task = get_task(config)
    return with_expert(task, config) if name == "motion" else task


def first_batches(config, count=STEPS):
    it = get_task(config).dataset("train", seed=config.seed, process_index=0, process_count=1)
    return [next(it) for _ in range(count)]


def train_losses(task, config, batches, mesh_config, devices=None):
    """The losses of `len(batches)` steps of the loop's compiled update (`compile_update`)
    on the mesh `mesh_config` names, with the config's rules; also the update and the state."""
    mesh = parallel.make_mesh(mesh_config, devices)
    rules = [tuple(rule) for rule in config.sharding_rules]
    sharded = [parallel.shard_batch(b, mesh) for b in batches]
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), sharded[0])
    update = compile_update(task, config, mesh, rules, abstract_batch)
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    losses = []
    with mesh_context(mesh, rules):
        state = jax.jit(partial(create_train_state, task, update.tx), out_shardings=update.shardings)(
            init_rng, train_rng, sharded[0])
        for batch in sharded:
            state, metrics = update(state, batch)
            losses.append(float(metrics["loss"]))
    return np.asarray(losses), update, state


def largest_kernel(params):
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return max(((jax.tree_util.keystr(k), v) for k, v in leaves if v.ndim >= 2), key=lambda kv: kv[1].size)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mesh_tasks_cache")


@pytest.fixture(scope="module")
def one_device(cache):
    """name -> (config, batches, the losses on one device), each computed once."""
    runs = {}

    def run(name):
        if name not in runs:
            config = CONFIGS[name](cache)
            batches = first_batches(config)
            losses, _, _ = train_losses(make_task(name, config), config, batches, {"data": 1}, jax.devices()[:1])
            assert np.all(np.isfinite(losses)) and len(set(losses.tolist())) == STEPS  # the steps really differ
            runs[name] = config, batches, losses
        return runs[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_real_tasks_train_alike_on_every_mesh(name, mesh_name, one_device):
    # sync on d2f2t2 once differed from step 2 on: an XLA partitioning bug in a conv's gradient,
    # worked around in t2v/models/layers.py (see tests/test_conv_sharding.py).
    config, batches, reference = one_device(name)
    losses, update, state = train_losses(make_task(name, config), config, batches, MESHES[mesh_name])
    np.testing.assert_allclose(losses, reference, rtol=RTOL, err_msg=f"{name} on {mesh_name}")
    if mesh_name == "fsdp8":  # the parameters are sharded, not replicated
        path, kernel = largest_kernel(state.params)
        assert kernel.sharding.spec != jax.sharding.PartitionSpec(), (name, path, kernel.sharding)
        assert kernel.addressable_shards[0].data.size * 8 == kernel.size, (name, path, kernel.sharding)
    if name == "motion":  # the frozen expert is an input on the mesh, no part of the trained state
        assert update.frozen is not None and "sync_score" in update.compiled.out_info[1]
        for leaf in jax.tree.leaves(update.frozen):
            assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh.devices.size == 8
        assert "sync_expert" not in str(jax.tree_util.tree_structure(state.params))
