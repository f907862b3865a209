"""Pure Flax Linen modules: no losses, no optimizers, no I/O."""
