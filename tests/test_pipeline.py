"""The window pipeline: fields and frames, determinism, exact resume, sharding, corrupt records."""

import numpy as np
import pytest
from scipy import ndimage

from configs import base
from t2v import keypoints as kp
from t2v.data import pipeline, records, synthetic
from t2v.errors import InputError


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


# --------------------------------------------------------------------------- augmentation

GEOMETRY_ONLY = pipeline.PairAugment(brightness=0.0, contrast=0.0, saturation=0.0)


@pytest.fixture(scope="module")
def rendered_record():
    clip = synthetic.make_clip(5, language="en", speaker=2, size=64, render=True)
    return 0, records.encode_clip(clip.to_record())


def to_pixels(points, size):
    return (np.asarray(points) + 1.0) * size / 2


def blob_centre(channel, near):
    """Intensity-weighted centre (x, y), in pixels with centres at i + 0.5, of the blob near `near`."""
    x0, y0 = np.round(near).astype(int)
    ys, xs = np.mgrid[y0 - 5 : y0 + 6, x0 - 5 : x0 + 6]
    weights = channel[ys, xs].astype(np.float64)
    return np.array([(weights * (xs + 0.5)).sum(), (weights * (ys + 0.5)).sum()]) / weights.sum()


def test_warped_dots_sit_on_the_warped_keypoints(rendered_record):
    """A Gaussian dot drawn at each of three keypoints is found at its moved keypoint (+-1 px)."""
    size, chosen = 64, (36, 48, 54)  # an eye corner and the two mouth corners, one colour channel each
    points = pipeline.image_keypoints(synthetic.make_clip(5, language="en", speaker=2, size=size, render=False)
                                      .to_record()["keypoints"][0], size)
    ys, xs = np.mgrid[:size, :size] + 0.5
    image = np.zeros((size, size, 3), np.uint8)
    for channel, k in enumerate(chosen):
        x, y = to_pixels(points[k], size)
        image[..., channel] = np.rint(255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2)))
    example = {"reference_image": image, "target_image": image, "reference_keypoints": points,
               "target_keypoints": points}
    for seed in range(4):
        augmented = GEOMETRY_ONLY(example, np.random.default_rng(seed))
        moved = to_pixels(augmented["target_keypoints"], size)
        assert np.abs(moved - to_pixels(points, size)).max() > 1.0  # the transform really moved them
        for channel, k in enumerate(chosen):
            found = blob_centre(augmented["target_image"][..., channel], moved[k])
            np.testing.assert_allclose(found, moved[k], atol=1.0, err_msg=f"seed {seed}, keypoint {k}")
        np.testing.assert_array_equal(augmented["reference_image"], augmented["target_image"])


def test_augmented_keypoints_stay_on_the_rendered_face(rendered_record):
    """Colours under the eye and mouth keypoints of a rendered frame match before and after the warp,
    far better than under keypoints that were not moved."""
    plain = pipeline.PairMaker(64, 0.3)
    augmented_maker = pipeline.PairMaker(64, 0.3, augment=GEOMETRY_ONLY)
    region = np.arange(36, 68)  # eyes and mouth
    matched, stale = [], []
    for seed in range(4):
        before = plain(rendered_record, np.random.default_rng(seed))
        after = augmented_maker(rendered_record, np.random.default_rng(seed))

        def colours(example, points):  # bilinear, at the exact (sub-pixel) keypoints
            x, y = to_pixels(points[region], 64).T - 0.5
            return np.stack([ndimage.map_coordinates(example["target_image"][..., c].astype(np.float64), [y, x], order=1)
                             for c in range(3)], axis=-1)

        reference_colours = colours(before, before["target_keypoints"])
        matched.append(np.abs(colours(after, after["target_keypoints"]) - reference_colours).mean())
        stale.append(np.abs(colours(after, before["target_keypoints"]) - reference_colours).mean())
        np.testing.assert_array_equal(after["mouth_box"], pipeline.mouth_box(after["target_keypoints"], 0.3))
    assert np.mean(matched) < 5.0 and np.mean(matched) < 0.5 * np.mean(stale), (matched, stale)


def test_pair_augmentation_is_deterministic_and_off_means_unchanged(rendered_record):
    config = base.get_config()
    config.data.augment = dict(enabled=True, scale=0.1, rotation_deg=8.0, translate=0.05,
                               brightness=0.2, contrast=0.2, saturation=0.2)
    maker = pipeline.PairMaker(64, 0.3, augment=pipeline.PairAugment.from_config(config.data))
    first = maker(rendered_record, np.random.default_rng(7))
    again = maker(rendered_record, np.random.default_rng(7))
    other = maker(rendered_record, np.random.default_rng(8))
    assert_same_batches([first], [again])
    assert not np.array_equal(first["reference_keypoints"], other["reference_keypoints"])
    # Off: no augmentation object, and not one random number drawn for it.
    config.data.augment.enabled = False
    assert pipeline.PairAugment.from_config(config.data) is None
    assert pipeline.PairAugment.from_config(base.get_config().data) is None  # no `augment` key at all
    plain = pipeline.PairMaker(64, 0.3)(rendered_record, np.random.default_rng(7))
    clip = pipeline.PairMaker(64, 0.3).decode(rendered_record[1], "test")
    indices = np.random.default_rng(7).integers(len(clip["frames"]), size=2)
    assert_same_batches([plain], [pipeline.PairMaker(64, 0.3).pair(clip, *map(int, indices))])
    config.data.augment.update(enabled=True, scale=1.5)
    with pytest.raises(ValueError, match="data.augment.scale=1.5"):
        pipeline.PairAugment.from_config(config.data)


