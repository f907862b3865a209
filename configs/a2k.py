"""Audio2Keypoint (`a2k` task): audio + PIV identity -> 1-D temporal U-Net -> keypoints, a GAN.

    t2v train --config configs/a2k.py:tiny --workdir /tmp/a2k   # minutes on 2 CPU cores
    t2v eval --workdir /tmp/a2k                                  # metrics vs baselines

The generator and the temporal discriminator train in one optimizer step (see
`t2v.tasks.a2k`); `optimizer.lr_multipliers` sets the discriminator's relative rate.
"""

from configs import base
from t2v.errors import InputError
from configs.sync import add_window_data


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "a2k"
    c.model = dict(
        audio=dict(features=64, num_layers=2, num_heads=4, window=8, mlp_ratio=4, causal=False),
        identity=dict(features=64, hidden_features=(128, 128)),
        unet=dict(widths=(64, 96, 128), kernel_size=3, blocks=1, offset_scale=0.01),
        noise_dim=4,            # per-frame noise: the motion audio does not determine
        discriminator=dict(widths=(64, 128, 128), audio_condition=True),
    )
    c.loss = dict(
        mouth_weight=4.0,        # the mouth is what audio drives: weight its 20 points up
        mouth_shape_weight=1.0,  # the pose-free lips, on top of the posed keypoints
        velocity_weight=1.0,
        piv_weight=0.1,
        adversarial_loss="lsgan",  # or "hinge"
        adversarial_weight=0.01,   # L1 keeps the lips; the critic sharpens the motion
        adversarial_start_step=100,
    )
    c.sample = dict(temperature=1.0, chunk_frames=256)
    c.eval = dict(
        sync_judge_workdir="",  # a sync judge that never served as a loss; "" = no sync metrics
        samples=3,              # generated samples per clip (pose_diversity); the first is scored
        max_clips=0,            # 0 = every held-out clip
        clips_seed=0,           # synthetic data: the eval plan's seed, whatever config.seed is
    )
    add_window_data(c, window=16, max_shift=0)
    c.optimizer.lr_multipliers = {"^discriminator/": 1.0}
    # Personalization (`t2v personalize`, t2v/personalize.py): the encoders stay general.
    c.personalize = dict(frames=300, held_out=0.25, min_seconds=8.0, steps=200, lr=5e-4, warmup_steps=20,
                         batch_size=8, samples=3, seed=0, freeze=["^generator/(audio_encoder|identity_encoder)/"])

    if variant == "tiny":
        c.model.audio.update(features=48, num_layers=1, window=4)
        c.model.identity.update(features=32, hidden_features=(64,))
        c.model.unet.update(widths=(48, 64), blocks=1)
        c.model.discriminator.update(widths=(32, 48))
        c.data.update(window=16, train_clips=96, eval_clips=16, eval_windows=3)
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.99)
        c.loss.adversarial_start_step = 100
        c.train.update(steps=600, batch_size=32, log_every=50, eval_every=300, eval_batches=2,
                       checkpoint_every=300, keep=1)
    elif variant == "base":
        c.model.audio.update(features=256, num_layers=6, num_heads=8, window=12)
        c.model.identity.update(features=128, hidden_features=(256, 256))
        c.model.unet.update(widths=(256, 384, 512, 512), blocks=2)
        c.model.discriminator.update(widths=(128, 256, 256, 256))
        c.data.update(window=32, train_clips=20000, eval_clips=512, workers=8)
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.loss.adversarial_start_step = 5000
        c.train.update(steps=200_000, batch_size=256, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/lmd_mouth", best_mode="min")
    else:
        raise InputError(f"configs/a2k.py: unknown variant {arg!r} (known: tiny, base)")
    return c
