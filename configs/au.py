"""Speech-related action units (`au` task) and the AU classifier (`au_cls` task).

    t2v train --config configs/au.py:cls   --workdir /tmp/au_cls     # the loss classifier
    t2v train --config configs/au.py:judge --workdir /tmp/au_judge   # a judge trained apart
    t2v train --config configs/au.py:tiny  --workdir /tmp/au \\
        --config.model.au_classifier_workdir=/tmp/au_cls
    t2v eval --workdir /tmp/au --config.eval.au_judge_workdir=/tmp/au_judge

Variants: `tiny`, `base` (the `au` model), either followed by `,no_au` (the ablation: the
fusion gets no AUs and the AU regression is off; every other loss, the AU-classifier loss
included, stays), `cls` / `judge` (tiny AU classifiers: `judge` has its own seed and
training speakers, so it never served as a loss), `cls_base`.
"""

from configs import base
from t2v.errors import InputError
from configs.sync import add_window_data

JUDGE_SEED = 1  # never the loss classifier's seed (0)
JUDGE_SPEAKER_OFFSET = 1000  # speakers 1000.. : not the loss classifier's (0..) nor the eval split's (100000..)


def au_model(c) -> None:
    c.task = "au"
    c.model = dict(
        audio=dict(features=64, num_layers=2, num_heads=4, window=8, mlp_ratio=4, causal=False),
        identity=dict(features=64, hidden_features=(128, 128)),
        au_head=dict(hidden=64),
        fusion=dict(features=64, dilations=(1, 2, 4, 8), kernel_size=3, attention_layers=1, num_heads=4,
                    window=8, offset_scale=0.01),
        au_driving=True,
        au_classifier_workdir="",  # an `au_cls` workdir: its reading of the output is a loss
    )
    c.loss = dict(mouth_weight=4.0, mouth_shape_weight=1.0, velocity_weight=1.0, au_weight=1.0, au_cls_weight=0.5)
    c.sample = dict(temperature=1.0, chunk_frames=256)
    c.eval = dict(
        au_judge_workdir="",  # an `au_cls` workdir trained apart (:judge); never the loss classifier
        samples=1,            # the model is deterministic
        max_clips=0,
        clips_seed=0,
    )


def au_classifier(c) -> None:
    c.task = "au_cls"
    c.model = dict(classifier=dict(features=64, dilations=(1, 2)))
    c.eval = dict(max_clips=0, clips_seed=0)
    c.data.augment.update(enabled=True, keypoint_noise=0.01)  # generated keypoints are no surprise


def get_config(arg=None):
    variant, *flags = (arg or "base").split(",")
    c = base.get_config()
    add_window_data(c, window=16, max_shift=0)
    c.data.action_units = True  # windows carry au [T, 9]
    if variant in ("tiny", "base"):
        au_model(c)
    elif variant in ("cls", "judge", "cls_base"):
        au_classifier(c)
    else:
        raise InputError(f"configs/au.py: unknown variant {arg!r} (known: tiny, base, tiny,no_au, cls, judge, cls_base)")

    if variant in ("tiny", "cls", "judge"):
        c.data.update(window=16, train_clips=48, eval_clips=16, eval_windows=3)
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.98)
        c.train.update(steps=300, batch_size=16, log_every=50, eval_every=300, eval_batches=2,
                       checkpoint_every=150, keep=1)
    if variant == "tiny":
        c.model.audio.update(features=48, num_layers=1, window=4)
        c.model.identity.update(features=32, hidden_features=(64,))
        c.model.au_head.hidden = 48
        c.model.fusion.update(features=48, dilations=(1, 2, 4), window=4)
    elif variant in ("cls", "judge"):
        c.model.classifier.update(features=48)
        c.train.steps = 200
        if variant == "judge":
            c.seed = JUDGE_SEED
            c.data.train_speaker_offset = JUDGE_SPEAKER_OFFSET
    elif variant in ("base", "cls_base"):
        if variant == "base":
            c.model.audio.update(features=256, num_layers=6, num_heads=8, window=12)
            c.model.identity.update(features=128, hidden_features=(256, 256))
            c.model.au_head.hidden = 256
            c.model.fusion.update(features=256, dilations=(1, 2, 4, 8, 16), attention_layers=2, num_heads=8, window=12)
        else:
            c.model.classifier.update(features=256, dilations=(1, 2, 4))
        c.data.update(window=32, train_clips=20000, eval_clips=512, workers=8)
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.train.update(steps=200_000, batch_size=256, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3)

    for flag in flags:
        if flag == "no_au" and c.task == "au":
            c.model.au_driving = False  # the task then drops the AU regression too
        else:
            raise InputError(f"configs/au.py: unknown flag {flag!r} for variant {variant!r} (known: no_au for tiny/base)")
    return c
