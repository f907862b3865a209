"""mp4 round trips, frame-rate resampling, atomic streaming writes and error messages,
all on small synthetic clips made here."""

from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile

from t2v import video

HEIGHT, WIDTH = 48, 64
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // video.FPS  # 640


def gradient_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """uint8 `[count, height, width, 3]`: diagonal gradients drifting a few levels per frame."""
    y, x = np.mgrid[0:height, 0:width]
    t = np.arange(count)[:, None, None]
    red = 40 + 2 * x + 3 * t
    green = 40 + 3 * y + 2 * t
    blue = 120 + x - y + 0 * t
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def sine(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def numbered_frame(number: int) -> np.ndarray:
    """A frame showing `number` as 8 vertical bars, bright for a 1 bit, dark for a 0."""
    bits = (number >> np.arange(8)[::-1]) & 1
    row = np.repeat(np.where(bits, 230, 25), WIDTH // 8).astype(np.uint8)
    return np.broadcast_to(row[None, :, None], (HEIGHT, WIDTH, 3)).copy()


def frame_number(frame: np.ndarray) -> int:
    bars = frame.reshape(HEIGHT, 8, WIDTH // 8, 3).mean(axis=(0, 2, 3)) > 128
    return int(sum(int(bit) << shift for bit, shift in zip(bars, range(7, -1, -1))))


TICKS_PER_SECOND = 600  # time base of the test clips: 30, 50 and 12.5 fps are whole ticks


def write_numbered_clip(path, pts_ticks, nominal_rate) -> None:
    """Writes frame j, showing the number j, at presentation time pts_ticks[j] / 600 s,
    with PyAV directly, so the reader is not tested against its own writer."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=nominal_rate, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.time_base = Fraction(1, TICKS_PER_SECOND)
        for number, ticks in enumerate(pts_ticks):
            frame = av.VideoFrame.from_ndarray(numbered_frame(number), format="rgb24")
            frame.pts, frame.time_base = int(ticks), Fraction(1, TICKS_PER_SECOND)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_round_trip_keeps_frames_and_audio(tmp_path):
    frames = gradient_frames(40)  # 1.6 s
    audio = sine(1.6)
    path = tmp_path / "clip.mp4"
    video.write_video(path, frames, audio=audio)

    info = video.probe(path)
    assert (info["width"], info["height"], info["num_frames"]) == (WIDTH, HEIGHT, 40)
    assert info["fps"] == 25 and info["has_audio"] and info["audio_sample_rate"] == SAMPLE_RATE
    assert abs(info["duration"] - 40 / 25) <= 1 / 25

    clip = video.read_video(path)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert clip.source_fps == 25 and clip.sample_rate == SAMPLE_RATE
    error = np.abs(clip.frames.astype(np.float32) - frames).mean()
    assert error < 2.0, f"mean absolute error {error:.2f} levels after H.264 at crf 20"

    # AAC pads to whole 1024-sample frames; the reader trims to the stream's stated length,
    # so anything beyond one video frame (640 samples) of difference is a bug.
    assert clip.audio is not None and clip.audio.dtype == np.float32
    assert abs(len(clip.audio) - len(audio)) <= SAMPLES_PER_FRAME

    spectrum = np.abs(np.fft.rfft(clip.audio))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(clip.audio)
    assert abs(peak_hz - 440) <= 2 * SAMPLE_RATE / len(clip.audio)

    # AAC's encoder delay may shift the signal: align by cross-correlation, then compare.
    n = min(len(audio), len(clip.audio))

    def overlap(lag):  # original[k] against decoded[k + lag]
        return audio[max(0, -lag) : n - max(0, lag)], clip.audio[max(0, lag) : n - max(0, -lag)]

    lags = range(-SAMPLES_PER_FRAME, SAMPLES_PER_FRAME + 1)
    lag = max(lags, key=lambda lag: np.dot(*overlap(lag)))
    assert abs(lag) <= 64, f"audio shifted by {lag} samples (4 ms allowed)"
    assert np.corrcoef(*overlap(lag))[0, 1] > 0.9


@pytest.mark.parametrize("sample_rate", [44_100, 12_345])  # an AAC rate, and one AAC lacks
def test_audio_at_other_rates_comes_back_at_16_khz(tmp_path, sample_rate):
    path = tmp_path / "clip.mp4"
    t = np.arange(round(1.2 * sample_rate)) / sample_rate
    video.write_video(path, gradient_frames(30), np.sin(2 * np.pi * 440 * t) / 2, sample_rate)
    audio = video.read_video(path).audio
    assert abs(len(audio) - 30 * SAMPLES_PER_FRAME) <= SAMPLES_PER_FRAME
    reference = sine(len(audio) / SAMPLE_RATE)
    inner = slice(SAMPLES_PER_FRAME, -SAMPLES_PER_FRAME)  # away from resampler edges
    assert np.corrcoef(reference[inner], audio[inner])[0, 1] > 0.9


def expected_indices(pts_ticks, duration_seconds) -> list[int]:
    """Nearest-timestamp choice, computed exactly in ticks: the earlier frame on a tie."""
    count = round(duration_seconds * video.FPS)
    pts_ticks = np.asarray(pts_ticks)
    output_ticks = pts_ticks[0] + np.arange(count) * TICKS_PER_SECOND // video.FPS
    return [int(np.argmin(np.abs(pts_ticks - t))) for t in output_ticks]  # argmin: first on ties


@pytest.mark.parametrize(
    "name, pts_ticks, nominal_rate",
    [
        ("30fps", np.arange(60) * 20, 30),  # 2 s
        ("50fps", np.arange(90) * 12, 50),  # 1.8 s
        ("12.5fps", np.arange(25) * 48, Fraction(25, 2)),  # 2 s: every output time but one ties
        ("variable", np.cumsum([0] + [12, 30, 18, 45, 9] * 8), 30),  # gaps of 15 to 75 ms
    ],
)
def test_reading_resamples_to_25_fps_by_nearest_timestamp(tmp_path, name, pts_ticks, nominal_rate):
    path = tmp_path / f"{name}.mp4"
    write_numbered_clip(path, pts_ticks, nominal_rate)
    duration = video.probe(path)["duration"]

    clip = video.read_video(path)
    assert clip.audio is None
    assert len(clip.frames) == round(duration * video.FPS)
    assert [frame_number(frame) for frame in clip.frames] == expected_indices(pts_ticks, duration)

    streamed = list(video.iter_frames(path))
    assert len(streamed) == len(clip.frames)
    assert all(np.array_equal(a, b) for a, b in zip(streamed, clip.frames))


def test_read_video_limits_frames_rescales_and_cuts_audio_to_match(tmp_path):
    path = tmp_path / "clip.mp4"
    video.write_video(path, gradient_frames(30), audio=sine(1.2))
    clip = video.read_video(path, max_frames=10, size=(32, 24))
    assert clip.frames.shape == (10, 24, 32, 3)
    assert len(clip.audio) == 10 * SAMPLES_PER_FRAME


def test_nearest_frames_without_a_known_duration_lasts_to_the_last_frame():
    # Frames at 0, 40 and 80 ms; the last one lasts 40 ms like the gap before it: 3 frames.
    timed = [(Fraction(t, 1000), t) for t in (0, 40, 80)]
    assert list(video._nearest_frames(timed, 25, None)) == [0, 40, 80]
    # At 50 fps each is held for two outputs.
    assert list(video._nearest_frames(timed, 50, None)) == [0, 0, 40, 40, 80, 80]


def test_streaming_writer_takes_a_generator_and_pads_odd_sizes(tmp_path):
    path = tmp_path / "streamed.mp4"
    odd = gradient_frames(30, height=47, width=63)
    consumed = []

    def frames():
        for index, frame in enumerate(odd):
            consumed.append(index)
            yield frame

    video.write_video(path, frames(), audio=sine(1.2))
    assert consumed == list(range(30))
    clip = video.read_video(path)
    assert clip.frames.shape == (30, 48, 64, 3)
    # The padding repeats the last row and column.
    error = np.abs(clip.frames[:, :47, :63].astype(np.float32) - odd).mean()
    assert error < 2.0
    assert np.abs(clip.frames[:, 47].astype(np.float32) - clip.frames[:, 46]).mean() < 3.0


def test_failed_write_leaves_no_file_and_keeps_an_existing_one(tmp_path):
    path = tmp_path / "out.mp4"

    def failing_frames():
        yield from gradient_frames(5)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        video.write_video(path, failing_frames(), audio=sine(1.0))
    assert list(tmp_path.iterdir()) == []

    video.write_video(path, gradient_frames(10))
    good = path.read_bytes()
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with video.VideoWriter(path) as writer:
            for frame in failing_frames():
                writer.write(frame)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]

    with pytest.raises(ValueError, match=r"out\.mp4: frames must be uint8"):
        video.write_video(path, np.zeros((3, HEIGHT, WIDTH, 3), np.float32))
    with pytest.raises(ValueError, match=r"out\.mp4: frame 1 is"):
        video.write_video(path, [gradient_frames(1)[0], gradient_frames(1, 32, 32)[0]])
    with pytest.raises(ValueError, match=r"out\.mp4: no frames"):
        video.write_video(path, [])
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_bad_files_raise_one_line_errors_naming_them(tmp_path):
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(video.VideoError, match=r"^\S*clip\.mp4: unreadable video \(") as caught:
        video.read_video(garbage)
    assert "\n" not in str(caught.value)

    speech = tmp_path / "speech.wav"
    soundfile.write(speech, sine(0.5), SAMPLE_RATE)
    for read in (video.read_video, video.iter_frames, video.probe):
        with pytest.raises(video.VideoError, match=r"speech\.wav: no video stream$"):
            read(speech)

    with pytest.raises(video.VideoError, match=r"missing\.mp4: no such file"):
        video.read_video(tmp_path / "missing.mp4")
