"""Personalized head pose (`pose_lstm` task, Yi et al. 2020): MFCC -> LSTM -> expression + 3-D pose.

    t2v train --config configs/pose_lstm.py:tiny --workdir /tmp/pose_lstm   # minutes on 2 CPU cores
    t2v eval --workdir /tmp/pose_lstm

The expression basis (PCA of pose-free expressions, the stand-in for 3DMM coefficients)
and the feature normalisation are computed at init and kept, never trained, in
`params["constants"]` (see `t2v.tasks.pose_lstm`).
"""

from configs import base
from t2v.errors import InputError
from configs.sync import add_window_data


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "pose_lstm"
    c.model = dict(
        n_mfcc=13,
        lstm=dict(hidden=128, num_layers=2, lookahead=2, expression_dim=16),
    )
    c.loss = dict(
        mouth_weight=4.0,      # for the keypoint term: the mouth is what audio drives
        expression_weight=1.0,  # normalised coefficient MSE (Yi et al.'s coefficient loss)
        pose_weight=0.5,
        keypoint_weight=10.0,   # L1 of the decoded keypoints, face units
        feature_noise=0.5,      # std of Gaussian noise on the standardised MFCC (training only)
    )
    c.sample = dict(temperature=1.0, chunk_frames=256)
    # The data constants (expression basis, normalisation) are never trained: frozen, they get
    # no update, no weight decay and no optimizer state.
    c.optimizer.freeze = ["^constants/"]
    c.eval = dict(
        sync_judge_workdir="",  # a sync judge that never served as a loss; "" = no sync metrics
        samples=3,              # generated samples per clip (pose_diversity); the first is scored
        max_clips=0,            # 0 = every held-out clip
        clips_seed=0,           # synthetic data: the eval plan's seed, whatever config.seed is
    )
    add_window_data(c, window=16, max_shift=0)
    # Personalization (`t2v personalize`, t2v/personalize.py): 300 frames (12 s) of the person
    # to fine-tune on, the last quarter of the video held out; the audio LSTM stays, the heads tune.
    c.personalize = dict(frames=300, held_out=0.25, min_seconds=8.0, steps=200, lr=5e-4, warmup_steps=20,
                         batch_size=8, samples=3, seed=0,
                         freeze=["^constants/", "^model/(front|reference|lstm_\\d+)/"])

    if variant == "tiny":
        c.model.lstm.update(hidden=64, num_layers=1, lookahead=2, expression_dim=12)
        c.loss.feature_noise = 1.0  # 16 training speakers: unseen voices need the noise
        c.data.update(window=16, train_clips=96, eval_clips=16, eval_windows=3)
        c.optimizer.update(lr=3e-3, warmup_steps=30, ema_decay=0.99)
        c.train.update(steps=600, batch_size=32, log_every=50, eval_every=300, eval_batches=2,
                       checkpoint_every=300, keep=1)
    elif variant == "base":
        c.model.lstm.update(hidden=256, num_layers=3, lookahead=3, expression_dim=32)
        c.data.update(window=32, train_clips=20000, eval_clips=512, workers=8)
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.train.update(steps=100_000, batch_size=256, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/lmd_mouth", best_mode="min")
    else:
        raise InputError(f"configs/pose_lstm.py: unknown variant {arg!r} (known: tiny, base)")
    return c
