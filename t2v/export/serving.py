"""Serving functions: a trained model's inference as pure functions of arrays.

Each `ServingFunction` closes over its parameters and declares its inputs with symbolic
batch and length dimensions; `to_stablehlo` and `t2v.export.onnx.to_onnx` turn it into
artifacts. Signatures (shapes, dtypes, what each input means): docs/export.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export

from t2v import checkpoint
from t2v import keypoints as kp
from t2v.errors import InputError

SERVING_PLATFORMS = ("cpu", "cuda", "tpu")
EXPORTABLE_TASKS = ("motion", "render")


@dataclasses.dataclass(frozen=True)
class ServingFunction:
    """A pure function of positional arrays with parameters closed over, and its signature.

    `inputs` hold `jax.ShapeDtypeStruct`s whose dimensions may be symbolic
    (`jax.export.symbolic_shape`); `fn` returns a tuple with one array per output name.
    """

    name: str
    fn: Callable[..., tuple]
    input_names: tuple[str, ...]
    inputs: tuple[jax.ShapeDtypeStruct, ...]
    output_names: tuple[str, ...]


def _motion_chunk(model, mel, reference, noise, temperature, first_frame, hidden, latent):
    """Inside `MotionModel.apply`: frames [first_frame, first_frame + t) of the mel window."""
    feats = model.encode_audio(mel)
    feats = jax.lax.dynamic_slice_in_dim(feats, first_frame, noise.shape[1], axis=1)
    carry = {"hidden": hidden, "latent": latent, "frame": 0}  # the counter only seeds `sample`'s noise
    z, carry = model.prior.sample_from_noise(noise * temperature, feats, carry)
    return model.decode(z, feats, reference)["keypoints"], carry["hidden"], carry["latent"]


def motion_serving(model, params: Any) -> list[ServingFunction]:
    """`generate` and `stream` (docs/export.md) of a `t2v.models.motion_vae.MotionModel`."""
    variables = {"params": params}
    latent_dim, hidden_dim = model.prior.latent_dim, model.prior.hidden_features
    f32 = jnp.float32

    def generate(mel, reference, noise, temperature):
        hidden = jnp.zeros((noise.shape[0], hidden_dim), f32)
        latent = jnp.zeros((noise.shape[0], latent_dim), f32)
        keypoints, _, _ = model.apply(variables, mel, reference, noise, temperature, 0, hidden, latent,
                                      method=_motion_chunk)
        return (keypoints,)

    def stream(mel, reference, noise, temperature, first_frame, hidden, latent):
        return model.apply(variables, mel, reference, noise, temperature, first_frame, hidden, latent,
                           method=_motion_chunk)

    def spec(*shape, dtype=f32):
        return jax.ShapeDtypeStruct(shape, dtype)

    mel_bins = model.audio_encoder.n_mels
    b, t = jax_export.symbolic_shape("b, t")
    generate_inputs = (spec(b, 4 * t, mel_bins), spec(b, kp.NUM_POINTS, 2), spec(b, t, latent_dim), spec())
    # A separate scope: the mel window has s >= t frames.
    b, t, s = jax_export.symbolic_shape("b, t, s", constraints=("s >= t",))
    stream_inputs = (spec(b, 4 * s, mel_bins), spec(b, kp.NUM_POINTS, 2), spec(b, t, latent_dim), spec(),
                     spec(dtype=jnp.int32), spec(b, hidden_dim), spec(b, latent_dim))
    return [
        ServingFunction("generate", generate, ("mel", "reference", "noise", "temperature"), generate_inputs,
                        ("keypoints",)),
        ServingFunction("stream", stream,
                        ("mel", "reference", "noise", "temperature", "first_frame", "hidden", "latent"),
                        stream_inputs, ("keypoints", "next_hidden", "next_latent")),
    ]


def render_serving(renderer, params: Any) -> list[ServingFunction]:
    """`encode_reference` and `render_frame` (docs/export.md) of a `KeypointRenderer`."""
    from t2v.models.renderer import KeypointRenderer

    variables = {"params": params}
    size = renderer.spec.size
    (b,) = jax_export.symbolic_shape("b")
    f32 = jnp.float32
    image = jax.ShapeDtypeStruct((b, size, size, 3), f32)
    points = jax.ShapeDtypeStruct((b, kp.NUM_POINTS, 2), f32)
    reference_shapes = jax.eval_shape(
        lambda i, k: renderer.apply(variables, i, k, method=KeypointRenderer.encode_reference),
        jax.ShapeDtypeStruct((1, size, size, 3), f32), jax.ShapeDtypeStruct((1, kp.NUM_POINTS, 2), f32))
    reference_keys = tuple(sorted(reference_shapes))
    frame_keys = ("frame", "refined") if renderer.spec.refine else ("frame",)

    def encode_reference(image, keypoints):
        reference = renderer.apply(variables, image, keypoints, method=KeypointRenderer.encode_reference)
        return tuple(reference[k] for k in reference_keys)

    def render_frame(*args):
        reference = dict(zip(reference_keys, args[:-1]))
        out = renderer.apply(variables, reference, args[-1], method=KeypointRenderer.render_frame)
        return tuple(out[k] for k in frame_keys)

    reference_names = tuple(f"reference_{k}" for k in reference_keys)
    return [
        ServingFunction("encode_reference", encode_reference, ("image", "keypoints"), (image, points),
                        reference_names),
        ServingFunction("render_frame", render_frame, (*reference_names, "target_keypoints"),
                        (*(reference_shapes[k] for k in reference_keys), points), frame_keys),
    ]


def to_stablehlo(function: ServingFunction, platforms: Sequence[str] = SERVING_PLATFORMS) -> jax_export.Exported:
    """`jax.export` of a serving function, lowered for each of `platforms`."""
    return jax_export.export(jax.jit(function.fn), platforms=tuple(platforms))(*function.inputs)


def _float32(params: Any) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def nothing_to_serve(workdir: Path | str, task: str) -> InputError:
    return InputError(f"{workdir}: task {task!r} has nothing to serve (exportable: {', '.join(EXPORTABLE_TASKS)})")


def serving_functions(config: ml_collections.ConfigDict, params: Any,
                      workdir: Path | str = "") -> list[ServingFunction]:
    """The serving functions of a task's config and (unboxed) parameters, built in float32."""
    workdir = Path(workdir)
    if config.task == "motion":
        from t2v.models.motion_vae import build_motion_model

        m = config.model
        model = build_motion_model(m.audio.to_dict(), m.identity.to_dict(), m.vae.to_dict(), m.prior.to_dict())
        frames = 4
        shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
            {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(0)},
            jnp.zeros((1, 4 * frames, model.audio_encoder.n_mels)), jnp.zeros((1, kp.NUM_POINTS, 2)),
            jnp.zeros((1, frames, kp.NUM_POINTS, 2)))["params"]))
        return motion_serving(model, _float32(checkpoint.checked_params(workdir, params, shapes)))
    if config.task == "render":
        from t2v.tasks.render import build_renderer

        renderer = build_renderer(config)
        size = renderer.spec.size
        points = jnp.zeros((1, kp.NUM_POINTS, 2))
        shapes = jax.eval_shape(lambda: nn.meta.unbox(renderer.init(
            jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), points, points)["params"]))
        renderer_params = params.get("renderer") if isinstance(params, dict) else None
        if renderer_params is None:
            raise InputError(f"{workdir}: the checkpoint has no 'renderer' parameters")
        return render_serving(renderer, _float32(checkpoint.checked_params(workdir, renderer_params, shapes)))
    raise nothing_to_serve(workdir, config.task)
