"""Keypoint generation speed: seconds of audio turned into keypoints per second of compute.

    python benchmarks/generation_speed.py                          # tiny and base, fresh weights
    python benchmarks/generation_speed.py --workdir /tmp/motion    # a trained model

Audio-driven mode, batch 1, chunked as `t2v.generate` runs it (`sample.chunk_frames`
frames per chunk, bounded memory). The audio is `--seconds` of speech features (eSpeak
sentences concatenated); timed are the model alone (mel given) and the whole path from
the waveform (log-mel included), after one warm-up pass that compiles. Speed does not
depend on the weights' values, so fresh ones measure the architecture. Prints a table
and writes benchmarks/results/generation_speed.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recording import write_record  # noqa: E402  (benchmarks/, the script's own folder)
from t2v import audio, keypoints  # noqa: E402
from t2v import config as config_lib  # noqa: E402
from t2v.data import speech  # noqa: E402
from t2v.generate import KeypointGenerator  # noqa: E402
from t2v.tasks import get_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def fresh_generator(variant: str) -> KeypointGenerator:
    config = config_lib.load(f"configs/motion.py:{variant}")
    task = get_task(config)
    frames = 8
    batch = {"mel": jnp.zeros((1, 4 * frames, audio.N_MELS)), "reference": jnp.asarray(keypoints.FRONTAL_TEMPLATE)[None],
             "keypoints": jnp.zeros((1, frames, 68, 2))}
    params = nn.meta.unbox(task.init(jax.random.PRNGKey(0), batch))
    return KeypointGenerator(task, params, int(config.sample.chunk_frames))


def measure(name: str, generator: KeypointGenerator, wave: np.ndarray, repeats: int) -> dict:
    seconds = len(wave) / audio.SAMPLE_RATE
    reference_px = 100 + 60 * keypoints.FRONTAL_TEMPLATE
    mel = audio.log_mel(wave)
    reference, _ = keypoints.normalise(reference_px)
    generator.keypoints_from_mel(mel, reference)  # compiles every chunk shape
    start = time.perf_counter()
    for seed in range(repeats):
        generator.keypoints_from_mel(mel, reference, seed=seed)
    model_seconds = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for seed in range(repeats):
        points = generator(wave, reference_px, seed=seed)
    total_seconds = (time.perf_counter() - start) / repeats
    assert points.shape == (audio.num_video_frames(len(wave)), 68, 2)
    return {"model": name, "audio_seconds": seconds, "chunk_frames": generator.chunk_frames,
            "model_s": model_seconds, "model_x_realtime": seconds / model_seconds,
            "from_wave_s": total_seconds, "from_wave_x_realtime": seconds / total_seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="tiny,base")
    parser.add_argument("--workdir", default="", help="a trained motion workdir to time instead of fresh weights")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "generation_speed.json"))
    args = parser.parse_args(argv)

    wave = speech.long_speech(args.seconds)
    generators = ([(args.workdir, KeypointGenerator.from_workdir(args.workdir))] if args.workdir else
                  [(f"motion:{v}", fresh_generator(v)) for v in args.variants.split(",")])
    rows = []
    for name, generator in generators:
        rows.append(measure(name, generator, wave, args.repeats))
        r = rows[-1]
        print(f"{name:>14}  {r['audio_seconds']:.0f} s of audio  model {r['model_s']:.3f} s "
              f"({r['model_x_realtime']:.0f}x real time)  from wave {r['from_wave_s']:.3f} s "
              f"({r['from_wave_x_realtime']:.0f}x real time)", flush=True)
    write_record("generation_speed", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
