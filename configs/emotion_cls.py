"""The emotion classifier (`emotion_cls` task): face crop -> one of seven emotions.

    t2v train --config configs/emotion_cls.py:tiny --workdir /tmp/emo_cls     # a loss for `emotion`
    t2v train --config configs/emotion_cls.py:judge --workdir /tmp/emo_judge  # trained apart: the judge
    t2v train --config configs/emotion_cls.py:base --config.data.source=records \
        --config.data.path=MEAD_RECORDS --config.data.eval_path=HELD_OUT_RECORDS --workdir gs://...

Variants: `tiny` (a laptop CPU in minutes, synthetic speakers 0..), `judge` (the tiny
classifier with another seed and other speakers, 1000..: it judges models trained against
`tiny` and is never a loss), `base` (the cloud run). Held out: the eval split's speakers.
"""

JUDGE_SEED = 1  # never a loss classifier's seed (0 by default)
JUDGE_SPEAKER_OFFSET = 1000  # speakers 1000.. : no loss classifier's (0..) nor the eval split's (100000..)

from configs import base
from t2v.errors import InputError


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "emotion_cls"
    c.model = dict(classifier=dict(widths=(16, 32, 64)))
    c.loss = dict(label_smoothing=0.05)
    c.data.update(
        window=1,                # read by the shared clip loader only
        size=64,                 # synthetic: rendered frame size
        crop=48,                 # the face crop the classifier sees (divides by 2 ** len(widths))
        eval_frames=6,           # fixed frames per held-out clip
        langs="en", eval_langs="de",  # speech does not matter here; the faces do
        train_speakers=24, eval_speakers=8, train_speaker_offset=0,
        train_clips=168, eval_clips=56,
        eval_path="", cache_dir="", texture="",
    )
    c.eval = dict(max_clips=0, clips_seed=0)
    if variant in ("tiny", "judge"):
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.99, weight_decay=1e-4)
        c.train.update(steps=600, batch_size=32, log_every=50, eval_every=300, eval_batches=16,
                       checkpoint_every=300, keep=1)
        if variant == "judge":
            c.seed = JUDGE_SEED
            c.data.train_speaker_offset = JUDGE_SPEAKER_OFFSET
    elif variant == "base":
        c.model.classifier.widths = (32, 64, 128, 256)
        c.data.update(size=128, crop=112, train_clips=20000, eval_clips=1000, train_speakers=1000, workers=8)
        c.optimizer.update(lr=1e-3, warmup_steps=1000, ema_decay=0.999)
        c.train.update(steps=100_000, batch_size=256, log_every=100, eval_every=5000, eval_batches=32,
                       checkpoint_every=5000, keep=3, best_metric="eval/acc", best_mode="max")
    else:
        raise InputError(f"configs/emotion_cls.py: unknown variant {arg!r} (known: tiny, judge, base)")
    return c
