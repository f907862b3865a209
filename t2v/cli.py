"""The `t2v` command.

    t2v demo   [--workdir DIR]                      the main job on synthetic data
    t2v train  --config configs/x.py[:variant] --workdir DIR   train any task (resumes)
    t2v eval   --workdir DIR                        metrics and baselines -> DIR/eval/metrics.json
    t2v sweep  --config F --grid 'a.b=v1,v2' --seeds N --workdir S   variants x seeds -> S/sweep.json
    t2v personalize --video V.mp4 --checkpoint GENERAL --out DIR   fine-tune on one person -> DIR/personalize.json
    t2v prepare --dataset voxceleb2|lrw|hdtf|mead|grid|crema_d|synthetic --src DIR --out DIR [--beam]
    t2v generate --image FACE --audio SPEECH --out OUT.mp4 --checkpoint DIR   a photo speaks
    t2v export --checkpoint DIR --out DIR            StableHLO + ONNX serving artifacts
    t2v emotion --checkpoint DIR --video IN.mp4 --to happy [--intensity 0..1] --out OUT.mp4
    t2v synth  --out DIR --clips N --langs en,de --format records|voxceleb2 [--texture PHOTO]
    t2v config --config configs/x.py[:variant] [--config.a.b=v ...]   print a resolved config

Every command takes `--config.a.b=value` overrides, typed like the field they set
(docs/config.md), applies them and prints the resolved config; an override the config
lacks, or of the wrong type, is one line and exit status 2. `eval` applies them over the
workdir's saved config. Bad input (t2v.errors.InputError) is one line `t2v CMD: error: ...`
and exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import ml_collections

from t2v import config as config_lib
from t2v.errors import InputError


def _load(args, overrides) -> ml_collections.ConfigDict:
    cfg = config_lib.load(args.config, overrides)
    print(config_lib.to_json(cfg))
    return cfg


def _given(section: ml_collections.ConfigDict, *names: str) -> dict:
    """The named fields that are set: a None one leaves the callee's own default."""
    return {name: section[name] for name in names if section[name] is not None}


def _flag_overrides(section: str, flags: dict) -> list[str]:
    """Shorthand flags as overrides of `section`, placed first so `--config.` ones win."""
    return [f"--config.{section}.{k}={v}" for k, v in flags.items() if v is not None]


# -- t2v synth -----------------------------------------------------------------------------
def _synth(args, overrides) -> int:
    flags = {"clips": args.clips, "langs": args.langs, "format": args.format,
             "texture": args.texture, "size": args.size, "seed": args.seed, "text_file": args.text_file,
             "emotions": args.emotions}
    cfg = _load(args, _flag_overrides("synth", flags) + overrides)
    _check_texture(cfg.synth.texture)
    out = Path(args.out)
    from t2v.data import synthetic

    summary = synthetic.synthesize_from_config(cfg.synth, out)
    config_lib.write(cfg, out)
    print(f"wrote {summary['clips']} clips ({summary['seconds']:.1f} s of speech) to {out}")
    return 0


def _check_texture(texture: str) -> None:
    # Checked here, before any clip is made: the photo is the user's file.
    if texture not in ("", "astronaut") and not Path(texture).is_file():
        raise InputError(f"{texture}: no such texture photo (synth.texture / --texture)")


# -- t2v prepare ---------------------------------------------------------------------------
def _prepare(args, overrides) -> int:
    from data_pipelines import clip, prepare

    cfg = _load(args, overrides)
    p = cfg.prepare
    options = clip.PrepareOptions(
        crop_size=p.crop_size, detect_every=p.detect_every, max_gap_frames=p.max_gap_frames,
        smoothing_window=p.smoothing_window,
        stabilise_seconds=None if p.stabilise_seconds < 0 else p.stabilise_seconds,
        min_frames=p.min_frames, max_length_mismatch_frames=p.max_length_mismatch_frames,
        max_frames=None if p.max_frames < 0 else p.max_frames,
    )  # fmt: skip
    beam_options = [a for a in args.beam_option]
    report = prepare.run(args.dataset, args.src, args.out, beam=args.beam, num_shards=p.num_shards or None,
                         options=options, beam_options=beam_options or None, progress=True)
    config_lib.write(cfg, Path(args.out))
    return 0 if report else 1


