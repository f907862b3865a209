"""The `pose_lstm` task: MFCC -> LSTM -> expression coefficients + 3-D head pose (Yi et al. 2020).

Yi et al. regress 3DMM expression and pose coefficients from MFCC with an LSTM, train a
general model, then fine-tune it on ~300 frames of the target person (`t2v personalize`).
No 3DMM ships in a package, so the expression basis is learned from the data instead:

  * every frame is fit by a weak-perspective camera (`t2v.keypoints.fit_weak_perspective`,
    3-D rotation, scale, 2-D translation) of the identity's 3-D face: the reference's
    points with the depth of `FRONTAL_TEMPLATE_3D`;
  * what that camera does not explain, undone into the frontal plane, is the frame's
    pose-free expression `[68, 2]` (exact: the camera applied to it gives the frame back);
  * its PCA over the frames of the init batch (`B x T` training frames) gives the mean
    and the first K components: the stand-in for the 3DMM expression basis.

The basis, the MFCC and pose normalisation and the coefficients' scales are computed once,
in `init`, from the batch it is given, and live in `params["constants"]` so that a
checkpoint carries them. They never move: the loss sees them through `stop_gradient`
(zero gradient, so a zero Adam update) and every one is stored 1-D (the basis flattened
`[K * 136]`), which weight decay (matrices only) leaves alone.

Targets per frame: K normalised expression coefficients and 6 normalised pose parameters
(yaw, pitch, roll, log-scale, tx, ty). Loss (`config.loss`): `expression` and `pose`
(mean squared error in normalised units, as Yi et al.'s coefficient loss) plus `keypoints`,
the mouth-weighted L1 of the keypoints decoded from the predictions (face units).

MFCC: 13 coefficients (`model.n_mfcc`) as `t2v.audio.mfcc` defines them, computed here from
the window's log-mel (the orthonormal DCT-II over mel bins), 4 rows per video frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.fft

from t2v import audio
from t2v import keypoints as kp
from t2v.data import pipeline
from t2v.models.pose_lstm import POSE_PARAMS, PoseLSTM, generate_chunked
from t2v.tasks import Task, register
from t2v.tasks.a2k import keypoint_metrics
from t2v.tasks.motion import landmark_distance, point_weights, write_keypoint_samples

CONSTANTS = "constants"
_DEPTH = kp.FRONTAL_TEMPLATE_3D[:, 2:]  # [68, 1]: the depth every identity is given


def dct_matrix(n_mfcc: int) -> np.ndarray:
    """`[80, n_mfcc]`: log-mel rows @ this = `t2v.audio.mfcc`'s cepstrum (orthonormal DCT-II)."""
    return scipy.fft.dct(np.eye(audio.N_MELS), type=2, norm="ortho", axis=-1)[:, :n_mfcc].astype(np.float32)


def identity_3d(reference):
    """`[..., 68, 2]` frontal reference -> `[..., 68, 3]`, the template's depth added."""
    depth = jnp.broadcast_to(jnp.asarray(_DEPTH, reference.dtype), reference.shape[:-1] + (1,))
    return jnp.concatenate([reference, depth], axis=-1)


def fit_frames(points, reference):
    """Pose and pose-free expression of keypoints `[B, T, 68, 2]` of identity `reference [B, 68, 2]`.

    Returns pose `[B, T, 6]` (yaw, pitch, roll, log-scale, tx, ty) and expression offsets
    `[B, T, 68, 2]` in the frontal plane: `decode(pose, expression)` gives `points` back.
    """
    shape = identity_3d(reference)[:, None]
    rotation, scale, translation = kp.fit_weak_perspective(points, shape)
    camera = scale[..., None, None] * rotation[..., :2, :]  # [B, T, 2, 3]
    base = jnp.einsum("btij,btnj->btni", camera, jnp.broadcast_to(shape, points.shape[:2] + shape.shape[2:]))
    in_plane = camera[..., :2]  # how a frontal-plane offset moves in the image
    expression = jnp.einsum("btij,btnj->btni", jnp.linalg.inv(in_plane), points - base - translation[..., None, :])
    pose = jnp.concatenate([kp.euler_angles(rotation), jnp.log(scale)[..., None], translation], axis=-1)
    return pose, expression


