"""The one training loop, for every task: `train_and_evaluate(config, workdir)`.

A task (t2v.tasks) says what is different: its data, parameters, loss and eval metrics.
This package does the rest, one job per module:

    loop.py           train_and_evaluate: mesh, data, state, compile, checkpoint, loop
    state.py          TrainState, create_train_state, abstract_train_state (shardings)
    step.py           make_train_step: compute dtype, micro-batches, non-finite skipping
    evaluator.py      Evaluator: eval batches averaged, samples written
    metric_writer.py  MetricWriter: metrics.jsonl and TensorBoard
    preemption.py     Preemption: SIGTERM -> save and stop, agreed across processes
    cost.py           FLOPs of a step (jaxpr count and XLA's), device peaks and memory
    dry_run.py        `t2v train --dry-run`: compile for N devices; memory, FLOPs, step time

The same program runs on one CPU, on 8 fake devices, on several local processes
(launch/local.py) and on a multi-host slice (launch/README.md).

Written to `workdir` (by process 0, except the checkpoints every process takes part in):
    config.json  checkpoints/<step>/  metrics.jsonl  tensorboard/  samples/step_<N>/

Steps count batches: "step N" in logs and checkpoints means N steps done (skipped
non-finite ones included) and the input iterator stands at batch N; the learning-rate
schedule follows the updates applied (`TrainState.applied_updates`).
"""

from t2v.train.evaluator import Evaluator
from t2v.train.loop import compile_update, train_and_evaluate
from t2v.train.metric_writer import MetricWriter
from t2v.train.preemption import Preemption
from t2v.train.state import TrainState, abstract_train_state, create_train_state
from t2v.train.step import make_train_step

__all__ = [
    "Evaluator", "MetricWriter", "Preemption", "TrainState", "abstract_train_state", "compile_update",
    "create_train_state", "make_train_step", "train_and_evaluate",
]
