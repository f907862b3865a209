"""`t2v demo`'s stage 1: the clips it writes under DIR/data are what every later stage reads."""

from pathlib import Path

import numpy as np
import pytest

from t2v import config as config_lib
from t2v import demo
from t2v.data import pipeline
from t2v.tasks import get_task


@pytest.mark.slow  # ~95 s on the loaded 2-core box: it renders the renderer's pixel clips
def test_every_stage_reads_the_clips_stage_1_wrote(tmp_path, monkeypatch):
    # Anything a stage synthesized for itself would land in this cache: it must stay empty.
    monkeypatch.setenv("T2V_CACHE", str(tmp_path / "own_cache"))
    own_config = demo.experiment_config

    def small(cfg, name, overrides=()):  # two held-out clips per plan keep stage 1 to seconds
        experiment = own_config(cfg, name, overrides)
        experiment.data.eval_clips = 2
        return experiment

    monkeypatch.setattr(demo, "experiment_config", small)
    cfg = config_lib.load("configs/demo.py", ["--config.synth.clips=2", "--config.synth.size=64"])
    data = tmp_path / "demo" / "data"
    overrides = demo.synthesize(cfg, data)

    written = sorted(str(p) for p in data.glob("synthetic/*/*") if p.is_file() and "array_record" in p.name)
    assert written and set(overrides) == set(cfg.experiments)
    read = set()
    for name, given in overrides.items():
        config = demo.experiment_config(cfg, name, given)
        assert config.data.source == "records"
        for split in ("train", "eval"):
            paths = pipeline.shard_paths(config, split, int(config.seed))
            assert paths and all(Path(p).is_relative_to(data) for p in paths), (name, split, paths)
            read.update(paths)
    assert read == set(written)  # every shard stage 1 wrote is read, and nothing else

    # The sync expert really trains on them: a batch of windows from DIR/data.
    config = demo.experiment_config(cfg, "sync", overrides["sync"])
    batch = next(get_task(config).dataset("train", seed=0, process_index=0, process_count=1))
    assert batch["mel"].shape[0] == config.train.batch_size and np.isfinite(batch["mel"]).all()
    assert not (tmp_path / "own_cache").exists() or not any((tmp_path / "own_cache").rglob("*"))
