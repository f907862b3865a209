"""`t2v train --dry-run`: compile the update step for the target mesh before renting it.

    t2v train --config configs/sync.py:base --workdir gs://b/sync --dry-run --devices 64 --target h100

prints the configured mesh over N devices, per-device memory (XLA's memory analysis of
the compiled step), FLOPs per step and the step time expected at the target's peak and
an assumed MFU, and stops with one line when the step needs more memory per device than
the target has. Nothing is written to the workdir.

A process with fewer than N devices re-runs the dry run in a subprocess with N fake CPU
devices (XLA_FLAGS=--xla_force_host_platform_device_count=N), so a laptop compiles for
a 64-chip slice. The program is the same SPMD program partitioned the same way; the
CPU compiler's buffer assignment and fusion differ from a TPU's or GPU's, so take its
memory as an estimate (within tens of percent), not a guarantee.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import subprocess
import sys
from typing import Sequence

import jax
import ml_collections

from t2v import config as config_lib
from t2v import parallel
from t2v.errors import InputError
from t2v.tasks import get_task
from t2v.train import cost
from t2v.train.loop import check_batch_split, compile_update, process_dataset
from t2v.train.state import mesh_context

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class DryRunReport:
    spec: str
    devices: int
    mesh: dict[str, int]
    batch_size: int
    compute_dtype: str
    memory: dict[str, int]  # bytes per device: arguments, outputs, aliased, temporaries, total
    model_flops: float  # matmul + conv FLOPs of one step, whole global batch (t2v.train.cost)
    xla_flops_per_device: float  # XLA's cost analysis (loop bodies counted once)
    target: str
    peak_flops: float | None  # of one target device, for compute_dtype
    assumed_mfu: float
    device_memory_gb: float | None

    @property
    def flops_per_device(self) -> float:
        return self.model_flops / self.devices

    @property
    def step_seconds(self) -> float | None:
        if not self.peak_flops:
            return None
        return self.flops_per_device / (self.peak_flops * self.assumed_mfu)

    @property
    def fits(self) -> bool:
        return self.device_memory_gb is None or self.memory["total"] <= self.device_memory_gb * GIB

    def lines(self) -> list[str]:
        m = self.memory
        mesh = " x ".join(f"{axis}={size}" for axis, size in self.mesh.items())
        limit = f" of {self.device_memory_gb:g} GiB" if self.device_memory_gb else ""
        out = [
            f"dry run: {self.spec} on {self.devices} devices ({mesh}), global batch {self.batch_size}, "
            f"{self.compute_dtype}",
            f"memory per device: {_bytes(m['total'])}{limit} (arguments {_bytes(m['arguments'])}, outputs "
            f"{_bytes(m['outputs'])} of which donated {_bytes(m['aliased'])}, temporaries {_bytes(m['temporaries'])})",
            f"FLOPs per step: {self.model_flops:.3e} matmul+conv in all, {self.flops_per_device:.3e} per device "
            f"(XLA cost analysis: {self.xla_flops_per_device:.3e} per device, loop bodies once)",
        ]
        if self.step_seconds is None:
            out.append(f"expected step time: unknown (no {self.compute_dtype} peak for {self.target}; "
                       "give --peak-tflops)")
        else:
            out.append(f"expected step time on {self.target}: {_seconds(self.step_seconds)} at "
                       f"{self.assumed_mfu:.0%} MFU of {self.peak_flops / 1e12:g} TFLOP/s per device "
                       f"({self.batch_size / self.step_seconds:.3g} examples/s)")
        return out


def _bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def probe_abstract_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """The global batch's ShapeDtypeStructs, from one example of a shrunken copy of the
    data config (a batch of one per process, two clips): shapes past the batch axis do
    not depend on the batch size or the data set's size."""
    probe = copy.deepcopy(config)
    with probe.unlocked():
        probe.train.batch_size = jax.process_count()
        for key in ("train_clips", "eval_clips"):
            if key in probe.data:
                probe.data[key] = min(int(probe.data[key]), 2)
        if "workers" in probe.data:
            probe.data.workers = 0
    local = next(process_dataset(get_task(probe), probe, "train"))
    sharding = parallel.batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((int(config.train.batch_size), *x.shape[1:]), x.dtype,
                                                       sharding=sharding), local)


