"""Rematerialisation (gradient checkpointing) by name, for the config's `model.remat`.

    Block = remat(TemporalConvBlock, "full")   # the class itself when the name is "none"

Names (see docs/scale.md, memory): "none" keeps every activation for the backward pass;
"full" keeps only each wrapped module's inputs and recomputes the rest in the backward
pass; "dots" keeps the matrix products' outputs (recomputes the cheap elementwise work);
"dots_no_batch" keeps only products without batch dimensions (weights times activations).
Parameters are the same under every name: checkpoints move between them.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from t2v.errors import InputError

POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def check(name: str, flag: str = "model.remat") -> str:
    if name not in POLICIES:
        raise InputError(f"--config.{flag}={name!r}: unknown remat policy (known: {', '.join(POLICIES)})")
    return name


def remat(module_class, name: str, static_argnums: tuple[int, ...] = ()):
    """`module_class` whose `__call__` is rematerialised under policy `name` ("none": as it is).

    `static_argnums` count `self` as 0, as `nn.remat` does."""
    if check(name) == "none":
        return module_class
    return nn.remat(module_class, policy=POLICIES[name], static_argnums=static_argnums)
