"""The README demo (`t2v demo --workdir DIR`): the main job, end to end, on synthetic data.

It synthesizes a small talking-head dataset, then writes sample clips a person can watch.
"""

from configs import base


def get_config(arg=None):
    c = base.get_config()
    c.task = "demo"
    c.synth = dict(
        clips=6,
        langs="en,de,fr",
        format="records",
        texture="",
        size=128,
        seed=0,
        speakers=0,
        shards=1,
    )
    # Sample clips written for a person to look at: one painted, one on a real photograph.
    c.sample = dict(language="en", size=224, seed=7, photo="astronaut")
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/demo.py: unknown variant {arg!r} (known: tiny)")
    return c
