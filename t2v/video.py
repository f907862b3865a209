"""mp4 reading and writing: frames at 25 fps, mono 16 kHz audio, atomic H.264 + AAC output.

Everything goes through PyAV, whose wheel carries its own FFmpeg; no system ffmpeg is used.

Conventions:
  * frames are uint8 RGB, `[frames, height, width, 3]` for a clip, `[height, width, 3]` for one;
  * audio is float32 mono in [-1, 1], `[samples]`, at 16 kHz unless stated otherwise;
  * reading resamples any source frame rate, variable ones included, onto the 25 fps grid
    `t_i = t_0 + i / 25` (t_0: the first frame's presentation time) by taking, for each
    `t_i`, the source frame whose presentation time is nearest (the earlier one on a tie);
  * a clip lasts `round(duration * 25)` output frames, `duration` being the video stream's,
    so a 2 s clip gives 50 frames whatever its source rate.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import secrets
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from t2v.errors import InputError

FPS = 25
SAMPLE_RATE = 16_000


class VideoError(InputError):
    """A file that cannot be read as a video, with a one-line message naming it."""


@dataclasses.dataclass
class Video:
    """A decoded clip.

    frames: uint8 `[frames, height, width, 3]` RGB at 25 fps (or the `fps` asked for).
    audio: float32 `[samples]` mono at `sample_rate`, aligned to the first frame; None when
        the file has no audio stream.
    source_fps: the source video stream's average frame rate (nan when it states none).
    sample_rate: of `audio`.
    """

    frames: np.ndarray
    audio: np.ndarray | None
    source_fps: float
    sample_rate: int = SAMPLE_RATE


# ---------------------------------------------------------------------------------------------
# Reading


def probe(path: str | os.PathLike) -> dict:
    """Stream facts without decoding, for data-preparation reports.

    Returns a dict: duration (seconds, of the video stream), fps (its average rate),
    num_frames (source frames), width, height, has_audio, audio_sample_rate (None without
    audio).
    """
    with _open_for_reading(path) as container:
        stream = _video_stream(container, path)
        duration = _stream_duration(stream, container)
        fps = float(stream.average_rate) if stream.average_rate else None
        num_frames = stream.frames
        if not num_frames and duration is not None and fps:
            num_frames = round(float(duration) * fps)
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "duration": float(duration) if duration is not None else None,
            "fps": fps,
            "num_frames": num_frames,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "has_audio": audio is not None,
            "audio_sample_rate": audio.sample_rate if audio is not None else None,
        }


def read_video(
    path: str | os.PathLike,
    fps: float = FPS,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    """Decodes a whole clip: frames resampled to `fps`, audio as mono 16 kHz.

    max_frames: keep only the first this many output frames (and the audio they span);
        decoding stops there.
    size: `(width, height)` to rescale frames to; the source size when None.
    """
    name = os.fspath(path)
    with _open_for_reading(path) as container:
        stream = _video_stream(container, path)
        source_fps = float(stream.average_rate) if stream.average_rate else float("nan")
        timed = _timed_frames(container, stream, name)
        first = next(timed, None)
        if first is None:
            raise VideoError(f"{name}: video stream has no frames")
        origin = first[0]
        chosen = _nearest_frames(
            itertools.chain([first], timed), fps, _output_length(stream, container, fps)
        )
        frames = [_to_rgb(frame, size) for frame in itertools.islice(chosen, max_frames)]
        has_audio = bool(container.streams.audio)
    if not frames:
        raise VideoError(f"{name}: video stream has no frames")
    audio = None
    if has_audio:
        seconds = len(frames) / _as_fraction(fps) if max_frames is not None else None
        audio = _read_audio(path, origin, SAMPLE_RATE, seconds)
    return Video(np.stack(frames), audio, source_fps=source_fps, sample_rate=SAMPLE_RATE)


def iter_frames(
    path: str | os.PathLike, fps: float = FPS, size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Yields uint8 `[height, width, 3]` frames resampled to `fps`, one at a time.

    Memory stays bounded whatever the clip's length. The file is opened and checked at
    the call; decoding errors surface while iterating.
    """
    container = _open_for_reading(path)
    try:
        stream = _video_stream(container, path)
    except Exception:
        container.close()
        raise
    return _iter_frames(container, stream, os.fspath(path), fps, size)


def _iter_frames(container, stream, name, fps, size) -> Iterator[np.ndarray]:
    with container:
        timed = _timed_frames(container, stream, name)
        for frame in _nearest_frames(timed, fps, _output_length(stream, container, fps)):
            yield _to_rgb(frame, size)


