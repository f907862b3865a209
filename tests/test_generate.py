"""`t2v generate`: a photo + speech -> an mp4 of the photo's size and framing, with tiny
freshly initialised checkpoints (what is tested is the path, not what a model learnt)."""

import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import skimage.data
import soundfile
from PIL import Image

from t2v import audio, generate, keypoints, video
from t2v import checkpoint as checkpoint_lib
from t2v import config as config_lib
from t2v.data import face_render, speech, synthetic
from t2v.landmarks import LandmarkDetector
from t2v.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent

MICRO_MOTION = ["--config.model.audio.features=16", "--config.model.vae.features=16",
                "--config.model.vae.latent_dim=4", "--config.model.prior.hidden_features=16"]
MICRO_RENDER = ["--config.data.size=64", "--config.model.features=16", "--config.model.encoder_widths=(8, 8)",
                "--config.model.motion_widths=(8, 16, 16)", "--config.model.motion_features=8",
                "--config.model.decoder_width=8", "--config.model.discriminator_widths=(8, 16)"]
EXAMPLES = {
    "motion": {"mel": jnp.zeros((1, 32, 80)), "reference": jnp.zeros((1, 68, 2)), "keypoints": jnp.zeros((1, 8, 68, 2))},
    "render": {"reference_image": jnp.zeros((1, 64, 64, 3), jnp.uint8), "reference_keypoints": jnp.zeros((1, 68, 2)),
               "target_keypoints": jnp.zeros((1, 68, 2))},
}


def write_task_workdir(workdir: Path, config, params) -> None:
    """A task workdir as `t2v train` leaves it: config.json and an Orbax train-state checkpoint."""
    config_lib.write(config, workdir)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((workdir / "checkpoints" / "1" / "state").absolute(), {"params": params, "ema_params": params})
    checkpointer.wait_until_finished()