def decode(pose, expression, reference):
    """Keypoints `[B, T, 68, 2]` of pose `[B, T, 6]` and expression offsets `[B, T, 68, 2]`."""
    rotation = kp.rotation_matrix(pose[..., 0], pose[..., 1], pose[..., 2])
    shape = identity_3d(reference)[:, None] + jnp.pad(expression, ((0, 0),) * 3 + ((0, 1),))
    return kp.project(shape, rotation, jnp.exp(pose[..., 3]), pose[..., 4:6])


def expression_pca(expression, components: int) -> dict:
    """Mean `[136]`, basis `[K * 136]` (K orthonormal rows, flattened) and component std `[K]`
    of expressions `[N, 68, 2]`."""
    flat = expression.reshape(expression.shape[0], -1).astype(jnp.float32)
    mean = flat.mean(0)
    centred = flat - mean
    covariance = centred.T @ centred / flat.shape[0]
    values, vectors = jnp.linalg.eigh(covariance)  # ascending
    order = jnp.arange(flat.shape[1] - 1, flat.shape[1] - 1 - components, -1)
    return {"expression_mean": mean, "expression_basis": vectors[:, order].T.reshape(-1),
            "expression_std": jnp.sqrt(jnp.maximum(values[order], 0.0)) + 1e-4}