def _nearest_frames(
    timed_frames: Iterable[tuple[Fraction, object]], fps: float, count: int | None
) -> Iterator[object]:
    """Nearest-timestamp resampling of `(presentation time, frame)` pairs onto `fps`.

    Output i is taken at `t_0 + i / fps`, t_0 being the first frame's time; it is the frame
    whose time is nearest (the earlier one on a tie). Frames must come in presentation
    order; one whose time does not increase is dropped. Yields `count` frames, the last
    one repeated if the stream ends early; when `count` is None, as many as the stream
    spans (its last frame lasting as long as the one before it).
    """
    step = 1 / _as_fraction(fps)
    iterator = iter(timed_frames)
    previous = next(iterator, None)
    if previous is None:
        return
    origin = previous[0]
    emitted = 0
    last_gap = step
    for current in iterator:
        if current[0] <= previous[0]:
            continue
        # Output times up to the midpoint between two frames belong to the earlier one.
        midpoint = (previous[0] + current[0]) / 2
        while (count is None or emitted < count) and origin + emitted * step <= midpoint:
            yield previous[1]
            emitted += 1
        if count is not None and emitted >= count:
            return
        last_gap = current[0] - previous[0]
        previous = current
    if count is None:
        count = _round_half_up((previous[0] + last_gap - origin) / step)
    while emitted < count:
        yield previous[1]
        emitted += 1


def _timed_frames(container, stream, name: str) -> Iterator[tuple[Fraction, av.VideoFrame]]:
    """Decoded frames with their presentation time in seconds (pts * time_base)."""
    nominal = Fraction(stream.average_rate) ** -1 if stream.average_rate else Fraction(1, FPS)
    time = None
    try:
        for frame in container.decode(stream):
            if frame.pts is not None:
                time = frame.pts * frame.time_base
            else:  # no timestamp (raw elementary streams): assume the nominal rate
                time = Fraction(0) if time is None else time + nominal
            yield time, frame
    except av.FFmpegError as error:
        raise VideoError(f"{name}: unreadable video ({error})") from None


def _read_audio(
    path: str | os.PathLike, origin: Fraction, sample_rate: int, seconds: Fraction | None
) -> np.ndarray:
    """The first audio stream as float32 mono `[samples]`, sample 0 at video time `origin`.

    Audio starting after the video is preceded by silence; audio before it is cut. The
    AAC encoder's end padding is cut by trimming to the stream's stated duration.
    seconds: stop after this much audio from `origin`; all of it when None.
    """
    name = os.fspath(path)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    decoded = 0
    start = None
    with _open_for_reading(path) as container:
        stream = container.streams.audio[0]
        needed = None
        try:
            for frame in container.decode(stream):
                if start is None:
                    start = frame.pts * frame.time_base if frame.pts is not None else origin
                    if seconds is not None:
                        needed = (origin + seconds - start) * sample_rate
                for resampled in resampler.resample(frame):
                    chunks.append(resampled.to_ndarray().reshape(-1))
                    decoded += len(chunks[-1])
                if needed is not None and decoded >= needed:
                    break
            chunks += [resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(None)]
        except av.FFmpegError as error:
            raise VideoError(f"{name}: unreadable audio ({error})") from None
        stated_duration = stream.duration * stream.time_base if stream.duration else None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if stated_duration is not None:
        audio = audio[: _round_half_up(stated_duration * sample_rate)]
    lead = _round_half_up(((origin if start is None else start) - origin) * sample_rate)
    audio = np.concatenate([np.zeros(lead, np.float32), audio]) if lead > 0 else audio[-lead:]
    if seconds is not None:
        audio = audio[: _round_half_up(seconds * sample_rate)]
    return audio


def _open_for_reading(path: str | os.PathLike):
    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoError(f"{name}: no such file")
    try:
        return av.open(name, mode="r")
    except av.FFmpegError as error:
        raise VideoError(f"{name}: unreadable video ({error})") from None