def task_config(name: str):
    return config_lib.load(f"configs/{name}.py:tiny", MICRO_MOTION if name == "motion" else MICRO_RENDER)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A demo-style folder: motion/ and render/ task workdirs, freshly initialised."""
    folder = tmp_path_factory.mktemp("demo")
    for name in ("motion", "render"):
        config = task_config(name)
        params = nn.meta.unbox(jax.jit(get_task(config).init)(jax.random.PRNGKey(0), EXAMPLES[name]))
        write_task_workdir(folder / name, config, params)
    return folder


@pytest.fixture(scope="module")
def generator(checkpoint):
    return generate.TalkingHeadGenerator.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    photo = skimage.data.astronaut()
    Image.fromarray(photo).save(folder / "astronaut.png")
    wave = speech.speak("The quick brown fox jumps over the lazy dog.", "en").audio
    soundfile.write(folder / "speech.wav", wave, audio.SAMPLE_RATE)
    landmarks, _ = generate.find_face(LandmarkDetector(), photo, "astronaut")
    return {"photo": folder / "astronaut.png", "speech": folder / "speech.wav", "wave": wave, "image": photo,
            "landmarks": landmarks}


@pytest.fixture(scope="module")
def generated(generator, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    report = generator.generate(inputs["photo"], inputs["speech"], out / "talk.mp4", keypoints_out=out / "talk.npz",
                                overlay=True, seed=3)
    return report, out


# --------------------------------------------------------------------------- geometry


def test_crop_is_data_preparations_crop():
    from data_pipelines import align

    assert generate.FACE_SCALE == align.FACE_SCALE and generate.FACE_CENTRE == align.FACE_CENTRE
    np.testing.assert_array_equal(generate.canonical_face(96), align.canonical_face(96))
    # A clip of a tilted face moving a little: one fixed crop, the mean of the frames' similarities.
    rng = np.random.default_rng(0)
    angle = 0.25 + 0.02 * rng.normal(size=3)
    rotation = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    clip = 90 * keypoints.FRONTAL_TEMPLATE @ np.swapaxes(rotation, 1, 2) + [[[260, 240]], [[262, 238]], [[259, 243]]]
    clip = (clip + rng.normal(size=clip.shape)).astype(np.float32)
    crop = generate.FaceCrop.fit(clip, 96)
    np.testing.assert_allclose(crop.matrix, align.crop_transforms(clip, 96, stabilise_seconds=None)[0], atol=1e-5)
    photo = skimage.data.astronaut()
    theirs = align.crop_frames(photo[None], crop.matrix[None].astype(np.float32), 96)[0]
    assert np.abs(crop.crop(photo).astype(int) - theirs).max() <= 1
    # The clip's stable points land on the canonical face; to_photo undoes to_crop.
    stable = list(keypoints.STABLE)
    assert np.abs(crop.to_crop(clip).mean(0)[stable] - generate.canonical_face(96)[stable]).max() < 2.0
    np.testing.assert_allclose(crop.to_photo(crop.to_crop(clip)), clip, atol=1e-3)


def test_paste_back_puts_the_crop_where_it_came_from_and_nothing_else(inputs):
    photo, landmarks = inputs["image"], inputs["landmarks"]
    crop = generate.FaceCrop.fit(landmarks, 256)
    paste = generate.PasteBack(photo, crop)
    y0, y1, x0, x1 = paste.box

    # The crop pasted back is the photo again over the face (two bilinear resamplings apart).
    face = crop.crop(photo).astype(np.float32)[None] / 255
    (frame,) = [f.copy() for f in paste.frames(paste.regions(jnp.asarray(face)))]
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(frame[outside], photo[outside])
    ys, xs = np.mgrid[: photo.shape[0], : photo.shape[1]]
    mask = generate.crop_mask(crop.to_crop(np.stack([xs, ys], -1).astype(np.float64)), 256)
    assert mask[outside].max() == 0
    np.testing.assert_array_equal(frame[mask == 0], photo[mask == 0])
    assert np.abs(frame[mask == 1].astype(int) - photo[mask == 1]).mean() < 4

    # A white dot at the right eye's outer corner in the crop lands on that corner in the photo.
    corner = crop.to_crop(landmarks[36])
    dot = np.zeros((1, 256, 256, 3), np.float32)
    cx, cy = np.round(corner).astype(int)
    dot[0, cy - 1 : cy + 2, cx - 1 : cx + 2] = 1.0
    black = generate.PasteBack(np.zeros_like(photo), crop)
    (frame,) = [f.copy() for f in black.frames(black.regions(jnp.asarray(dot)))]
    brightest = np.unravel_index(np.argmax(frame.sum(-1)), frame.shape[:2])[::-1]
    assert np.linalg.norm(brightest - landmarks[36]) < 2.5 * crop.photo_pixels_per_crop_pixel


def test_log_mel_in_chunks_is_log_mel(inputs):
    wave = inputs["wave"]
    for length in (len(wave), 640 * 60 + 319, 640 * 60 + 320, 700):  # halves of a frame round up
        np.testing.assert_array_equal(generate.log_mel_in_chunks(wave[:length], chunk_seconds=0.5),
                                      audio.log_mel(wave[:length]))


def test_ping_pong_plays_a_short_source_back_and_forth():
    np.testing.assert_array_equal(generate.ping_pong(9, 4), [0, 1, 2, 3, 2, 1, 0, 1, 2])
    np.testing.assert_array_equal(generate.ping_pong(3, 1), [0, 0, 0])
    np.testing.assert_array_equal(generate.ping_pong(3, 10), [0, 1, 2])


# --------------------------------------------------------------------------- the whole path


def test_the_photo_speaks_with_the_speech_in_its_own_framing(generated, inputs):
    report, out = generated
    wave, photo = inputs["wave"], inputs["image"]
    frames = audio.num_video_frames(len(wave))
    result = video.read_video(out / "talk.mp4")
    assert report.frames == frames and result.frames.shape == (frames, *photo.shape)
    assert report.faces_found == 1 and report.photo_size == (512, 512) and report.renderer == "photo"
    warp = generate.PhotoWarp(photo, inputs["landmarks"])
    assert report.render_size == round(warp.face_px)  # the photo's own face size, not a small render

    # The audio track is the speech: correlated after the codec's alignment.
    n = min(len(result.audio), len(wave)) - 800
    lags = range(-400, 401, 4)
    scores = [np.corrcoef(result.audio[400 + lag : 400 + lag + n - 400], wave[400 : n])[0, 1] for lag in lags]
    assert max(scores) > 0.9, max(scores)

    # Framing kept: outside the warped region every frame is the photo (up to H.264's rounding).
    x0, y0, x1, y1 = warp.box
    far = np.ones(photo.shape[:2], bool)
    far[max(y0 - 16, 0) : y1 + 16, max(x0 - 16, 0) : x1 + 16] = False
    assert np.abs(result.frames[:, far].astype(int) - photo[far]).mean() < 4.0
    assert result.frames[:, far].std(axis=0).mean() < 0.5, result.frames[:, far].std(axis=0).mean()
    # The face moves (the untrained motion model moves it a lot), made of the photo's own pixels.
    face = np.zeros(photo.shape[:2], bool)
    fx0, fy0 = np.floor(inputs["landmarks"].min(0)).astype(int)
    fx1, fy1 = np.ceil(inputs["landmarks"].max(0)).astype(int)
    face[fy0:fy1, fx0:fx1] = True
    assert result.frames[:, face].astype(np.float32).std(axis=0).mean() > 1.0

    # Keypoints in photo pixels, on the photo's face; the overlay draws them.
    with np.load(out / "talk.npz") as saved:
        points = saved["keypoints"]
        assert points.shape == (frames, 68, 2) and points.dtype == np.float32
        np.testing.assert_array_equal(saved["reference"], inputs["landmarks"])
        assert int(saved["fps"]) == 25 and saved["image_size"].tolist() == [512, 512]
    face_size = float(keypoints.face_size(inputs["landmarks"]))
    assert np.linalg.norm(points.mean(0) - inputs["landmarks"], axis=-1).mean() < 0.25 * face_size
    overlay = video.read_video(report.overlay_out)
    assert report.overlay_out == out / "talk_keypoints.mp4" and overlay.frames.shape == result.frames.shape
    assert np.abs(overlay.frames.astype(int) - result.frames).max() > 100  # green lines
    # Nothing but the three outputs: no staged or partial files.
    assert sorted(p.name for p in out.iterdir()) == ["talk.mp4", "talk.npz", "talk_keypoints.mp4"]
    assert set(report.stage_seconds) >= {"face", "audio_features", "motion", "render", "paste_back", "encode"}


def test_the_learned_renderer_stays_available(generator, inputs, tmp_path):
    photo = inputs["image"]
    report = generator.generate(inputs["photo"], inputs["speech"], tmp_path / "learned.mp4", renderer="learned",
                                add_blinks=False)
    assert report.renderer == "learned" and report.render_size == 64
    result = video.read_video(tmp_path / "learned.mp4")
    # Over the face it is the 64-pixel render, far blurrier than the photo.
    crop = generate.FaceCrop.fit(inputs["landmarks"], 64)
    ys, xs = np.mgrid[: photo.shape[0], : photo.shape[1]]
    face = generate.crop_mask(crop.to_crop(np.stack([xs, ys], -1).astype(np.float64)), 64) == 1
    assert np.abs(result.frames[:, face].astype(int) - photo[face]).mean() > 8.0
    with pytest.raises(ValueError, match="renderer 'painted': not one of photo, learned"):
        generator.generate(inputs["photo"], inputs["speech"], tmp_path / "x.mp4", renderer="painted")


def test_the_seed_decides_the_sampled_motion(generator, inputs, tmp_path):
    def points(**kwargs):
        generator.generate(inputs["photo"], inputs["speech"], tmp_path / "a.mp4", keypoints_out=tmp_path / "a.npz",
                           **kwargs)
        with np.load(tmp_path / "a.npz") as saved:
            return saved["keypoints"]

    first = points(seed=3)
    np.testing.assert_array_equal(points(seed=3), first)
    assert np.abs(points(seed=4) - first).max() > 1e-3


def make_source_video(folder: Path, seconds: float) -> tuple[Path, np.ndarray]:
    """A warped-astronaut synthetic talking head (192 px) and its true keypoints."""
    clip = synthetic.make_clip(11, language="en", text="Hello there, how are you?", size=192,
                               texture=face_render.PhotoTexture.astronaut())
    frames = int(seconds * 25)
    path = folder / "source.mp4"
    video.write_video(path, clip.frames[:frames], clip.audio[: frames * audio.SAMPLES_PER_FRAME])
    return path, clip.keypoints[:frames]


def test_pose_from_a_video(generator, inputs, tmp_path):
    source, truth = make_source_video(tmp_path, seconds=1.0)
    tracked = generate.track_landmarks(LandmarkDetector(), video.iter_frames(source), str(source))
    assert tracked.shape == truth.shape
    error = np.linalg.norm(tracked - truth, axis=-1).mean(1)
    assert error.max() < 0.1 * float(keypoints.face_size(truth[0])), error

    # 25 source frames drive the ~69 frames of speech, played back and forth.
    report = generator.generate(inputs["photo"], inputs["speech"], tmp_path / "posed.mp4", pose_from=source,
                                keypoints_out=tmp_path / "posed.npz")
    frames = audio.num_video_frames(len(inputs["wave"]))
    assert report.frames == frames and video.probe(tmp_path / "posed.mp4")["num_frames"] == frames
    with np.load(tmp_path / "posed.npz") as saved:
        assert saved["keypoints"].shape == (frames, 68, 2)


def test_several_faces_animate_the_largest_and_say_so(generator, inputs, tmp_path, caplog):
    photo, landmarks = inputs["image"], inputs["landmarks"]
    x0, y0 = np.floor(landmarks.min(0) - 30).astype(int)
    x1, y1 = np.ceil(landmarks.max(0) + 30).astype(int)
    face = Image.fromarray(photo[y0:y1, x0:x1])
    canvas = Image.new("RGB", (720, 400), (120, 130, 140))
    canvas.paste(face.resize((int(face.width * 0.8), int(face.height * 0.8))), (30, 100))
    big_at = (320, 60)
    canvas.paste(face, big_at)
    canvas.save(tmp_path / "two.png")
    with caplog.at_level(logging.WARNING, logger="t2v.generate"):
        report = generator.generate(tmp_path / "two.png", inputs["speech"], tmp_path / "two.mp4",
                                    keypoints_out=tmp_path / "two.npz")
    assert report.faces_found == 2
    assert any("2 faces found; animating the largest" in r.getMessage() and "two.png" in r.getMessage()
               for r in caplog.records)
    # Numbered left to right: the small face is 1, the large one 2; --face 1 animates the small one.
    boxes, default = generate.list_faces(LandmarkDetector(), np.asarray(canvas))
    assert len(boxes) == 2 and default == 1 and boxes[0][0] < boxes[1][0]
    generator.generate(tmp_path / "two.png", inputs["speech"], tmp_path / "one.mp4", keypoints_out=tmp_path / "one.npz",
                       face=1)
    with np.load(tmp_path / "one.npz") as saved:
        assert saved["reference"][:, 0].mean() < 320  # the small face, on the left
    with pytest.raises(ValueError, match="two.png: no face 3: 2 found"):
        generator.generate(tmp_path / "two.png", inputs["speech"], tmp_path / "three.mp4", face=3)
    with np.load(tmp_path / "two.npz") as saved:
        expected = landmarks - [x0, y0] + big_at
        assert np.linalg.norm(saved["reference"] - expected, axis=-1).mean() < 3.0


def test_list_faces_numbers_them_left_to_right(inputs, tmp_path, capsys):
    from t2v import cli

    landmarks = inputs["landmarks"]
    x0, y0 = np.floor(landmarks.min(0) - 30).astype(int)
    x1, y1 = np.ceil(landmarks.max(0) + 30).astype(int)
    face = Image.fromarray(inputs["image"][y0:y1, x0:x1])
    canvas = Image.new("RGB", (3 * face.width, face.height + 40), (120, 130, 140))
    canvas.paste(face, (2 * face.width, 20))
    canvas.paste(face, (0, 20))  # two faces exactly as large: the leftmost is the default
    canvas.save(tmp_path / "twins.png")
    assert cli.main(["generate", "--list-faces", str(tmp_path / "twins.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "2 faces, numbered left to right" in lines[0]
    assert lines[1].startswith("  face 1: box left") and lines[1].endswith("(the default: the largest)")
    assert lines[2].startswith("  face 2: box left") and "default" not in lines[2]
    boxes, default = generate.list_faces(LandmarkDetector(), np.asarray(canvas))
    assert default == 0 and boxes[0, 0] < face.width <= boxes[1, 0]
    assert cli.main(["generate", "--list-faces", str(tmp_path / "missing.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing.png: no such file")


# --------------------------------------------------------------------------- bad input


def write_wave(path: Path, wave: np.ndarray) -> Path:
    soundfile.write(path, wave, audio.SAMPLE_RATE)
    return path


def bad_inputs(folder: Path, inputs: dict) -> dict:
    """name -> (changes to the good call's arguments, the file the message must name, its text)."""
    noise = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "no_face.png")
    (folder / "not_an_image.png").write_text("hello")
    (folder / "not_audio.wav").write_bytes(b"RIFF" + bytes(range(200)))
    write_wave(folder / "silent.wav", np.zeros(16000, np.float32))
    return {
        "no face": ({"image": folder / "no_face.png"}, "no_face.png", "no face found"),
        "not an image": ({"image": folder / "not_an_image.png"}, "not_an_image.png", "not a readable image"),
        "missing image": ({"image": folder / "missing.png"}, "missing.png", "no such file"),
        "unreadable audio": ({"speech": folder / "not_audio.wav"}, "not_audio.wav", "unreadable audio"),
        "silent audio": ({"speech": folder / "silent.wav"}, "silent.wav", "silent"),
        "audio too long": ({"max_seconds": 1.0}, "speech.wav", "over the limit of 1 s"),
        "missing pose video": ({"pose_from": folder / "missing.mp4"}, "missing.mp4", "no such file"),
    }


