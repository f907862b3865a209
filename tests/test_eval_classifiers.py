"""`t2v eval` of the classifier workdirs (`emotion_cls`, `au_cls`): figures with known answers,
and a few training steps of each scored on held-out labels beside baselines that can win."""

import json

import numpy as np
import pytest

from au_records import records_folder
from t2v import au, evaluate, train
from t2v import config as config_lib
from t2v.data.synthetic import EMOTIONS
from t2v.errors import InputError
from t2v.evaluate import classifiers

K = len(EMOTIONS)


def test_emotion_figures_count_calls_and_expect_a_guessers():
    labels = np.array([0, 0, 0, 1, 2])
    calls = np.eye(K)[[0, 0, 1, 1, 0]]  # 2 of 3 zeros right, the one right, the two called zero
    figures = classifiers.emotion_figures(calls, labels)
    assert figures["acc"] == pytest.approx(3 / 5)
    assert figures["balanced_acc"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert {k for k in figures if k.startswith("acc_")} == {f"acc_{e}" for e in EMOTIONS[:3]}
    assert np.asarray(figures["confusion"])[:3, :3].tolist() == [[2, 1, 0], [0, 1, 0], [1, 0, 0]]
    uniform = np.full((5, K), 1 / K)
    chance = classifiers.emotion_figures(uniform, labels, uniform)
    assert chance["acc"] == pytest.approx(1 / K) and chance["balanced_acc"] == pytest.approx(1 / K)
    assert chance["loss"] == pytest.approx(np.log(K))
    prior = np.zeros(K)
    prior[:2] = 0.75, 0.25
    guessed = classifiers.emotion_figures(np.repeat(prior[None], 5, 0), labels)
    assert guessed["acc"] == pytest.approx((3 * 0.75 + 0.25) / 5) and guessed["acc_" + EMOTIONS[2]] == 0.0
    assert "loss" not in classifiers.emotion_figures(calls, labels, calls)  # a zero on a label: no finite loss


def test_per_au_scores_name_every_speech_au():
    t = np.linspace(0, 1, 20)
    truth = np.zeros((20, au.NUM_AUS))
    truth[:, 0] = t  # only the first AU varies
    predicted = truth.copy()
    predicted[:, 1] = 0.5
    row = classifiers.per_au_scores(predicted, truth)
    first, second = au.SPEECH_AUS[:2]
    assert row[f"au_corr_{first}"] == pytest.approx(1.0) and row[f"au_err_{first}"] == 0.0
    assert row[f"au_err_{second}"] == pytest.approx(0.5) and f"au_corr_{second}" not in row
    assert len([k for k in row if k.startswith("au_err_")]) == au.NUM_AUS


def micro_au_cls(train_folder, eval_folder, *extra):
    return config_lib.load("configs/au.py:cls", [
        "--config.data.source=records", f"--config.data.path={train_folder}", f"--config.data.eval_path={eval_folder}",
        "--config.data.window=8", "--config.train.batch_size=8", "--config.train.steps=2", "--config.train.log_every=1",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=2", "--config.model.classifier.features=8",
        *extra])


@pytest.mark.slow  # trains two steps and evaluates (about a minute on an idle 2-core machine)
def test_eval_scores_an_au_classifier_against_labels_mean_intensity_and_the_proxy(tmp_path, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    train_folder = records_folder(base, "au-train", (21, 22, 23, 24))
    eval_folder = records_folder(base, "au-eval", (31, 32, 33))
    train.train_and_evaluate(micro_au_cls(train_folder, eval_folder), tmp_path / "cls")
    m = evaluate.evaluate(tmp_path / "cls")
    assert json.loads((tmp_path / "cls" / "eval" / "metrics.json").read_text())["task"] == "au_cls"
    assert {"model", "baselines", "ground_truth", "judges", "clips", "config"} <= m.keys()
    names = {"au_err", "au_acc", "au_f1", "au_corr"} | {f"au_err_{a}" for a in au.SPEECH_AUS}
    assert set(m["baselines"]) == {"mean_intensity", "proxy"}
    assert all(names <= values.keys() for values in (m["model"], *m["baselines"].values()))
    assert all(np.isfinite(m["model"][n]) for n in names)
    assert m["baselines"]["mean_intensity"]["au_corr"] == 0.0  # a constant correlates with nothing
    truth = m["ground_truth"]
    assert truth["scored"] is False and truth["clips_with_record_labels"] == 3
    assert not any(isinstance(v, float) for v in truth.values())  # labels are not scored against themselves
    assert m["judges"] == {} and len(m["clips"]) == 3 and m["headline"]["metric"] == "au_corr"
    assert "Ground truth: the labels themselves" in (tmp_path / "cls" / "eval" / "report.html").read_text()


def micro_emotion_cls(cache_dir, *extra):
    return config_lib.load("configs/emotion_cls.py:tiny", [
        "--config.data.size=32", "--config.data.crop=32", "--config.model.classifier.widths=(8, 8, 8)",
        "--config.data.train_clips=8", "--config.data.eval_clips=4", "--config.data.eval_frames=2",
        "--config.train.steps=2", "--config.train.batch_size=8", "--config.train.log_every=1",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=2", f"--config.data.cache_dir={cache_dir}",
        *extra])


@pytest.mark.slow  # renders 12 small clips with speech and trains two steps
def test_eval_scores_an_emotion_classifier_on_unseen_speakers_beside_majority_prior_and_chance(tmp_path,
                                                                                                tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "t2v-cache"
    train.train_and_evaluate(micro_emotion_cls(cache), tmp_path / "cls")
    m = evaluate.evaluate(tmp_path / "cls")
    assert set(m["baselines"]) == {"majority", "prior", "chance"} and m["classes"] == list(EMOTIONS)
    assert m["frames_scored"] == 8 and len(m["clips"]) == 4 and m["speakers_seen_in_training"] == 0
    assert sum(m["training_label_counts"].values()) == 8
    for values in (m["model"], *m["baselines"].values()):
        assert 0.0 <= values["acc"] <= 1.0 and np.asarray(values["confusion"]).sum() == pytest.approx(8)
    assert m["baselines"]["chance"]["acc"] == pytest.approx(1 / K)
    assert m["ground_truth"]["scored"] is False and m["headline"]["metric"] == "acc"
    page = (tmp_path / "cls" / "eval" / "report.html").read_text()
    assert "Confusion of the held-out frames" in page and "http" not in page

    frameless = records_folder(tmp_path_factory.getbasetemp(), "au-eval", (31, 32, 33))  # keypoints, no frames
    config = micro_emotion_cls(cache, "--config.data.source=records", f"--config.data.path={frameless}",
                               f"--config.data.eval_path={frameless}")
    with pytest.raises(InputError, match="no clip with frames and an emotion label") as error:
        evaluate.evaluate(tmp_path / "cls", config, report=False)
    assert "\n" not in str(error.value)
