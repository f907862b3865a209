"""The shared base of every experiment: the keys the generic loop reads.

Experiments start from `base.get_config()` and change what differs. Every experiment has a
`tiny` variant that runs on one laptop core in minutes.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.task = ""
    c.seed = 0

    # Input data: "synthetic" makes clips in memory with t2v.data.synthetic; "records"
    # reads ArrayRecord files written by `t2v synth --format records` or `t2v prepare`.
    c.data = dict(
        source="synthetic",
        path="",            # records folder when source == "records"
        window=16,          # T video frames per training window (4T mel frames)
        train_clips=64,
        eval_clips=16,
        langs="en,de,fr,es,it,pt",
        eval_langs="nl",    # a language never seen in training
        size=0,             # frame size in pixels; 0 = keypoints only, no pixels
        workers=0,          # Grain worker processes (0 = in the main process)
    )

    # One mesh for every task; -1 means "all remaining devices".
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    # Logical parameter/activation axes -> mesh axes. A config, not code, decides
    # replication, FSDP or tensor parallelism.
    c.sharding_rules = [
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
        ("time", None),
        ("channels", None),
    ]

    c.optimizer = dict(
        lr=1e-3,
        warmup_steps=100,
        end_lr_fraction=0.05,
        weight_decay=1e-4,
        clip_norm=1.0,
        b1=0.9,
        b2=0.99,
        ema_decay=0.999,
        grad_accum=1,
        lr_multipliers={},  # {"path/regex": multiplier}
        freeze=[],          # ["path/regex", ...]
    )

    c.train = dict(
        steps=1000,
        batch_size=32,      # global batch
        compute_dtype="float32",  # or "bfloat16" (parameters stay float32)
        log_every=50,
        eval_every=500,
        eval_batches=8,
        checkpoint_every=500,
        keep=3,
        best_metric="",     # e.g. "eval/loss"; "" keeps no best checkpoint
        best_mode="min",
        max_nonfinite_in_row=10,
    )
    return c
