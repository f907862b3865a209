"""The clip record: one talking-head clip as one msgpack-encoded ArrayRecord entry.

Written by `t2v synth --format records` and by data preparation, read by the Grain
input pipeline. No pickle: a record is a msgpack map of plain scalars, strings, lists and
numpy arrays stored as `{"dtype", "shape", "data"}`; frames are JPEG images so that pixels
are decoded only by the tasks that need them. Schema `t2v.clip/1`, every field with its
type and shape: docs/records.md (`REQUIRED_FIELDS` and `PER_FRAME_ARRAYS` below are what
`decode_clip` checks).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence

import msgpack
import numpy as np
from PIL import Image

from t2v.errors import InputError

SCHEMA = "t2v.clip/1"
JPEG_QUALITY = 90
SHARD_BASENAME = "clips.array_record"

REQUIRED_FIELDS = ("schema", "audio", "sample_rate", "fps", "keypoints")
# Arrays whose first axis runs over the T video frames.
PER_FRAME_ARRAYS = {"keypoints_3d": (68, 3), "pose": (6,), "aus": (13,), "expression": None}
_ARRAY_KEYS = frozenset({"dtype", "shape", "data"})
_ALLOWED_DTYPE_KINDS = "biuf"  # bool, signed, unsigned, float: never object


class RecordError(InputError):
    """A record (or records file) that cannot be read or does not follow the schema."""


# --------------------------------------------------------------------------- encode


def encode_clip(clip: dict) -> bytes:
    """Encodes a clip dict (fields as in the table above) into one record.

    `frames` may be uint8 `[T, H, W, 3]` (JPEG-encoded here), a list of JPEG bytes
    (kept as they are) or None. Raises `RecordError` if the clip breaks the schema,
    so that a bad record is caught when written, not when trained on.
    """
    clip = dict(clip)
    clip.setdefault("schema", SCHEMA)
    frames = clip.pop("frames", None)
    if frames is not None and not isinstance(frames, (list, tuple)):
        frames = encode_jpegs(frames)
    if frames is not None:
        clip["frames"] = [bytes(f) for f in frames]
    _check_clip(clip)
    try:
        return msgpack.packb({k: _pack_value(k, v) for k, v in clip.items()}, use_bin_type=True)
    except (TypeError, ValueError) as error:
        raise RecordError(f"cannot encode clip: {error}") from error


def _pack_value(name: str, value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ALLOWED_DTYPE_KINDS:
            raise RecordError(f"cannot encode clip: field {name!r} has unsupported dtype {value.dtype}")
        little_endian = value.astype(value.dtype.newbyteorder("<"), copy=False)
        return {"dtype": little_endian.dtype.str, "shape": list(value.shape), "data": little_endian.tobytes()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_pack_value(name, v) for v in value]
    return value


def encode_jpegs(frames: np.ndarray, quality: int = JPEG_QUALITY) -> list[bytes]:
    """uint8 `[T, H, W, 3]` -> T JPEG images."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise RecordError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    images = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        images.append(buffer.getvalue())
    return images


# --------------------------------------------------------------------------- decode


def decode_clip(record: bytes, decode_frames: bool = True) -> dict:
    """One record -> a clip dict: arrays as numpy, `phonemes` as `(symbol, start, end)`
    tuples, `frames` as uint8 `[T, H, W, 3]` (the list of JPEG bytes if `decode_frames`
    is False; None if the record has no pixels).

    Raises `RecordError("corrupt record: ...")` for anything malformed.
    """
    try:
        fields = msgpack.unpackb(record, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises a zoo of types for damaged bytes
        raise RecordError(f"corrupt record: not msgpack ({type(error).__name__}: {error})") from error
    if not isinstance(fields, dict):
        raise RecordError(f"corrupt record: expected a map, got {type(fields).__name__}")
    if fields.get("schema") != SCHEMA:
        raise RecordError(f"corrupt record: schema {fields.get('schema')!r}, expected {SCHEMA!r}")
    clip = {name: _unpack_value(name, value) for name, value in fields.items()}
    if "phonemes" in clip:
        clip["phonemes"] = _phoneme_tuples(clip["phonemes"])
    _check_clip(clip, prefix="corrupt record")
    clip.setdefault("frames", None)
    if decode_frames and clip["frames"] is not None:
        clip["frames"] = decode_jpegs(clip["frames"])
    return clip


def _unpack_value(name: str, value):
    if isinstance(value, dict) and value.keys() == _ARRAY_KEYS:
        return _unpack_array(name, value)
    if isinstance(value, list):
        return [_unpack_value(name, v) for v in value]
    return value


def _unpack_array(name: str, packed: dict) -> np.ndarray:
    try:
        dtype = np.dtype(packed["dtype"])
        shape = tuple(int(n) for n in packed["shape"])
    except (TypeError, ValueError) as error:
        raise RecordError(f"corrupt record: field {name!r} has a bad dtype or shape ({error})") from error
    if dtype.kind not in _ALLOWED_DTYPE_KINDS or any(n < 0 for n in shape):
        raise RecordError(f"corrupt record: field {name!r} has dtype {dtype} shape {shape}")
    data = packed["data"]
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape)):
        raise RecordError(f"corrupt record: field {name!r} holds the wrong number of bytes for {dtype} {shape}")
    # Native byte order, writable: callers may augment in place.
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _phoneme_tuples(phonemes) -> list[tuple[str, float, float]]:
    try:
        return [(str(symbol), float(start), float(end)) for symbol, start, end in phonemes]
    except (TypeError, ValueError) as error:
        raise RecordError(f"corrupt record: phonemes must be (symbol, start, end) triples ({error})") from error


