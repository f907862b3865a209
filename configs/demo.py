"""The README demo (`t2v demo --workdir DIR`): the main job, end to end, on synthetic data.

It synthesizes the talking-head clips every later stage reads (DIR/data), trains the tiny
lip-sync expert, a sync judge apart from it, the motion model and the renderer, evaluates the
motion model against baselines and the ground truth under the independent judge, and makes a
talking-head video of a real photograph speaking eSpeak NG speech. Re-running it with the
same workdir resumes where it stopped.

    t2v demo --workdir runs/demo
    t2v demo --workdir /tmp/quick --config.steps.sync=20 --config.steps.motion=20 --config.steps.render=20
"""

from configs import base
from t2v.errors import InputError


def get_config(arg=None):
    c = base.get_config()
    c.task = "demo"
    # The data every stage trains and is evaluated on, written by stage 1 under DIR/data: each
    # experiment's own train / eval plan, with these demo-wide changes (0 = the experiment's own).
    c.synth = dict(
        clips=0,   # training clips per experiment
        size=0,    # frame size of the renderer's clips, pixels
    )
    # The experiments the demo trains, each a workdir under the demo's. The judge is a sync
    # expert trained apart (other speakers, another seed): it scores the motion model, never trains it.
    c.experiments = dict(sync="configs/sync.py:tiny", judge="configs/sync.py:judge", motion="configs/motion.py:tiny",
                         render="configs/render.py:tiny")
    c.steps = dict(sync=0, judge=0, motion=0, render=0)  # 0 = the experiment's own train.steps (judge: sync's)
    # Sample clips of the synthetic data for a person to look at.
    c.sample = dict(language="en", size=224, seed=7, photo="astronaut")
    # The finale: a real photograph speaking new speech in a language of choice.
    c.generate = dict(photo="astronaut", language="en", text="Hello! I am a talking head, made by t2v from one photo.",
                      temperature=1.0, seed=0)
    if arg not in (None, "", "tiny"):
        raise InputError(f"configs/demo.py: unknown variant {arg!r} (known: tiny)")
    return c
