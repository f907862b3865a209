"""The optimizer every task trains with: AdamW, warmup + cosine, clipping, freezing, EMA.

    tx = make_optimizer(config.optimizer, total_steps=config.train.steps)
    opt_state = tx.init(params)                     # params: the unboxed fp32 tree

Per-module learning rates and freezing go by parameter path, the tree's keys joined by
"/" ("encoder/conv1/kernel"), matched with `re.search`:

    lr_multipliers={"identity_encoder/": 0.1}      # first matching pattern wins
    freeze=["^audio_encoder/"]                     # no update, no optimizer state

Parameter groups (`groups`, e.g. a GAN's discriminator) train with settings of their own:
each group's gradients are clipped by their own global norm, follow their own schedule
and AdamW (b1, b2, weight decay), and `ema=False` keeps them out of the EMA. Parameters
no group claims form the group `main_group` with the top-level settings:

    groups={"discriminator": dict(params="discriminator/", lr=4e-4, b1=0.5, ema=False)}

A group's missing settings are the top-level ones; the first group whose `params` regex
matches a parameter's path owns it. `group_metrics(opt_state)` gives each group's
`grad_norm/<group>` (before clipping) and `lr/<group>` of the last update.

Gradient accumulation (`grad_accum`) is not done here: `t2v.train` scans over
micro-batches inside one step, so one step is always one optimizer update (the schedule,
EMA and the non-finite guard count updates, and no accumulator lives in opt_state).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

FROZEN = "frozen"


def parameter_path(path: tuple) -> str:
    """A tree path -> "encoder/conv1/kernel"."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def learning_rate_schedule(optimizer_config: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine decay to `lr * end_lr_fraction` at `total_steps`.

    Warmup starts at lr/warmup_steps rather than 0, so the first step already learns.
    """
    peak = float(optimizer_config["lr"])
    end = peak * float(optimizer_config["end_lr_fraction"])
    warmup = max(int(optimizer_config["warmup_steps"]), 0)
    decay = max(total_steps - warmup, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak * jnp.minimum((step + 1.0) / max(warmup, 1), 1.0)
        progress = jnp.clip((step - warmup) / decay, 0.0, 1.0)
        cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(step < warmup, warm, cosine)

    return schedule


GROUP_SETTINGS = ("lr", "warmup_steps", "end_lr_fraction", "weight_decay", "clip_norm", "b1", "b2")


def group_settings(optimizer_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each group's settings by name, the main group (top-level settings, `params` "") last."""
    top = {key: optimizer_config[key] for key in GROUP_SETTINGS}
    groups = {}
    for name, group in dict(optimizer_config.get("groups", None) or {}).items():
        group = dict(group)
        unknown = sorted(set(group) - {"params", "ema", *GROUP_SETTINGS})
        if unknown or not group.get("params"):
            problem = f"unknown setting {unknown[0]!r}" if unknown else "no 'params' regex"
            raise ValueError(f"config.optimizer.groups.{name}: {problem} (settings: params, ema, "
                             f"{', '.join(GROUP_SETTINGS)})")
        groups[str(name)] = {**top, **group, "ema": bool(group.get("ema", True))}
    main = str(optimizer_config.get("main_group", "main"))
    if main in groups:
        raise ValueError(f"config.optimizer.groups.{main}: the name of the main group (optimizer.main_group)")
    groups[main] = {**top, "params": "", "ema": True}
    return groups


def parameter_groups(params: Any, optimizer_config: Mapping[str, Any]) -> Any:
    """Each parameter's group name (the first group whose `params` regex matches its path)."""
    settings = group_settings(optimizer_config)
    *named, main = settings
    patterns = [(name, re.compile(settings[name]["params"])) for name in named]

    def group(path, _):
        path = parameter_path(path)
        return next((name for name, pattern in patterns if pattern.search(path)), main)

    groups = jax.tree_util.tree_map_with_path(group, params)
    # A group that owns nothing is a typo in its regex. (optax also traces init with a
    # placeholder that has no arrays: nothing to check then.)
    if any(hasattr(leaf, "shape") for leaf in jax.tree.leaves(params)):
        owned = set(jax.tree.leaves(groups))
        for name in named:
            if name not in owned:
                raise ValueError(f"config.optimizer.groups.{name}.params={settings[name]['params']!r} "
                                 "matches no parameter")
    return groups


def parameter_labels(params: Any, optimizer_config: Mapping[str, Any]) -> Any:
    """Each parameter's label: "frozen", or "lr_x<multiplier>" (1.0 when no pattern matches),
    prefixed by its group ("discriminator_lr_x1.0") when the config has groups."""
    freeze = [re.compile(p) for p in optimizer_config["freeze"]]
    multipliers = [(re.compile(p), float(m)) for p, m in dict(optimizer_config["lr_multipliers"]).items()]
    grouped = bool(optimizer_config.get("groups", None))
    groups = parameter_groups(params, optimizer_config) if grouped else jax.tree.map(lambda _: "", params)

    def label(path, _, group):
        name = parameter_path(path)
        if any(p.search(name) for p in freeze):
            return FROZEN
        multiplier = next((m for pattern, m in multipliers if pattern.search(name)), 1.0)
        return f"{group}_lr_x{multiplier}" if grouped else f"lr_x{multiplier}"

    return jax.tree_util.tree_map_with_path(label, params, groups)


class GroupStats(NamedTuple):
    """Per group (dicts keyed by group name): the updates applied (the count its schedule
    follows), and the last update's gradient norm before clipping and learning rate."""

    count: dict
    grad_norm: dict
    lr: dict


