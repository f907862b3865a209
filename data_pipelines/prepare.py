"""`run(dataset, src, out)`: prepare one dataset, what `t2v prepare` calls.

    report = run("voxceleb2", "raw/voxceleb2", "prepared")
    # -> prepared/t2v_voxceleb2/1.0.0/t2v_voxceleb2-train.array_record-0000i-of-0000n
    #    prepared/t2v_voxceleb2/1.0.0/report.json

The report (also returned) counts kept clips per split and skipped clips per reason,
and lists every skipped clip with its reason and a one-line message.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import secrets
import tempfile
import time

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import builders
from data_pipelines import clip as clip_lib
from t2v.data import records
from t2v.errors import InputError

REPORT_NAME = "report.json"


def run(
    dataset: str,
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    beam: bool = False,
    num_shards: int | None = None,
    options: clip_lib.PrepareOptions | None = None,
    beam_runner=None,
    beam_options: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Prepares `dataset` (a `builders.BUILDERS` key) from the tree `src` into `out`.

    beam: run the per-clip work as an Apache Beam pipeline (`beam_runner` or the
        `--runner=...` of `beam_options`, a list of Beam command-line flags; DirectRunner
        by default); see `data_pipelines/beam.py` for Dataflow, Flink and Spark.
    num_shards: ArrayRecord files per split (TFDS sizes them, ~1 GiB, when None).
    options: per-clip settings (`clip.PrepareOptions()` when None).
    progress: show each split's clips as they are prepared (a bar on a terminal, a line
        every few seconds elsewhere) and print a one-line summary.
    Returns the report, also written to `out/t2v_<dataset>/<version>/report.json`.
    Raises `builders.NoClipsError` when every clip was skipped (nothing is written).
    """
    if dataset not in builders.BUILDERS:
        raise InputError(f"--dataset: unknown dataset {dataset!r}; choose one of {sorted(builders.BUILDERS)}")
    options = options or clip_lib.PrepareOptions()
    out = epath.Path(out)
    skipped_dir = out / f".skipped-{dataset}-{secrets.token_hex(4)}" if beam else None
    builder = builders.BUILDERS[dataset](data_dir=os.fspath(out), options=options, beam=beam, skipped_dir=skipped_dir,
                                         progress=progress)
    if builder.is_prepared():
        raise InputError(f"{builder.data_dir}: already prepared; delete it to prepare {dataset} again")

    beam_pipeline_options = None
    if beam and beam_options:
        from apache_beam.options.pipeline_options import PipelineOptions

        beam_pipeline_options = PipelineOptions(beam_options)
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(src), num_shards=num_shards, beam_runner=beam_runner, beam_options=beam_pipeline_options
    )
    # TFDS's own bars are carriage-return frames wherever they are written: ours replace them.
    tfds.disable_progress_bar()
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as download_dir:  # TFDS wants one; nothing is downloaded
            builder.download_and_prepare(download_dir=download_dir, download_config=download_config)
        skipped = _collect_skipped(builder, skipped_dir)
    except builders.NoClipsError as error:
        skipped = _collect_skipped(builder, skipped_dir)
        reasons = collections.Counter(entry["reason"] for entry in skipped)
        raise builders.NoClipsError(f"{error} ({_reason_counts(reasons)})") from None
    finally:
        tfds.enable_progress_bar()
        if skipped_dir is not None and skipped_dir.exists():
            skipped_dir.rmtree()

    report = _report(builder, os.fspath(src), skipped, time.monotonic() - start)
    (epath.Path(builder.data_dir) / REPORT_NAME).write_text(json.dumps(report, indent=1))
    if progress:
        print(report["summary"])
    return report


def _collect_skipped(builder: builders.ClipDatasetBuilder, skipped_dir: epath.Path | None) -> list[dict]:
    """Skip entries: kept on the builder locally, in the workers' JSON-line files with Beam."""
    if skipped_dir is None:
        return list(builder.skipped)
    from data_pipelines import beam

    entries = []
    if skipped_dir.exists():
        for path in sorted(skipped_dir.glob(f"*{beam.SKIPPED_FILE_SUFFIX}")):
            entries += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(entries, key=lambda entry: entry["clip_id"])


def _report(builder: builders.ClipDatasetBuilder, src: str, skipped: list[dict], seconds: float) -> dict:
    kept = {name: split.num_examples for name, split in builder.info.splits.items()}
    reasons = collections.Counter(entry["reason"] for entry in skipped)
    total_kept = sum(kept.values())
    summary = f"{builder.dataset}: {total_kept} clips kept, {len(skipped)} skipped"
    if skipped:
        summary += f" ({_reason_counts(reasons)})"
    return {
        "dataset": builder.dataset,
        "builder": builder.name,
        "version": str(builder.version),
        "schema": records.SCHEMA,
        "source": src,
        "data_dir": os.fspath(builder.data_dir),
        "kept": total_kept,
        "kept_by_split": kept,
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped_clips": skipped,
        "seconds": round(seconds, 2),
        "options": dataclasses.asdict(builder.options),
        "summary": f"{summary} -> {builder.data_dir}",
    }


def _reason_counts(reasons: collections.Counter) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
