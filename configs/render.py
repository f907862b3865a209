"""The keypoint-driven renderer (`render` task), optionally with memory-augmented refinement.

    t2v train --config configs/render.py:tiny --workdir /tmp/render   # minutes on 2 CPU cores
    t2v train --config configs/render.py:base --workdir gs://...      # 256 x 256, cloud size
    t2v train --config configs/render.py:tiny --workdir /tmp/r --config.model.refine=True

`model.perceptual_weights` points at VGG-style convolution weights the user holds (.npz or
.msgpack, see `t2v.tasks.render.PerceptualFeatures`); empty leaves the perceptual loss off.
Nothing is downloaded.
"""

from configs import base
from t2v.errors import InputError


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "render"
    c.model = dict(
        features=64,                    # warped reference features at S / 4
        encoder_widths=(16, 32),        # reference encoder at S and S / 2 (once per video)
        motion_widths=(32, 64, 128),    # dense-motion hourglass at S / 8, S / 16, S / 32
        motion_features=16,
        decoder_blocks=2,
        decoder_width=32,               # decoder at S / 2 (its last convolution predicts 2x2 pixel blocks)
        heatmap_std=0.06,               # keypoint Gaussians, in [-1, 1] image units
        refine=False,                   # memory-augmented refinement stage (Yi et al. 2020)
        memory_slots=64,
        memory_dim=64,
        refine_widths=(16, 32),         # refiner at S / 2 and S / 4
        discriminator_widths=(32, 64, 128),
        discriminator_scales=2,
        perceptual_weights="",          # path to VGG-style weights you hold; "" = no perceptual loss
        perceptual_blocks=4,
    )
    c.loss = dict(
        l1=1.0,
        ssim=0.5,
        mouth_weight=3.0,               # L1 weight inside the mouth box (the part speech moves)
        mouth_margin=0.3,               # the mouth box grows by this fraction of its size per side
        adversarial_loss="hinge",       # or "lsgan"
        adversarial=0.02,
        feature_matching=0.5,
        adversarial_start_step=0,       # generator-side GAN terms start here (the discriminator always trains)
        perceptual=1.0,                 # used only with model.perceptual_weights
        refine_adversarial=0.05,        # the refinement stage's own GAN term
    )
    c.data.update(
        size=256,
        train_speakers=16,
        eval_speakers=8,
        eval_pairs=4,                   # fixed eval pairs per held-out clip
        texture="",                     # "" = painted faces; "astronaut" or a face photo's path
        eval_path="",                   # records source: the held-out split
        cache_dir="",                   # rendered-clip cache ("" = $T2V_CACHE or ~/.cache/t2v)
        # Training pairs only (t2v.data.pipeline.PairAugment): one similarity warps both frames
        # and both keypoint sets alike; one colour jitter recolours both frames alike.
        augment=dict(
            enabled=False,
            scale=0.1,                  # zoom in [1 - scale, 1 + scale]
            rotation_deg=8.0,           # rotation in +-rotation_deg
            translate=0.05,             # shift in +-translate of the frame size, per axis
            brightness=0.2,             # colour factors in [1 - x, 1 + x]
            contrast=0.2,
            saturation=0.2,
        ),
    )

    if variant == "tiny":
        c.model.update(features=32, encoder_widths=(16, 16), motion_widths=(16, 32, 64), motion_features=16,
                       decoder_blocks=1, decoder_width=16, heatmap_std=0.1, memory_slots=16,
                       memory_dim=32, refine_widths=(16, 16), discriminator_widths=(16, 32, 64))
        c.data.update(size=64, train_clips=48, eval_clips=8, train_speakers=16, eval_speakers=8)
        c.data.augment.enabled = True
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.98, weight_decay=0.0)
        c.train.update(steps=300, batch_size=16, log_every=25, eval_every=150, eval_batches=2,
                       checkpoint_every=150, keep=1)
    elif variant == "base":
        c.data.update(size=256, train_clips=20000, eval_clips=512, workers=8)
        c.data.augment.enabled = True
        c.optimizer.update(lr=2e-4, warmup_steps=2000, ema_decay=0.999, weight_decay=0.0)
        c.loss.adversarial_start_step = 5000
        c.train.update(steps=300_000, batch_size=64, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/l1", best_mode="min")
    else:
        raise InputError(f"configs/render.py: unknown variant {arg!r} (known: tiny, base)")

    # Generator and discriminators train as two optimizer groups (t2v.optim): each has its own
    # gradient clip, schedule and AdamW; the EMA holds the generator alone. The top-level
    # c.optimizer settings are the generator's; the discriminators start from the same values
    # and change on their own: --config.optimizer.groups.discriminator.lr=4e-4.
    c.optimizer.main_group = "generator"
    settings = ("lr", "warmup_steps", "end_lr_fraction", "weight_decay", "clip_norm", "b1", "b2")
    c.optimizer.groups = dict(discriminator=dict(params="^(refine_)?discriminator/", ema=False,
                                                 **{k: c.optimizer[k] for k in settings}))
    return c
