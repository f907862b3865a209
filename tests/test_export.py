"""Serving export: every artifact runs in its own runtime and matches JAX.

The ONNX converter is checked primitive by primitive on small functions with symbolic
dimensions, and the jax internals it reads (t2v/export/jax_adapter.py) on tiny examples; the
tiny motion and render models (random parameters, the zero-initialised
heads perturbed so nothing is trivially zero) are exported and run in a separate Python
process that never imports t2v: `jax.export.deserialize(...).call` and
`onnxruntime.InferenceSession`, each at two batch sizes and two lengths.
"""

import collections
import json
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from t2v import config as config_lib  # noqa: E402
from t2v import export as export_lib  # noqa: E402
from t2v.errors import InputError  # noqa: E402
from t2v.export import jax_adapter  # noqa: E402
from t2v.models.audio_encoder import chunk_spans  # noqa: E402
from t2v.models.motion_vae import MotionModel, build_motion_model  # noqa: E402
from t2v.tasks.render import build_renderer  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def random_params(module, *args, seed=0, scale=0.1, **kwargs):
    """Random parameters of `module` for `module.init(rngs, *args)`, without compiling init:
    every leaf (zero-initialised heads too) drawn from N(0, scale^2), so no output is trivially zero."""
    shapes = jax.eval_shape(lambda: nn.meta.unbox(module.init(*args, **kwargs)["params"]))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [jnp.asarray(scale * rng.normal(size=x.shape), x.dtype) for x in leaves])


# --------------------------------------------------------------------------- the converter, op by op

b, t = jax.export.symbolic_shape("b, t")


def spec(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def band_attention(x, w):
    """dot_general (batched), iota over a symbolic length, comparisons, select, softmax."""
    logits = jnp.einsum("btd,bsd->bts", x @ w, x)
    offset = jnp.arange(x.shape[1])[None, :] - jnp.arange(x.shape[1])[:, None]
    logits = jnp.where(jnp.abs(offset) <= 2, logits, jnp.finfo(jnp.float32).min)
    return (jax.nn.softmax(logits, axis=-1),)


def products(x, w, w3, v):
    """Every dot_general form the models make: Dense on rank 3, batched, DenseGeneral with two
    output or two contracting axes, matrix-vector, a constant on the left; and an outer product."""
    dense = x @ w
    batched = jnp.einsum("btd,bsd->bts", x, x)
    general_out = jnp.einsum("btd,dhk->bthk", x, w3)
    general_in = jnp.einsum("bthk,dhk->btd", general_out, w3)
    vector = x @ v
    constant_left = jnp.einsum("ed,btd->bte", np.arange(12.0, dtype=np.float32).reshape(3, 4) / 10, x)
    gram = jnp.einsum("btd,bte->bde", x, x)  # batched, contracting the symbolic length
    batch_two_free = jnp.einsum("bstd,bde->bste", jnp.stack([x, 2 * x], 1), gram)
    outer = jnp.einsum("btd,e->btde", x, v)
    return dense, batched, general_out, general_in, vector, constant_left, gram, batch_two_free, outer


def elementwise(x):
    y = jnp.tanh(x) + jax.nn.sigmoid(x) * jnp.sin(x) - jnp.cos(x) / (2.0 + jnp.abs(x))
    y = y + jnp.exp(-x**2) + jnp.log(1.0 + x**2) + jax.lax.rsqrt(1.0 + x**2) + jnp.sqrt(x**2 + 1.0)
    y = y + jnp.floor(x) + jnp.maximum(x, 0.1) - jnp.minimum(x, -0.1) + x**3 + jnp.square(x) + jax.nn.gelu(x)
    return (y, (x > 0).astype(jnp.int32), jnp.clip(x, -0.5, 0.5))


def reductions(x):
    return x.sum(axis=1), x.max(axis=(1, 2)), x.min(axis=-1), x.mean(axis=0), x.var(axis=1)


def shapes(x):
    """reshape, transpose, broadcast, concatenate, slice, split, stack, squeeze, pad."""
    merged = x.reshape(x.shape[0], x.shape[1] * x.shape[2])
    first, second = jnp.split(jnp.transpose(x, (0, 2, 1)), 2, axis=1)
    stacked = jnp.stack([x[:, :-1], x[:, 1:]], axis=2)
    padded = jnp.pad(x, ((0, 0), (1, 2), (0, 0)), constant_values=0.5)
    tiled = jnp.broadcast_to(x[:, None, :, :1], (x.shape[0], 3, x.shape[1], 1))[..., 0]
    return merged, jnp.concatenate([second, first], axis=1), stacked, padded, tiled


def convolutions(x, image, k1, k2):
    y = jax.lax.conv_general_dilated(x, k1, (2,), ((1, 2),), rhs_dilation=(1,), dimension_numbers=("NWC", "WIO", "NWC"))
    z = jax.lax.conv_general_dilated(image, k2, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=2)
    return y, z


def gathers(x, table, index):
    """Constant take, clipped take of runtime indices, batched take_along_axis, slice-like."""
    constant = x[:, :, np.array([3, 0, 2])]
    clipped = jnp.take(table, jnp.clip(index, 0, 4), axis=0)
    along = jnp.take_along_axis(x.reshape(x.shape[0], -1, 1), index.reshape(x.shape[0], -1, 1) % 5, axis=1)
    return constant, clipped, along, x[..., :2], x[..., 2:]


def recurrence(x, h0, w):
    """lax.scan over a symbolic length, forwards and backwards, with constants in the body."""
    def step(h, x_t):
        h = jnp.tanh(h @ w + x_t)
        return h, h * 2.0

    forwards = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1))
    backwards = jax.lax.scan(step, h0, jnp.swapaxes(x, 0, 1), reverse=True)
    return (*forwards, *backwards)


