"""Data preparation: the real dlib path against synthetic ground truth, bad inputs skipped
with reasons, the Beam build, and the tracking and alignment pieces on their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from data_pipelines import align, builders, landmarks, prepare
from data_pipelines.clip import PrepareOptions
from t2v import audio as audio_lib
from t2v import keypoints as kp
from t2v import video as video_lib
from t2v.data import records, synthetic
from t2v.data.face_render import PhotoTexture
from t2v.errors import InputError

FRAME_SIZE = 160  # the face spans ~96 px: dlib finds it without upsampling
SAMPLES_PER_FRAME = audio_lib.SAMPLES_PER_FRAME


@pytest.fixture(scope="module")
def voxceleb_tree(tmp_path_factory) -> Path:
    """Two synthetic clips in a VoxCeleb2 tree, ground truth (`00001.npz`) beside each mp4."""
    root = tmp_path_factory.mktemp("voxceleb2")
    synthetic.synthesize(root, 2, fmt="voxceleb2", texture=PhotoTexture.astronaut(), size=FRAME_SIZE, seed=5, progress=False)
    return root


@pytest.fixture(scope="module")
def prepared(voxceleb_tree, tmp_path_factory) -> dict:
    return prepare.run("voxceleb2", voxceleb_tree, tmp_path_factory.mktemp("out"), progress=False)


def decoded_clips(report: dict, split: str = "train") -> list[dict]:
    source = tfds.builder_from_directory(report["data_dir"]).as_data_source(split)
    return [records.decode_clip(example["record"]) for example in source]


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, `[..., 68, 2] -> [...]`."""
    return np.linalg.norm(points[..., 36:42, :].mean(-2) - points[..., 42:48, :].mean(-2), axis=-1)


# --------------------------------------------------------------------------- ground truth


def test_detected_keypoints_match_the_synthetic_ground_truth(voxceleb_tree, prepared):
    clips = decoded_clips(prepared)
    assert prepared["kept"] == 2 and prepared["skipped"] == 0
    errors_px, errors_iod, openings, true_openings = [], [], [], []
    for clip in clips:
        truth = np.load(voxceleb_tree / clip["source_path"].replace(".mp4", ".npz"))
        num_frames = len(clip["keypoints"])
        assert clip["keypoints_observed"].all()
        # The ground truth is in source pixels: take it into the crop as the clip was.
        true_points = align.transform_points(truth["keypoints"][:num_frames], clip["crop_transform"])
        error = np.linalg.norm(clip["keypoints"] - true_points, axis=-1).mean(-1)  # [T]
        errors_px.append(error)
        errors_iod.append(error / inter_ocular(true_points))
        openings.append(kp.mouth_opening(clip["keypoints"]))
        true_openings.append(kp.mouth_opening(true_points))
        # Head pose: yaw and roll follow the generator's (pitch is the weakest cue in 2D).
        for axis in (0, 2):
            assert np.corrcoef(clip["pose"][:, axis], truth["pose"][:num_frames, axis])[0, 1] > 0.8
    # The lips are tracked, not just the face: mouth opening follows the truth (pooled over
    # clips: on a clip whose emotion bares the photo's teeth dlib's inner lip wavers).
    assert np.corrcoef(np.concatenate(openings), np.concatenate(true_openings))[0, 1] > 0.5
    mean_iod = float(np.concatenate(errors_iod).mean())
    print(f"keypoint error vs ground truth: {np.concatenate(errors_px).mean():.2f} px of the 224 crop, "
          f"{100 * mean_iod:.2f}% of the inter-ocular distance")  # fmt: skip
    assert mean_iod < 0.07  # dlib on 300W is ~5-6%; measured ~4.3% here


def test_records_follow_the_schema(voxceleb_tree, prepared):
    clip = decoded_clips(prepared)[0]
    num_frames = len(clip["keypoints"])
    assert clip["schema"] == records.SCHEMA and clip["frame_size"] == 224
    assert clip["frames"].shape == (num_frames, 224, 224, 3)
    assert audio_lib.num_video_frames(len(clip["audio"])) == num_frames
    assert clip["aus"].shape == (num_frames, len(kp.AU_NAMES)) and 0 <= clip["aus"].min() <= clip["aus"].max() <= 1
    metadata = json.loads((voxceleb_tree / clip["source_path"].replace(".mp4", ".json")).read_text())
    assert clip["speaker"] == metadata["speaker"] and clip["source"] == "voxceleb2"
    # The keypoints sit on the face in the crop: the mean face is near the canonical one.
    canonical = align.canonical_face()
    assert np.abs(clip["keypoints"].mean(0) - canonical).mean() < 0.1 * inter_ocular(canonical)
    report_file = json.loads((Path(prepared["data_dir"]) / prepare.REPORT_NAME).read_text())
    assert report_file["summary"] == prepared["summary"] and "2 clips kept, 0 skipped" in prepared["summary"]


# --------------------------------------------------------------------------- bad inputs


