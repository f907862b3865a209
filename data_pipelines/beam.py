"""The per-clip preparation as an Apache Beam transform, for datasets too large for one
machine. Needs the `beam` extra (`pip install 't2v[beam]'`); nothing else imports it.

Skipped clips leave the pipeline on a side output, written as JSON lines under
`skipped_dir` (storage every worker can write) and merged into `report.json` by
`prepare.run`. The flags for the Direct, Dataflow, Flink and Spark runners:
docs/data_pipelines.md.
"""

from __future__ import annotations

import json
import os

import apache_beam as beam

from data_pipelines import clip as clip_lib
from data_pipelines import landmarks
from data_pipelines.layouts import ClipSource

COUNTER_NAMESPACE = "t2v.prepare"
SKIPPED_FILE_SUFFIX = ".jsonl"


class _PrepareClipFn(beam.DoFn):
    """ClipSource -> (clip_id, {"record": bytes}), or a JSON skip entry on the "skipped" output."""

    def __init__(self, options: clip_lib.PrepareOptions):
        self.options = options
        self._detector = None

    def setup(self):
        # dlib's models load once per worker, not once per clip.
        self._detector = landmarks.LandmarkDetector(self.options.detect_every)

    def process(self, source: ClipSource):
        outcome = clip_lib.prepare_or_skip(source, self._detector, self.options)
        if isinstance(outcome, bytes):
            beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "kept").inc()
            yield source.clip_id, {"record": outcome}
        else:
            beam.metrics.Metrics.counter(COUNTER_NAMESPACE, f"skipped_{outcome['reason']}").inc()
            yield beam.pvalue.TaggedOutput("skipped", json.dumps(outcome))


class PrepareClips(beam.PTransform):
    """Pipeline root -> PCollection of (clip_id, {"record": bytes}) for `sources`.

    skipped_prefix: file prefix for the skipped clips' JSON lines (one split's).
    """

    def __init__(self, sources: list[ClipSource], options: clip_lib.PrepareOptions, skipped_prefix: str):
        super().__init__()
        self.sources = sources
        self.options = options
        self.skipped_prefix = skipped_prefix

    def expand(self, root):
        outputs = (
            root
            | "ListClips" >> beam.Create(self.sources)
            | "SpreadOverWorkers" >> beam.Reshuffle()  # else fusion keeps the slow clips in Create's few bundles
            | "PrepareClip" >> beam.ParDo(_PrepareClipFn(self.options)).with_outputs("skipped", main="examples")
        )
        _ = outputs.skipped | "WriteSkipped" >> beam.io.WriteToText(self.skipped_prefix, file_name_suffix=SKIPPED_FILE_SUFFIX)
        return outputs.examples


def skipped_prefix(skipped_dir: str | os.PathLike, split: str) -> str:
    """Where `PrepareClips` for `split` writes its skipped clips."""
    return os.path.join(os.fspath(skipped_dir), f"skipped-{split}")