def dynamic_slices(x, start):
    """A runtime start, clamped as lax clamps it (the test's starts run past both ends)."""
    return (jax.lax.dynamic_slice_in_dim(x, start, 2, axis=1),)


long_b, long_t = jax.export.symbolic_shape("b, t", constraints=("t >= 2",))


OP_CASES = {
    "band_attention": (band_attention, [spec(b, t, 4), spec(4, 4)]),
    "products": (products, [spec(b, t, 4), spec(4, 4), spec(4, 2, 2), spec(4)]),
    "elementwise": (elementwise, [spec(b, t)]),
    "reductions": (reductions, [spec(b, t, 3)]),
    "shapes": (shapes, [spec(b, t, 4)]),
    "convolutions": (convolutions, [spec(b, 2 * t, 3), spec(b, 6, 6, 4), spec(4, 3, 5), spec(3, 3, 2, 6)]),
    "gathers": (gathers, [spec(b, t, 5), spec(5, 3), spec(b, t, 5, dtype=jnp.int32)]),
    "recurrence": (recurrence, [spec(b, t, 3), spec(b, 3), spec(3, 3)]),
    "dynamic_slices": (dynamic_slices, [spec(long_b, long_t, 2), spec(dtype=jnp.int32)]),
}


def concrete(specs, sizes, rng):
    arrays = []
    for s in specs:
        shape = tuple(int(d) if isinstance(d, int) else int(jax_adapter.evaluate_dim(d, sizes)) for d in s.shape)
        if s.dtype == jnp.int32:
            arrays.append(rng.integers(-2, 7, size=shape).astype(np.int32))
        else:
            arrays.append(rng.normal(size=shape).astype(np.float32))
    return arrays


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_onnx_converter_matches_jax_per_primitive(case):
    fn, specs = OP_CASES[case]
    function = export_lib.ServingFunction(case, fn, tuple(f"in{i}" for i in range(len(specs))), tuple(specs),
                                          tuple(f"out{i}" for i in range(len(jax.eval_shape(fn, *specs)))))
    session = ort.InferenceSession(export_lib.to_onnx(function).SerializeToString())
    rng = np.random.default_rng(0)
    for sizes in ({"b": 1, "t": 3}, {"b": 3, "t": 7}):
        args = concrete(specs, sizes, rng)
        got = session.run(None, dict(zip(function.input_names, args)))
        for name, want, have in zip(function.output_names, fn(*args), got):
            assert have.shape == want.shape, (case, name)
            np.testing.assert_allclose(have, np.asarray(want), rtol=RTOL, atol=ATOL, err_msg=f"{case} {name}")


