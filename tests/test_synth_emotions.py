"""`t2v synth --emotions`: which emotions are made, checked in one line; the same clip with
another emotion (`synthetic.with_emotion`) keeps its lips and pose."""

import json

import numpy as np
import pytest

from t2v import cli
from t2v import keypoints as kp
from t2v.data import synthetic
from t2v.errors import InputError


def test_seven_emotions_with_distinct_faces():
    assert len(synthetic.EMOTIONS) >= 7
    assert {"neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted"} <= set(synthetic.EMOTIONS)
    shapes = {name: tuple(sorted(synthetic.EMOTION_EXPRESSIONS[name].items())) for name in synthetic.EMOTIONS}
    assert len(set(shapes.values())) == len(synthetic.EMOTIONS)


def test_parse_emotions_names_the_valid_ones():
    assert synthetic.parse_emotions(" Neutral,happy,happy ", "x") == ("neutral", "happy")
    with pytest.raises(InputError, match=r"--emotions: unknown emotion 'joyful'; valid: neutral,happy,"):
        synthetic.parse_emotions("neutral,joyful", "--emotions")
    with pytest.raises(InputError, match="no emotion given"):
        synthetic.parse_emotions(" , ", "--emotions")


def test_synth_makes_only_the_given_emotions_in_turn(tmp_path):
    assert cli.main(["synth", "--out", str(tmp_path), "--clips", "4", "--langs", "en", "--format", "records",
                     "--emotions", "neutral,surprised", "--config", "configs/synth.py:tiny"]) == 0
    summary = json.loads((tmp_path / "synth.json").read_text())
    assert summary["emotions"] == {"neutral": 2, "surprised": 2}


def test_synth_rejects_an_unknown_emotion_in_one_line(tmp_path, capsys):
    assert cli.main(["synth", "--out", str(tmp_path), "--emotions", "neutral,joy"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "'joy'" in error and "valid: neutral,happy" in error
    assert not (tmp_path / "synth.json").exists()


def test_with_emotion_keeps_lips_and_pose_and_round_trips():
    clip = synthetic.make_clip(5, language="en", speaker=3, emotion="neutral", size=64)
    happy = synthetic.with_emotion(clip, "happy", 1.0)
    assert happy.emotion == "happy" and happy.emotion_intensity == 1.0 and happy.frames.shape == clip.frames.shape
    np.testing.assert_array_equal(happy.pose, clip.pose)
    np.testing.assert_array_equal(happy.audio, clip.audio)
    # The smile moves the mouth corners and the lids; the lip gap over time stays the clip's.
    assert np.abs(happy.keypoints - clip.keypoints).max() > 1.0
    opening = np.corrcoef(kp.mouth_opening(happy.keypoints), kp.mouth_opening(clip.keypoints))[0, 1]
    assert opening > 0.95
    back = synthetic.with_emotion(happy, "neutral")
    np.testing.assert_allclose(back.keypoints, clip.keypoints, atol=0.05)  # up to clipping at 1
    assert back.emotion_intensity == 0.0
