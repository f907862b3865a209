"""The motion model (`motion` task): audio encoder + PIV identity + sequential VAE + flow prior.

    t2v train --config configs/motion.py:tiny --workdir /tmp/motion   # minutes on 2 CPU cores
    t2v eval --workdir /tmp/motion                                    # metrics vs baselines

`model.sync_workdir` points at a trained `sync` workdir to add a frozen lip-sync loss; empty
skips it. `eval.sync_judge_workdir` names the sync judge `t2v eval` scores the model with: a
`sync` workdir trained apart (`configs/sync.py:judge`), never the loss expert (refused).
"""

from configs import base
from t2v.errors import InputError
from configs.sync import add_window_data


def get_config(arg=None):
    variant = arg or "base"
    c = base.get_config()
    c.task = "motion"
    c.model = dict(
        audio=dict(features=64, num_layers=2, num_heads=4, window=8, mlp_ratio=4, causal=False),
        identity=dict(features=64, hidden_features=(128, 128)),
        vae=dict(latent_dim=16, features=64, posterior_layers=3, kernel_size=3, decoder_hidden=(128, 128),
                 mouth_latent_dim=0, offset_scale=0.1),
        prior=dict(hidden_features=64, num_couplings=4, coupling_hidden=(64, 64), scale_limit=2.0),
        sync_workdir="",
        remat="none",  # or "full", "dots", "dots_no_batch": memory for long clips (docs/scale.md)
    )
    c.loss = dict(
        mouth_weight=4.0,       # the mouth is what audio drives: weight its 20 points up
        mouth_shape_weight=1.0,  # the pose-free lips, on top of the posed keypoints
        velocity_weight=1.0,
        kl_weight=3e-4,         # per frame, in nats; the flow prior learns only from this term
        kl_warmup_steps=200,
        piv_weight=0.1,
        sync_weight=0.1,        # used only with model.sync_workdir
    )
    c.sample = dict(temperature=1.0, chunk_frames=256)
    c.eval = dict(
        sync_judge_workdir="",  # a sync judge that never served as a loss; "" = no sync metrics
        samples=3,              # prior samples per clip (pose_diversity); the first is scored
        max_clips=0,            # 0 = every held-out clip
        clips_seed=0,           # synthetic data: the eval plan's seed, whatever config.seed is
    )
    add_window_data(c, window=16, max_shift=0)

    if variant == "tiny":
        c.model.audio.update(features=48, num_layers=1, window=4)
        c.model.identity.update(features=32, hidden_features=(64,))
        c.model.vae.update(latent_dim=8, features=48, posterior_layers=2, decoder_hidden=(96, 96))
        c.model.prior.update(hidden_features=48, num_couplings=2, coupling_hidden=(48,))
        c.data.update(window=16, train_clips=96, eval_clips=16, eval_windows=3)
        c.optimizer.update(lr=2e-3, warmup_steps=30, ema_decay=0.99)
        c.loss.kl_warmup_steps = 100
        c.train.update(steps=1000, batch_size=32, log_every=50, eval_every=500, eval_batches=2,
                       checkpoint_every=500, keep=1)
    elif variant == "base":
        c.model.audio.update(features=256, num_layers=6, num_heads=8, window=12)
        c.model.identity.update(features=128, hidden_features=(256, 256))
        c.model.vae.update(latent_dim=32, features=256, posterior_layers=5, decoder_hidden=(512, 512))
        c.model.prior.update(hidden_features=256, num_couplings=8, coupling_hidden=(256, 256))
        c.data.update(window=32, train_clips=20000, eval_clips=512, workers=8)
        c.optimizer.update(lr=5e-4, warmup_steps=2000, ema_decay=0.999)
        c.loss.kl_warmup_steps = 10000
        c.train.update(steps=200_000, batch_size=256, log_every=100, eval_every=5000, eval_batches=16,
                       checkpoint_every=5000, keep=3, best_metric="eval/lmd_mouth", best_mode="min")
    else:
        raise InputError(f"configs/motion.py: unknown variant {arg!r} (known: tiny, base)")
    return c
