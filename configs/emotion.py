"""Emotion translation (`emotion` task, Wav2Lip-Emotion): a face crop -> the same crop with a
target emotion, lips, identity and pose kept.

    t2v train --config configs/emotion.py:tiny --workdir /tmp/emotion \
        --config.model.emotion_cls_workdir=/tmp/emo_cls          # the loss classifier (optional)
    t2v eval --workdir /tmp/emotion --config.eval.emotion_judge_workdir=/tmp/emo_judge
    t2v emotion --checkpoint /tmp/emotion --video IN.mp4 --to happy --out OUT.mp4

Variants: `tiny` (a laptop CPU), `base` (the cloud run); `model.mask` = "full" or
"lower_half" (only the lower half of the face may change). The judge is an `emotion_cls`
workdir trained apart (configs/emotion_cls.py:judge), never the loss classifier.
"""

from configs import base
from t2v.errors import InputError


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "emotion"
    c.model = dict(
        translator=dict(widths=(16, 32, 64), embed=32),
        mask="full",              # "full" | "lower_half": the region the translator may change
        emotion_cls_workdir="",   # a trained emotion_cls workdir: the classifier loss ("" = L1 only)
    )
    c.loss = dict(l1=1.0, classifier=0.1)
    c.data.update(
        window=1,
        size=64,                  # synthetic: rendered frame size
        crop=48,                  # face crop side (the classifier's too)
        frames_per_clip=8,        # cached frames per clip, each with every emotion's target
        langs="en", eval_langs="de",
        train_speakers=24, eval_speakers=6, train_speaker_offset=0,
        train_clips=48, eval_clips=12, cache_dir="", texture="",
    )
    c.eval = dict(max_clips=0, clips_seed=0, emotion_judge_workdir="", frames=6)  # frames judged per held-out clip
    if variant == "tiny":
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.99, weight_decay=1e-4)
        c.train.update(steps=600, batch_size=32, log_every=50, eval_every=300, eval_batches=8,
                       checkpoint_every=300, keep=1)
    elif variant == "base":
        c.model.translator.update(widths=(64, 128, 256, 512), embed=128)
        c.data.update(size=256, crop=224, frames_per_clip=16, train_clips=20000, eval_clips=256,
                      train_speakers=1000, workers=8)
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.train.update(steps=200_000, batch_size=128, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/l1", best_mode="min")
    else:
        raise InputError(f"configs/emotion.py: unknown variant {arg!r} (known: tiny, base)")
    return c
