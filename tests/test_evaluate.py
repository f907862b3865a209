"""Evaluation metrics, baselines, judges and reports on hand-made inputs with known answers."""

import json

import ml_collections
import numpy as np
import pytest
import skimage.metrics

from t2v import evaluate
from t2v import keypoints as kp
from t2v.data import references
from t2v.errors import InputError
from t2v.evaluate import baselines, judges, metrics, report


def reference():
    return kp.FRONTAL_TEMPLATE.astype(np.float32)


def talking(opening, pose=None):
    """The template with its mouth opened to `opening [T]` and moved by `pose [T, 4]`."""
    points = evaluate.open_mouth(reference(), opening)
    return points if pose is None else kp.compose_pose(pose.astype(np.float32), points)


def wavy(frames, period, phase=0.0, scale=1.0):
    return scale * np.sin(2 * np.pi * (np.arange(frames) / period + phase))


def test_open_mouth_reaches_the_asked_opening():
    opening = 0.05 + 0.1 * np.abs(wavy(40, 9))
    np.testing.assert_allclose(kp.mouth_opening(talking(opening)), opening, atol=1e-5)


def test_pearson_and_lag():
    x = wavy(100, 13)
    assert evaluate.pearson(x, 2 * x + 3) == pytest.approx(1.0)
    assert evaluate.pearson(x, -x) == pytest.approx(-1.0)
    assert evaluate.pearson(x, np.zeros(100)) == 0.0
    signal = np.random.default_rng(0).normal(size=120)
    late = np.concatenate([np.zeros(3), signal[:-3]])  # 3 frames late
    assert evaluate.best_lag(late, signal) == 3
    assert evaluate.best_lag(signal, signal) == 0


def test_clip_metrics_of_truth_and_of_the_static_baseline():
    frames = 60
    opening = 0.05 + 0.1 * np.abs(wavy(frames, 11))
    pose = np.stack([0.02 * wavy(frames, 40), 0.05 * wavy(frames, 30), 0.03 * wavy(frames, 50), np.zeros(frames)], -1)
    clip = {"keypoints": talking(opening, pose), "reference": reference(), "energy": opening}
    perfect = metrics.mouth_metrics(clip["keypoints"], clip["keypoints"], clip["reference"])
    assert perfect["mouth_corr"] == pytest.approx(1.0) and perfect["lmd"] == 0.0 and perfect["mouth_lag"] == 0
    static = metrics.mouth_metrics(baselines.static_baseline(clip), clip["keypoints"], clip["reference"])
    assert static["mouth_corr"] == 0.0 and static["lmd_mouth"] > 0.01 and static["identity_err"] < 1e-6
    # lmd_mouth ignores head pose: the right lips on a still head score perfectly.
    still = metrics.mouth_metrics(talking(opening), clip["keypoints"], clip["reference"])
    assert still["lmd_mouth"] < 1e-4 and still["lmd"] > 0.01 and still["mouth_corr"] == pytest.approx(1.0)


def test_energy_baseline_fits_the_training_clips():
    clips = []
    for i in range(3):
        energy = np.abs(wavy(50, 7 + i, phase=0.1 * i))
        clips.append({"keypoints": talking(0.3 * energy + 0.02), "reference": reference(), "energy": energy})
    a, b = evaluate.fit_energy_to_opening(clips)
    assert a == pytest.approx(0.3, abs=1e-3) and b == pytest.approx(0.02, abs=1e-3)
    generated = evaluate.energy_baseline(clips[0], (a, b))
    np.testing.assert_allclose(generated, clips[0]["keypoints"], atol=1e-4)


def test_pose_diversity_and_pose_follow():
    frames = 50
    opening = np.full(frames, 0.05)
    pose = np.stack([0.02 * wavy(frames, 20), 0.1 * wavy(frames, 17), 0.05 * wavy(frames, 23), 0.04 * wavy(frames, 29)], -1)
    source = talking(opening, pose)
    same = np.stack([source, source])
    assert evaluate.pose_diversity(same, reference()) == pytest.approx(0.0, abs=1e-7)
    varied = np.stack([source, talking(opening, -pose)])
    assert evaluate.pose_diversity(varied, reference()) > 0.01
    # Another face following the source's pose follows it perfectly; a still one not at all.
    other_reference = reference() * 1.1
    follower = kp.compose_pose(pose.astype(np.float32), np.repeat(other_reference[None], frames, 0))
    assert evaluate.pose_follow(follower, other_reference, source, reference()) == pytest.approx(1.0, abs=1e-3)
    assert evaluate.pose_follow(np.repeat(other_reference[None], frames, 0), other_reference,
                                source, reference()) == 0.0


def test_missing_workdir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluate.evaluate(tmp_path / "nothing")


