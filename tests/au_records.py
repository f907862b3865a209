"""Small synthetic records folders for the au tests: made once per test session, shared."""

from pathlib import Path

from t2v.data import records, synthetic


def records_folder(base: Path, name: str, seeds, strip_aus=()) -> str:
    """`base/name`: one ArrayRecord shard of `make_clip(seed, render=False)` per seed, in order;
    clips whose seed is in `strip_aus` are written without their AU labels."""
    folder = base / name
    if not folder.is_dir():
        staging = base / f".{name}-staging"
        staging.mkdir(parents=True, exist_ok=True)
        clips = []
        for seed in seeds:
            record = synthetic.make_clip(seed, render=False, language="en").to_record()
            if seed in strip_aus:
                record.pop("aus")
            clips.append(records.encode_clip(record))
        records.write_shards(staging, clips, num_shards=1)
        staging.rename(folder)
    return str(folder)