def test_onnx_converter_names_an_unsupported_primitive():
    function = export_lib.ServingFunction("cumsum", lambda x: (jnp.cumsum(x, axis=1),), ("x",), (spec(b, t),),
                                          ("y",))
    with pytest.raises(export_lib.UnsupportedForOnnx, match="cumsum"):
        export_lib.to_onnx(function)


def op_types(graph) -> collections.Counter:
    """ONNX op types in a graph and its subgraphs (Scan bodies)."""
    counts = collections.Counter()
    for node in graph.node:
        counts[node.op_type] += 1
        for attribute in node.attribute:
            if attribute.HasField("g"):
                counts.update(op_types(attribute.g))
    return counts


def test_matrix_products_become_matmul_and_only_the_rest_einsum():
    fn, specs = OP_CASES["products"]
    function = export_lib.ServingFunction("products", fn, ("x", "w", "w3", "v"), tuple(specs),
                                          tuple(f"out{i}" for i in range(9)))
    counts = op_types(export_lib.to_onnx(function).graph)
    assert counts["MatMul"] == 8 and counts["Einsum"] == 1, counts  # the outer product alone


def test_log1p_keeps_small_inputs_precise():
    function = export_lib.ServingFunction("log1p", lambda x: (jnp.log1p(x),), ("x",), (spec(b),), ("y",))
    session = ort.InferenceSession(export_lib.to_onnx(function).SerializeToString())
    small = np.logspace(-7, -3, 41)
    x = np.concatenate([small, -small, [0.0, 0.5, -0.5, 3.0, 1e6, -1.0, np.inf]]).astype(np.float32)
    (got,) = session.run(None, {"x": x})
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf
        want = np.log1p(x.astype(np.float64))
        naive = np.log(np.float32(1) + x)  # what `Log(1 + x)` computes: 19% off at 1e-7
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)  # measured: 2.3e-7, 2 float32 ulps
    assert np.max(np.abs(naive[:82] - want[:82]) / np.abs(want[:82])) > 1e-2


