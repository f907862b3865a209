"""TFDS builders, one per dataset layout, writing sharded ArrayRecord without TensorFlow.

Every builder stores the same example, one bytes feature:

    {"record": tfds.features.Tensor(shape=(), dtype=np.object_)}   # t2v.data.records.encode_clip(...)

so a prepared dataset holds exactly the records `t2v synth --format records` writes,
and one decoder (`t2v.data.records.decode_clip`) reads both. A TFDS FeaturesDict of
the clip's fields was rejected: its variable-length arrays and JPEG lists would
duplicate the record schema in a second, TFDS-specific form, and TFDS decodes
images with TensorFlow. Reading needs neither TensorFlow nor this package:

    builder = tfds.builder_from_directory("OUT/t2v_voxceleb2/1.0.0")
    source = builder.as_data_source(split="train")   # random access, a Grain data source
    clip = t2v.data.records.decode_clip(source[i]["record"])

The raw source tree is the builder's manual directory (TFDS's place for data one must
obtain by hand): `download_and_prepare(download_config=DownloadConfig(manual_dir=SRC))`.
Clips that cannot be prepared are skipped and listed in `builder.skipped`.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import clip as clip_lib
from data_pipelines import landmarks, layouts
from t2v.data import records
from t2v.errors import InputError
from t2v.progress import track

VERSION = tfds.core.Version("1.0.0")
FEATURES = {"record": "bytes: one t2v.data.records clip record (msgpack), schema " + records.SCHEMA}


class ClipDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds `t2v.clip/1` records from one dataset layout (the subclass names it).

    options: the per-clip preparation settings (`clip.PrepareOptions`).
    beam: prepare clips in an Apache Beam pipeline (see `beam.py`); the runner and its
        options come from `DownloadConfig(beam_runner=..., beam_options=...)`.
    skipped_dir: with `beam`, where workers write the skipped clips (JSON lines).
    progress: show each split's clips as they are prepared (`t2v.progress`; not with Beam,
        whose runner reports its own).
    Other keyword arguments go to `tfds.core.GeneratorBasedBuilder` (data_dir, ...);
    the file format is always ArrayRecord.
    """

    dataset: ClassVar[str]
    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": f"{records.SCHEMA} records: 224 x 224 aligned crops, dlib landmarks, pose, AU proxies."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the dataset's source tree as manual_dir; data_pipelines/layouts.py lists the layouts."

    def __init__(
        self,
        *,
        options: clip_lib.PrepareOptions = clip_lib.PrepareOptions(),
        beam: bool = False,
        skipped_dir: str | os.PathLike | None = None,
        progress: bool = False,
        **kwargs,
    ):
        self.options = options
        self.progress = progress
        self.beam = beam
        self.skipped_dir = None if skipped_dir is None else os.fspath(skipped_dir)
        self.skipped: list[dict] = []  # {"clip_id", "path", "reason", "message"} per skipped clip
        if beam and self.skipped_dir is None:
            raise ValueError("a Beam build needs skipped_dir, where workers list the clips they skip")
        super().__init__(file_format="array_record", **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS 4.9's own lookup imports `importlib_resources`, which it no longer installs
        # on Python >= 3.9; its fallback, the class's source file, is what it finds anyway.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.dataset} talking-head clips as {records.SCHEMA} records (data_pipelines/clip.py).",
            features=tfds.features.FeaturesDict({"record": tfds.features.Tensor(shape=(), dtype=np.object_)}),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sources = layouts.list_clips(self.dataset, dl_manager.manual_dir)
        by_split = {split: list(group) for split, group in itertools.groupby(
            sorted(sources, key=lambda s: (s.split, s.clip_id)), key=lambda s: s.split)}
        if self.beam:
            return {split: self._generate_examples(group, split) for split, group in by_split.items()}
        # TFDS cannot write an empty split: run each split up to its first kept clip, and
        # leave out a split whose clips were all skipped.
        generators = {}
        for split, group in by_split.items():
            examples = self._generate_examples(group, split)
            first = next(examples, None)
            if first is not None:
                generators[split] = itertools.chain([first], examples)
        if not generators:
            raise NoClipsError(f"{dl_manager.manual_dir}: none of the {len(sources)} {self.dataset} clips could be prepared")
        return generators

    def _generate_examples(self, sources: list[layouts.ClipSource], split: str):
        if self.beam:
            from data_pipelines import beam

            return beam.PrepareClips(sources, self.options, beam.skipped_prefix(self.skipped_dir, split))
        return self._prepare_locally(sources, split)

    def _prepare_locally(self, sources: list[layouts.ClipSource], split: str) -> Iterator[tuple[str, dict]]:
        detector = None if self.dataset == "synthetic" else landmarks.LandmarkDetector(self.options.detect_every)
        for source in track(sources, desc=f"{self.dataset} {split}", unit="clip", disable=not self.progress):
            outcome = clip_lib.prepare_or_skip(source, detector, self.options)
            if isinstance(outcome, bytes):
                yield source.clip_id, {"record": outcome}
            else:
                self.skipped.append(outcome)


class NoClipsError(InputError):
    """Every clip of a source tree was skipped, so there is no dataset to write."""


# --------------------------------------------------------------------------- one builder per layout


class T2vLrw(ClipDatasetBuilder):
    """LRW (lip reading in the wild): `WORD/{train,val,test}/WORD_NNNNN.mp4`."""

    dataset = "lrw"


class T2vVoxceleb2(ClipDatasetBuilder):
    """VoxCeleb2: `idNNNNN/VIDEO/NNNNN.mp4`."""

    dataset = "voxceleb2"


class T2vHdtf(ClipDatasetBuilder):
    """HDTF: a folder of mp4s."""

    dataset = "hdtf"


class T2vMead(ClipDatasetBuilder):
    """MEAD: `ID/video/front/EMOTION/level_K/NNN.mp4` + `ID/audio/EMOTION/level_K/NNN.m4a`."""

    dataset = "mead"


class T2vGrid(ClipDatasetBuilder):
    """GRID: `sN/*.mpg` + `.align` word alignments."""

    dataset = "grid"


class T2vCremaD(ClipDatasetBuilder):
    """CREMA-D: `VideoFlash/*.flv` + `AudioWAV/*.wav`."""

    dataset = "crema_d"


class T2vSynthetic(ClipDatasetBuilder):
    """Ground-truth synthetic records, checked and passed through."""

    dataset = "synthetic"


BUILDERS: dict[str, type[ClipDatasetBuilder]] = {
    builder.dataset: builder for builder in (T2vLrw, T2vVoxceleb2, T2vHdtf, T2vMead, T2vGrid, T2vCremaD, T2vSynthetic)
}
assert set(BUILDERS) == set(layouts.LAYOUTS)
