"""The per-clip preparation as an Apache Beam transform, for datasets too large for one
machine. Needs the `beam` extra (`pip install 't2v[beam]'`); nothing else imports it.

A TFDS builder made with `beam=True` returns `PrepareClips` from `_generate_examples`;
TFDS runs it on the runner of `DownloadConfig(beam_runner=..., beam_options=...)` and
writes the examples. Skipped clips leave the pipeline on a side output, written as
JSON lines under `skipped_dir` (which must be storage every worker can write, e.g.
`gs://` on Dataflow) and merged into `report.json` by `prepare.run`; Beam counters
`t2v.prepare/kept` and `t2v.prepare/skipped_<reason>` count both as the job runs.

Runners (`prepare.run(..., beam=True, beam_options=[...])` or `t2v prepare --beam`):
  * DirectRunner (default): `--direct_num_workers=8 --direct_running_mode=multi_processing`
  * Dataflow: `--runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
    --requirements_file=requirements.txt` (t2v[data], dlib-bin and face-recognition-models
    on the workers), with SRC and OUT on gs://
  * Flink: `--runner=FlinkRunner --flink_master=HOST:8081 --environment_type=LOOPBACK`
    (or `DOCKER` with `--environment_config=IMAGE` holding t2v[data])
  * Spark: `--runner=SparkRunner --spark_master_url=spark://HOST:7077
    --environment_type=DOCKER --environment_config=IMAGE`
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
