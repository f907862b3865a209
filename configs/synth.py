"""Procedural talking heads (`t2v synth`): how many clips, which languages, which format.

    t2v synth --out DIR --clips 100 --langs en,de,fr --format records
    t2v synth --config configs/synth.py:tiny --out DIR --config.synth.size=128
    t2v synth --out DIR --clips 20 --emotions neutral   # a neutral test set

Not an experiment: it holds only what `t2v synth` reads (no base keys); its flags are
shorthands for these fields, and `--config.synth.x=y` overrides win over them.
"""

import ml_collections

from t2v.errors import InputError


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.task = "synth"
    c.synth = dict(
        clips=100,
        langs="en,de,fr,es,it,pt",
        format="records",   # "records" (ground-truth ArrayRecord) or "voxceleb2" (mp4 tree)
        texture="",         # "" = painted faces; a photo path, or "astronaut"
        text_file="",       # "" = each language's own sentences; a UTF-8 file, one sentence a line
        emotions="",        # "" = each clip draws one; "neutral,happy" = only these, in turn
        size=224,
        seed=0,
        speakers=0,         # 0 = one new speaker every few clips
        shards=4,
    )
    if arg == "tiny":
        c.synth.clips = 4
        c.synth.size = 96
        c.synth.shards = 1
    elif arg not in (None, ""):
        raise InputError(f"configs/synth.py: unknown variant {arg!r} (known: tiny)")
    return c
