"""The emotion classifier (`emotion_cls`): face crops, labels from MEAD / CREMA-D layouts and
records, a sharded run on 8 devices that resumes on the same batches, a frozen classifier."""

import json

import jax
import numpy as np
import pytest

from t2v import config as config_lib
from t2v import train
from t2v.data import records, synthetic
from t2v.tasks import emotion_cls


def micro_config(cache_dir, *overrides):
    return config_lib.load("configs/emotion_cls.py:tiny", [
        "--config.data.size=32", "--config.data.crop=32", "--config.model.classifier.widths=(8, 8, 8)",
        "--config.data.train_clips=8", "--config.data.eval_clips=4", "--config.data.eval_frames=2",
        "--config.train.steps=4", "--config.train.batch_size=8", "--config.train.log_every=1",
        "--config.train.eval_every=4", "--config.train.eval_batches=1", "--config.train.checkpoint_every=2",
        f"--config.data.cache_dir={cache_dir}", *overrides])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "t2v-cache"


def test_face_crop_frames_a_synthetic_face_as_it_was_rendered():
    clip = synthetic.make_clip(2, language="en", speaker=1, emotion="happy", size=64)
    box = emotion_cls.crop_box(clip.keypoints[0])
    side = box[2] - box[0]
    assert side == pytest.approx(box[3] - box[1]) and 40 < side < 90  # the jaw is 60% of a 64 px frame
    crop = emotion_cls.face_crop(clip.frames[0], box, 32)
    assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8 and crop.std() > 10
    outside = emotion_cls.face_crop(clip.frames[0], box + np.array([-40, 0, -40, 0]), 32)  # off the frame: black
    assert outside.shape == (32, 32, 3) and outside[:, 0].max() == 0


def test_mead_and_crema_d_labels_are_classifier_classes(tmp_path):
    from data_pipelines import layouts

    for name in ("M003/video/front/happy/level_2/001.mp4", "M003/video/front/surprised/level_3/002.mp4",
                 "W009/video/front/neutral/level_1/001.mp4", "W009/video/front/contempt/level_1/001.mp4",
                 "VideoFlash/1001_DFA_ANG_XX.flv", "VideoFlash/1002_IEO_DIS_HI.flv",
                 "VideoFlash/1003_TIE_FEA_LO.flv", "VideoFlash/1004_MTI_SAD_MD.flv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    mead = [s.labels["emotion"] for s in layouts.list_clips("mead", tmp_path)]
    crema = [s.labels["emotion"] for s in layouts.list_clips("crema_d", tmp_path)]
    assert sorted(mead) == ["contempt", "happy", "neutral", "surprised"]
    assert sorted(crema) == ["angry", "disgusted", "fearful", "sad"]
    assert set(mead + crema) - set(emotion_cls.EMOTION_INDEX) == {"contempt"}  # skipped by FrameMaker, counted


def test_frame_maker_labels_records_and_skips_unknown_emotions():
    clip = synthetic.make_clip(4, language="en", speaker=2, emotion="sad", size=32).to_record()
    maker = emotion_cls.FrameMaker(32)
    example = maker((0, records.encode_clip(clip)), np.random.default_rng(0))
    assert example["image"].shape == (32, 32, 3) and example["label"] == synthetic.EMOTIONS.index("sad")
    assert maker((1, records.encode_clip({**clip, "emotion": "contempt"})), np.random.default_rng(0)) is None
    assert "'contempt'" in maker.skip_summary()


@pytest.mark.slow  # two runs of the loop compiled for 8 devices
def test_sharded_training_resumes_on_the_same_batches_and_loads_frozen(tmp_path, cache_dir):
    full = train.train_and_evaluate(micro_config(cache_dir), tmp_path / "full")
    assert full["step"] == 4 and len(jax.devices()) == 8
    for name in ("train/loss", "train/acc", "eval/acc", "eval/loss"):
        assert np.isfinite(full[name]), name
    assert 0.0 <= full["eval/acc"] <= 1.0
    train.train_and_evaluate(micro_config(cache_dir, "--config.train.steps=2"), tmp_path / "resumed")
    train.train_and_evaluate(micro_config(cache_dir), tmp_path / "resumed")
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if "loss" in r} for run in ("full", "resumed")]
    assert sorted(losses[1]) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses[1][s] for s in range(1, 5)], [losses[0][s] for s in range(1, 5)], rtol=1e-5)

    frozen = emotion_cls.load_classifier(tmp_path / "full")
    crops = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    probabilities = frozen.probabilities(crops)
    assert probabilities.shape == (5, len(synthetic.EMOTIONS))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


def test_judge_variant_differs_in_seed_and_speakers():
    tiny, judge = (config_lib.load(f"configs/emotion_cls.py:{v}") for v in ("tiny", "judge"))
    assert tiny.seed != judge.seed
    assert judge.data.train_speaker_offset >= tiny.data.train_speaker_offset + tiny.data.train_speakers
