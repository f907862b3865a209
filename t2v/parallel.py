"""The mesh, the logical-axis rules and the shardings every task runs on.

One mesh for every task, axes ("data", "fsdp", "tensor"). Parameters carry logical axis
names (`nn.with_logical_partitioning`); the config's rule table maps them onto mesh axes:

    mesh = make_mesh(config.mesh)                                  # data=-1: all devices
    param_shardings = logical_to_sharding(jax.eval_shape(init), mesh, config.sharding_rules)
    batch = shard_batch(local_numpy_batch, mesh)                   # [global_batch, ...]

Launching several processes (see launch/README.md): `initialize_distributed()` reads
T2V_COORDINATOR / T2V_NUM_PROCESSES / T2V_PROCESS_ID, or with T2V_DISTRIBUTED=auto lets
jax detect the cluster (TPU VM slice, SLURM, Kubernetes), and does nothing otherwise.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from t2v.errors import InputError

MESH_AXES = ("data", "fsdp", "tensor")
# The batch's leading axis is split over every axis that holds a different slice of data.
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def initialize_distributed() -> bool:
    """Joins the multi-process job this process was launched into; True if there is one.

    Must run before anything touches the devices. Explicit variables (set by
    launch/local.py) win; T2V_DISTRIBUTED=auto defers to jax's cluster detection.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = os.environ.get("T2V_COORDINATOR")
    if coordinator:
        try:
            num_processes = int(os.environ["T2V_NUM_PROCESSES"])
            process_id = int(os.environ["T2V_PROCESS_ID"])
        except (KeyError, ValueError) as e:
            raise InputError(
                f"T2V_COORDINATOR={coordinator} needs integer T2V_NUM_PROCESSES and T2V_PROCESS_ID ({e})"
            ) from None
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
        return True
    if os.environ.get("T2V_DISTRIBUTED", "").lower() == "auto":
        jax.distributed.initialize()
        return True
    return False


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all of them).

    `mesh_config` maps each axis to its size; one axis may be -1, meaning "the devices
    left over". Axes not named have size 1.
    """
    devices = list(jax.devices() if devices is None else devices)
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise InputError(f"mesh config: unknown axes {sorted(unknown)}; the axes are {MESH_AXES}")
    sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
    if sizes.count(-1) > 1:
        raise InputError(f"mesh config {dict(mesh_config)}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise InputError(f"mesh config {dict(mesh_config)}: sizes must be positive or -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if len(devices) % fixed:
        raise InputError(
            f"mesh config {dict(mesh_config)}: axis sizes multiply to {fixed}, "
            f"which does not divide the {len(devices)} devices"
        )
    sizes = [len(devices) // fixed if s == -1 else s for s in sizes]
    if math.prod(sizes) != len(devices):
        raise InputError(
            f"mesh config {dict(mesh_config)}: {dict(zip(MESH_AXES, sizes))} uses "
            f"{math.prod(sizes)} devices, but there are {len(devices)}"
        )
    # Auto axes: we annotate parameters and the batch with shardings and let XLA's
    # propagation choose the layout of every intermediate. Explicit axes (jax.make_mesh's
    # default now) would make sharding part of every array's type and require every op
    # in every task to say how its output is sharded.
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_to_sharding(params: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a parameter tree whose leaves are boxed with logical axis names.

    `params` may be concrete or abstract (`jax.eval_shape(init, ...)`); the result has the
    structure of the *unboxed* tree (leaves without logical names are replicated).
    """
    specs = nn.get_partition_spec(params)  # logical PartitionSpecs, boxes removed
    return nn.logical_to_mesh_sharding(specs, mesh, [tuple(rule) for rule in rules])


def gathered_for_compute(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`x` (a weight whose dims carry `logical_axes`) constrained to the layout its rules give,
    less the batch axes: FSDP stores a weight split over them and gathers it where it is used,
    while tensor-parallel dims stay split. Outside a mesh with rules it is `x` unchanged.

    The convolutions use it (`t2v.models.layers`): left to itself, XLA's partitioner (Shardy,
    jax 0.10) gets a convolution's input gradient wrong when the batch is split over
    ("data", "fsdp") and the kernel's [in, out] over ("fsdp", "tensor"); the sync expert's
    gradients were off by ~10% on data2 x fsdp2 x tensor2. tests/test_conv_sharding.py
    holds the jax-only reproduction (a strict xfail: it tells when XLA fixes it).
    """
    rules = nn.get_logical_axis_rules()
    if not rules or jax.sharding.get_abstract_mesh().empty:
        return x

    def unbatched(mesh_axes):
        named = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
        kept = tuple(a for a in named if a not in BATCH_AXES)
        return kept[0] if len(kept) == 1 else (kept or None)

    spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
    return jax.lax.with_sharding_constraint(x, PartitionSpec(*(unbatched(a) for a in spec)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over ("data", "fsdp"); the other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
    """This process's numpy batch -> global jax.Arrays, leading axis split over the mesh.

    Every process passes its own share (`local_batch_size = global / process_count`);
    the global batch is the concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    # This is the one intended host-to-device copy of the loop; with several processes
    # jax makes it through a path the loop's transfer guard would otherwise refuse.
    with jax.transfer_guard_host_to_device("allow"):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
