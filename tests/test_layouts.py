"""Every dataset layout: its parser on names alone, and its TFDS builder end to end on a
tiny tree written from synthetic clips (astronaut photo texture, 160 px, one short
sentence), read back without TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from data_pipelines import builders, layouts, prepare
from t2v import audio as audio_lib
from t2v import video as video_lib
from t2v.data import records, synthetic
from t2v.data.face_render import PhotoTexture

FRAME_SIZE = 160  # the face spans ~96 px: dlib finds it without upsampling


@pytest.fixture(scope="module")
def clip():
    return synthetic.make_clip(3, language="en", speaker=7, emotion="neutral", size=FRAME_SIZE,
                               texture=PhotoTexture.astronaut(), text="Hello there.")


def touch(root: Path, *relative_paths: str) -> None:
    for relative in relative_paths:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")


def write_m4a(path: Path, wave: np.ndarray) -> None:
    """AAC audio alone in an MPEG-4 container, as MEAD ships it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=audio_lib.SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = audio_lib.SAMPLE_RATE
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_clip(root: Path, relative: str, clip, *, with_audio: bool = True) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    video_lib.write_video(path, clip.frames, audio=clip.audio if with_audio else None)


def build(dataset: str, src: Path, out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Runs the builder; returns the report and the decoded clips of every split."""
    report = prepare.run(dataset, src, out, progress=False)
    builder = tfds.builder_from_directory(report["data_dir"])
    clips = {split: [records.decode_clip(example["record"]) for example in builder.as_data_source(split)]
             for split in builder.info.splits}  # fmt: skip
    return report, clips


def check_prepared(prepared: dict, clip, dataset: str) -> None:
    num_frames = len(prepared["keypoints"])
    assert prepared["source"] == dataset
    assert prepared["frames"].shape == (num_frames, 224, 224, 3)
    assert prepared["pose"].shape == (num_frames, 6) and prepared["aus"].shape == (num_frames, 13)
    assert abs(num_frames - clip.num_frames) <= 1
    assert audio_lib.num_video_frames(len(prepared["audio"])) == num_frames


# --------------------------------------------------------------------------- parsers on names alone


def test_lrw_layout_gives_word_and_split(tmp_path):
    touch(tmp_path, "ABOUT/train/ABOUT_00001.mp4", "ABOUT/test/ABOUT_00002.mp4", "ABOUT/train/notes.mp4")
    (tmp_path / "ABOUT/train/ABOUT_00001.txt").write_text("Text:  ABOUT\nConf:  0.8\n\nDuration: 0.3 seconds\n")
    sources = layouts.list_clips("lrw", tmp_path)
    assert [(s.clip_id, s.split, s.labels["transcript"]) for s in sources] == [
        ("ABOUT/test/ABOUT_00002", "test", "ABOUT"), ("ABOUT/train/ABOUT_00001", "train", "ABOUT")]


def test_voxceleb2_layout_finds_speakers_under_dev_and_test(tmp_path):
    touch(tmp_path, "dev/mp4/id00017/abcDEF12345/00001.mp4", "test/mp4/id00420/xyz/00003.mp4", "dev/mp4/misc/v/1.mp4")
    sources = layouts.list_clips("voxceleb2", tmp_path)
    assert [(s.labels["speaker"], s.labels["speaker_name"], s.split) for s in sources] == [
        (17, "id00017", "train"), (420, "id00420", "test")]


def test_hdtf_layout_names_speakers_after_the_file(tmp_path):
    touch(tmp_path, "WDA_BarackObama_000.mp4", "WDA_BarackObama_001.mp4", "RD_Radio34_003.mp4")
    sources = layouts.list_clips("hdtf", tmp_path)
    names = [s.labels["speaker_name"] for s in sources]
    assert names == ["RD_Radio34", "WDA_BarackObama", "WDA_BarackObama"]
    assert sources[1].labels["speaker"] == sources[2].labels["speaker"] != sources[0].labels["speaker"]


def test_mead_layout_pairs_video_with_audio_and_reads_emotion(tmp_path):
    touch(tmp_path, "M003/video/front/angry/level_2/001.mp4", "M003/video/left_30/angry/level_2/001.mp4",
          "W009/video/front/neutral/level_1/002.mp4")  # fmt: skip
    sources = layouts.list_clips("mead", tmp_path)
    assert len(sources) == 2  # the side view is not the front camera
    angry = sources[0]
    assert angry.audio_path == str(tmp_path / "M003/audio/angry/level_2/001.m4a")
    assert (angry.labels["emotion"], angry.labels["emotion_intensity"]) == ("angry", pytest.approx(2 / 3))
    assert (sources[1].labels["emotion"], sources[1].labels["emotion_intensity"]) == ("neutral", 0.0)


def test_grid_layout_reads_either_alignment_place(tmp_path):
    touch(tmp_path, "s1/bbaf2n.mpg", "s2/video/lgaz8p.mpg", "s3/pwij3p.mpg")
    (tmp_path / "alignments/s1").mkdir(parents=True)
    (tmp_path / "alignments/s1/bbaf2n.align").write_text("0 23750 sil\n23750 29500 bin\n29500 34000 blue\n74500 75000 sil\n")
    (tmp_path / "s2/align").mkdir()
    (tmp_path / "s2/align/lgaz8p.align").write_text("0 1000 sil\n1000 6000 lay\n6000 7000 sp\n7000 12000 green\n")
    sources = {s.labels["speaker"]: s for s in layouts.list_clips("grid", tmp_path)}
    assert sources[1].labels["transcript"] == "bin blue"
    assert sources[1].labels["words"] == [("bin", 0.95, 1.18), ("blue", 1.18, 1.36)]
    assert sources[2].labels["transcript"] == "lay green"
    assert "transcript" not in sources[3].labels  # no alignment: still a clip, without words


def test_crema_d_layout_decodes_file_names(tmp_path):
    touch(tmp_path, "VideoFlash/1001_DFA_ANG_XX.flv", "VideoFlash/1091_TSI_HAP_HI.flv", "VideoFlash/readme.flv")
    first, second = layouts.list_clips("crema_d", tmp_path)
    assert first.labels == {"speaker": 1001, "speaker_name": "1001", "emotion": "angry", "language": "en",
                            "transcript": "Don't forget a jacket."}  # XX: no intensity  # fmt: skip
    assert second.labels["emotion_intensity"] == 1.0 and second.labels["transcript"] == "The surface is slick."
    assert first.audio_path == str(tmp_path / "AudioWAV/1001_DFA_ANG_XX.wav")


def test_layout_errors_name_the_directory(tmp_path):
    with pytest.raises(layouts.LayoutError, match="no lrw clips found"):
        layouts.list_clips("lrw", tmp_path)
    with pytest.raises(layouts.LayoutError, match="unknown dataset 'ytf'"):
        layouts.list_clips("ytf", tmp_path)
    with pytest.raises(layouts.LayoutError, match="no such directory"):
        layouts.list_clips("grid", tmp_path / "missing")


def test_every_layout_has_a_builder():
    assert set(builders.BUILDERS) == set(layouts.LAYOUTS)
    assert {b.name for b in builders.BUILDERS.values()} == {f"t2v_{name}" for name in layouts.LAYOUTS}


# --------------------------------------------------------------------------- builders end to end


def test_lrw_builder(tmp_path, clip):
    src = tmp_path / "lrw"
    write_clip(src, "HELLO/train/HELLO_00001.mp4", clip)
    write_clip(src, "HELLO/val/HELLO_00002.mp4", clip)
    report, clips = build("lrw", src, tmp_path / "out")
    assert report["kept_by_split"] == {"train": 1, "val": 1} and report["skipped"] == 0
    check_prepared(clips["train"][0], clip, "lrw")
    assert clips["val"][0]["transcript"] == "HELLO" and clips["val"][0]["split"] == "val"


def test_voxceleb2_builder(tmp_path, clip):
    src = tmp_path / "vox"
    write_clip(src, "id00007/abcdefghijk/00001.mp4", clip)
    report, clips = build("voxceleb2", src, tmp_path / "out")
    (prepared,) = clips["train"]
    check_prepared(prepared, clip, "voxceleb2")
    assert prepared["speaker"] == 7 and prepared["source_path"] == "id00007/abcdefghijk/00001.mp4"
    assert json.loads((Path(report["data_dir"]) / "report.json").read_text())["kept"] == 1


def test_hdtf_builder(tmp_path, clip):
    src = tmp_path / "hdtf"
    write_clip(src, "WRA_Astronaut_000.mp4", clip)
    _, clips = build("hdtf", src, tmp_path / "out")
    check_prepared(clips["train"][0], clip, "hdtf")
    assert clips["train"][0]["speaker_name"] == "WRA_Astronaut"


def test_mead_builder_takes_the_separate_audio(tmp_path, clip):
    src = tmp_path / "mead"
    write_clip(src, "W011/video/front/happy/level_3/001.mp4", clip, with_audio=False)
    write_m4a(src / "W011/audio/happy/level_3/001.m4a", clip.audio)
    _, clips = build("mead", src, tmp_path / "out")
    (prepared,) = clips["train"]
    check_prepared(prepared, clip, "mead")
    assert (prepared["emotion"], prepared["emotion_intensity"]) == ("happy", 1.0)
    n = min(len(prepared["audio"]), len(clip.audio))
    assert np.corrcoef(prepared["audio"][:n], clip.audio[:n])[0, 1] > 0.9  # AAC round trip


def test_grid_builder(tmp_path, clip):
    src = tmp_path / "grid"
    write_clip(src, "s4/hello1.mpg", clip)  # GRID is MPEG-1; the extension does not matter to FFmpeg
    (src / "s4/align").mkdir()
    (src / "s4/align/hello1.align").write_text("0 5000 sil\n5000 15000 hello\n15000 25000 there\n25000 30000 sil\n")
    _, clips = build("grid", src, tmp_path / "out")
    (prepared,) = clips["train"]
    check_prepared(prepared, clip, "grid")
    assert prepared["transcript"] == "hello there" and prepared["speaker"] == 4
    assert [word for word, _, _ in prepared["words"]] == ["hello", "there"]


def test_crema_d_builder_takes_the_wav(tmp_path, clip):
    src = tmp_path / "crema"
    write_clip(src, "VideoFlash/1001_IEO_SAD_LO.flv", clip, with_audio=False)
    (src / "AudioWAV").mkdir()
    soundfile.write(src / "AudioWAV/1001_IEO_SAD_LO.wav", clip.audio, audio_lib.SAMPLE_RATE, subtype="PCM_16")
    _, clips = build("crema_d", src, tmp_path / "out")
    (prepared,) = clips["train"]
    check_prepared(prepared, clip, "crema_d")
    assert (prepared["emotion"], prepared["transcript"]) == ("sad", "It's eleven o'clock.")
    np.testing.assert_allclose(prepared["audio"], clip.audio[: len(prepared["audio"])], atol=1e-4)


def test_synthetic_builder_passes_records_through_and_skips_broken_ones(tmp_path, clip):
    src = tmp_path / "synthetic"
    src.mkdir()
    records.write_shards(src, [records.encode_clip(clip.to_record())], num_shards=1)
    (src / "broken.array_record-00000-of-00001").write_bytes(b"not an array record file")
    report, clips = build("synthetic", src, tmp_path / "out")
    (prepared,) = clips["train"]
    np.testing.assert_array_equal(prepared["keypoints"], clip.keypoints)
    assert prepared["source_path"] == "clips.array_record-00000-of-00001" and prepared["transcript"] == clip.transcript
    assert report["skipped_by_reason"] == {"bad_record": 1}
