"""The lip-sync expert (`sync` task): audio window vs pose-free mouth window, InfoNCE.

    t2v train --config configs/sync.py:tiny --workdir /tmp/sync   # a few minutes on 2 CPU cores
    t2v train --config configs/sync.py:base --workdir gs://...    # cloud size

Variants: `tiny` (trains on a laptop CPU and finds the true audio offset among +-15
frames far above chance), `judge` (the tiny expert trained apart, on other speakers and with
another seed: a judge for models trained against `tiny`, never a loss), `base` (the cloud
run). Any can be followed by overrides.

    t2v train --config configs/sync.py:judge --workdir /tmp/judge
    t2v eval --workdir /tmp/motion --config.eval.sync_judge_workdir=/tmp/judge
"""

JUDGE_SEED = 1  # never a loss expert's seed (0 by default)
JUDGE_SPEAKER_OFFSET = 1000  # speakers 1000.. : no loss expert's (0..) nor the eval split's (100000..)

from configs import base
from t2v.errors import InputError


def add_window_data(c, *, window: int, max_shift: int) -> None:
    """The input keys shared by the sync and motion experiments (t2v.data.pipeline)."""
    c.data.update(
        window=window,
        max_shift=max_shift,     # M: audio context either side, for shifted negatives / offset search
        eval_windows=2,          # fixed eval windows per held-out clip
        train_speakers=16,       # synthetic: training speaker ids 0..N-1
        eval_speakers=8,         # synthetic: held-out speakers, never trained on
        eval_path="",            # records source: the held-out split
        cache_dir="",            # synthetic clips cache ("" = $T2V_CACHE or ~/.cache/t2v)
        reference_frame=False,   # also emit a reference image (needs rendered frames)
        # The reference keypoints: "detected" = a pinned frame of the clip, as inference takes
        # it from a photo (posed, maybe mid-speech); "neutral" = the privileged frontal neutral
        # face only synthetic data knows (an ablation). Evaluation always uses "detected".
        reference="detected",
        train_speaker_offset=0,  # synthetic: training speakers are offset..offset+N-1
        threads=1,               # Grain reader threads in each process (workers add processes)
        # Training windows only. No random similarity: head pose is a target (motion task).
        augment=dict(
            enabled=False,
            keypoint_noise=0.0,  # std of Gaussian keypoint jitter, face-frame units (face size 1)
        ),
    )


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "sync"
    c.model = dict(sync=dict(window=5, features=64, width=64, num_layers=2, use_image=False,
                             initial_temperature=0.07))
    c.loss = dict(shifted_negatives=4)  # same-clip audio shifted 2..M frames, per mouth window
    add_window_data(c, window=5, max_shift=15)
    c.eval = dict(max_clips=0, clips_seed=0)  # t2v eval: every held-out clip, of the seed-0 eval plan

    if variant in ("tiny", "judge"):
        c.model.sync.update(window=8, features=32, width=48, num_layers=2)
        c.data.update(window=8, train_clips=96, eval_clips=16, eval_windows=3)
        c.loss.shifted_negatives = 6
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.99, weight_decay=1e-4)
        c.train.update(steps=500, batch_size=32, log_every=50, eval_every=250, eval_batches=2,
                       checkpoint_every=250, keep=1)
        if variant == "judge":
            c.seed = JUDGE_SEED
            c.data.train_speaker_offset = JUDGE_SPEAKER_OFFSET
    elif variant == "base":
        c.model.sync.update(window=5, features=256, width=256, num_layers=4)
        c.data.update(train_clips=20000, eval_clips=512, workers=8)
        c.loss.shifted_negatives = 8
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.train.update(steps=200_000, batch_size=512, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/sync_offset_acc", best_mode="max")
    else:
        raise InputError(f"configs/sync.py: unknown variant {arg!r} (known: tiny, judge, base)")
    return c
