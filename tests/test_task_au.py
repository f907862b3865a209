"""The au task: any length generates chunk by chunk exactly, the AU-classifier loss reaches the
generator only, `t2v eval` refuses the loss classifier as judge, and (slow) a sharded step on 8
devices resumes exactly and evaluates with an independent AU judge."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from au_records import records_folder
from t2v import au, evaluate, train
from t2v import config as config_lib
from t2v.errors import InputError
from t2v.evaluate.au import load_au_judge
from t2v.models.au import build_au_model, generate_chunked
from t2v.tasks import get_task
from t2v.tasks.au_cls import AUClassifierTask, FrozenClassifier


def small_model(au_driving=True):
    return build_au_model({"features": 8, "num_layers": 1, "num_heads": 2, "window": 3},
                          {"features": 8, "hidden_features": (8,)}, {"hidden": 8},
                          {"features": 8, "dilations": (1, 2, 4), "num_heads": 2, "window": 3}, au_driving)


def test_any_length_generation_is_chunked_exactly():
    model = small_model()
    frames = 100  # three chunks of 37: the first, a middle and the last, each with its context
    mel = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4 * frames, 80)), jnp.float32)
    reference = jnp.asarray(np.random.default_rng(1).normal(size=(2, 68, 2)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), mel[:, :64], reference)
    one_pass = jax.jit(lambda m: model.apply(variables, m, reference))(mel)
    chunked = generate_chunked(model, variables, mel, reference, 37)
    np.testing.assert_allclose(chunked["keypoints"], np.asarray(one_pass["keypoints"]), atol=1e-5)
    np.testing.assert_allclose(chunked["au"], np.asarray(one_pass["au"]), atol=1e-5)
    assert one_pass["au"].shape == (2, frames, au.NUM_AUS)


def micro_overrides(train_folder, eval_folder, *extra):
    return [f"--config.data.source=records", f"--config.data.path={train_folder}",
            f"--config.data.eval_path={eval_folder}", "--config.data.window=8", "--config.train.batch_size=8",
            "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.checkpoint_every=2", *extra]


def micro_au(train_folder, eval_folder, *extra):
    return config_lib.load("configs/au.py:tiny", micro_overrides(
        train_folder, eval_folder, "--config.model.audio.features=16", "--config.model.identity.features=16",
        "--config.model.au_head.hidden=16", "--config.model.fusion.features=16", "--config.model.fusion.window=2",
        *extra))


def fake_batch(frames=8, batch=2):
    rng = np.random.default_rng(0)
    reference = np.asarray(au.kp.FRONTAL_TEMPLATE, np.float32)[None].repeat(batch, 0)
    keypoints = reference[:, None] + 0.02 * rng.normal(size=(batch, frames, 68, 2)).astype(np.float32)
    from t2v.data.pipeline import pose_free_mouth

    return {"mel": rng.normal(size=(batch, 4 * frames, 80)).astype(np.float32), "reference": reference,
            "keypoints": keypoints, "mouth": pose_free_mouth(keypoints, reference[:, None]).astype(np.float32),
            "au": rng.uniform(size=(batch, frames, au.NUM_AUS)).astype(np.float32)}


@pytest.mark.slow  # compiles the loss and its gradient through the frozen classifier
def test_the_au_classifier_loss_reaches_the_generator_and_ablation_drops_the_au_loss():
    config = micro_au("unused", "unused")
    task = get_task(config)
    batch = fake_batch()
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    cls_config = config_lib.load("configs/au.py:cls", ["--config.model.classifier.features=8"])
    cls_task = AUClassifierTask(cls_config)
    task.classifier = FrozenClassifier(cls_task, nn.meta.unbox(cls_task.init(jax.random.PRNGKey(1), batch)), "x")
    rng, step = jax.random.PRNGKey(2), jnp.asarray(0)
    loss, metrics = task.loss(params, batch, rng, step)
    assert np.isfinite(float(loss)) and {"au", "au_cls", "l1", "mouth_shape", "velocity"} <= metrics.keys()
    grads = jax.grad(lambda p: task.loss(p, batch, rng, step)[1]["au_cls"])(params)
    norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree))))  # noqa: E731
    assert norm(grads["fusion"]) > 0 and norm(grads["au_head"]) > 0  # through the AUs that drive the fusion
    assert task.au_weight == 1.0
    ablation = get_task(config_lib.load("configs/au.py:tiny,no_au"))
    assert ablation.au_weight == 0.0 and not ablation.model.au_driving


def test_eval_refuses_the_loss_classifier_as_judge(tmp_path):
    config = micro_au("unused", "unused", f"--config.model.au_classifier_workdir={tmp_path / 'cls'}")
    with pytest.raises(InputError, match="never have been its loss"):
        load_au_judge(str(tmp_path / "cls"), tmp_path / "au", config)
    with pytest.raises(InputError, match="no trained workdir"):
        load_au_judge(str(tmp_path / "nothing"), tmp_path / "au", config)
    (tmp_path / "sync").mkdir()
    sync = config_lib.load("configs/sync.py:tiny")
    (tmp_path / "sync" / "config.json").write_text(json.dumps({"config": sync.to_dict()}))
    with pytest.raises(InputError, match="expected an 'au_cls' workdir"):
        load_au_judge(str(tmp_path / "sync"), tmp_path / "au", config)


@pytest.mark.slow  # five short runs of the loop on 8 devices and one evaluation
@pytest.mark.skip(reason="not yet seen passing: written when the 2-core machine ran at load ~30; run it with -p no:skip after removing this mark")
def test_sharded_training_resumes_exactly_and_evaluates_under_an_independent_judge(tmp_path, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    train_folder = records_folder(base, "au-train", (21, 22, 23, 24))
    eval_folder = records_folder(base, "au-eval", (31, 32, 33))  # 9 eval windows: one batch of 8
    for variant in ("cls", "judge"):
        train.train_and_evaluate(config_lib.load(f"configs/au.py:{variant}", micro_overrides(
            train_folder, eval_folder, "--config.train.steps=2", "--config.model.classifier.features=8")),
            tmp_path / variant)
    loss = f"--config.model.au_classifier_workdir={tmp_path / 'cls'}"
    full = train.train_and_evaluate(micro_au(train_folder, eval_folder, loss, "--config.train.steps=4"), tmp_path / "full")
    assert full["step"] == 4 and len(jax.devices()) == 8
    assert all(np.isfinite(full[f"train/{k}"]) for k in ("loss", "au", "au_cls", "l1"))
    train.train_and_evaluate(micro_au(train_folder, eval_folder, loss, "--config.train.steps=2"), tmp_path / "resumed")
    train.train_and_evaluate(micro_au(train_folder, eval_folder, loss, "--config.train.steps=4"), tmp_path / "resumed")
    losses = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if "loss" in r} for run in ("full", "resumed")]
    assert sorted(losses[1]) == [1, 2, 3, 4]
    np.testing.assert_allclose([losses[1][s] for s in range(1, 5)], [losses[0][s] for s in range(1, 5)], rtol=1e-5)

    config = micro_au(train_folder, eval_folder, loss, "--config.train.steps=4",
                      f"--config.eval.au_judge_workdir={tmp_path / 'judge'}")
    m = evaluate.evaluate(tmp_path / "full", config, report=False)
    assert json.loads((tmp_path / "full" / "eval" / "metrics.json").read_text())["task"] == "au"
    names = {"au_err", "au_acc", "au_f1", "au_corr", "proxy_au_corr", "mouth_corr", "lmd_mouth"}
    assert names <= m["model"].keys() and names <= m["ground_truth"].keys()
    assert {"au_head_au_err", "au_head_au_corr"} <= m["model"].keys()
    assert {"static", "energy", "retrieval", "au_prior"} == set(m["baselines"])
    assert all(names <= m["baselines"][b].keys() for b in ("static", "energy", "retrieval"))
    assert m["judges"]["au"]["disjoint_from_loss_classifier"] and m["headline"]["metric"] == "au_corr"
