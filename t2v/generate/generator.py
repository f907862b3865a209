"""The whole path: a photo + speech -> the talking-head mp4 (`TalkingHeadGenerator`, `run`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from pathlib import Path

import jax
import numpy as np

from t2v import audio, keypoints, video
from t2v.errors import InputError
from t2v.generate.blinks import add_blinks as blinking
from t2v.generate.crop import FaceCrop
from t2v.generate.inputs import DEFAULT_MAX_SECONDS, find_face, log_mel_in_chunks, read_photo, read_speech
from t2v.generate.models import FaceRenderer, KeypointGenerator, checkpoint_workdirs
from t2v.generate.outputs import StagedOutputs, overlay_path
from t2v.generate.paste import PasteBack
from t2v.generate.tracking import source_motion
from t2v.generate.warp import DEFAULT_MAX_FACE_PX, PhotoWarp
from t2v.progress import progress as progress_bar

log = logging.getLogger(__name__)

RENDERERS = ("photo", "learned")  # the photo's own pixels warped (t2v.generate.warp), or the trained renderer


@dataclasses.dataclass
class GenerationReport:
    """What `generate` wrote and how long each stage took (seconds, summed over the run)."""

    out: Path
    frames: int
    audio_seconds: float
    faces_found: int
    photo_size: tuple[int, int]  # (width, height)
    render_size: int  # the learned renderer's S; with renderer "photo", the face's width (pixels) it warps at
    keypoints_out: Path | None
    overlay_out: Path | None
    stage_seconds: dict[str, float]
    renderer: str = "photo"
    blinks_added: int = 0  # blinks the blink controller put into the keypoints (`t2v.generate.blinks`)


class _Stopwatch:
    """Sums wall time per stage: `with watch("render"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclasses.dataclass
class TalkingHeadGenerator:
    """The trained motion model and renderer, loaded once, for any number of videos."""

    motion: KeypointGenerator
    renderer: FaceRenderer
    render_batch: int = 4

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, render_batch: int | None = None,
                        motion: str = "motion") -> "TalkingHeadGenerator":
        """From a `t2v demo` workdir, or any folder holding a `render` task workdir and the
        keypoint task `motion`'s ("motion", "a2k" or "pose_lstm"; `models.checkpoint_workdirs`)."""
        motion_dir, render_dir = checkpoint_workdirs(checkpoint, motion)
        renderer = FaceRenderer.from_workdir(render_dir)
        # Large frames render fastest one at a time on a CPU (cache-bound); small ones in batches.
        default_batch = 1 if renderer.size >= 256 else 4
        return cls(KeypointGenerator.from_workdir(motion_dir, task_name=motion), renderer,
                   default_batch if render_batch is None else render_batch)

    @functools.cached_property
    def detector(self):
        from t2v.landmarks import LandmarkDetector

        return LandmarkDetector()

    def generate(self, image: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike, *,
                 pose_from: str | os.PathLike | None = None, temperature: float | None = None, seed: int = 0,
                 keypoints_out: str | os.PathLike | None = None, overlay: bool = False,
                 max_seconds: float = DEFAULT_MAX_SECONDS, progress: bool = False, renderer: str = "photo",
                 face: int | None = None, add_blinks: bool = True,
                 max_face_px: float = DEFAULT_MAX_FACE_PX, keypoint_edit=None) -> GenerationReport:
        """Writes `out` (mp4: the photo talking, the speech as its audio); see `run`.
        `keypoint_edit(points, reference)`: face-frame keypoints `[T, 68, 2]` -> edited ones,
        applied before the blinks and the rendering (e.g. `t2v.generate.emotion.EmotionEdit`)."""
        watch = _Stopwatch()
        out = Path(out)
        if out.is_dir():
            raise InputError(f"{out}: is a directory; give the output mp4's file name")
        if renderer not in RENDERERS:
            raise InputError(f"renderer {renderer!r}: not one of {', '.join(RENDERERS)}")
        if pose_from is not None and not self.motion.follows_source:
            raise InputError(f"{os.fspath(pose_from)}: following a video needs the motion model (--motion motion)")
        size = self.renderer.size

        with watch("face"):
            photo = read_photo(image)
        with watch("audio_features"):
            wave = read_speech(speech, max_seconds)
        with watch("face"):
            landmarks, faces = find_face(self.detector, photo, os.fspath(image), face)
            if faces > 1 and face is None:
                log.warning("%s: %d faces found; animating the largest (--face N picks another, "
                            "--list-faces numbers them)", os.fspath(image), faces)
            crop = FaceCrop.fit(landmarks, size)
            reference_crop_px = crop.to_crop(landmarks)
            if renderer == "learned":
                reference = self.renderer.encode(crop.crop(photo), reference_crop_px)
                paste = PasteBack(photo, crop)
            else:
                warp = PhotoWarp(photo, landmarks, max_face_px=max_face_px)
        with watch("audio_features"):
            mel = log_mel_in_chunks(wave)
        frames = len(mel) // audio.MELS_PER_FRAME
        assert frames == audio.num_video_frames(len(wave))

        with watch("motion"):
            reference_face, face_frame = keypoints.normalise(reference_crop_px)
            if pose_from is None:
                points = self.motion.keypoints_from_mel(mel, reference_face, seed=seed, temperature=temperature)
            else:
                source = source_motion(self.detector, pose_from, frames, crop)
                points = self.motion.keypoints_following(mel, reference_face, source["mel"], source["keypoints"],
                                                         source["reference"])
            if keypoint_edit is not None:
                points = keypoint_edit(points, reference_face)
            crop_points = np.asarray(keypoints.denormalise(points, face_frame), np.float32)  # [T, 68, 2]
            photo_points = crop.to_photo(crop_points)
            closure = np.zeros(len(photo_points))
            if add_blinks:
                photo_points, closure = blinking(photo_points, seed)
                crop_points = crop.to_crop(photo_points)

        overlay_out = overlay_path(out) if overlay else None
        keypoints_path = None if keypoints_out is None else Path(keypoints_out)
        with StagedOutputs() as staged:
            with contextlib.ExitStack() as writers:
                writer = writers.enter_context(video.VideoWriter(staged.stage(out), audio=wave))
                overlay_writer = (writers.enter_context(video.VideoWriter(staged.stage(overlay_out), audio=wave))
                                  if overlay_out else None)
                if renderer == "learned":
                    self._stream_frames(reference, paste, crop_points, photo_points, writer, overlay_writer, watch,
                                        progress, out.name)
                else:
                    _stream_photo_frames(warp, photo_points, writer, overlay_writer, watch, progress, out.name)
                with watch("encode"):
                    writers.close()
            if keypoints_path is not None:
                with open(staged.stage(keypoints_path), "wb") as file:
                    np.savez(file, keypoints=photo_points, reference=landmarks.astype(np.float32),
                             fps=np.int32(audio.FPS), image_size=np.array(photo.shape[1::-1], np.int32))
            staged.commit()
        blinks_added = int(np.sum((closure[1:] >= 0.5) & (closure[:-1] < 0.5)) + (closure[:1] >= 0.5).sum())
        return GenerationReport(out, frames, len(wave) / audio.SAMPLE_RATE, faces, (photo.shape[1], photo.shape[0]),
                                size if renderer == "learned" else int(round(warp.face_px)), keypoints_path,
                                overlay_out, watch.seconds, renderer, blinks_added)

    def _stream_frames(self, reference, paste: PasteBack, crop_points: np.ndarray, photo_points: np.ndarray,
                       writer, overlay_writer, watch: _Stopwatch, progress: bool, label: str) -> None:
        """Renders, pastes and encodes every frame, `render_batch` at a time."""
        batch = self.render_batch
        total = len(crop_points)
        with progress_bar(total, unit="frame", desc=label, disable=not progress, leave=False) as bar:
            for start in range(0, total, batch):
                stop = min(start + batch, total)
                # Every call has the full batch shape (the last batch repeats its last frame): one compilation.
                chunk = crop_points[np.minimum(np.arange(start, start + batch), total - 1)]
                with watch("render"):
                    faces = jax.block_until_ready(self.renderer.render(reference, chunk))
                with watch("paste_back"):
                    regions = np.asarray(paste.regions(faces))[: stop - start]
                for index, frame in zip(range(start, stop), paste.frames(regions)):
                    with watch("encode"):
                        writer.write(frame)
                    if overlay_writer is not None:
                        with watch("overlay"):
                            overlay_writer.write(keypoints.draw_keypoints(frame, photo_points[index]))
                bar.update(stop - start)


def _stream_photo_frames(warp: PhotoWarp, photo_points: np.ndarray, writer, overlay_writer, watch: _Stopwatch,
                         progress: bool, label: str) -> None:
    """Warps, paints and encodes every frame (renderer "photo"); the paste into the photo is
    part of the warp, so `paste_back` reads 0 here."""
    watch.seconds.setdefault("paste_back", 0.0)
    with progress_bar(len(photo_points), unit="frame", desc=label, disable=not progress, leave=False) as bar:
        for points in photo_points:
            with watch("render"):
                frame = warp.render(points)
            with watch("encode"):
                writer.write(frame)
            if overlay_writer is not None:
                with watch("overlay"):
                    overlay_writer.write(keypoints.draw_keypoints(frame, points))
            bar.update(1)


def run(image: str | os.PathLike, speech: str | os.PathLike, out: str | os.PathLike, *,
        checkpoint: str | os.PathLike, pose_from: str | os.PathLike | None = None,
        temperature: float | None = None, seed: int = 0, keypoints_out: str | os.PathLike | None = None,
        overlay: bool = False, max_seconds: float | None = None, render_batch: int | None = None,
        progress: bool = True, renderer: str = "photo", face: int | None = None, add_blinks: bool = True,
        max_face_px: float | None = None, emotion: str | None = None, intensity: float = 1.0, motion: str = "motion") -> GenerationReport:
    """`t2v generate`: the face in photo `image` speaks `speech`; the video goes to `out`.

    out: an mp4 of the photo's size (an odd side gains one edge row or column) with
        exactly `audio.num_video_frames(samples)` = round(25 x seconds) frames at 25 fps
        and the speech (mono, 16 kHz) as its audio track.
    checkpoint: a `t2v demo` workdir, or a folder holding a `render` task workdir and a
        keypoint task's (each with config.json and checkpoints/): `motion` picks which.
    motion: the keypoint model, "motion" (default), "a2k" or "pose_lstm"; `pose_from`
        needs "motion".
    pose_from: a video whose face's head pose, blinks and brows the output follows
        (motion-controllable mode); lips still follow `speech`.
    temperature: of the motion prior's samples (the checkpoint's `sample.temperature`
        when None); seed: of those samples (same seed, same video).
    keypoints_out: also write the generated keypoints as npz: `keypoints [T, 68, 2]`
        (photo pixels), `reference [68, 2]` (the photo's landmarks), `fps`, `image_size`
        (width, height).
    overlay: also write OUT_keypoints.mp4, the video with its keypoints drawn.
    max_seconds: longer speech is refused (None: `DEFAULT_MAX_SECONDS`, 10 minutes).
    render_batch: frames per renderer call (default: 1 at 256 px and above, else 4).
    progress: a progress bar on stderr.
    renderer: "photo" (default): the photo's own face warped along the keypoints at the
        size it has in the photo (`t2v.generate.warp`), the mouth interior and closing
        lids painted; "learned": the trained renderer at its size S, pasted back.
    face: which face of the photo, numbered 1, 2, ... left to right (`list_faces`, or
        `t2v generate --list-faces PHOTO`); None: the largest (of equally large ones,
        within 5% in area, the leftmost).
    add_blinks: blink 10-20 times a minute (`t2v.generate.blinks`, from `seed`) when the
        motion model's keypoints blink less than 10 times a minute.
    emotion, intensity: the face shows `emotion` (t2v.data.synthetic.EMOTIONS) at `intensity`
        (0..1) by the keypoint prototypes of `t2v.generate.emotion` (the checkpoint's
        emotion_prototypes.json, else t2v's); the lips still follow `speech`.
    max_face_px: renderer "photo" draws its warp at most this face width (default 512);
        larger faces get the warp upsampled, their pixels still come from the photo.

    Several faces in the photo: the largest is animated and a warning says so. Bad input
    (no face, unreadable image or audio, silent or too long audio, missing or mismatched
    checkpoint) raises `t2v.errors.InputError`, one line naming the file, and
    leaves no output behind.
    """
    edit = None
    if emotion is not None:
        from t2v.generate.emotion import EmotionEdit

        edit = EmotionEdit.for_request(emotion, intensity, checkpoint)
    generator = TalkingHeadGenerator.from_checkpoint(checkpoint, render_batch, motion)
    return generator.generate(image, speech, out, pose_from=pose_from, temperature=temperature, seed=seed,
                              keypoints_out=keypoints_out, overlay=overlay,
                              max_seconds=DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds,
                              progress=progress, renderer=renderer, face=face, add_blinks=add_blinks,
                              max_face_px=DEFAULT_MAX_FACE_PX if max_face_px is None else max_face_px,
                              keypoint_edit=edit)