def analyse(config: ml_collections.ConfigDict, spec: str, num_devices: int, *, target: str = "h100",
            peak_tflops: float | None = None, device_memory_gb: float | None = None,
            assumed_mfu: float = 0.4) -> DryRunReport:
    """Compiles `config`'s update step over the first `num_devices` devices of this process."""
    if num_devices > jax.device_count():
        raise InputError(f"{num_devices} devices asked for, this process has {jax.device_count()}")
    mesh = parallel.make_mesh(config.mesh, jax.devices()[:num_devices])
    try:
        check_batch_split(config, mesh)
    except ValueError as e:
        raise InputError(f"{spec}: {e}") from None
    rules = [tuple(rule) for rule in config.sharding_rules]
    abstract_batch = probe_abstract_batch(config, mesh)
    update = compile_update(get_task(config), config, mesh, rules, abstract_batch)
    with mesh_context(mesh, rules):
        jaxpr = jax.make_jaxpr(update.train_step)(update.abstract_state, abstract_batch)
    dtype = str(config.train.compute_dtype)
    peak = peak_tflops * 1e12 if peak_tflops else cost.peak_flops(target, dtype)
    if device_memory_gb is None:
        device_memory_gb = cost.DEVICE_PEAKS[target]["memory_gb"]
    return DryRunReport(
        spec=spec, devices=num_devices, mesh=dict(mesh.shape), batch_size=int(config.train.batch_size),
        compute_dtype=dtype, memory=cost.memory_per_device(update.compiled), model_flops=cost.model_flops(jaxpr),
        xla_flops_per_device=cost.xla_cost(update.compiled)["flops"], target=target, peak_flops=peak,
        assumed_mfu=assumed_mfu, device_memory_gb=device_memory_gb)


def check_fits(report: DryRunReport) -> None:
    if not report.fits:
        raise InputError(
            f"{report.spec}: the update step needs {report.memory['total'] / GIB:.2f} GiB per device on "
            f"{report.devices} devices, more than the {report.device_memory_gb:g} GiB of a {report.target} "
            "(--device-memory-gb): shard more (mesh.fsdp, mesh.tensor), or lower train.batch_size "
            "or raise optimizer.grad_accum")


def run(spec: str, overrides: Sequence[str] = (), *, devices: int = 0, target: str = "h100",
        peak_tflops: float | None = None, device_memory_gb: float | None = None, assumed_mfu: float = 0.4) -> int:
    """The dry run `t2v train --dry-run` does: prints the report, raises InputError if the
    step does not fit the target. `devices=0` means this process's devices."""
    if target not in cost.DEVICE_PEAKS:
        raise InputError(f"--target {target}: unknown device; known: {', '.join(cost.DEVICE_PEAKS)}")
    if not 0 < assumed_mfu <= 1:
        raise InputError(f"--assumed-mfu {assumed_mfu}: must be in (0, 1]")
    config = config_lib.load(spec, overrides)  # bad overrides fail here, before any subprocess
    devices = devices or jax.device_count()
    if devices > jax.device_count():
        return _in_subprocess(spec, overrides, devices=devices, target=target, peak_tflops=peak_tflops,
                              device_memory_gb=device_memory_gb, assumed_mfu=assumed_mfu)
    report = analyse(config, spec, devices, target=target, peak_tflops=peak_tflops,
                     device_memory_gb=device_memory_gb, assumed_mfu=assumed_mfu)
    print("\n".join(report.lines()), flush=True)
    check_fits(report)
    return 0


def _in_subprocess(spec, overrides, *, devices, **options) -> int:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])}
    argv = [sys.executable, "-m", "t2v.train.dry_run", "--config", spec, "--devices", str(devices)]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.run([*argv, *overrides], env=env).returncode


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The dry run's flags (t2v.cli adds them to `t2v train`)."""
    parser = parser or argparse.ArgumentParser(prog="python -m t2v.train.dry_run")
    parser.add_argument("--devices", type=int, default=0,
                        help="dry run: devices of the target (default: this process's); fake CPU devices stand in")
    parser.add_argument("--target", default="h100", choices=sorted(cost.DEVICE_PEAKS),
                        help="dry run: the target device, for its peak FLOP/s and memory")
    parser.add_argument("--peak-tflops", type=float, help="dry run: the target's peak (default: the table's)")
    parser.add_argument("--device-memory-gb", type=float,
                        help="dry run: memory per device, GiB (default: the table's for --target)")
    parser.add_argument("--assumed-mfu", type=float, default=0.4, help="dry run: the MFU the step time assumes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if a.startswith("--config.")]
    parser = build_parser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        return run(args.config, overrides, devices=args.devices, target=args.target, peak_tflops=args.peak_tflops,
                   device_memory_gb=args.device_memory_gb, assumed_mfu=args.assumed_mfu)
    except InputError as e:
        print(f"t2v train --dry-run: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
