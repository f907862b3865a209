"""The README demo (`t2v demo --workdir DIR`): the main job, end to end, on synthetic data.

It synthesizes a small talking-head dataset, trains the tiny lip-sync expert, motion model
and renderer, evaluates the motion model against the trivial baselines, and makes a
talking-head video of a real photograph speaking eSpeak NG speech. Re-running it with the
same workdir resumes where it stopped.

    t2v demo --workdir runs/demo
    t2v demo --workdir /tmp/quick --config.steps.sync=20 --config.steps.motion=20 --config.steps.render=20
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
    # The experiments the demo trains, each a workdir under the demo's.
    c.experiments = dict(sync="configs/sync.py:tiny", motion="configs/motion.py:tiny",
                         render="configs/render.py:tiny")
    c.steps = dict(sync=0, motion=0, render=0)  # 0 = the experiment's own train.steps
    # Sample clips of the synthetic data for a person to look at.
    c.sample = dict(language="en", size=224, seed=7, photo="astronaut")
    # The finale: a real photograph speaking new speech in a language of choice.
    c.generate = dict(photo="astronaut", language="en", text="Hello! I am a talking head, made by t2v from one photo.",
                      temperature=1.0, seed=0)
    if arg not in (None, "", "tiny"):
        raise ValueError(f"configs/demo.py: unknown variant {arg!r} (known: tiny)")
    return c