def stacked_mfcc(dct, mel):
    """log-mel `[B, 4T, 80]`, `dct_matrix` -> MFCC, the 4 rows of each video frame side by side:
    `[B, T, 4 * n_mfcc]` float32."""
    cepstrum = mel.astype(jnp.float32) @ dct
    batch, rows, n = cepstrum.shape
    return cepstrum.reshape(batch, rows // audio.MELS_PER_FRAME, audio.MELS_PER_FRAME * n)


def normalised_features(dct, constants, mel):
    """The model's input: stacked MFCC, standardised by the init batch's statistics."""
    return (stacked_mfcc(dct, mel) - constants["mfcc_mean"]) / constants["mfcc_std"]


def expression_basis(constants):
    """`[K, 136]`: the basis rows (stored flat, see the module docstring)."""
    return constants["expression_basis"].reshape(constants["expression_std"].shape[0], -1)


def decode_outputs(constants, out, reference):
    """Normalised outputs {"expression" `[B, T, K]`, "pose" `[B, T, 6]`} -> keypoints `[B, T, 68, 2]`."""
    flat = constants["expression_mean"] + (out["expression"] * constants["expression_std"]) @ expression_basis(constants)
    pose = constants["pose_mean"] + out["pose"] * constants["pose_std"]
    return decode(pose, flat.reshape(*flat.shape[:2], kp.NUM_POINTS, 2), reference.astype(jnp.float32))


_features_on_device = jax.jit(normalised_features)
_decode_on_device = jax.jit(decode_outputs)


@register("pose_lstm")
class PoseLSTMTask(Task):
    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.model = PoseLSTM(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.lstm.to_dict().items()},
                              dtype=jnp.dtype(config.train.compute_dtype))
        self.dct = jnp.asarray(dct_matrix(int(m.n_mfcc)))
        self.weights = jnp.asarray(point_weights(float(config.loss.mouth_weight)))

    # -- data ------------------------------------------------------------------------------
    def dataset(self, split, *, seed, process_index, process_count):
        return pipeline.window_batches(self.config, split, seed=seed, process_index=process_index,
                                       process_count=process_count)

    # -- features and coefficients (traced) ----------------------------------------------------
    def mfcc(self, mel):
        """log-mel `[B, 4T, 80]` -> MFCC stacked per video frame `[B, T, 4 * n_mfcc]` (float32)."""
        return stacked_mfcc(self.dct, mel)

    def targets(self, constants, keypoints, reference):
        """Normalised expression coefficients `[B, T, K]` and pose `[B, T, 6]` of true keypoints."""
        pose, expression = fit_frames(keypoints.astype(jnp.float32), reference.astype(jnp.float32))
        flat = expression.reshape(*expression.shape[:2], -1) - constants["expression_mean"]
        coefficients = flat @ expression_basis(constants).T / constants["expression_std"]
        return coefficients, (pose - constants["pose_mean"]) / constants["pose_std"]

    # -- model -----------------------------------------------------------------------------
    def init(self, rng, batch):
        """Model parameters, and the constants computed from this batch (see the module docstring)."""
        mfcc = self.mfcc(batch["mel"]).reshape(-1, self.dct.shape[1])
        pose, expression = fit_frames(batch["keypoints"].astype(jnp.float32), batch["reference"].astype(jnp.float32))
        constants = {
            "mfcc_mean": jnp.tile(mfcc.mean(0), audio.MELS_PER_FRAME),
            "mfcc_std": jnp.tile(mfcc.std(0) + 1e-3, audio.MELS_PER_FRAME),
            "pose_mean": pose.reshape(-1, POSE_PARAMS).mean(0),
            "pose_std": pose.reshape(-1, POSE_PARAMS).std(0) + 1e-4,
            **expression_pca(expression.reshape(-1, kp.NUM_POINTS, 2), self.model.expression_dim),
        }
        constants = jax.tree.map(jax.lax.stop_gradient, constants)
        model = self.model.init(rng, normalised_features(self.dct, constants, batch["mel"]), batch["reference"])["params"]
        return {"model": model, CONSTANTS: constants}

    def predict(self, params, mel, reference, noise_rng=None):
        """Normalised outputs {"expression" `[B, T, K]`, "pose" `[B, T, 6]`} in one pass (traced);
        with `noise_rng`, Gaussian noise of std `loss.feature_noise` on the features (training)."""
        features = normalised_features(self.dct, jax.lax.stop_gradient(params[CONSTANTS]), mel)
        if noise_rng is not None and float(self.config.loss.get("feature_noise", 0.0)) > 0:
            noise = jax.random.normal(noise_rng, features.shape, features.dtype)
            features = features + float(self.config.loss.feature_noise) * noise
        out, _ = self.model.apply({"params": params["model"]}, features, reference)
        return out

    def loss(self, params, batch, rng, step):
        lc = self.config.loss
        constants = jax.lax.stop_gradient(params[CONSTANTS])
        out = self.predict(params, batch["mel"], batch["reference"], noise_rng=rng)
        expression_target, pose_target = self.targets(constants, batch["keypoints"], batch["reference"])
        expression = jnp.mean((out["expression"] - expression_target) ** 2)
        pose = jnp.mean((out["pose"] - pose_target) ** 2)
        points = decode_outputs(constants, out, batch["reference"])
        keypoint_l1 = jnp.mean(jnp.abs(points - batch["keypoints"]).mean(-1) * self.weights)
        total = (float(lc.expression_weight) * expression + float(lc.pose_weight) * pose
                 + float(lc.keypoint_weight) * keypoint_l1)
        return total, {"expression": expression, "pose": pose, "keypoints": keypoint_l1,
                       "lmd": landmark_distance(points, batch["keypoints"]).mean()}

    def eval_metrics(self, params, batch, rng):
        points = decode_outputs(params[CONSTANTS], self.predict(params, batch["mel"], batch["reference"]), batch["reference"])
        metrics = keypoint_metrics(points, batch["keypoints"], batch["reference"])
        # The basis's own ceiling: the true frames through fit, K coefficients and decode.
        coefficients, pose = self.targets(params[CONSTANTS], batch["keypoints"], batch["reference"])
        ceiling = decode_outputs(params[CONSTANTS], {"expression": coefficients, "pose": pose}, batch["reference"])
        metrics["basis_lmd"] = landmark_distance(ceiling, batch["keypoints"]).mean()
        return metrics

    # -- generation (host side, used by t2v.evaluate and t2v.generate) -----------------------------
    def generate_audio_driven(self, params, rng, mel, reference, temperature=None, chunk_frames=256):
        """Any length, chunk by chunk (deterministic: `rng` and `temperature` are unused, kept for
        the common signature): mel `[batch, 4T, 80]`, reference `[batch, 68, 2]` ->
        {"keypoints" `[batch, T, 68, 2]`, "pose" `[batch, T, 6]` (radians, log-scale, face
        units), "expression" `[batch, T, K]` (normalised coefficients)} host arrays."""
        constants = params[CONSTANTS]
        # The features are per frame (no time mixing): one pass over any length is cheap.
        features = _features_on_device(self.dct, constants, jnp.asarray(mel))
        out = generate_chunked(self.model, {"params": params["model"]}, features, jnp.asarray(reference), chunk_frames)
        points = _decode_on_device(constants, out, jnp.asarray(reference))
        pose = np.asarray(constants["pose_mean"]) + out["pose"] * np.asarray(constants["pose_std"])
        return {"keypoints": np.asarray(points), "pose": pose, "expression": out["expression"]}

    # -- reports ---------------------------------------------------------------------------
    def write_samples(self, params, out_dir, step):
        """`pose_lstm_sample_<i>.mp4`: generated | true keypoints of held-out clips, with their audio."""
        write_keypoint_samples(self, params, out_dir, "pose_lstm")
