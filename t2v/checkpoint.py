"""Checkpoints: the train state, each process's input-iterator state and a JSON record.

    workdir/
      config.json                 resolved config + t2v version (t2v.config.write)
      checkpoints/<step>/
        state/                    the train-state pytree (Orbax StandardSave, sharded)
        data/process_<i>-of-<n>.json   each process's input-iterator state
        meta/                     {"step", "t2v_version", "config"} as JSON
        metrics/                  the eval metrics the best checkpoint is chosen by

Saving is asynchronous: `save` returns once the arrays are copied off the devices.
The latest `keep` checkpoints are kept, plus the best one by `best_metric` even after it
falls out of the latest `keep`. `restore` takes an abstract target
(`jax.ShapeDtypeStruct(shape, dtype, sharding=...)` leaves), so a checkpoint written on
one mesh restores onto another. Nothing is pickled.

Outside training (evaluation, generation, export, a frozen expert), a workdir is read with
`read_config(workdir)` and `load_params(workdir)`: the (EMA) parameters of its latest
checkpoint, on one device, whatever mesh wrote them; `load_checked_params` also checks them
against the model a config builds. A workdir that lacks what is asked is `InputError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

import t2v
from t2v import config as config_lib
from t2v.errors import InputError, MissingInput

CHECKPOINTS, STATE, DATA, META = "checkpoints", "state", "data", "meta"


def workdir_path(path: str | os.PathLike) -> epath.Path:
    """A workdir (or any user path) as an `etils.epath.Path`: a cloud URL (gs://, s3://) stays
    one -- `pathlib.Path("gs://b/x")` would be the local folder `gs:/b/x` -- and a local path
    is made absolute."""
    path = epath.Path(path)
    return path if is_remote(path) else path.absolute()


def is_remote(path: str | os.PathLike) -> bool:
    """True for a cloud URL (gs://, s3://, ...), False for a local path."""
    return "://" in os.fspath(path)


@contextlib.contextmanager
def local_folder(destination: str | os.PathLike) -> Iterator[Path]:
    """A local folder for writers that only know local files (PIL, PyAV, ONNX): `destination`
    itself when it is local; for a cloud URL a temporary folder whose files are copied to
    `destination` on a clean exit."""
    if not is_remote(destination):
        yield Path(destination)
        return
    staging = Path(tempfile.mkdtemp(prefix="t2v-upload-"))
    try:
        yield staging
        target = epath.Path(destination)
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            (target / file.relative_to(staging)).parent.mkdir(parents=True, exist_ok=True)
            (target / file.relative_to(staging)).write_bytes(file.read_bytes())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- the input iterator's state: one JSON file per process ---------------------------------
class IteratorStateHandler(ocp.CheckpointHandler):
    """Writes this process's iterator state (a JSON-able dict) as process_<i>-of-<n>.json.

    Each process reads its own share of the data, so each saves its own position; a
    restore needs the same process count as the save.
    """

    @staticmethod
    def _file(directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: "IteratorStateSave"):
        self._file(directory).write_text(json.dumps(args.state, indent=1, sort_keys=True))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore | None" = None) -> Any:
        file = self._file(directory)
        if not file.exists():
            saved = sorted(p.name for p in directory.iterdir())
            raise InputError(
                f"{file}: no iterator state for this process; the checkpoint was written by {saved} "
                "(resume with the same number of processes)"
            )
        return json.loads(file.read_text())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def structure(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    state: Any  # captured when the save is requested, so later iteration cannot change it


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


# -- the manager -------------------------------------------------------------------------
class Checkpointer:
    """Saves and restores `(train_state, iterator_state, meta)` under `workdir/checkpoints`."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep: int = 3,
        best_metric: str = "",
        best_mode: str = "min",
        async_save: bool = True,
    ):
        if keep < 1:
            raise InputError(f"train.keep={keep}: keep at least one checkpoint")
        if best_mode not in ("min", "max"):
            raise InputError(f"train.best_mode={best_mode!r}: expected 'min' or 'max'")
        self.directory = workdir_path(workdir) / CHECKPOINTS
        self.best_metric = best_metric
        policy = ocp.checkpoint_managers.LatestN(n=keep)
        best_fn = None
        if best_metric:
            best_fn = lambda metrics: float(metrics[best_metric])  # noqa: E731
            # BestN sorts ascending and keeps the tail: reverse for "min" keeps the lowest.
            best = ocp.checkpoint_managers.BestN(
                get_metric_fn=best_fn, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False
            )
            policy = ocp.checkpoint_managers.AnyPreservationPolicy([policy, best])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=best_fn,  # for best_step(); the policy decides what is deleted
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,  # half-written saves of a killed run
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                DATA: IteratorStateHandler(),
                META: ocp.JsonCheckpointHandler(),
            },
            options=options,
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the best `best_metric` among checkpoints saved with metrics."""
        if not self.best_metric:
            return None
        with_metrics = [s for s in self.manager.all_steps() if self.manager.metrics(s)]
        return self.manager.best_step() if with_metrics else None

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        iterator_state: Any,
        config: ml_collections.ConfigDict,
        metrics: Mapping[str, float] | None = None,
    ) -> bool:
        """Starts an asynchronous save of step `step`; False if that step is already saved."""
        if step in self.manager.all_steps():
            return False
        meta = {"step": int(step), "t2v_version": t2v.__version__, "config": json.loads(config_lib.to_json(config))}
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
            if self.best_metric and self.best_metric not in metrics:
                raise InputError(
                    f"train.best_metric={self.best_metric!r} is not among the eval metrics {sorted(metrics)}"
                )
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardSave(state),
                    DATA: IteratorStateSave(iterator_state),
                    META: ocp.args.JsonSave(meta),
                }
            ),
            metrics=metrics,
            force=True,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any, dict]:
        """(train_state, iterator_state, meta) of `step`, laid out as `abstract_state` says.

        `abstract_state` is the state's pytree with `jax.ShapeDtypeStruct` leaves that carry
        the target shardings, e.g. from `jax.eval_shape` + the new mesh's shardings.
        """
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.StandardRestore(abstract_state),
                    DATA: IteratorStateRestore(),
                    META: ocp.args.JsonRestore(),
                }
            ),
        )
        return restored[STATE], restored[DATA], restored[META]

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def write_config(config: ml_collections.ConfigDict, workdir: str | Path) -> epath.Path:
    """workdir/config.json beside workdir/checkpoints (process 0 only writes)."""
    path = workdir_path(workdir) / "config.json"
    if jax.process_index() == 0:
        config_lib.write(config, workdir)
    return path


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s leaves (arrays or abstract) carrying `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


# -- reading a finished workdir ----------------------------------------------------------
def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its config.json)."""
    path = workdir_path(workdir) / "config.json"
    if not path.is_file():
        raise MissingInput(f"{path}: no such file (is {workdir} a t2v workdir?)")
    return ml_collections.ConfigDict(json.loads(path.read_text())["config"])


def saved_steps(workdir: str | Path) -> list[int]:
    """The steps with a saved train state under `workdir/checkpoints`, ascending."""
    root = workdir_path(workdir) / CHECKPOINTS
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit() and (p / STATE).is_dir())


def load_params(workdir: str | Path, step: int | None = None, ema: bool = True) -> Any:
    """Parameters (the EMA ones by default) of the latest (or `step`) checkpoint in `workdir`,
    as arrays on the first local device, whatever mesh they were saved from."""
    root = workdir_path(workdir) / CHECKPOINTS
    steps = saved_steps(workdir)
    if not steps:
        raise MissingInput(f"{root}: no checkpoints")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise MissingInput(f"{root}: no checkpoint for step {step} (have {steps})")
    path = root / str(step) / STATE
    checkpointer = ocp.StandardCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = checkpointer.restore(path, target)
    return state["ema_params" if ema else "params"]


def checked_params(workdir: str | Path, params: Any, expected: Any) -> Any:
    """`params` if their tree and shapes are `expected`'s (a tree of arrays or
    ShapeDtypeStructs), else InputError: the checkpoint is not the config's model."""
    got = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    if got != want:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                  else f"{shapes[0]} is {got[shapes[0]]}, config.json says {want[shapes[0]]}")
        raise InputError(f"{workdir}: the checkpoint does not match config.json's model ({detail})")
    return params


def load_checked_params(workdir: str | Path, expected: Any, part: str | None = None) -> Any:
    """The latest EMA parameters of `workdir` (its `part` subtree when given), checked against
    the tree and shapes `expected`; a missing or mismatched checkpoint is InputError."""
    params = load_params(workdir)
    if part is not None:
        if not isinstance(params, Mapping) or part not in params:
            raise InputError(f"{workdir}: the checkpoint holds no {part} parameters")
        params = params[part]
    return checked_params(workdir, params, expected)


def task_workdirs(checkpoint_dir: str | Path) -> dict[str, epath.Path]:
    """{task: workdir} of a one-task workdir, or of a demo workdir's task subfolders."""
    root = workdir_path(checkpoint_dir)
    if not root.is_dir():
        raise MissingInput(f"{root}: no such directory")
    if (root / "checkpoints").is_dir():  # one task's workdir
        return {read_config(root).task: root}
    found = {}
    for sub in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
        task = read_config(sub).get("task", "")
        if task:
            found[task] = sub
    if not found:
        raise MissingInput(f"{root}: neither a task workdir (config.json and checkpoints/) nor a folder "
                                f"of task workdirs")
    return found