def test_colour_jitter_is_shared_by_both_frames_and_leaves_keypoints(rendered_record):
    colour_only = pipeline.PairAugment(scale=0.0, rotation_deg=0.0, translate=0.0)
    plain = pipeline.PairMaker(64, 0.3)(rendered_record, np.random.default_rng(3))
    example = {**plain, "target_image": plain["reference_image"]}  # the same frame twice
    jittered = colour_only(example, np.random.default_rng(3))
    np.testing.assert_array_equal(jittered["reference_image"], jittered["target_image"])
    assert np.abs(jittered["reference_image"].astype(int) - plain["reference_image"]).mean() > 1.0
    np.testing.assert_allclose(jittered["target_keypoints"], plain["target_keypoints"], atol=1e-6)


def test_window_keypoint_noise(config):
    noisy_config = small_config(config.data.cache_dir)
    noisy_config.data.augment = dict(enabled=True, keypoint_noise=0.01)
    plain = next(pipeline.window_batches(config, "train", seed=0))
    noisy = next(pipeline.window_batches(noisy_config, "train", seed=0))
    again = next(pipeline.window_batches(noisy_config, "train", seed=0))
    assert_same_batches([noisy], [again])
    jitter = noisy["keypoints"] - plain["keypoints"]
    assert 0.007 < jitter.std() < 0.013
    np.testing.assert_array_equal(noisy["mel"], plain["mel"])  # the same windows, only jittered
    # Pose and pose-free mouth follow the jittered keypoints.
    pose, _ = kp.split_pose(noisy["keypoints"], noisy["reference"][:, None])
    np.testing.assert_allclose(noisy["pose"], pose, atol=1e-5)
    np.testing.assert_allclose(noisy["mouth"], pipeline.pose_free_mouth(noisy["keypoints"], noisy["reference"][:, None]),
                               atol=1e-5)
    # Enabled with zero noise: the batches of no augmentation, bit for bit.
    noisy_config.data.augment.keypoint_noise = 0.0
    assert_same_batches([next(pipeline.window_batches(noisy_config, "train", seed=0))], [plain])


# --------------------------------------------------------------------------- several processes


def noisy(config):
    c = small_config(config.data.cache_dir)
    c.data.augment = dict(enabled=True, keypoint_noise=0.01)
    return c


def test_processes_draw_distinct_windows_that_make_the_single_process_batch(config):
    one_clip = small_config(config.data.cache_dir, train_clips=1)
    one_clip.data.augment = dict(enabled=True, keypoint_noise=0.01)
    # One clip: every element is the same record, so only the random streams tell them apart.
    first, second = (next(pipeline.window_batches(one_clip, "train", seed=0, process_index=i, process_count=2))
                     for i in range(2))
    np.testing.assert_array_equal(first["reference"], second["reference"])
    assert not np.array_equal(first["keypoints"], second["keypoints"])  # other noise
    assert not np.array_equal(first["mel"], second["mel"])  # other window starts
    # The two shares, concatenated in process order, are the one-process global batches.
    whole = take(pipeline.window_batches(noisy(config), "train", seed=0), 3)
    shares = [take(pipeline.window_batches(noisy(config), "train", seed=0, process_index=i, process_count=2), 3)
              for i in range(2)]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*shares)]
    assert_same_batches(joined, whole)


def test_a_process_share_resumes_exactly(config):
    iterator = pipeline.window_batches(noisy(config), "train", seed=0, process_index=1, process_count=2)
    take(iterator, 4)  # past an epoch of this process's share
    state = iterator.get_state()
    expected = take(iterator, 3)
    resumed = pipeline.window_batches(noisy(config), "train", seed=0, process_index=1, process_count=2)
    resumed.set_state(state)
    assert_same_batches(take(resumed, 3), expected)


def test_a_batch_that_does_not_split_over_processes_is_one_line(config):
    with pytest.raises(InputError, match="train.batch_size=4: does not split over 3 processes"):
        pipeline.window_batches(config, "train", seed=0, process_index=0, process_count=3)


def test_eval_batches_are_whole_global_batches_split_over_processes():
    items = list(range(11))
    shares = [list(pipeline.eval_batches(items, lambda i: {"i": i}, global_batch_size=4, process_index=p,
                                         process_count=2)) for p in range(2)]
    assert [len(s) for s in shares] == [2, 2]  # 11 -> 8 kept: two global batches of 4
    joined = [np.concatenate([a["i"], b["i"]]) for a, b in zip(*shares)]
    np.testing.assert_array_equal(np.concatenate(joined), np.arange(8))


def test_a_source_whose_every_record_is_filtered_out_stops_with_one_line(tmp_path):
    short = [records.encode_clip(synthetic.make_clip(s, language="en", size=128, render=False).to_record())
             for s in range(2)]
    records.write_shards(tmp_path / "shards", short, num_shards=1)
    frames = min(len(records.decode_clip(r)["keypoints"]) for r in short)
    config = small_config(tmp_path / "cache", source="records", path=str(tmp_path / "shards"),
                          eval_path=str(tmp_path / "shards"), window=frames + 3, max_shift=0)
    with pytest.raises(InputError, match=rf"data.path=.*shards: all 2 records are filtered out "
                                         rf"\(2 shorter than data.window={frames + 3} frames"):
        next(pipeline.window_batches(config, "train", seed=0))
    with pytest.raises(InputError, match=r"data.eval_path=.*: all 2 records are filtered out"):
        pipeline.window_batches(config, "eval", seed=0)
