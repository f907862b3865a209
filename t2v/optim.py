"""The optimizer every task trains with: AdamW, warmup + cosine, clipping, freezing, EMA.

    tx = make_optimizer(config.optimizer, total_steps=config.train.steps)
    opt_state = tx.init(params)                     # params: the unboxed fp32 tree

Per-module learning rates and freezing go by parameter path, the tree's keys joined by
"/" ("encoder/conv1/kernel"), matched with `re.search`:

    lr_multipliers={"identity_encoder/": 0.1}      # first matching pattern wins
    freeze=["^audio_encoder/"]                     # no update, no optimizer state

Gradient accumulation (`grad_accum`) is not done here: `t2v.train` scans over
micro-batches inside one step, so one step is always one optimizer update (the schedule,
EMA and the non-finite guard count updates, and no accumulator lives in opt_state).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

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


def parameter_labels(params: Any, optimizer_config: Mapping[str, Any]) -> Any:
    """Each parameter's label: "frozen", or "lr_x<multiplier>" (1.0 when no pattern matches)."""
    freeze = [re.compile(p) for p in optimizer_config["freeze"]]
    multipliers = [(re.compile(p), float(m)) for p, m in dict(optimizer_config["lr_multipliers"]).items()]

    def label(path, _):
        name = parameter_path(path)
        if any(p.search(name) for p in freeze):
            return FROZEN
        for pattern, multiplier in multipliers:
            if pattern.search(name):
                return f"lr_x{multiplier}"
        return "lr_x1.0"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(optimizer_config: Mapping[str, Any], total_steps: int) -> optax.GradientTransformation:
    """AdamW with the schedule above, global-norm clipping, multipliers and freezing.

    Clipping sees only the trainable gradients: frozen ones are zeroed first, so a frozen
    module cannot shrink the updates of the rest. Weight decay applies to matrices and
    kernels (ndim >= 2), not to biases and norm scales.
    """
    schedule = learning_rate_schedule(optimizer_config, total_steps)
    multipliers = {f"lr_x{float(m)}": float(m) for m in dict(optimizer_config["lr_multipliers"]).values()}
    multipliers.setdefault("lr_x1.0", 1.0)

    def adamw(multiplier: float) -> optax.GradientTransformation:
        return optax.adamw(
            learning_rate=lambda step: schedule(step) * multiplier,
            b1=float(optimizer_config["b1"]),
            b2=float(optimizer_config["b2"]),
            weight_decay=float(optimizer_config["weight_decay"]),
            mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
        )

    transforms = {label: adamw(m) for label, m in multipliers.items()}
    transforms[FROZEN] = optax.set_to_zero()  # and, through multi_transform, no Adam state
    labels = lambda params: parameter_labels(params, optimizer_config)  # noqa: E731
    is_frozen = lambda params: jax.tree.map(lambda l: l == FROZEN, labels(params))  # noqa: E731

    steps = [optax.masked(optax.set_to_zero(), is_frozen)]
    if optimizer_config["clip_norm"] and float(optimizer_config["clip_norm"]) > 0:
        steps.append(optax.clip_by_global_norm(float(optimizer_config["clip_norm"])))
    steps.append(optax.multi_transform(transforms, labels))
    return optax.chain(*steps)


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
    """ema <- decay * ema + (1 - decay) * params; the EMA is what evaluation uses."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
