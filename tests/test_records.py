"""The clip record format: lossless round trip, JPEG frames, corrupt input, ArrayRecord shards."""

import os

import msgpack
import numpy as np
import pytest

from t2v.data import records
from t2v.data.records import RecordError


def _clip(num_frames: int = 5, size: int = 32, frames: bool = True) -> dict:
    rng = np.random.default_rng(0)
    # Smooth pictures (gradients and a moving blob): JPEG keeps them within a few levels.
    y, x = np.mgrid[:size, :size]
    pictures = np.stack([
        np.stack([4 * x + t, 4 * y, 255 * np.exp(-((x - 12 - t) ** 2 + (y - 16) ** 2) / 60)], -1)
        for t in range(num_frames)
    ]).clip(0, 255).astype(np.uint8)  # fmt: skip
    return {
        "clip_id": "test-0",
        "audio": rng.uniform(-0.5, 0.5, num_frames * 640).astype(np.float32),
        "sample_rate": 16000,
        "fps": 25,
        "keypoints": rng.uniform(0, size, (num_frames, 68, 2)).astype(np.float32),
        "keypoints_3d": rng.normal(size=(num_frames, 68, 3)).astype(np.float32),
        "pose": rng.normal(size=(num_frames, 6)).astype(np.float32),
        "expression": rng.uniform(size=(num_frames, 18)).astype(np.float32),
        "expression_names": [f"p{i}" for i in range(18)],
        "aus": rng.uniform(size=(num_frames, 13)).astype(np.float32),
        "neutral_keypoints": rng.uniform(0, size, (68, 2)).astype(np.float32),
        "frames": pictures if frames else None,
        "frame_size": size,
        "emotion": "happy",
        "emotion_intensity": 0.7,
        "speaker": 12,
        "language": "de",
        "transcript": "Über den Wolken.",
        "phonemes": [("_", 0.0, 0.05), ("y:", 0.05, 0.2)],
        "source": "synthetic",
    }


def test_round_trip_keeps_every_field():
    clip = _clip()
    decoded = records.decode_clip(records.encode_clip(clip))
    assert decoded["schema"] == records.SCHEMA
    for name, value in clip.items():
        if name == "frames":
            continue
        if isinstance(value, np.ndarray):
            assert decoded[name].dtype == value.dtype and decoded[name].shape == value.shape, name
            np.testing.assert_array_equal(decoded[name], value, err_msg=name)
        else:
            assert decoded[name] == value, name
    frames = decoded["frames"]
    assert frames.dtype == np.uint8 and frames.shape == clip["frames"].shape
    assert np.abs(frames.astype(int) - clip["frames"]).mean() < 3.0  # JPEG at quality 90
    decoded["keypoints"][0, 0, 0] = -1.0  # arrays come back writable, for in-place augmentation


def test_frames_stay_jpeg_until_asked():
    clip = _clip()
    lazy = records.decode_clip(records.encode_clip(clip), decode_frames=False)
    assert len(lazy["frames"]) == 5 and all(image[:2] == b"\xff\xd8" for image in lazy["frames"])
    # Already-encoded frames pass through untouched (data preparation re-encodes nothing).
    again = records.decode_clip(records.encode_clip(lazy), decode_frames=False)
    assert again["frames"] == lazy["frames"]
    assert records.decode_clip(records.encode_clip(_clip(frames=False)))["frames"] is None


def test_big_endian_and_integer_arrays_round_trip():
    clip = _clip(frames=False)
    clip["keypoints"] = clip["keypoints"].astype(">f8")
    clip["word_starts"] = np.arange(4, dtype=np.int64)
    decoded = records.decode_clip(records.encode_clip(clip))
    np.testing.assert_array_equal(decoded["keypoints"], clip["keypoints"])
    assert decoded["keypoints"].dtype == np.float64 and decoded["keypoints"].dtype.isnative
    np.testing.assert_array_equal(decoded["word_starts"], np.arange(4))


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: record[: len(record) // 2],  # truncated
        lambda record: bytes(range(256)) * 4,  # not msgpack of a map
        lambda record: b"",
        lambda record: msgpack.packb([1, 2, 3]),
    ],
)
def test_corrupt_bytes_raise_record_error(damage):
    with pytest.raises(RecordError, match="corrupt record"):
        records.decode_clip(damage(records.encode_clip(_clip())))


def _repacked(change) -> bytes:
    fields = msgpack.unpackb(records.encode_clip(_clip(frames=False)), raw=False)
    change(fields)
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.update(schema="t2v.clip/0"), "schema"),
        (lambda f: f.pop("keypoints"), "missing fields"),
        (lambda f: f["keypoints"].update(data=f["keypoints"]["data"][:-4]), "wrong number of bytes"),
        (lambda f: f["keypoints"].update(dtype="|O"), "dtype"),
        (lambda f: f["pose"].update(shape=[4, 6], data=f["pose"]["data"][: 4 * 6 * 4]), "pose"),
        (lambda f: f.update(audio=f["audio"] | {"shape": [100], "data": f["audio"]["data"][:400]}), "audio samples"),
        (lambda f: f.update(frames=[b"not a jpeg"] * 5), "not a readable JPEG"),
        (lambda f: f.update(phonemes=[["a", 0.1]]), "phonemes"),
    ],
)
def test_malformed_records_raise_record_error(change, message):
    with pytest.raises(RecordError, match=f"corrupt record.*{message}"):
        records.decode_clip(_repacked(change))


def test_encode_rejects_clips_that_break_the_schema():
    bad = _clip(frames=False)
    bad["keypoints"] = bad["keypoints"][:, :5]
    with pytest.raises(RecordError, match=r"keypoints must be an array \[T, 68, 2\]"):
        records.encode_clip(bad)
    bad = _clip(frames=False)
    bad["aus"] = bad["aus"][:-1]
    with pytest.raises(RecordError, match="aus must be an array with 5 frames"):
        records.encode_clip(bad)
    bad = _clip(frames=False)
    bad["extra"] = np.array([object()])
    with pytest.raises(RecordError, match="unsupported dtype"):
        records.encode_clip(bad)


def test_shards_are_written_round_robin_and_read_back(tmp_path):
    encoded = []
    for index in range(5):
        clip = _clip(frames=False)
        clip["clip_id"] = f"clip-{index}"
        encoded.append(records.encode_clip(clip))
    paths = records.write_shards(tmp_path, iter(encoded), num_shards=2)
    assert [os.path.basename(p) for p in paths] == [
        "clips.array_record-00000-of-00002", "clips.array_record-00001-of-00002"]  # fmt: skip
    ids = [records.decode_clip(r)["clip_id"] for r in records.read_records(paths)]
    assert ids == ["clip-0", "clip-2", "clip-4", "clip-1", "clip-3"]

    prefixed = records.write_shards(tmp_path / "train", encoded[:1], num_shards=3)
    assert os.path.basename(prefixed[2]) == "train-00002-of-00003"
    assert len(list(records.read_records(prefixed))) == 1  # empty shards are valid files

    with pytest.raises(records.RecordError, match="no such ArrayRecord file"):
        list(records.read_records(tmp_path / "missing-00000-of-00001"))
