"""End-to-end generation speed: photo + speech -> mp4, frames per second, whole and per stage.

    python benchmarks/generation_e2e.py                         # both renderers, fresh weights
    python benchmarks/generation_e2e.py --renderers learned --sizes 256 --seconds 20
    python benchmarks/generation_e2e.py --renderers photo --face-px 103,256,512
    python benchmarks/generation_e2e.py --checkpoint /tmp/demo   # a trained demo workdir

Renderer "photo" (the default of `t2v generate`) warps the photo's own face at its size in
the photo: it is timed on the astronaut scaled so that its face is `--face-px` wide (103 px
in the 512 x 512 original; 256 px in a 1272 x 1272 copy); its cost grows with the face's
area, not with the learned renderer's size. Renderer "learned" is timed at `--sizes`.

What runs is `t2v generate` itself (`t2v.generate.TalkingHeadGenerator.generate`) on the
astronaut portrait (512 x 512, scikit-image) and `--seconds` of eSpeak speech, after one
warm-up pass that compiles every program. Models are `configs/motion.py:base` and
`configs/render.py:base` at each size with freshly initialised weights (speed does not
depend on their values), written as a demo-style checkpoint folder. Timed per stage (see
`t2v.generate`): face (detect, crop, encode the reference), audio_features (decode +
log-mel), motion, render, paste_back, encode (H.264 + AAC); end to end is the wall time of
the whole call, audio file to finished mp4. Also the renderer's GFLOP per frame from XLA's
cost analysis. Prints a table and writes benchmarks/results/generation_e2e.json.

The machine is shared: the 1-minute load average before each run is recorded with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import soundfile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recording import write_record  # noqa: E402  (benchmarks/, the script's own folder)
from t2v import audio  # noqa: E402
from t2v import config as config_lib  # noqa: E402
from t2v import generate  # noqa: E402
from t2v.data import speech  # noqa: E402
from t2v.models.renderer import KeypointRenderer  # noqa: E402
from t2v.tasks import get_task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("face", "audio_features", "motion", "render", "paste_back", "encode")


def fresh_checkpoint(folder: Path, size: int) -> Path:
    """A demo-style folder with freshly initialised motion:base and render:base (at `size`)."""
    examples = {
        "motion": {"mel": jnp.zeros((1, 32, audio.N_MELS)), "reference": jnp.zeros((1, 68, 2)),
                   "keypoints": jnp.zeros((1, 8, 68, 2))},
        "render": {"reference_image": jnp.zeros((1, size, size, 3), jnp.uint8),
                   "reference_keypoints": jnp.zeros((1, 68, 2)), "target_keypoints": jnp.zeros((1, 68, 2))},
    }
    for task_name, overrides in (("motion", []), ("render", [f"--config.data.size={size}"])):
        config = config_lib.load(f"configs/{task_name}.py:base", overrides)
        params = nn.meta.unbox(jax.jit(get_task(config).init)(jax.random.PRNGKey(0), examples[task_name]))
        workdir = folder / task_name
        config_lib.write(config, workdir)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save((workdir / "checkpoints" / "1" / "state").absolute(), {"params": params, "ema_params": params})
        checkpointer.wait_until_finished()
    return folder


def render_gflop_per_frame(generator: generate.TalkingHeadGenerator) -> float:
    """XLA's FLOP count of one `render_frame` call, over the frames it renders."""
    renderer, batch = generator.renderer, generator.render_batch
    size = renderer.size
    reference = renderer.encode(np.zeros((size, size, 3), np.uint8), generate.canonical_face(size))
    points = jnp.zeros((batch, 68, 2))
    model = KeypointRenderer(renderer.spec)
    render = jax.jit(lambda params, reference, points: model.apply(
        {"params": params}, reference, points, method=model.render_frame))
    compiled = render.lower(renderer.params, reference, points).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"]) / 1e9 / batch


ASTRONAUT_FACE_PX = 103  # the astronaut's jaw width in the 512 x 512 original (2 x keypoints.face_size)


