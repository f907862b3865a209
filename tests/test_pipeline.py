"""The window pipeline: fields and frames, determinism, exact resume, sharding, corrupt records."""

import numpy as np
import pytest

from configs import base
from t2v import keypoints as kp
from t2v.data import pipeline, records, synthetic


def small_config(cache_dir, **data):
    c = base.get_config()
    c.data.update(window=8, max_shift=4, train_clips=6, eval_clips=4, cache_dir=str(cache_dir), eval_windows=2)
    c.data.update(data)
    c.train.batch_size = 4
    return c


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return small_config(tmp_path_factory.getbasetemp() / "t2v-cache")


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def test_window_fields_and_face_frame(config):
    batch = next(pipeline.window_batches(config, "train", seed=0))
    t, m = 8, 4
    assert batch["mel"].shape == (4, 4 * t, 80) and batch["mel"].dtype == np.float32
    assert batch["mel_context"].shape == (4, 4 * (t + 2 * m), 80)
    assert batch["keypoints"].shape == (4, t, 68, 2)
    assert batch["reference"].shape == (4, 68, 2)
    assert batch["pose"].shape == (4, t, 4) and batch["mouth"].shape == (4, t, 20, 2)
    # The window's audio is the middle of its context.
    np.testing.assert_array_equal(batch["mel_context"][:, 4 * m : 4 * (m + t)], batch["mel"])
    # The reference sits on the template's frame: face size 1, jaw about [-1, 1].
    np.testing.assert_allclose(kp.face_size(batch["reference"]), 1.0, rtol=1e-4)
    assert np.abs(batch["reference"][:, :17, 0]).max() < 1.3
    # The head moves in that frame (pose varies over time) and the mouth moves with speech.
    assert batch["pose"].std(axis=1).max() > 1e-3
    assert np.abs(batch["mouth"]).max() > 0.01


def test_prepared_clip_mouth_is_pose_free():
    clip = synthetic.make_clip(3, language="en", speaker=1, emotion="neutral", size=128, render=False)
    prepared = pipeline.prepare_clip(clip.to_record())
    # Moving the whole face in-plane leaves the pose-free mouth unchanged.
    pose = np.array([0.2, 0.3, 0.1, -0.2], np.float32)
    moved = kp.compose_pose(pose, prepared["keypoints"])
    np.testing.assert_allclose(pipeline.pose_free_mouth(moved, prepared["reference"]), prepared["mouth"], atol=1e-4)
    # Audio and keypoints have the same number of frames, 4 mel rows each.
    assert prepared["mel"].shape == (4 * len(prepared["keypoints"]), 80)
    assert len(prepared["energy"]) == len(prepared["keypoints"])


def test_deterministic_for_a_seed(config):
    first = take(pipeline.window_batches(config, "train", seed=1), 4)
    again = take(pipeline.window_batches(config, "train", seed=1), 4)
    other = take(pipeline.window_batches(config, "train", seed=2), 4)
    assert_same_batches(first, again)
    assert any(not np.array_equal(a["keypoints"], b["keypoints"]) for a, b in zip(first, other))


def test_resumed_iterator_continues_on_the_same_batches(config):
    iterator = pipeline.window_batches(config, "train", seed=0)
    take(iterator, 3)  # past the end of the first epoch (6 clips = 1.5 batches)
    state = iterator.get_state()
    expected = take(iterator, 3)
    resumed = pipeline.window_batches(config, "train", seed=0)
    resumed.set_state(state)
    assert_same_batches(take(resumed, 3), expected)


def test_processes_read_disjoint_halves(config):
    whole = next(pipeline.window_batches(config, "train", seed=0))
    halves = [next(pipeline.window_batches(config, "train", seed=0, process_index=i, process_count=2))
              for i in range(2)]
    assert all(h["mel"].shape[0] == 2 for h in halves)
    references = [{r.tobytes() for r in h["reference"]} for h in halves]
    assert not references[0] & references[1]
    assert whole["mel"].shape[0] == 4


def test_eval_split_is_held_out_fixed_and_finite(config):
    first = list(pipeline.window_batches(config, "eval", seed=0))
    again = list(pipeline.window_batches(config, "eval", seed=0))
    assert 1 <= len(first) <= 2  # 4 clips x 2 windows / batch 4
    assert_same_batches(first, again)
    train_plan = pipeline.synthetic_plan(config.data, "train", 0)
    eval_plan = pipeline.synthetic_plan(config.data, "eval", 0)
    assert not {p["speaker"] for p in train_plan} & {p["speaker"] for p in eval_plan}
    assert not {p["text"] for p in train_plan} & {p["text"] for p in eval_plan}
    assert "nl" in {p["language"] for p in eval_plan} and "nl" not in {p["language"] for p in train_plan}


def test_corrupt_record_is_skipped_and_counted(tmp_path, caplog):
    good = [records.encode_clip(synthetic.make_clip(s, language="en", size=128, render=False).to_record())
            for s in range(3)]
    records.write_shards(tmp_path / "shards", good[:2] + [b"\x00garbage bytes, not msgpack\xff" * 4] + good[2:],
                         num_shards=1)
    config = small_config(tmp_path / "cache", source="records", path=str(tmp_path / "shards"))
    config.train.batch_size = 3
    maker = pipeline.WindowMaker(window=8, max_shift=4)
    batches = take(pipeline.window_batches(config, "train", seed=0, maker=maker), 4)
    assert all(b["mel"].shape[0] == 3 for b in batches)
    assert maker.skipped >= 1
    assert "corrupt record" in caplog.text
    assert len(pipeline.load_clips(config, "train")) == 3


def test_a_file_that_is_not_array_record_is_named(tmp_path):
    bad = tmp_path / "clips.array_record-00000-of-00001"
    bad.write_bytes(b"this is not an ArrayRecord file" * 10)
    config = small_config(tmp_path / "cache", source="records", path=str(tmp_path))
    with pytest.raises(ValueError, match="not a readable ArrayRecord file"):
        pipeline.window_batches(config, "train", seed=0)


def test_records_source_needs_a_path(tmp_path):
    config = small_config(tmp_path / "cache", source="records")
    with pytest.raises(ValueError, match="data.path is empty"):
        pipeline.window_batches(config, "train", seed=0)