def assert_failed_cleanly(error, out_dir: Path, named: str, text: str, before: bytes):
    message = str(error)
    assert "\n" not in message and named in message and text in message, message
    assert (out_dir / "talk.mp4").read_bytes() == before  # the earlier output is untouched
    assert sorted(p.name for p in out_dir.iterdir()) == ["talk.mp4"]  # nothing half-written beside it


def test_bad_inputs_fail_in_one_line_and_leave_no_output(generator, inputs, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = b"an earlier video"
    (out_dir / "talk.mp4").write_bytes(before)
    good = {"image": inputs["photo"], "speech": inputs["speech"]}
    for name, (changes, named, text) in bad_inputs(tmp_path, inputs).items():
        args = {**good, **changes}
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            generator.generate(args.pop("image"), args.pop("speech"), out_dir / "talk.mp4",
                               keypoints_out=out_dir / "talk.npz", overlay=True, **args)
        assert_failed_cleanly(error.value, out_dir, named, text, before)


def test_a_failure_while_streaming_leaves_no_output(generator, inputs, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "talk.mp4").write_bytes(b"an earlier video")
    calls = []

    def failing_render(self, points):
        calls.append(len(points))
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, points)

    original = generate.PhotoWarp.render
    monkeypatch.setattr(generate.PhotoWarp, "render", failing_render)
    with pytest.raises(OSError, match="disk full"):
        generator.generate(inputs["photo"], inputs["speech"], out_dir / "talk.mp4", keypoints_out=out_dir / "talk.npz",
                           overlay=True)
    assert sorted(p.name for p in out_dir.iterdir()) == ["talk.mp4"]
    assert (out_dir / "talk.mp4").read_bytes() == b"an earlier video"