def two_faces(frames: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`[T, 200, 480, 3]`: `frames` enlarged to 200 px in the middle, `other` at the right edge."""
    canvas = np.full((len(frames), 200, 480, 3), 90, np.uint8)
    for index, (frame, second) in enumerate(zip(frames, other)):
        canvas[index, :, 140:340] = np.asarray(Image.fromarray(frame).resize((200, 200), Image.BILINEAR))
        canvas[index, 20:180, 340:480] = second[:, :140]
    return canvas


def test_bad_inputs_are_skipped_with_reasons(voxceleb_tree, tmp_path):
    (first, second) = sorted(voxceleb_tree.glob("id*/*/00001.mp4"))
    video = video_lib.read_video(first, max_frames=40)
    other = video_lib.read_video(second, max_frames=40).frames
    frames, wave = video.frames, video.audio[: 40 * SAMPLES_PER_FRAME]
    grey = np.full_like(frames, 128)
    blink_out = frames.copy()
    blink_out[10:13] = 128  # 3 frames without a face: interpolated
    long_out = frames.copy()
    long_out[10:30] = 128  # 20 frames without a face: lost
    src = tmp_path / "src"
    clips = {
        "good": (blink_out, wave),
        "crowd": (two_faces(frames, other), wave),
        "noface": (grey, wave),
        "lost": (long_out, wave),
        "silent": (frames, np.zeros_like(wave)),
        "mismatch": (frames[:20], wave),
        "short": (frames[:8], wave[: 8 * SAMPLES_PER_FRAME]),
        "noaudio": (frames, None),
    }
    for name, (clip_frames, clip_wave) in clips.items():
        (src / "id00001" / name).mkdir(parents=True)
        video_lib.write_video(src / "id00001" / name / "00001.mp4", clip_frames, audio=clip_wave)
    (src / "id00001/corrupt").mkdir()
    (src / "id00001/corrupt/00001.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but then nothing")
    (src / "id00001/empty").mkdir()
    (src / "id00001/empty/00001.mp4").write_bytes(b"")

    report = prepare.run("voxceleb2", src, tmp_path / "out", progress=False)
    reasons = {entry["clip_id"].split("/")[1]: entry["reason"] for entry in report["skipped_clips"]}
    assert reasons == {
        "noface": "no_face", "lost": "face_lost", "silent": "silent_audio", "mismatch": "av_length_mismatch",
        "short": "too_short", "noaudio": "unreadable_audio", "corrupt": "unreadable_video", "empty": "unreadable_video",
    }  # fmt: skip
    assert all(entry["message"] and "\n" not in entry["message"] for entry in report["skipped_clips"])
    assert report["kept"] == 2 and report["skipped_by_reason"]["unreadable_video"] == 2

    kept = {clip["clip_id"].split("/")[1]: clip for clip in decoded_clips(report)}
    truth = np.load(first.with_suffix(".npz"))["keypoints"][:40]
    # The short gap is bridged, and marked as such.
    good = kept["good"]
    assert list(np.flatnonzero(~good["keypoints_observed"])) == [10, 11, 12]
    source_points = align.transform_points(good["keypoints"], np.linalg.inv(_square(good["crop_transform"]))[:, :2])
    assert (np.linalg.norm(source_points - truth, axis=-1).mean() / inter_ocular(truth).mean()) < 0.1
    # Of two faces, the larger, central one is tracked.
    crowd = kept["crowd"]
    main_truth = truth * (200 / FRAME_SIZE) + [140, 0]
    crowd_points = align.transform_points(crowd["keypoints"], np.linalg.inv(_square(crowd["crop_transform"]))[:, :2])
    assert np.linalg.norm(crowd_points - main_truth, axis=-1).mean() / inter_ocular(main_truth).mean() < 0.1


def _square(transforms: np.ndarray) -> np.ndarray:
    """`[T, 2, 3]` affines -> `[T, 3, 3]` homogeneous matrices."""
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (len(transforms), 1, 3))
    return np.concatenate([transforms, bottom], axis=1)


def test_a_tree_with_nothing_usable_raises_with_the_reasons(tmp_path):
    (tmp_path / "src/id00001/v").mkdir(parents=True)
    (tmp_path / "src/id00001/v/00001.mp4").write_bytes(b"garbage")
    with pytest.raises(builders.NoClipsError, match=r"none of the 1 voxceleb2 clips.*unreadable_video 1"):
        prepare.run("voxceleb2", tmp_path / "src", tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="unknown dataset 'vox'"):
        prepare.run("vox", tmp_path / "src", tmp_path / "out", progress=False)


def test_preparing_twice_into_one_place_is_refused(voxceleb_tree, prepared):
    out = Path(prepared["data_dir"]).parent.parent
    with pytest.raises(InputError, match="already prepared"):
        prepare.run("voxceleb2", voxceleb_tree, out, progress=False)


# --------------------------------------------------------------------------- Apache Beam


def test_beam_build_matches_the_local_one(voxceleb_tree, prepared, tmp_path):
    pytest.importorskip("apache_beam", reason="Apache Beam is the optional [beam] extra")
    src = tmp_path / "src"
    first = sorted(voxceleb_tree.glob("id*/*/00001.mp4"))[0]
    (src / first.relative_to(voxceleb_tree).parent).mkdir(parents=True)
    (src / first.relative_to(voxceleb_tree)).write_bytes(first.read_bytes())
    (src / "id00009/broken").mkdir(parents=True)
    (src / "id00009/broken/00001.mp4").write_bytes(b"garbage")

    report = prepare.run("voxceleb2", src, tmp_path / "out", beam=True, progress=False,
                         beam_options=["--runner=DirectRunner", "--direct_num_workers=1"])  # fmt: skip
    assert report["kept"] == 1 and report["skipped_by_reason"] == {"unreadable_video": 1}
    assert not list((tmp_path / "out").glob(".skipped-*"))  # the workers' skip lists are merged, then removed
    (beam_clip,) = decoded_clips(report)
    local_clip = next(c for c in decoded_clips(prepared) if c["clip_id"] == beam_clip["clip_id"])
    np.testing.assert_array_equal(beam_clip["keypoints"], local_clip["keypoints"])


# --------------------------------------------------------------------------- tracking and alignment pieces


def test_main_face_is_the_large_central_one_over_the_clip():
    big_centre = np.array([[60, 40, 160, 140]], np.float32)
    small_corner = np.array([[0, 0, 40, 40]], np.float32)
    detections = {0: np.concatenate([small_corner, big_centre]), 5: big_centre + 3, 10: np.zeros((0, 4), np.float32),
                  15: np.concatenate([big_centre + 6, small_corner])}  # fmt: skip
    boxes = landmarks.main_face_boxes(detections, width=220, height=180)
    assert sorted(boxes) == [0, 5, 15]
    np.testing.assert_array_equal(boxes[15], big_centre[0] + 6)
    assert landmarks.main_face_boxes({0: np.zeros((0, 4), np.float32)}, 220, 180) == {}


def test_gaps_are_interpolated_and_jitter_smoothed():
    times = np.arange(40, dtype=np.float32)
    truth = np.broadcast_to(kp.FRONTAL_TEMPLATE * 50 + 100, (40, 68, 2)) + times[:, None, None] * [1.0, 0.5]
    observed = truth.copy()
    observed[12:15] = np.nan
    filled = landmarks.fill_gaps(observed)
    np.testing.assert_allclose(filled, truth, atol=1e-4)  # linear motion: exact
    assert landmarks.longest_run(np.isnan(observed[:, 0, 0])) == 3
    jitter = np.random.default_rng(0).normal(0, 1.0, truth.shape)
    smoothed = landmarks.smooth((truth + jitter).astype(np.float32), window=5)
    assert np.abs(smoothed - truth).mean() < 0.75 * np.abs(jitter).mean()
    with pytest.raises(ValueError, match="no frame has landmarks"):
        landmarks.fill_gaps(np.full((3, 68, 2), np.nan, np.float32))


@pytest.mark.parametrize("stabilise_seconds", [None, 0.0, 0.4])
def test_crop_transforms_take_the_face_to_the_canonical_one(stabilise_seconds):
    angles = np.linspace(-0.2, 0.2, 30)
    rotations = np.stack([np.stack([np.cos(angles), -np.sin(angles)], -1), np.stack([np.sin(angles), np.cos(angles)], -1)], -2)
    faces = 80 * kp.FRONTAL_TEMPLATE @ np.swapaxes(rotations, 1, 2) + np.stack([300 + 2 * np.arange(30), 200 + 0 * angles], -1)[:, None]
    transforms = align.crop_transforms(faces.astype(np.float32), 224, stabilise_seconds)
    in_crop = align.transform_points(faces.astype(np.float32), transforms)
    error = np.linalg.norm(in_crop - align.canonical_face(), axis=-1).mean()
    if stabilise_seconds == 0.0:
        assert error < 1e-3  # every frame pinned onto the canonical face
    else:
        assert 1.0 < error < 30.0  # head motion kept in the crop
    if stabilise_seconds is None:
        np.testing.assert_allclose(transforms, np.broadcast_to(transforms[0], transforms.shape), atol=1e-5)


def test_crop_frames_puts_pixels_where_the_transform_sends_points():
    frame = np.zeros((600, 800, 3), np.uint8)
    frame[245:256, 295:306] = 255  # a bright square centred on (300, 250)
    for scale in (0.9, 0.2):  # 0.2: the source is box-filtered down 4x first
        angle = 0.3
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        offset = [112.0, 112.0] - linear @ [300.0, 250.0] + [7.0, -5.0]
        transform = np.concatenate([linear, offset[:, None]], axis=1)[None].astype(np.float32)
        crop = align.crop_frames(frame[None], transform, 224)[0].astype(np.float64).sum(-1)
        rows, columns = np.mgrid[:224, :224]
        centroid = [(crop * columns).sum() / crop.sum(), (crop * rows).sum() / crop.sum()]
        np.testing.assert_allclose(centroid, [119.0, 107.0], atol=0.1)


def test_prepare_options_are_recorded(prepared):
    assert prepared["options"] == {**vars(PrepareOptions())}
