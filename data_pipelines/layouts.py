"""One parser per dataset layout: a directory tree -> the `ClipSource`s it holds.

A parser only reads names (and the small label files beside the videos): it never
decodes a video, so listing a million-clip tree stays cheap and never fails on a bad
file; bad files are found, and skipped with a reason, when a clip is prepared. The
layouts and the labels each gives: docs/data_pipelines.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from t2v.errors import InputError


class LayoutError(InputError):
    """A source directory that does not hold the layout asked for (one-line message)."""


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """Where one clip's media lie and what its layout says about it.

    dataset: the layout's name (`"voxceleb2"`, ...), stored as the record's `source`.
    clip_id: unique within the dataset, from the relative path without its suffix.
    path: the video file (for `synthetic`: the ArrayRecord shard).
    relative_path: `path` relative to the source root, stored as provenance.
    audio_path: a separate audio file, or None to use the video's own track.
    split: the dataset's split (`"train"`, `"val"`, `"test"`).
    labels: record fields the layout gives (speaker, emotion, transcript, ...).
    record_index: for `synthetic`, the record's index in its shard.
    """

    dataset: str
    clip_id: str
    path: str
    relative_path: str
    audio_path: str | None = None
    split: str = "train"
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    record_index: int | None = None


# --------------------------------------------------------------------------- labels shared by layouts

# Dataset emotion words and codes -> the names `t2v.data.synthetic.EMOTIONS` uses.
EMOTION_NAMES = {
    "neutral": "neutral", "NEU": "neutral",
    "happy": "happy", "HAP": "happy",
    "sad": "sad", "SAD": "sad",
    "angry": "angry", "ANG": "angry",
    "surprised": "surprised",
    "fear": "fearful", "FEA": "fearful",
    "disgusted": "disgusted", "DIS": "disgusted",
    "contempt": "contempt",
}

# CREMA-D's twelve sentences, by the code in its file names.
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
# CREMA-D intensity codes; XX ("unspecified") gives no intensity label.
CREMA_D_INTENSITIES = {"LO": 1 / 3, "MD": 2 / 3, "HI": 1.0}

GRID_TIME_UNITS_PER_SECOND = 25_000  # .align times count 1000 per 25 fps video frame
GRID_SILENCES = frozenset({"sil", "sp"})


def speaker_number(name: str, prefix: str | None) -> int:
    """The int `speaker` for a dataset speaker id: its number when the id is `prefix`
    followed by digits (prefix "" for bare numbers), else a stable CRC-32 of the id."""
    if prefix is not None:
        match = re.fullmatch(re.escape(prefix) + r"0*(\d+)", name)
        if match:
            return int(match.group(1))
    return zlib.crc32(name.encode("utf-8")) & 0x7FFF_FFFF


# --------------------------------------------------------------------------- parsers


def lrw(root: Path) -> list[ClipSource]:
    """LRW: `WORD/{train,val,test}/WORD_NNNNN.mp4`, with `WORD_NNNNN.txt` beside it."""
    sources = []
    for path in _files(root, "*/*/*.mp4"):
        word, split = path.parent.parent.name, path.parent.name
        if split not in ("train", "val", "test") or not path.stem.startswith(word + "_"):
            continue
        labels = {"transcript": _lrw_word(path.with_suffix(".txt")) or word, "language": "en"}
        sources.append(_source("lrw", root, path, split=split, labels=labels))
    return _nonempty(sources, root, "lrw", "WORD/{train,val,test}/WORD_NNNNN.mp4")


def _lrw_word(text_path: Path) -> str | None:
    """The `Text:` line of an LRW label file (None when the file is missing or has none)."""
    try:
        lines = text_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "Text" and value.strip():
            return value.strip()
    return None


def voxceleb2(root: Path) -> list[ClipSource]:
    """VoxCeleb2: `idNNNNN/VIDEO/NNNNN.mp4`, anywhere below `root` (e.g. under `dev/mp4`)."""
    sources = []
    for path in _files(root, "**/id*/*/*.mp4"):
        speaker = path.parent.parent.name
        if not re.fullmatch(r"id\d+", speaker):
            continue
        above = path.relative_to(root).parts[:-3]
        split = "test" if "test" in above else "train"
        labels = {"speaker": speaker_number(speaker, "id"), "speaker_name": speaker}
        sources.append(_source("voxceleb2", root, path, split=split, labels=labels))
    return _nonempty(sources, root, "voxceleb2", "idNNNNN/VIDEO/NNNNN.mp4")


def hdtf(root: Path) -> list[ClipSource]:
    """HDTF: a folder of mp4s named `NAME_NNN.mp4` (NAME: the speaker, e.g. `WDA_BarackObama`)."""
    sources = []
    for path in _files(root, "**/*.mp4"):
        speaker = re.sub(r"_\d+$", "", path.stem)
        labels = {"speaker": speaker_number(speaker, None), "speaker_name": speaker}
        sources.append(_source("hdtf", root, path, labels=labels))
    return _nonempty(sources, root, "hdtf", "*.mp4")


def mead(root: Path) -> list[ClipSource]:
    """MEAD: `ID/video/front/EMOTION/level_K/NNN.mp4` with `ID/audio/EMOTION/level_K/NNN.m4a`."""
    sources = []
    for path in _files(root, "*/video/front/*/level_*/*.mp4"):
        emotion, level = path.parent.parent.name, path.parent.name
        speaker = path.parents[4].name
        match = re.fullmatch(r"level_(\d+)", level)
        if emotion not in EMOTION_NAMES or not match:
            continue
        audio = path.parents[4] / "audio" / emotion / level / (path.stem + ".m4a")
        labels = {
            "speaker": speaker_number(speaker, None),
            "speaker_name": speaker,
            "emotion": EMOTION_NAMES[emotion],
            # MEAD's three levels; its neutral clips (level_1 only) carry no emotion.
            "emotion_intensity": 0.0 if emotion == "neutral" else min(int(match.group(1)), 3) / 3,
            "language": "en",
        }
        sources.append(_source("mead", root, path, audio_path=audio, labels=labels))
    return _nonempty(sources, root, "mead", "ID/video/front/EMOTION/level_K/NNN.mp4")


def grid(root: Path) -> list[ClipSource]:
    """GRID: `sN/**/*.mpg`, alignments in `alignments/sN/NAME.align` or `sN/align/NAME.align`."""
    sources = []
    for speaker_dir in sorted(p for p in root.iterdir() if re.fullmatch(r"s\d+", p.name) and p.is_dir()):
        speaker = speaker_dir.name
        for path in _files(speaker_dir, "**/*.mpg"):
            labels: dict[str, Any] = {
                "speaker": speaker_number(speaker, "s"),
                "speaker_name": speaker,
                "language": "en",
            }
            for align in (root / "alignments" / speaker / (path.stem + ".align"), speaker_dir / "align" / (path.stem + ".align")):
                words = _grid_words(align)
                if words:
                    labels["words"] = words
                    labels["transcript"] = " ".join(word for word, _, _ in words)
                    break
            sources.append(_source("grid", root, path, labels=labels))
    return _nonempty(sources, root, "grid", "sN/*.mpg")


def _grid_words(align_path: Path) -> list[tuple[str, float, float]]:
    """`(word, start_s, end_s)` of a GRID `.align` file, silences dropped; [] when unreadable."""
    try:
        lines = align_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    words = []
    for line in lines:
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        start, end, word = int(fields[0]), int(fields[1]), fields[2]
        if word not in GRID_SILENCES:
            words.append((word, start / GRID_TIME_UNITS_PER_SECOND, end / GRID_TIME_UNITS_PER_SECOND))
    return words


def crema_d(root: Path) -> list[ClipSource]:
    """CREMA-D: `VideoFlash/SPEAKER_SENTENCE_EMOTION_LEVEL.flv` with `AudioWAV/<same>.wav`."""
    sources = []
    for path in _files(root, "VideoFlash/*.flv"):
        match = re.fullmatch(r"(\d+)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})", path.stem)
        if not match or match.group(3) not in EMOTION_NAMES:
            continue
        speaker, sentence, emotion, level = match.groups()
        labels: dict[str, Any] = {
            "speaker": speaker_number(speaker, ""),
            "speaker_name": speaker,
            "emotion": EMOTION_NAMES[emotion],
            "language": "en",
        }
        if sentence in CREMA_D_SENTENCES:
            labels["transcript"] = CREMA_D_SENTENCES[sentence]
        if level in CREMA_D_INTENSITIES:
            labels["emotion_intensity"] = CREMA_D_INTENSITIES[level]
        audio = root / "AudioWAV" / (path.stem + ".wav")
        sources.append(_source("crema_d", root, path, audio_path=audio, labels=labels))
    return _nonempty(sources, root, "crema_d", "VideoFlash/1001_DFA_ANG_XX.flv")


def synthetic(root: Path) -> list[ClipSource]:
    """Ground-truth records (`t2v synth --format records`): one source per record."""
    from array_record.python.array_record_module import ArrayRecordReader

    sources = []
    for path in _files(root, "**/*.array_record*"):
        try:
            reader = ArrayRecordReader(str(path))
            try:
                count = reader.num_records()
            finally:
                reader.close()
        except Exception:  # array_record raises RuntimeError or OSError for a damaged shard
            # One source stands for the shard, to be skipped with its reason when prepared.
            sources.append(_source("synthetic", root, path, record_index=0))
            continue
        for index in range(count):
            source = _source("synthetic", root, path, record_index=index)
            sources.append(dataclasses.replace(source, clip_id=f"{source.relative_path}/{index:06d}"))
    return _nonempty(sources, root, "synthetic", "*.array_record-NNNNN-of-NNNNN")


LAYOUTS: dict[str, Callable[[Path], list[ClipSource]]] = {
    "lrw": lrw,
    "voxceleb2": voxceleb2,
    "hdtf": hdtf,
    "mead": mead,
    "grid": grid,
    "crema_d": crema_d,
    "synthetic": synthetic,
}


def list_clips(dataset: str, root: str | os.PathLike) -> list[ClipSource]:
    """Every clip of `dataset` under `root`, sorted by clip id."""
    if dataset not in LAYOUTS:
        raise LayoutError(f"unknown dataset {dataset!r}; choose one of {sorted(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such directory")
    return sorted(LAYOUTS[dataset](root), key=lambda source: source.clip_id)


# --------------------------------------------------------------------------- helpers


def _files(root: Path, pattern: str) -> Iterable[Path]:
    """Regular files matching `pattern`, hidden ones (partial writes) left out, sorted."""
    return sorted(
        path for path in root.glob(pattern)
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def _source(dataset: str, root: Path, path: Path, *, audio_path: Path | None = None, **fields) -> ClipSource:
    relative = path.relative_to(root).as_posix()
    return ClipSource(
        dataset=dataset,
        clip_id=relative.rsplit(".", 1)[0] if "." in path.name else relative,
        path=str(path),
        relative_path=relative,
        audio_path=None if audio_path is None else str(audio_path),
        **fields,
    )


def _nonempty(sources: list[ClipSource], root: Path, dataset: str, expected: str) -> list[ClipSource]:
    if not sources:
        raise LayoutError(f"{root}: no {dataset} clips found (expected {expected})")
    return sources