def clip_by_group_norm(settings: Mapping[str, Mapping[str, Any]], schedules: Mapping[str, optax.Schedule],
                       groups_of: Any) -> optax.GradientTransformation:
    """Each group's gradients clipped by their own global norm (`clip_norm` <= 0: not clipped),
    so a discriminator's large gradients cannot shrink the generator's, and the reverse."""
    names = list(settings)

    def init(params):
        del params
        return GroupStats(*({name: jnp.zeros((), dtype) for name in names}
                            for dtype in (jnp.int32, jnp.float32, jnp.float32)))

    def update(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        owners = jax.tree.leaves(groups_of(updates))
        norms = {name: jnp.sqrt(sum((jnp.sum(jnp.square(x.astype(jnp.float32)))
                                     for x, owner in zip(leaves, owners) if owner == name), jnp.zeros(())))
                 for name in names}

        def clipped(x, owner):
            limit = float(settings[owner]["clip_norm"] or 0.0)
            if limit <= 0:
                return x
            return jnp.where(norms[owner] < limit, x, x / norms[owner] * limit).astype(x.dtype)

        lr = {name: jnp.asarray(schedules[name](state.count[name]), jnp.float32) for name in names}
        count = {name: optax.safe_int32_increment(state.count[name]) for name in names}
        return treedef.unflatten([clipped(x, o) for x, o in zip(leaves, owners)]), GroupStats(count, norms, lr)

    return optax.GradientTransformation(init, update)


def group_metrics(opt_state: Any) -> dict[str, jax.Array]:
    """`grad_norm/<group>` and `lr/<group>` of the last update ({} without groups)."""
    metrics = {}
    for stats in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, GroupStats)):
        if isinstance(stats, GroupStats):
            metrics.update({f"grad_norm/{name}": norm for name, norm in stats.grad_norm.items()})
            metrics.update({f"lr/{name}": lr for name, lr in stats.lr.items()})
    return metrics


def _adamw(settings: Mapping[str, Any], schedule: optax.Schedule, multiplier: float) -> optax.GradientTransformation:
    # Weight decay applies to matrices and kernels (ndim >= 2), not to biases and norm scales.
    return optax.adamw(
        learning_rate=lambda step: schedule(step) * multiplier,
        b1=float(settings["b1"]),
        b2=float(settings["b2"]),
        weight_decay=float(settings["weight_decay"]),
        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
    )


def make_optimizer(optimizer_config: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
    """AdamW with the schedule above, global-norm clipping, multipliers, freezing and groups.

    Clipping sees only the trainable gradients: frozen ones are zeroed first, so a frozen
    module cannot shrink the updates of the rest. With groups, each group is clipped by
    its own norm and steps with its own AdamW and schedule.
    """
    multipliers = sorted({float(m) for m in dict(optimizer_config["lr_multipliers"]).values()} | {1.0})
    labels = lambda params: parameter_labels(params, optimizer_config)  # noqa: E731
    is_frozen = lambda params: jax.tree.map(lambda l: l == FROZEN, labels(params))  # noqa: E731
    steps = [optax.masked(optax.set_to_zero(), is_frozen)]

    if optimizer_config.get("groups", None):
        settings = group_settings(optimizer_config)
        schedules = {name: learning_rate_schedule(group, total_steps) for name, group in settings.items()}
        transforms = {f"{name}_lr_x{m}": _adamw(settings[name], schedules[name], m)
                      for name in settings for m in multipliers}
        steps.append(clip_by_group_norm(settings, schedules, lambda tree: parameter_groups(tree, optimizer_config)))
    else:
        schedule = learning_rate_schedule(optimizer_config, total_steps)
        transforms = {f"lr_x{m}": _adamw(optimizer_config, schedule, m) for m in multipliers}
        if optimizer_config["clip_norm"] and float(optimizer_config["clip_norm"]) > 0:
            steps.append(optax.clip_by_global_norm(float(optimizer_config["clip_norm"])))
    transforms[FROZEN] = optax.set_to_zero()  # and, through multi_transform, no Adam state
    steps.append(optax.multi_transform(transforms, labels))
    return optax.chain(*steps)


def averaged_params(params: Any, optimizer_config: Mapping[str, Any]) -> Any:
    """The part of `params` the EMA keeps: all but the groups with `ema=False` (nested dicts
    lose those leaves, and subtrees left empty)."""
    settings = group_settings(optimizer_config)
    skipped = {name for name, group in settings.items() if not group["ema"]}
    if not skipped:
        return params
    groups = parameter_groups(params, optimizer_config)

    def kept(tree, owners):
        if isinstance(tree, dict):
            subtrees = {key: kept(tree[key], owners[key]) for key in tree}
            subtrees = {key: value for key, value in subtrees.items() if value is not None}
            return subtrees or None
        owned = set(jax.tree.leaves(owners))
        if owned <= skipped:
            return None
        if owned & skipped:
            raise ValueError(f"config.optimizer.groups: groups with ema=False ({sorted(owned & skipped)}) "
                             "share a non-dict subtree with averaged ones")
        return tree

    return kept(params, groups) or {}


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
    """ema <- decay * ema + (1 - decay) * params; the EMA is what evaluation uses.

    `ema_params` may hold only part of `params` (`averaged_params`): the keys it has."""
    if isinstance(ema_params, dict) and isinstance(params, dict):
        return {key: ema_update(value, params[key], decay) for key, value in ema_params.items()}
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
