"""Speech action units: the geometric proxy moves the right AUs, scores mean what they say,
and AU labels travel from records through the window pipeline into batches (`au [T, 9]`)."""

import numpy as np
import pytest

from au_records import records_folder
from t2v import au
from t2v import config as config_lib
from t2v import keypoints as kp
from t2v.data import pipeline


def column(name):
    return au.SPEECH_AUS.index(name)


def test_the_proxy_reads_mouth_opening_and_smiles():
    neutral = kp.FRONTAL_TEMPLATE.astype(np.float32)
    np.testing.assert_allclose(au.speech_au_proxy(neutral), 0.0, atol=1e-5)
    opened = neutral.copy()
    opened[[55, 56, 57, 58, 59, 65, 66, 67], 1] += 0.15  # the lower lip down (y points down)
    opened[range(5, 12), 1] += 0.2  # and the chin with the jaw
    values = au.speech_au_proxy(opened)
    assert values[column("AU25")] > 0.5 and values[column("AU26")] > 0.5
    assert values[column("AU12")] == 0.0
    smiling = neutral.copy()
    smiling[[48, 54], 1] -= 0.06  # the lip corners up
    assert au.speech_au_proxy(smiling)[column("AU12")] > 0.5
    # Head pose is removed: the same open mouth rotated, scaled and moved reads the same.
    moved = np.asarray(kp.compose_pose(np.array([0.3, 0.2, 1.0, -2.0], np.float32), opened))
    np.testing.assert_allclose(au.speech_au_proxy(moved), values, atol=1e-4)


def test_speech_aus_and_scores():
    labels = np.arange(13, dtype=np.float32)[None].repeat(4, 0)
    assert [kp.AU_NAMES[int(i)] for i in au.speech_aus(labels)[0]] == list(au.SPEECH_AUS)
    with pytest.raises(ValueError):
        au.speech_aus(np.zeros((4, 9)))
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(50, au.NUM_AUS))
    perfect = au.au_scores(truth, truth)
    assert perfect == pytest.approx({"au_err": 0.0, "au_acc": 1.0, "au_f1": 1.0, "au_corr": 1.0})
    constant = au.au_scores(np.full_like(truth, 0.5), truth)
    assert constant["au_corr"] == 0.0 and constant["au_err"] > 0.2
    clip = {"keypoints": kp.FRONTAL_TEMPLATE[None].repeat(3, 0), "reference": kp.FRONTAL_TEMPLATE}
    np.testing.assert_allclose(au.clip_speech_aus(clip), 0.0, atol=1e-5)  # no labels: the proxy
    assert au.clip_speech_aus({**clip, "aus": labels[:3]})[0, 0] == 3.0  # labels: AU10's column


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return records_folder(tmp_path_factory.getbasetemp(), "au-travel", (11, 12), strip_aus=(12,))


def test_au_labels_travel_from_records_into_batches(folder):
    overrides = [f"--config.data.source=records", f"--config.data.path={folder}", f"--config.data.eval_path={folder}",
                 "--config.data.window=8", "--config.train.batch_size=2", "--config.data.eval_windows=1"]
    config = config_lib.load("configs/au.py:cls", overrides)
    batch = next(pipeline.window_batches(config, "eval", seed=0))
    assert batch["au"].shape == (2, 8, au.NUM_AUS) and batch["au"].dtype == np.float32
    clips = pipeline.load_clips(config, "eval")
    assert "aus" in clips[0] and "aus" not in clips[1]
    start = pipeline.eval_windows(clips[0], 8, 0, 1)[0]
    np.testing.assert_array_equal(batch["au"][0], au.speech_aus(clips[0]["aus"][start:start + 8]))
    # A record without labels: the keypoint proxy against the clip's reference.
    start = pipeline.eval_windows(clips[1], 8, 0, 1)[0]
    np.testing.assert_allclose(batch["au"][1], au.speech_au_proxy(clips[1]["keypoints"][start:start + 8],
                                                                 clips[1]["reference"]), atol=1e-6)
    train = next(pipeline.window_batches(config, "train", seed=0))
    assert train["au"].shape == (2, 8, au.NUM_AUS) and np.all((train["au"] >= 0) & (train["au"] <= 1))
    # Other tasks' windows are unchanged: no `au` unless data.action_units.
    config.data.action_units = False
    assert "au" not in next(pipeline.window_batches(config, "eval", seed=0))