def test_bad_checkpoints_fail_in_one_line(checkpoint, inputs, tmp_path):
    only_motion = tmp_path / "only_motion"
    write_task_workdir(only_motion / "motion", *_saved(checkpoint / "motion"))
    mismatched = tmp_path / "mismatched"
    write_task_workdir(mismatched / "motion", *_saved(checkpoint / "motion"))
    wider = config_lib.load("configs/render.py:tiny", [*MICRO_RENDER, "--config.model.features=32"])
    write_task_workdir(mismatched / "render", wider, _saved(checkpoint / "render")[1])
    cases = {
        tmp_path / "missing": "no such directory",
        only_motion: "no 'render' task workdir",
        mismatched / "render": "no 'motion' task workdir",  # a render workdir alone
        mismatched: "does not match config.json's model",
    }
    for folder, text in cases.items():
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            generate.run(inputs["photo"], inputs["speech"], tmp_path / "talk.mp4", checkpoint=folder, progress=False)
        message = str(error.value)
        assert "\n" not in message and text in message and str(folder.name) in message, message
        assert not (tmp_path / "talk.mp4").exists()


def _saved(workdir: Path):
    return checkpoint_lib.read_config(workdir), checkpoint_lib.load_params(workdir)


# --------------------------------------------------------------------------- the command line