def scaled_astronaut(folder: Path, face_px: float) -> Path:
    """The astronaut portrait resized so that its face is about `face_px` wide."""
    import skimage.data

    image = Image.fromarray(skimage.data.astronaut())
    side = round(512 * face_px / ASTRONAUT_FACE_PX)
    path = folder / f"astronaut_{side}.png"
    (image if side == 512 else image.resize((side, side), Image.LANCZOS)).save(path)
    return path


def measure(generator, photo: Path, speech_file: Path, out: Path, repeats: int, renderer: str = "learned") -> dict:
    generator.generate(photo, speech_file, out, progress=False, renderer=renderer)  # compiles every program
    runs = []
    for seed in range(repeats):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        report = generator.generate(photo, speech_file, out, seed=seed, progress=False, renderer=renderer)
        runs.append((time.perf_counter() - start, report, load))
    wall, report, load = min(runs, key=lambda run: run[0])  # the least disturbed run
    frames = report.frames
    return {
        "renderer": renderer, "render_size": report.render_size, "photo_size": list(report.photo_size),
        "frames": frames,
        "audio_seconds": report.audio_seconds, "render_batch": generator.render_batch,
        "end_to_end_fps": frames / wall, "end_to_end_x_realtime": report.audio_seconds / wall,
        "stage_fps": {stage: frames / report.stage_seconds[stage] if report.stage_seconds[stage] else None
                      for stage in STAGES},  # None: no time in that stage (the photo path pastes as it warps)
        "stage_ms_per_frame": {stage: 1000 * report.stage_seconds[stage] / frames for stage in STAGES},
        "load_average_1min": load,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="renderer 'learned': its crop sizes")
    parser.add_argument("--renderers", default="photo,learned")
    parser.add_argument("--face-px", default="103,256", help="renderer 'photo': face widths in the photo")
    parser.add_argument("--checkpoint", default="", help="a trained demo workdir to time instead of fresh weights")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render-batch", type=int, default=None, help="frames per renderer call (default: t2v's)")
    parser.add_argument("--out", default=str(RESULTS / "generation_e2e.json"))
    args = parser.parse_args(argv)

    rows = []
    renderers = args.renderers.split(",")
    with tempfile.TemporaryDirectory(prefix="t2v-generation-e2e-") as scratch:
        scratch = Path(scratch)
        speech_file = scratch / "speech.wav"
        soundfile.write(speech_file, speech.long_speech(args.seconds), audio.SAMPLE_RATE)
        runs = []  # (checkpoint, renderer, photo)
        if "learned" in renderers:
            checkpoints = ([Path(args.checkpoint)] if args.checkpoint else
                           [fresh_checkpoint(scratch / f"checkpoint_{size}", int(size)) for size in args.sizes.split(",")])
            runs += [(checkpoint, "learned", scaled_astronaut(scratch, ASTRONAUT_FACE_PX)) for checkpoint in checkpoints]
        if "photo" in renderers:  # the learned renderer's size does not matter here: the smallest
            checkpoint = Path(args.checkpoint) if args.checkpoint else fresh_checkpoint(scratch / "checkpoint_64", 64)
            runs += [(checkpoint, "photo", scaled_astronaut(scratch, float(px))) for px in args.face_px.split(",")]
        for checkpoint, renderer, photo in runs:
            generator = generate.TalkingHeadGenerator.from_checkpoint(checkpoint, args.render_batch)
            row = measure(generator, photo, speech_file, scratch / "out.mp4", args.repeats, renderer)
            if renderer == "learned":
                row["render_gflop_per_frame"] = render_gflop_per_frame(generator)
            row["models"] = str(checkpoint) if args.checkpoint else "configs/motion.py:base + configs/render.py:base"
            rows.append(row)
            stages = "  ".join(f"{stage} {fps:.0f}" for stage, fps in row["stage_fps"].items() if fps)
            size = (f"photo, {row['render_size']} px face in {row['photo_size'][0]} px" if renderer == "photo"
                    else f"learned {row['render_size']} px")
            print(f"{size}:  end to end {row['end_to_end_fps']:.1f} fps "
                  f"({row['end_to_end_x_realtime']:.2f}x real time)  per stage fps: {stages}  "
                  f"(load {row['load_average_1min']:.1f})", flush=True)

    write_record("generation_e2e", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