def test_psnr_and_ssim_agree_with_scikit_image():
    rng = np.random.default_rng(0)
    target = rng.random((40, 36, 3))
    noisy = np.clip(target + 0.08 * rng.normal(size=target.shape), 0, 1)
    expected = skimage.metrics.structural_similarity(noisy, target, data_range=1.0, channel_axis=-1,
                                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(noisy, target) == pytest.approx(expected, abs=1e-6)
    assert metrics.psnr(noisy, target) == pytest.approx(
        skimage.metrics.peak_signal_noise_ratio(target, noisy, data_range=1.0), abs=1e-6)
    assert metrics.ssim(target, target) == pytest.approx(1.0)


def test_blinks_and_audio_pose_correlation():
    frames = 250  # 10 s
    points = np.repeat(reference()[None], frames, 0).copy()
    upper, lower = [37, 38, 43, 44], [41, 40, 47, 46]
    for start in (30, 120, 200):  # three blinks: lids meet for 4 frames
        middle = (points[start, upper, 1] + points[start, lower, 1]) / 2
        points[start : start + 4, upper, 1] = middle
        points[start : start + 4, lower, 1] = middle
    assert metrics.blink_rate(points) == pytest.approx(3 * 6.0)  # 3 in 10 s = 18 a minute
    energy = np.abs(wavy(frames, 37))
    speed = np.cumsum(energy) * 0.01  # angle grows faster where energy is high
    pose = np.stack([np.zeros(frames), speed, np.zeros(frames), np.zeros(frames)], -1)
    moving = kp.compose_pose(pose.astype(np.float32), np.repeat(reference()[None], frames, 0))
    assert metrics.audio_pose_correlation(moving, reference(), energy) > 0.9


def test_sync_distance_and_confidence_favour_a_sharp_peak():
    offsets = np.arange(-5, 6)
    sharp = np.where(offsets == 0, 0.9, 0.1)[None].repeat(3, 0)
    flat = np.full((3, 11), 0.5)
    sharp_distance, sharp_confidence = metrics.sync_distance_confidence(sharp)
    flat_distance, flat_confidence = metrics.sync_distance_confidence(flat)
    assert sharp_distance == pytest.approx(0.1) and sharp_confidence == pytest.approx(0.8)
    assert flat_confidence == 0.0 and flat_distance == pytest.approx(0.5)


def test_retrieval_copies_the_mouth_of_the_closest_audio():
    rng = np.random.default_rng(1)
    frames = 60
    clips = []
    for i in range(2):
        mel = rng.normal(size=(4 * frames, 80)).astype(np.float32)
        opening = 0.05 + 0.1 * np.abs(wavy(frames, 9 + i))
        points = talking(opening)
        from t2v.data.pipeline import pose_free_mouth

        clips.append({"mel": mel, "keypoints": points, "reference": reference(),
                      "mouth": pose_free_mouth(points, reference())})
    retrieval = baselines.RetrievalBaseline(clips)
    # A query with the second clip's audio gets the second clip's mouth back, frame for frame.
    query = {**clips[1], "reference": reference()}
    np.testing.assert_array_equal(retrieval.nearest(clips[1]["mel"], frames), np.arange(frames) + frames)
    np.testing.assert_allclose(kp.mouth_opening(retrieval(query)), kp.mouth_opening(clips[1]["keypoints"]), atol=1e-5)


def test_source_pose_baseline_follows_the_source_exactly():
    frames = 40
    pose = np.stack([0.02 * wavy(frames, 20), 0.1 * wavy(frames, 17), 0.05 * wavy(frames, 23), 0.04 * wavy(frames, 29)], -1)
    source = {"keypoints": talking(np.full(frames, 0.05), pose), "reference": reference()}
    clip = {"keypoints": talking(np.full(frames, 0.05)), "reference": reference() * 1.05, "energy": np.ones(frames)}
    copied = baselines.source_pose_baseline(clip, (0.0, 0.05), source)
    assert metrics.pose_follow(copied, clip["reference"], source["keypoints"], source["reference"]) > 0.99


def test_the_detected_reference_is_a_pinned_frame_of_the_clip():
    points = np.random.default_rng(2).normal(size=(50, 68, 2)).astype(np.float32)
    clip = {"clip_id": "synthetic-7", "neutral_keypoints": points[0] * 0}
    detected, index = references.reference_keypoints(clip, points, "detected")
    assert index == references.reference_frame_index("synthetic-7", 50)
    np.testing.assert_array_equal(detected, points[index])
    assert references.reference_keypoints(clip, points, "detected")[1] == index  # pinned
    neutral, none = references.reference_keypoints(clip, points, "neutral")
    assert none is None and not neutral.any()
    with pytest.raises(ValueError, match="data.reference"):
        references.reference_keypoints(clip, points, "smiling")


def fake_sync_workdir(path, seed, speaker_offset):
    path.mkdir(parents=True)
    config = {"task": "sync", "seed": seed, "data": {"source": "synthetic", "train_speaker_offset": speaker_offset,
                                                     "train_speakers": 16, "train_clips": 96, "max_shift": 15},
              "model": {"sync": {"window": 8}}}
    (path / "config.json").write_text(json.dumps({"config": config}))
    return ml_collections.ConfigDict(config)


def test_the_loss_expert_is_refused_as_judge_in_one_line(tmp_path):
    fake_sync_workdir(tmp_path / "sync", 0, 0)
    model_config = ml_collections.ConfigDict({"task": "motion", "model": {"sync_workdir": str(tmp_path / "sync")}})
    with pytest.raises(InputError) as error:
        judges.load_sync_judge(str(tmp_path / "sync") + "/", tmp_path / "motion", model_config)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "sync") in message and str(tmp_path / "motion") in message