def _cli_has_generate() -> bool:
    from t2v import cli

    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    return "generate" in commands


@pytest.mark.skipif(not _cli_has_generate(), reason="`t2v generate` is not wired into t2v.cli yet")
def test_command_line(checkpoint, inputs, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    command = [sys.executable, "-m", "t2v.cli", "generate", "--image", str(inputs["photo"]), "--audio",
               str(inputs["speech"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "talk.mp4"),
               "--keypoints-out", str(tmp_path / "talk.npz"), "--seed", "1", "--temperature", "0.5"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert video.probe(tmp_path / "talk.mp4")["num_frames"] == audio.num_video_frames(len(inputs["wave"]))

    Image.fromarray(np.full((120, 160, 3), 200, np.uint8)).save(tmp_path / "blank.png")
    command[command.index("--image") + 1] = str(tmp_path / "blank.png")
    command[command.index("--out") + 1] = str(tmp_path / "blank.mp4")
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].endswith("blank.png: no face found")
    assert not (tmp_path / "blank.mp4").exists()


# --------------------------------------------------------------------------- long audio


@pytest.mark.slow
def test_minutes_of_speech_stream_in_bounded_memory(generator, inputs, tmp_path):
    Image.open(inputs["photo"]).resize((256, 256)).save(tmp_path / "small.png")
    lengths = {}
    for minutes in (1, 4):
        wave = np.tile(inputs["wave"], int(np.ceil(minutes * 60 * audio.SAMPLE_RATE / len(inputs["wave"]))))
        write_wave(tmp_path / f"{minutes}min.wav", wave)
        lengths[minutes] = len(wave)
    del wave

    def peak_after(minutes):
        report = generator.generate(tmp_path / "small.png", tmp_path / f"{minutes}min.wav", tmp_path / "long.mp4")
        frames = audio.num_video_frames(lengths[minutes])
        assert report.frames == frames and video.probe(tmp_path / "long.mp4")["num_frames"] == frames
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, frames

    one_minute, _ = peak_after(1)
    four_minutes, frames = peak_after(4)
    # Three more minutes: ~4500 more frames, which held in memory would take 885 MB at
    # 256 x 256; the wave, mel and keypoints grow by ~0.2 MB per second of audio.
    grown = four_minutes - one_minute
    assert grown < 100e6, f"peak memory grew by {grown / 1e6:.0f} MB from 1 to 4 minutes ({frames} frames)"
