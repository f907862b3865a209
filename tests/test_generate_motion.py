"""`t2v generate --motion a2k|pose_lstm|motion`: the checkpoint folder holds a `render/` and a
keypoint task's workdir, and `--motion` picks which drives the face; tiny freshly initialised
workdirs (what is tested is the path, not what a model learnt). Reuses test_generate's fixtures."""

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from t2v import audio, cli, generate, keypoints
from t2v import config as config_lib
from t2v.errors import InputError
from t2v.tasks import get_task

from test_generate import checkpoint, inputs, write_task_workdir  # noqa: F401 (fixtures)

MICRO = {
    "a2k": ["--config.model.audio.features=16", "--config.model.identity.features=16",
            "--config.model.unet.widths=(16, 16)", "--config.model.discriminator.widths=(16, 16)"],
    "pose_lstm": ["--config.model.lstm.hidden=16", "--config.model.lstm.expression_dim=6"],
}


def keypoint_workdir(workdir, task: str) -> None:
    """A freshly initialised `task` workdir; init sees a face (the template, a little jittered:
    pose_lstm computes its pose and expression constants from the batch it is given)."""
    config = config_lib.load(f"configs/{task}.py:tiny", MICRO[task])
    face = jnp.asarray(keypoints.FRONTAL_TEMPLATE, jnp.float32)
    jitter = 0.01 * jax.random.normal(jax.random.PRNGKey(1), (1, 8, keypoints.NUM_POINTS, 2))
    batch = {"mel": jnp.zeros((1, 32, 80)), "reference": face[None], "keypoints": face[None, None] + jitter}
    params = nn.meta.unbox(jax.jit(get_task(config).init)(jax.random.PRNGKey(0), batch))
    write_task_workdir(workdir, config, params)


@pytest.fixture(scope="module")
def three_models(checkpoint, tmp_path_factory):  # noqa: F811
    """render/ and motion/ of test_generate's checkpoint, beside fresh a2k/ and pose_lstm/."""
    folder = tmp_path_factory.mktemp("three")
    for name in ("motion", "render"):
        (folder / name).symlink_to(checkpoint / name, target_is_directory=True)
    for task in MICRO:
        keypoint_workdir(folder / task, task)
    return folder


@pytest.mark.parametrize("task", ["a2k", "pose_lstm"])
def test_the_motion_flag_picks_the_keypoint_model(three_models, inputs, tmp_path, task):  # noqa: F811
    out, points = tmp_path / "talk.mp4", tmp_path / "talk.npz"
    assert cli.main(["generate", "--image", str(inputs["photo"]), "--audio", str(inputs["speech"]),
                     "--checkpoint", str(three_models), "--motion", task, "--out", str(out),
                     "--keypoints-out", str(points)]) == 0
    frames = audio.num_video_frames(len(inputs["wave"]))
    generated = np.load(points)["keypoints"]
    assert generated.shape == (frames, keypoints.NUM_POINTS, 2) and np.isfinite(generated).all()
    from t2v import video

    assert video.probe(out)["num_frames"] == frames
    model = generate.TalkingHeadGenerator.from_checkpoint(three_models, motion=task).motion
    assert model.task.config.task == task and not model.follows_source


def test_bad_motion_checkpoints_are_one_line_and_leave_nothing(three_models, checkpoint, inputs,  # noqa: F811
                                                               tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for name in ("render", "pose_lstm"):
        (wrong / name).symlink_to(three_models / name, target_is_directory=True)
    (wrong / "a2k").symlink_to(three_models / "pose_lstm", target_is_directory=True)  # a2k/ of another task
    cases = {
        (checkpoint, "a2k"): "no 'a2k' task workdir",          # motion/ and render/ only
        (wrong, "a2k"): "task 'pose_lstm'; this needs a 'a2k' workdir",
    }
    for (folder, task), text in cases.items():
        out = tmp_path / f"{task}.mp4"
        assert cli.main(["generate", "--image", str(inputs["photo"]), "--audio", str(inputs["speech"]),
                         "--checkpoint", str(folder), "--motion", task, "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and text in error[0], error
        assert not out.exists() and not list(tmp_path.glob(".*mp4*"))
    with pytest.raises(InputError, match="needs the motion model"):
        generate.run(inputs["photo"], inputs["speech"], tmp_path / "follow.mp4", checkpoint=three_models,
                     motion="a2k", pose_from=inputs["speech"], progress=False)
    assert not (tmp_path / "follow.mp4").exists()
