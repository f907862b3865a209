"""Tasks: what differs between the systems t2v trains; `t2v.train` does the rest.

A task is one file in this package that subclasses `Task` and registers itself:

    @register("sync")
    class SyncTask(Task):
        ...

`get_task(config)` imports `t2v.tasks.<config.task>` and builds the task it registered.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any, Callable, Iterator

import jax
import ml_collections

from t2v.errors import InputError

Batch = dict[str, Any]  # name -> array, leading axis = batch
Metrics = dict[str, jax.Array]

_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], "Task"]] = {}


def register(name: str):
    """Class decorator: make a `Task` subclass reachable as `config.task = name`."""

    def wrap(cls):
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def get_task(config: ml_collections.ConfigDict) -> "Task":
    if config.task not in _REGISTRY:
        try:
            importlib.import_module(f"t2v.tasks.{config.task}")
        except ModuleNotFoundError as e:
            raise InputError(f"unknown task {config.task!r}: no module t2v.tasks.{config.task}") from e
    return _REGISTRY[config.task](config)


class Task(abc.ABC):
    """The contract between a task and the generic loop in `t2v.train`.

    Every method that takes `params` is pure and traced under `jax.jit`; the loop owns
    sharding, optimisation, checkpoints and logging. Parameters are created with
    logical axis names (`nn.with_logical_partitioning`) so the config's rule table
    decides how they are laid out on the mesh; the mesh and rules are active while a step
    is traced, so activations may use `nn.with_logical_constraint`.

    With `train.compute_dtype = "bfloat16"` the loop hands `loss` bf16 params (fp32 master
    params stay with the optimizer) and casts only the batch entries named in
    `compute_inputs`; every other entry, the targets above all, arrives as the input
    pipeline made it (float32), so losses against them are computed in float32. Models
    built with `dtype=compute_dtype` cast their inputs themselves. The loop casts the loss
    and metrics to float32.
    """

    name: str = ""
    compute_inputs: tuple[str, ...] = ()  # batch entries cast to train.compute_dtype for `loss`

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    # -- data (host side) ------------------------------------------------------------
    @abc.abstractmethod
    def dataset(self, split: str, *, seed: int, process_index: int, process_count: int) -> Iterator[Batch]:
        """This process's share of the global batches for `split` ("train" or "eval").

        For "train" the iterator is infinite and checkpointable (it has `get_state()` and
        `set_state()`, as Grain's iterators do); for "eval" it is finite and deterministic.
        """

    # -- model (traced) -----------------------------------------------------------------
    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: Batch) -> Any:
        """Returns the parameter pytree (boxed with logical axis names)."""

    @abc.abstractmethod
    def loss(self, params: Any, batch: Batch, rng: jax.Array, step: jax.Array) -> tuple[jax.Array, Metrics]:
        """Scalar training loss and a dict of scalar metrics to log."""

    @abc.abstractmethod
    def eval_metrics(self, params: Any, batch: Batch, rng: jax.Array) -> Metrics:
        """Scalar metrics on one eval batch; the loop averages them over the eval set."""

    # -- reports (host side) -----------------------------------------------------------
    def write_samples(self, params: Any, out_dir: str, step: int) -> None:
        """Optional: write sample videos or plots for a human to look at.

        Runs on EVERY process with the sharded (EMA) params, since gathering them needs
        all processes (`jax.experimental.multihost_utils.process_allgather(..., tiled=True)`);
        only process 0 should write files.
        """