def decode_jpegs(images: Sequence[bytes]) -> np.ndarray:
    """T JPEG images of one size -> uint8 `[T, H, W, 3]`."""
    frames = []
    for index, image in enumerate(images):
        try:
            with Image.open(io.BytesIO(image)) as opened:
                frames.append(np.asarray(opened.convert("RGB")))
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ...
            raise RecordError(f"corrupt record: frame {index} is not a readable JPEG ({error})") from error
        if frames[-1].shape != frames[0].shape:
            raise RecordError(f"corrupt record: frame {index} is {frames[-1].shape}, frame 0 is {frames[0].shape}")
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(frames)


# --------------------------------------------------------------------------- schema check


def _check_clip(clip: dict, prefix: str = "cannot encode clip") -> None:
    missing = [name for name in REQUIRED_FIELDS if name not in clip]
    if missing:
        raise RecordError(f"{prefix}: missing fields {missing}")
    audio, keypoints = clip["audio"], clip["keypoints"]
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype.kind != "f":
        raise RecordError(f"{prefix}: audio must be a float array [samples]")
    if not isinstance(keypoints, np.ndarray) or keypoints.ndim != 3 or keypoints.shape[1:] != (68, 2):
        raise RecordError(f"{prefix}: keypoints must be an array [T, 68, 2]")
    for name in ("sample_rate", "fps"):
        if not isinstance(clip[name], (int, np.integer)) or clip[name] <= 0:
            raise RecordError(f"{prefix}: {name} must be a positive int, got {clip[name]!r}")
    num_frames = keypoints.shape[0]
    # round(fps * seconds), halves up: the same count as t2v.audio.num_video_frames.
    expected = (2 * len(audio) * clip["fps"] + clip["sample_rate"]) // (2 * clip["sample_rate"])
    if num_frames != expected:
        raise RecordError(
            f"{prefix}: {num_frames} keypoint frames for {len(audio)} audio samples (expected {expected})"
        )
    for name, trailing in PER_FRAME_ARRAYS.items():
        value = clip.get(name)
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.ndim < 1 or value.shape[0] != num_frames:
            raise RecordError(f"{prefix}: {name} must be an array with {num_frames} frames")
        if trailing is not None and value.shape[1:] != trailing:
            raise RecordError(f"{prefix}: {name} must be [T, {', '.join(map(str, trailing))}], got {value.shape}")
    frames = clip.get("frames")
    if frames is not None and len(frames) != num_frames:
        raise RecordError(f"{prefix}: {len(frames)} frames for {num_frames} keypoint frames")


# --------------------------------------------------------------------------- ArrayRecord files


def shard_paths(path_prefix_or_dir: str | os.PathLike, num_shards: int) -> list[str]:
    """`DIR/clips.array_record-00000-of-0000N` (a directory) or `PREFIX-00000-of-0000N`."""
    if num_shards < 1:
        raise InputError(f"num_shards={num_shards}: must be at least 1")
    prefix = os.fspath(path_prefix_or_dir)
    if os.path.isdir(prefix) or prefix.endswith(os.sep):
        prefix = os.path.join(prefix, SHARD_BASENAME)
    return [f"{prefix}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def write_shards(path_prefix_or_dir: str | os.PathLike, records: Iterable[bytes], num_shards: int) -> list[str]:
    """Writes records round-robin into `num_shards` ArrayRecord files; returns their paths.

    Records stream through: record i goes to shard i % num_shards, so memory stays
    bounded and every shard holds an even share. One record per chunk
    (`group_size:1`) keeps random access cheap for the Grain pipeline.
    """
    from array_record.python.array_record_module import ArrayRecordWriter

    paths = shard_paths(path_prefix_or_dir, num_shards)
    os.makedirs(os.path.dirname(paths[0]) or ".", exist_ok=True)
    writers = [ArrayRecordWriter(path, "group_size:1") for path in paths]
    try:
        for index, record in enumerate(records):
            writers[index % num_shards].write(record)
    finally:
        for writer in writers:
            writer.close()
    return paths


def read_records(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[bytes]:
    """Yields every record of one or more ArrayRecord files, file by file, in order."""
    from array_record.python.array_record_module import ArrayRecordReader

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in paths:
        name = os.fspath(path)
        if not os.path.isfile(name):
            raise RecordError(f"{name}: no such ArrayRecord file")
        reader = ArrayRecordReader(name)
        try:
            yield from reader.read_all()
        finally:
            reader.close()