def test_judge_provenance_says_whether_it_stands_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(judges.checkpoint, "saved_steps", lambda workdir: [500])
    loss = fake_sync_workdir(tmp_path / "sync", 0, 0)
    apart = judges.provenance(str(tmp_path / "judge"), fake_sync_workdir(tmp_path / "judge", 1, 1000), loss)
    assert apart["disjoint_from_loss_expert"] and apart["train_speakers"] == [1000, 1015]
    same = judges.provenance(str(tmp_path / "twin"), fake_sync_workdir(tmp_path / "twin", 1, 8), loss)
    assert not same["disjoint_from_loss_expert"]  # speakers 8..15 overlap the loss expert's


def test_compare_names_the_strongest_baseline():
    result = {"model": {"mouth_corr": 0.8, "lmd": 0.05},
              "baselines": {"static": {"mouth_corr": 0.0, "lmd": 0.04}, "retrieval": {"mouth_corr": 0.6, "lmd": 0.07}}}
    out = evaluate.compare(result, "mouth_corr")
    assert out["strongest_baseline"] == {"mouth_corr": "retrieval", "lmd": "static"}
    assert out["headline"] == {"metric": "mouth_corr", "strongest_baseline": "retrieval", "model_beats_it": True}


def test_report_is_one_offline_page_with_its_plots(tmp_path):
    frames = 30
    truth = talking(0.05 + 0.1 * np.abs(wavy(frames, 9)))
    trace = {"clip_id": "c0", "mouth_opening": {"model": kp.mouth_opening(truth).tolist(),
                                                "ground_truth": kp.mouth_opening(truth).tolist()},
             "head_pose": {"model": metrics.head_pose(truth, reference()).tolist(),
                           "ground_truth": metrics.head_pose(truth, reference()).tolist()},
             "keypoints": {"model": truth[:4].tolist(), "ground_truth": truth[:4].tolist()}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "eval/lmd": 0.1})
                                                    + "\n" for s in (1, 2, 3)))
    result = {"task": "motion", "step": 3, "num_clips": 1, "clips_sha1": "0" * 40,
              "headline": {"metric": "mouth_corr"}, "model": {"mouth_corr": 0.8, "lmd": 0.05},
              "baselines": {"static": {"mouth_corr": 0.0, "lmd": 0.04}}, "ground_truth": {"mouth_corr": 1.0}}
    page = report.write_report(tmp_path, result, [trace]).read_text()
    assert page.count("data:image/png;base64,") == 5  # curves, bars, mouth, pose, faces
    assert "http" not in page and "<script" not in page


# A renderer this small trains in seconds; the time is in compiling its GAN step and rendering
# the clips once (about 2 minutes on a loaded 2-core machine).
TINY_RENDERER = [
    "--config.model.features=16", "--config.model.encoder_widths=(8, 8)", "--config.model.motion_widths=(8, 16, 16)",
    "--config.model.motion_features=8", "--config.model.decoder_width=8", "--config.model.discriminator_widths=(8, 16)",
    "--config.data.train_clips=4", "--config.data.eval_clips=2", "--config.data.eval_pairs=3",
    "--config.data.augment.enabled=False", "--config.train.batch_size=8", "--config.train.steps=2",
    "--config.train.eval_every=0", "--config.train.checkpoint_every=2", "--config.train.log_every=1",
]


@pytest.mark.slow
def test_eval_of_a_trained_render_workdir_writes_image_metrics_beside_the_copy_baseline(tmp_path):
    from t2v import cli
    from t2v import config as config_lib
    from t2v.train import train_and_evaluate

    workdir = tmp_path / "render"
    train_and_evaluate(config_lib.load("configs/render.py:tiny", [*TINY_RENDERER,
                                                                  f"--config.data.cache_dir={tmp_path / 'cache'}"]), workdir)
    assert cli.main(["eval", "--workdir", str(workdir)]) == 0

    result = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert {"model", "baselines", "ground_truth", "judges", "clips", "config"} <= set(result)
    assert result["task"] == "render" and result["step"] == 2 and result["headline"]["metric"] == "ssim"
    # The pinned pairs: eval_pairs targets of each held-out clip against its frame 0.
    assert len(result["clips"]) == result["num_clips"] == 2 * 3
    assert all(c["reference_frame"] == 0 < c["target_frame"] for c in result["clips"])
    for scores in (result["model"], result["baselines"]["copy"]):
        assert 0 < scores["psnr"] < 60 and -1 <= scores["ssim"] <= 1 and 0 <= scores["mouth_l1"] <= 1
    assert result["ground_truth"] == {"ssim": 1.0, "l1": 0.0, "mouth_l1": 0.0}
    assert result["strongest_baseline"]["ssim"] == "copy"
    assert (workdir / "eval" / "frames.png").is_file() and (workdir / "eval" / "report.html").is_file()
