"""Offline preparation of a real dataset (`t2v prepare`): per-clip detection, alignment, crop.

    t2v prepare --dataset voxceleb2 --src /data/vox2/dev/mp4 --out /data/t2v [--beam]
    t2v prepare ... --config.prepare.detect_every=1 --config.prepare.crop_size=256

Not an experiment: it holds only what `t2v prepare` reads (no base keys).
"""

import ml_collections

from t2v.errors import InputError


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.task = "prepare"
    # Mirrors data_pipelines.clip.PrepareOptions; -1 means "no limit / keep all motion".
    c.prepare = dict(
        crop_size=224,
        detect_every=5,
        max_gap_frames=5,
        smoothing_window=5,
        stabilise_seconds=-1.0,
        min_frames=25,
        max_length_mismatch_frames=5,
        max_frames=-1,
        num_shards=0,        # 0 = let TFDS size the shards
    )
    if arg not in (None, ""):
        raise InputError(f"configs/prepare.py: unknown variant {arg!r}")
    return c