def test_jax_adapter_hooks_hold():
    """Each jax internal the converter reads still behaves on a tiny example. A failure here
    means a jax upgrade changed it: the message names the jax version and the adapter."""
    def check(ok, what):
        assert ok, str(jax_adapter.changed(what))

    s, t = jax.export.symbolic_shape("s, t", constraints=("s >= t",))
    for dim, want in [(4 * t, 28), (s + 1, 10), (s - t, 2), (t // 2, 3), (t % 3, 1), (jax.core.max_dim(t, 8), 8),
                      (jax.core.min_dim(t, 5), 5), (t * t - 3 * s, 22), (3 * ((t + 1) // 2), 12), (-t + 9, 2)]:
        got = jax_adapter.evaluate_dim(dim, {"s": 9, "t": 7})
        check(got == want, f"the text of symbolic dimensions ({str(dim)!r} evaluated to {got}, not {want})")

    def tiny(x):
        y = jax.nn.relu(jnp.sin(x))  # custom_jvp_call around a jit
        return jax.lax.scan(lambda c, xi: (c + xi, c * xi), y[0], y)

    closed = jax.make_jaxpr(tiny)(np.ones((3, 2), np.float32))
    eqns = {e.primitive.name: e for e in closed.jaxpr.eqns}
    check({"custom_jvp_call", "scan"} <= set(eqns), f"the jaxpr of jax.nn.relu and lax.scan ({sorted(eqns)})")
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    (folded,) = jax_adapter.fold(eqns["custom_jvp_call"], [x])
    check(np.allclose(folded, np.maximum(x, 0)), "evaluating one equation (fold of custom_jvp_call)")
    body, consts = jax_adapter.inner_jaxpr(eqns["custom_jvp_call"])
    check(len(body.invars) == 1 and consts == [], "the body of custom_jvp_call")
    parts = jax_adapter.scan_parts(eqns["scan"], ["c", "xs"])
    check((parts.consts, parts.carry, parts.xs, parts.reverse) == ([], ["c"], ["xs"], False)
          and len(parts.body.invars) == 2, "the operands of scan")
    check(jax_adapter.params(eqns["scan"], "num_carry") == (1,), "the parameters of scan")
    with pytest.raises(jax_adapter.JaxChanged, match=rf"jax {jax.__version__} changed .*jax_adapter.py"):
        jax_adapter.params(eqns["scan"], "no_such_parameter")


# --------------------------------------------------------------------------- the models, in their runtimes

RUNNER = textwrap.dedent("""
    # Runs exported artifacts with nothing of t2v: jax.export and onnxruntime only.
    import json, sys
    import jax, numpy as np, onnxruntime
    folder, cases = sys.argv[1], json.loads(sys.argv[2])
    results = {}
    for name, runs in cases.items():
        exported = jax.export.deserialize(bytearray(open(f"{folder}/{name}.stablehlo", "rb").read()))
        session = onnxruntime.InferenceSession(f"{folder}/{name}.onnx")
        names = [i.name for i in session.get_inputs()]
        for run in runs:
            inputs = np.load(f"{folder}/{run}.npz")
            args = [inputs[n] for n in names]
            for i, out in enumerate(exported.call(*args)):
                results[f"{run}/stablehlo/{i}"] = np.asarray(out)
            for i, out in enumerate(session.run(None, dict(zip(names, args)))):
                results[f"{run}/onnx/{i}"] = out
    assert not any(m == "t2v" or m.startswith("t2v.") for m in sys.modules), "t2v was imported"
    np.savez(f"{folder}/results.npz", **results)
""")


def run_in_clean_process(folder, functions, runs):
    """Save each run's inputs, run every artifact in a fresh process, return {run: (stablehlo, onnx)}."""
    cases = {}
    for function in functions:
        for run, args in runs[function.name].items():
            np.savez(folder / f"{run}.npz", **{n: np.asarray(a) for n, a in zip(function.input_names, args)})
            cases.setdefault(function.name, []).append(run)
    subprocess.run([sys.executable, "-c", RUNNER, str(folder), json.dumps(cases)], check=True, cwd=folder,
                   timeout=300)
    results = np.load(folder / "results.npz")
    out = {}
    for function in functions:
        for run in runs[function.name]:
            count = len(function.output_names)
            out[run] = tuple([results[f"{run}/{runtime}/{i}"] for i in range(count)]
                             for runtime in ("stablehlo", "onnx"))
    return out


def assert_runtimes_match(function, args, got):
    want = jax.jit(function.fn)(*args)
    for runtime, outputs in zip(("stablehlo", "onnx"), got):
        for name, w, g in zip(function.output_names, want, outputs):
            assert g.shape == w.shape, (function.name, runtime, name)
            np.testing.assert_allclose(g, np.asarray(w), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{function.name} {runtime} {name}")


def build_model(config):
    m = config.model
    return build_motion_model(m.audio.to_dict(), m.identity.to_dict(), m.vae.to_dict(), m.prior.to_dict())


@pytest.fixture(scope="module")
def motion():
    config = config_lib.load("configs/motion.py:tiny")
    model = build_model(config)
    params = random_params(model, {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)},
                           jnp.zeros((1, 16, 80)), jnp.zeros((1, 68, 2)), jnp.zeros((1, 4, 68, 2)))
    return config, model, params


def motion_inputs(model, batch, frames, seed):
    rng = np.random.default_rng(seed)
    mel = rng.normal(size=(batch, 4 * frames, 80)).astype(np.float32)
    reference = (0.5 * rng.normal(size=(batch, 68, 2))).astype(np.float32)
    noise = rng.normal(size=(batch, frames, model.prior.latent_dim)).astype(np.float32)
    return mel, reference, noise, np.float32(0.8)


def test_motion_artifacts_run_without_t2v_and_match(motion, tmp_path):
    """Saved with external data (the threshold set to 0 bytes, as past 2 GB), so the fresh
    process loads each model's tensors from its side file."""
    _, model, params = motion
    generate, stream = export_lib.motion_serving(model, params)
    entries = export_lib.export_functions([generate, stream], tmp_path, external_data_threshold=0)
    for name in ("generate", "stream"):
        assert entries[name]["onnx_external_data"] == f"{name}.onnx.data"
        graph_bytes, data_bytes = ((tmp_path / f"{name}.{ext}").stat().st_size for ext in ("onnx", "onnx.data"))
        assert data_bytes > 10 * graph_bytes, (graph_bytes, data_bytes)
        counts = op_types(onnx.load(tmp_path / f"{name}.onnx", load_external_data=False).graph)
        assert counts["MatMul"] > 20 and counts["Einsum"] == 0, counts
    hidden = model.prior.hidden_features
    runs = {"generate": {}, "stream": {}}
    for batch, frames in ((1, 6), (3, 11)):  # two batch sizes, two lengths
        runs["generate"][f"generate_{batch}_{frames}"] = motion_inputs(model, batch, frames, frames)
        mel, reference, noise, temperature = motion_inputs(model, batch, frames + 4, frames)
        state = np.random.default_rng(batch).normal(size=(2, batch, hidden)).astype(np.float32)
        runs["stream"][f"stream_{batch}_{frames}"] = (mel, reference, noise[:, :frames], temperature, np.int32(3),
                                                     state[0], state[1, :, :model.prior.latent_dim])
    got = run_in_clean_process(tmp_path, [generate, stream], runs)
    for function in (generate, stream):
        for run, args in runs[function.name].items():
            assert_runtimes_match(function, args, got[run])


def test_motion_generate_is_the_models_audio_driven_generation(motion):
    """With the prior's own noise (normal(fold_in(rng, t)) per frame), `generate` equals
    `MotionModel.generate`; and streaming chunks with context reproduce the whole pass."""
    _, model, params = motion
    generate, stream = export_lib.motion_serving(model, params)
    mel, reference, _, temperature = motion_inputs(model, 2, 13, 0)
    rng = jax.random.PRNGKey(7)
    noise = jnp.stack([jax.random.normal(jax.random.fold_in(rng, t), (2, model.prior.latent_dim))
                       for t in range(13)], axis=1)
    want, _ = jax.jit(lambda *a: model.apply({"params": params}, *a, method=MotionModel.generate))(
        rng, mel, reference, temperature)
    (whole,) = jax.jit(generate.fn)(mel, reference, noise, temperature)
    np.testing.assert_allclose(whole, want["keypoints"], rtol=RTOL, atol=ATOL)

    hidden = np.zeros((2, model.prior.hidden_features), np.float32)
    latent = np.zeros((2, model.prior.latent_dim), np.float32)
    parts = []
    for c in chunk_spans(13, 5, model.audio_encoder.context_frames()):
        keypoints, hidden, latent = jax.jit(stream.fn)(mel[:, 4 * c.lo:4 * c.hi], reference, noise[:, c.start:c.stop],
                                              temperature, np.int32(c.start - c.lo), hidden, latent)
        parts.append(keypoints)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=RTOL, atol=ATOL)


def test_render_artifacts_run_without_t2v_and_match(tmp_path):
    config = config_lib.load("configs/render.py:tiny", ["--config.model.refine=True"])
    renderer = build_renderer(config)
    size = renderer.spec.size
    points = jnp.zeros((1, 68, 2))
    params = random_params(renderer, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), points, points)
    encode, render = export_lib.render_serving(renderer, params)
    assert render.output_names == ("frame", "refined")
    entries = export_lib.export_functions([encode, render], tmp_path)
    assert "onnx_external_data" not in entries["render_frame"]  # small: one file
    assert op_types(onnx.load(tmp_path / "render_frame.onnx").graph)["MatMul"] > 0
    rng = np.random.default_rng(0)

    def image_and_points(batch):
        return (rng.uniform(size=(batch, size, size, 3)).astype(np.float32),
                rng.uniform(-0.7, 0.7, size=(batch, 68, 2)).astype(np.float32))

    reference = [np.asarray(r) for r in jax.jit(encode.fn)(*image_and_points(1))]
    runs = {"encode_reference": {f"encode_{n}": image_and_points(n) for n in (1, 3)},
            "render_frame": {f"render_{n}": (*reference, image_and_points(n)[1]) for n in (1, 4)}}
    got = run_in_clean_process(tmp_path, [encode, render], runs)
    for function in (encode, render):
        for run, args in runs[function.name].items():
            assert_runtimes_match(function, args, got[run])


# --------------------------------------------------------------------------- checkpoints -> artifacts


def write_workdir(workdir, config, params):
    import orbax.checkpoint as ocp

    config_lib.write(config, workdir)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save((workdir / "checkpoints" / "1" / "state").absolute(), {"params": params, "ema_params": params})
    checkpointer.wait_until_finished()


def test_export_of_a_demo_workdir_writes_artifacts_and_manifest(motion, tmp_path):
    config, _, params = motion
    demo = tmp_path / "demo"
    write_workdir(demo / "motion", config, params)
    config_lib.write(config_lib.load("configs/sync.py:tiny"), demo / "sync")  # nothing to serve: skipped
    config_lib.write(config_lib.load("configs/demo.py"), demo)  # the demo's own config has no task

    manifest = export_lib.export(demo, tmp_path / "out", onnx=False)

    assert manifest["skipped"] == {"sync": "nothing to serve"}
    generate = manifest["tasks"]["motion"]["functions"]["generate"]
    assert generate["inputs"][0] == {"name": "mel", "dtype": "float32", "shape": ["b", "4*t", 80]}
    assert generate["outputs"] == [{"name": "keypoints", "dtype": "float32", "shape": ["b", "t", 68, 2]}]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    exported = jax.export.deserialize(bytearray((tmp_path / "out" / "motion" / "generate.stablehlo").read_bytes()))
    args = motion_inputs(build_model(config), 2, 5, 0)
    want = jax.jit(export_lib.motion_serving(build_model(config), params)[0].fn)(*args)[0]
    np.testing.assert_allclose(exported.call(*args)[0], want, rtol=RTOL, atol=ATOL)


def test_export_errors_are_one_line(motion, tmp_path):
    config, _, params = motion
    with pytest.raises(InputError, match="no such directory"):
        export_lib.export(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither a task workdir"):
        export_lib.export(tmp_path / "empty", tmp_path / "out")
    wider = config_lib.load("configs/motion.py:tiny", ["--config.model.vae.features=32"])
    write_workdir(tmp_path / "mismatch", wider, params)
    with pytest.raises(InputError, match="does not match config.json's model"):
        export_lib.export(tmp_path / "mismatch", tmp_path / "out")
    config_lib.write(config_lib.load("configs/sync.py:tiny"), tmp_path / "sync")
    (tmp_path / "sync" / "checkpoints").mkdir()
    with pytest.raises(InputError, match="nothing to serve"):
        export_lib.export(tmp_path / "sync", tmp_path / "out")
    with pytest.raises(InputError, match="platforms"):
        export_lib.export(tmp_path / "mismatch", tmp_path / "out", platforms=["gpu"])
    with pytest.raises(InputError, match="external_data_threshold"):
        export_lib.export(tmp_path / "mismatch", tmp_path / "out", external_data_threshold=-1)
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(InputError, match="not a directory"):
        export_lib.export(tmp_path / "mismatch", tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"
    assert not (tmp_path / "out").exists()  # nothing written before an error