def _video_stream(container, path):
    if not container.streams.video:
        raise VideoError(f"{os.fspath(path)}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame- and slice-threaded decoding
    return stream


def _stream_duration(stream, container) -> Fraction | None:
    if stream.duration:
        return stream.duration * stream.time_base
    if container.duration:
        return Fraction(container.duration, av.time_base)
    return None


def _output_length(stream, container, fps: float) -> int | None:
    duration = _stream_duration(stream, container)
    if duration is None:
        return None
    return _round_half_up(duration * _as_fraction(fps))


def _as_fraction(fps: float) -> Fraction:
    """Exact rates for exact timestamps: 25 -> 25, 12.5 -> 25/2, 29.97 -> 2997/100."""
    return Fraction(fps).limit_denominator(1_000_000)


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    width, height = size
    return frame.to_ndarray(format="rgb24", width=width, height=height)


# ---------------------------------------------------------------------------------------------
# Writing


class VideoWriter:
    """Streams frames into an H.264 (yuv420p) mp4, with optional AAC mono audio.

    The file appears at `path` only when `close` succeeds: until then everything goes to a
    hidden temporary file beside it, which an exception inside the `with` block removes,
    leaving any earlier file at `path` untouched.

        with VideoWriter("out.mp4", audio=waveform) as writer:
            for frame in frames:
                writer.write(frame)

    audio: float32 `[samples]` mono in [-1, 1] at `sample_rate` (int16 is scaled), written
        in full and interleaved with the frames as they come.
    Frames are uint8 `[height, width, 3]`, all the same size; an odd height or width is
    padded by one edge-replicated row or column, as yuv420p needs even sizes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = FPS,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
        crf: int = 20,
    ):
        self.path = os.fspath(path)
        self.fps = _as_fraction(fps)
        self.crf = crf
        self.sample_rate = sample_rate
        self._audio = None if audio is None else _as_mono_float(audio, self.path)
        self._audio_written = 0
        self._frame_shape = None
        self._frames_written = 0
        self._video_stream = None
        self._audio_stream = None
        directory, filename = os.path.split(os.path.abspath(self.path))
        self._temporary_path = os.path.join(
            directory, f".{filename}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        )
        self._container = av.open(
            self._temporary_path, mode="w", format="mp4", options={"movflags": "+faststart"}
        )

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def frames_written(self) -> int:
        return self._frames_written

    def write(self, frame: np.ndarray) -> None:
        """Encodes one uint8 `[height, width, 3]` frame."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(
                f"{self.path}: frames must be uint8 [height, width, 3],"
                f" got {frame.dtype} {frame.shape}"
            )
        if self._frame_shape is None:
            self._frame_shape = frame.shape
            self._add_streams(frame.shape[0], frame.shape[1])
        elif frame.shape != self._frame_shape:
            raise ValueError(
                f"{self.path}: frame {self._frames_written} is {frame.shape},"
                f" earlier ones {self._frame_shape}"
            )
        frame = _pad_to_even(frame)
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self._frames_written
        self._container.mux(self._video_stream.encode(video_frame))
        self._frames_written += 1
        # Keep the audio in step with the video so the muxer interleaves without buffering.
        self._write_audio_until(_round_half_up(self._frames_written / self.fps * self.sample_rate))

    def close(self) -> None:
        """Flushes the encoders and moves the finished file to `path`."""
        if self._container is None:
            return
        if self._frames_written == 0:
            self.abort()
            raise ValueError(f"{self.path}: no frames to write")
        try:
            self._write_audio_until(None)
            self._container.mux(self._video_stream.encode(None))
            if self._audio_stream is not None:
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
            self._container = None
            os.replace(self._temporary_path, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drops everything written so far; `path` keeps what it had."""
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except av.FFmpegError:
                pass  # a half-written file is being thrown away anyway
        if os.path.exists(self._temporary_path):
            os.remove(self._temporary_path)

    def _add_streams(self, height: int, width: int) -> None:
        options = {"crf": str(self.crf)}
        stream = self._container.add_stream("libx264", rate=self.fps, options=options)
        stream.height, stream.width = height + height % 2, width + width % 2
        stream.pix_fmt = "yuv420p"
        self._video_stream = stream
        if self._audio is not None:
            # AAC takes a fixed set of rates; other rates are resampled to 48 kHz by PyAV.
            aac_rates = av.Codec("aac", "w").audio_rates
            rate = self.sample_rate if self.sample_rate in aac_rates else 48_000
            self._audio_stream = self._container.add_stream("aac", rate=rate, layout="mono")

    def _write_audio_until(self, end: int | None) -> None:
        if self._audio_stream is None:
            return
        end = len(self._audio) if end is None else min(end, len(self._audio))
        if end <= self._audio_written:
            return
        chunk = self._audio[self._audio_written : end]
        audio_frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
        audio_frame.sample_rate = self.sample_rate
        audio_frame.pts = self._audio_written
        audio_frame.time_base = Fraction(1, self.sample_rate)
        self._container.mux(self._audio_stream.encode(audio_frame))
        self._audio_written = end


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    fps: float = FPS,
    crf: int = 20,
) -> None:
    """Writes frames (uint8 `[frames, height, width, 3]`, or any iterable of `[height,
    width, 3]` frames, consumed one at a time) and optional mono audio to an H.264 + AAC
    mp4, atomically: see `VideoWriter`."""
    with VideoWriter(path, fps=fps, audio=audio, sample_rate=sample_rate, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)


def _as_mono_float(audio: np.ndarray, name: str) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{name}: audio must be mono [samples], got shape {audio.shape}")
    if audio.dtype == np.int16:
        return (audio / 32768.0).astype(np.float32)
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{name}: audio must be float in [-1, 1] or int16, got {audio.dtype}")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