# -- t2v train / eval -----------------------------------------------------------------------
def _train(args, overrides) -> int:
    from t2v import train

    if args.dry_run:  # compile for the target mesh and report; trains nothing, writes nothing
        from t2v.train import dry_run

        return dry_run.run(args.config, overrides, devices=args.devices, target=args.target,
                           peak_tflops=args.peak_tflops, device_memory_gb=args.device_memory_gb,
                           assumed_mfu=args.assumed_mfu)
    cfg = _load(args, overrides)
    metrics = train.train_and_evaluate(cfg, args.workdir)
    print(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return 0


def _eval(args, overrides) -> int:
    from t2v import checkpoint, evaluate

    if args.config:
        cfg = _load(args, overrides)
    else:  # the workdir's own config, with the overrides over it
        saved = checkpoint.workdir_path(args.workdir) / "config.json"  # gs:// too
        if not saved.is_file():
            raise InputError(f"{saved}: no such file (is {args.workdir} a t2v workdir?)")
        cfg = config_lib.apply_overrides(checkpoint.read_config(args.workdir), overrides)
        print(config_lib.to_json(cfg))
    metrics = evaluate.evaluate(args.workdir, cfg)
    print(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    return 0


# -- t2v personalize -----------------------------------------------------------------------
def _personalize(args, overrides) -> int:
    from t2v import personalize

    report = personalize.personalize(args.video, args.checkpoint, args.out, overrides)
    shown = {k: report[k] for k in ("task", "frames", "fine_tune_frames", "held_out_frames", "steps")}
    print(json.dumps({**shown, **{k: report[k] for k in ("person", "general", "personalized",
                                                          "moved_toward_person")}}, indent=2, sort_keys=True))
    print(f"wrote {Path(args.out)} and {Path(args.out) / 'personalize.json'}")
    return 0


# -- t2v sweep -----------------------------------------------------------------------------
def _sweep(args, overrides) -> int:
    from t2v import sweep

    summary = sweep.run(args.config, args.grid, args.seeds, args.workdir, overrides, launch=args.launch)
    for name, variant in summary["variants"].items():
        shown = ", ".join(f"{k} {variant['mean'][k]:.4g} +- {variant['std'][k]:.2g}" for k in sorted(variant["mean"]))
        print(f"{name}: {shown}")
    print(f"wrote {Path(args.workdir) / 'sweep.json'} and {Path(args.workdir) / 'report.html'}")
    return 0


# -- t2v generate --------------------------------------------------------------------------
def _emotion_request(args) -> dict:
    """`--emotion`/`--intensity` as generate.run's keywords, only those given."""
    if args.intensity is not None and args.emotion is None:
        raise InputError("--intensity needs --emotion")
    return {name: value for name, value in (("emotion", args.emotion), ("intensity", args.intensity))
            if value is not None}


def _generate(args, overrides) -> int:
    if args.list_faces:
        from t2v import generate
        from t2v.landmarks import LandmarkDetector

        print(generate.face_listing(LandmarkDetector(), args.list_faces))
        return 0
    missing = [f"--{name.replace('_', '-')}" for name in ("image", "audio", "out", "checkpoint")
               if getattr(args, name) is None]
    if missing:
        raise InputError(f"{', '.join(missing)} required (or --list-faces PHOTO alone)")
    flags = {"temperature": args.temperature, "seed": args.seed, "max_seconds": args.max_seconds,
             "overlay": True if args.overlay else None, "face": args.face}
    g = _load(args, _flag_overrides("generate", flags) + overrides).generate
    from t2v import generate

    report = generate.run(args.image, args.audio, args.out, checkpoint=args.checkpoint, pose_from=args.pose_from,
                          keypoints_out=args.keypoints_out, temperature=g.temperature, seed=g.seed,
                          **_emotion_request(args),
                          overlay=g.overlay, max_seconds=g.max_seconds, render_batch=g.render_batch,
                          motion=args.motion, **_given(g, "renderer", "face", "add_blinks", "max_face_px"))
    print(f"wrote {report.out}: {report.frames} frames, {report.audio_seconds:.1f} s, "
          f"{report.photo_size[0]}x{report.photo_size[1]}")
    return 0


# -- t2v emotion ---------------------------------------------------------------------------
def _emotion(args, overrides) -> int:
    from t2v import emotion

    report = emotion.run(args.video, args.out, checkpoint_dir=args.checkpoint, to=args.to,
                         intensity=args.intensity)
    print(f"wrote {report.out}: {report.frames} frames, {report.size[0]}x{report.size[1]} at {report.fps:g} fps, "
          f"{report.emotion} at intensity {report.intensity:g}")
    return 0


# -- t2v export ----------------------------------------------------------------------------
def _export(args, overrides) -> int:
    e = _load(args, _flag_overrides("export", {"onnx": False if args.no_onnx else None}) + overrides).export
    from t2v import export

    platforms = tuple(p.strip() for p in e.platforms.split(",") if p.strip())
    manifest = export.export(args.checkpoint, args.out, onnx=e.onnx, platforms=platforms,
                             external_data_threshold=e.external_data_threshold)
    for task, entry in manifest["tasks"].items():
        print(f"{task}: {', '.join(entry['functions'])} -> {Path(args.out) / task}")
    for task, why in manifest.get("skipped", {}).items():
        print(f"{task}: skipped ({why})")
    return 0


# -- t2v demo ------------------------------------------------------------------------------
def _demo(args, overrides) -> int:
    from t2v import demo

    cfg = _load(args, overrides)
    demo.run(cfg, Path(args.workdir))
    return 0


# -- t2v config ----------------------------------------------------------------------------
def _config(args, overrides) -> int:
    _load(args, overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2v", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthesize data and write sample talking-head clips")
    p.add_argument("--workdir", default="t2v_demo")
    p.add_argument("--config", default="configs/demo.py")
    p.set_defaults(run=_demo)

    p = sub.add_parser("train", help="train a task; resumes from the workdir's last checkpoint")
    p.add_argument("--config", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--dry-run", action="store_true",
                   help="compile the update step for --devices and print memory, FLOPs and step time")
    p.add_argument("--devices", type=int, default=0, help="dry run: the target's device count (fake CPU devices)")
    p.add_argument("--target", default="h100", help="dry run: h100, h200, a100, tpu_v5e, tpu_v5p, tpu_v6e, cpu")
    p.add_argument("--peak-tflops", type=float, help="dry run: peak per device (default: the target's)")
    p.add_argument("--device-memory-gb", type=float, help="dry run: memory per device (default: the target's)")
    p.add_argument("--assumed-mfu", type=float, default=0.4, help="dry run: the MFU the step time assumes")
    p.set_defaults(run=_train)

    p = sub.add_parser("eval", help="evaluate a trained workdir against the trivial baselines")
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", help="a config file instead of the workdir's saved config")
    p.set_defaults(run=_eval)

    p = sub.add_parser("personalize", help="fine-tune a general pose_lstm/motion/a2k workdir on one person's video")
    p.add_argument("--video", required=True, help="~12 s or more of the person speaking (mp4 with its audio)")
    p.add_argument("--checkpoint", required=True, help="the general model's task workdir")
    p.add_argument("--out", required=True, help="the personalized workdir to write (must not exist)")
    p.set_defaults(run=_personalize)

    p = sub.add_parser("sweep", help="train and evaluate every grid variant x seed; mean +- std")
    p.add_argument("--config", required=True, help="configs/x.py[:variant]")
    p.add_argument("--grid", action="append", default=[], help="'a.b=v1,v2' (repeatable: the product is swept)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant (config.seed)")
    p.add_argument("--workdir", required=True, help="the sweep folder (resumes if it holds this sweep)")
    p.add_argument("--launch", action="store_true", help="write one job script per run instead of running here")
    p.set_defaults(run=_sweep)

    p = sub.add_parser("prepare", help="detect, align and crop a real dataset into ArrayRecord")
    p.add_argument("--dataset", required=True,
                   choices=("voxceleb2", "lrw", "hdtf", "mead", "grid", "crema_d", "synthetic"))
    p.add_argument("--src", required=True, help="the dataset's root folder, in its own layout")
    p.add_argument("--out", required=True)
    p.add_argument("--beam", action="store_true", help="run the per-clip work as an Apache Beam pipeline")
    p.add_argument("--beam-option", action="append", default=[],
                   help="a Beam pipeline flag, e.g. --beam-option=--runner=DataflowRunner (repeatable)")
    p.add_argument("--config", default="configs/prepare.py")
    p.set_defaults(run=_prepare)

    p = sub.add_parser("generate", help="make the face in a photo speak any speech")
    p.add_argument("--image", help="a photo with a face (the largest is animated; --face picks another)")
    p.add_argument("--audio", help="speech: wav, flac, mp3, m4a or a video's audio track")
    p.add_argument("--out", help="the mp4 to write (photo-sized, 25 fps, with the speech)")
    p.add_argument("--checkpoint", help="a t2v demo workdir, or one holding render/ and the --motion task's workdir")
    p.add_argument("--motion", default="motion", choices=("motion", "a2k", "pose_lstm"),
                   help="which keypoint model of the checkpoint drives the face (default motion)")
    p.add_argument("--face", type=int, help="which face to animate: 1, 2, ... left to right (see --list-faces)")
    p.add_argument("--list-faces", metavar="PHOTO", help="print the photo's faces, numbered for --face, and exit")
    p.add_argument("--pose-from", help="a video whose head pose, blinks and brows to follow")
    p.add_argument("--emotion", help="the face's emotion: neutral,happy,sad,angry,surprised,disgusted,fearful "
                                     "(keypoint prototypes; the lips still follow the audio)")
    p.add_argument("--intensity", type=float, help="of --emotion, 0..1 (default 1)")
    p.add_argument("--temperature", type=float, help="of the motion prior (default: the checkpoint's)")
    p.add_argument("--seed", type=int, help="of the prior's samples (default 0)")
    p.add_argument("--keypoints-out", help="also write the keypoints as npz")
    p.add_argument("--overlay", action="store_true", help="also write OUT_keypoints.mp4 with keypoints drawn")
    p.add_argument("--max-seconds", type=float, help="refuse longer speech (default 600)")
    p.add_argument("--config", default="configs/generate.py")
    p.set_defaults(run=_generate)

    p = sub.add_parser("emotion", help="give a talking video's face another emotion (an `emotion` workdir)")
    p.add_argument("--checkpoint", required=True, help="a trained `emotion` workdir (configs/emotion.py)")
    p.add_argument("--video", required=True, help="a talking-face video")
    p.add_argument("--to", required=True, help="the target emotion: neutral,happy,sad,angry,surprised,disgusted,fearful")
    p.add_argument("--intensity", type=float, default=1.0, help="of the target emotion, 0..1 (default 1)")
    p.add_argument("--out", required=True, help="the mp4 to write (the video's size, rate, length and audio)")
    p.set_defaults(run=_emotion)

    p = sub.add_parser("export", help="write serving artifacts (jax.export StableHLO and ONNX)")
    p.add_argument("--checkpoint", required=True, help="a task workdir, or a demo workdir holding several")
    p.add_argument("--out", required=True)
    p.add_argument("--no-onnx", action="store_true", help="only the StableHLO artifacts")
    p.add_argument("--config", default="configs/export.py")
    p.set_defaults(run=_export)

    p = sub.add_parser("synth", help="write procedural talking-head clips")
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=int)
    p.add_argument("--langs", help="comma-separated eSpeak languages, e.g. en,de,fr")
    p.add_argument("--format", choices=("records", "voxceleb2"))
    p.add_argument("--texture", help="a face photo to warp, or 'astronaut'")
    p.add_argument("--text-file", help="sentences to speak, one a line (any eSpeak NG language; "
                   "without it a language lacking built-in sentences speaks words made of its phonemes)")
    p.add_argument("--emotions", help="comma-separated emotions to make, in turn (default: drawn at random): "
                   "neutral,happy,sad,angry,surprised,disgusted,fearful")
    p.add_argument("--size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--config", default="configs/synth.py")
    p.set_defaults(run=_synth)

    p = sub.add_parser("config", help="print a resolved config")
    p.add_argument("--config", required=True)
    p.set_defaults(run=_config)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `--config.a.b=v` overrides go to the config; everything else to argparse.
    overrides = [a for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    args = build_parser().parse_args(rest)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("t2v").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax's per-checkpoint chatter
    try:
        return args.run(args, overrides)
    except InputError as e:  # only bad input: a bug anywhere else keeps its traceback
        if os.environ.get("T2V_DEBUG"):
            raise
        print(f"t2v {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
