"""Cloud paths: workdirs, checkpoints, config.json and record shards on gs://, against a
local GCS emulator (tests/gcs_emulator.py) -- nothing leaves the machine."""

import numpy as np
import pytest
from etils import epath

import toy_task
from gcs_emulator import gcs_bucket
from t2v import checkpoint as checkpoint_lib
from t2v import parallel
from t2v.data import pipeline, records, synthetic


@pytest.fixture(scope="module")
def bucket():
    with gcs_bucket("t2v-test") as (url, env):
        yield url


def test_a_cloud_workdir_stays_a_url_and_a_local_one_becomes_absolute(tmp_path, monkeypatch):
    assert str(checkpoint_lib.workdir_path("gs://b/run") / "checkpoints") == "gs://b/run/checkpoints"
    monkeypatch.chdir(tmp_path)
    assert checkpoint_lib.workdir_path("runs/x") == tmp_path / "runs/x"


def test_checkpoints_and_config_round_trip_on_gcs(bucket, tmp_path):
    workdir = f"{bucket}/run"
    config = toy_task.toy_config()
    mesh = parallel.make_mesh({"data": 8})
    state = {"w": np.arange(16, dtype=np.float32).reshape(8, 2), "step": np.int32(3)}
    checkpointer = checkpoint_lib.Checkpointer(workdir, keep=2, async_save=False)
    checkpointer.save(3, {"params": state, "ema_params": state}, {"next_index": 12}, config)
    checkpointer.wait_until_finished()
    checkpoint_lib.write_config(config, workdir)
    # Nothing landed in a local folder named "gs:".
    assert not (tmp_path / "gs:").exists() and not epath.Path("gs:").exists()
    assert epath.Path(f"{workdir}/config.json").is_file()
    assert checkpoint_lib.read_config(workdir).task == config.task
    assert checkpoint_lib.saved_steps(workdir) == [3]
    np.testing.assert_array_equal(checkpoint_lib.load_params(workdir)["w"], state["w"])
    abstract = checkpoint_lib.abstract_like({"params": state, "ema_params": state},
                                            {"params": {"w": parallel.batch_sharding(mesh), "step": parallel.replicated(mesh)},
                                             "ema_params": {"w": parallel.replicated(mesh), "step": parallel.replicated(mesh)}})
    restored, iterator_state, meta = checkpoint_lib.Checkpointer(workdir).restore(3, abstract)
    assert iterator_state == {"next_index": 12} and meta["step"] == 3
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), state["w"])


def test_records_on_gcs_read_like_local_ones(bucket, tmp_path):
    clips = [records.encode_clip(synthetic.make_clip(s, language="en", size=128, render=False).to_record())
             for s in range(3)]
    (tmp_path / "shards").mkdir()
    shards = records.write_shards(tmp_path / "shards", clips, num_shards=2)
    remote = epath.Path(f"{bucket}/records")
    for shard in map(epath.Path, shards):
        (remote / shard.name).write_bytes(shard.read_bytes())

    def config(path):
        c = toy_task.toy_config()
        c.data = dict(source="records", path=path, window=8, max_shift=4, cache_dir=str(tmp_path / "cache"))
        c.train.batch_size = 3
        return c

    local = next(pipeline.window_batches(config(str(tmp_path / "shards")), "train", seed=0))
    cloud = next(pipeline.window_batches(config(str(remote)), "train", seed=0))
    for name in local:
        np.testing.assert_array_equal(cloud[name], local[name], err_msg=name)
    copies = sorted(p.name for p in (tmp_path / "cache" / "remote").iterdir())
    assert len(copies) == 2 and all("array_record" in c for c in copies)
    # A second read uses the copies; a missing folder is one line naming the flag.
    pipeline.window_batches(config(str(remote)), "train", seed=0)
    assert sorted(p.name for p in (tmp_path / "cache" / "remote").iterdir()) == copies
    with pytest.raises(pipeline.InputError, match=f"data.path={bucket}/nothing: no ArrayRecord files"):
        pipeline.window_batches(config(f"{bucket}/nothing"), "train", seed=0)

