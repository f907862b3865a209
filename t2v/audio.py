"""Speech loading and audio features: the ONE definition used by data preparation,
training and inference.

Conventions:
  * a *wave* is a float `[samples]` array in [-1, 1], mono, at `SAMPLE_RATE` (16 kHz);
  * video runs at `FPS` (25), so one video frame spans `SAMPLES_PER_FRAME` (640) samples,
    and a clip of `n` samples has `num_video_frames(n)` = round(25 * seconds) frames
    (halves round up);
  * every feature has exactly `MELS_PER_FRAME` (4) rows per video frame, whatever the
    length: mel frame j is centred at sample `j * HOP + HOP // 2`, so the 4 mel frames of
    video frame i are centred inside samples [640 i, 640 (i + 1)). The waveform is
    zero-padded (silence before and after the clip) so that every window exists; audio
    past the last whole mel window (less than half a video frame) is dropped.

Features (`log_mel`, `mfcc`, `frame_energy`) accept waves at any rate through their
`sample_rate` argument and resample to 16 kHz inside; the frame count always follows
the original length and rate.
"""

from __future__ import annotations

import functools
import os

import av
import librosa
import numpy as np
import scipy.fft
import soundfile
import soxr

from t2v.errors import InputError

SAMPLE_RATE = 16000
FPS = 25
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 80
MELS_PER_FRAME = 4
SAMPLES_PER_FRAME = 640
assert SAMPLES_PER_FRAME == SAMPLE_RATE // FPS == MELS_PER_FRAME * HOP

LOG_FLOOR = 1e-5  # log_mel = ln(max(mel power, LOG_FLOOR)); silence reads ln(1e-5) = -11.5
SILENCE_LOG_MEL = float(np.log(LOG_FLOOR))  # what `log_mel` gives for silence: pad mel with this
SILENCE_DBFS = -60.0  # a recording whose peak stays below this is treated as silent

_SOUNDFILE_SUFFIXES = (".wav", ".flac")
_FFT_CHUNK_FRAMES = 8192  # bounds the float64 spectrum held in memory at once


class AudioError(InputError):
    """A speech file that cannot be used; the message is one line naming the file."""


# --------------------------------------------------------------------------- loading


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes speech from a file into a mono float32 wave `[samples]` at `sample_rate`.

    wav and flac are read with soundfile; everything else (mp3, m4a, the audio track of
    mp4, mkv, webm, ...) with PyAV. Channels are averaged; the rate is converted with
    soxr (high quality, deterministic). Raises `AudioError` for a missing, unreadable,
    audio-less, silent or too-short file.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise AudioError(f"{name}: no such file")
    if name.lower().endswith(_SOUNDFILE_SUFFIXES):
        channels, file_rate = _decode_with_soundfile(name)
    else:
        channels, file_rate = _decode_with_av(name)
    wave = channels.mean(axis=0, dtype=np.float32)
    wave = resample(wave, file_rate, sample_rate)
    check_speech(wave, name, sample_rate)
    return wave


def _decode_with_soundfile(name: str) -> tuple[np.ndarray, int]:
    """Returns `[channels, samples]` float32 and the file's rate."""
    try:
        samples, rate = soundfile.read(name, dtype="float32", always_2d=True)
    except soundfile.SoundFileError as error:
        raise AudioError(f"{name}: unreadable audio ({_one_line(error)})") from error
    return samples.T, rate


def _decode_with_av(name: str) -> tuple[np.ndarray, int]:
    """Decodes the first audio stream of any FFmpeg container: `[channels, samples]`, rate."""
    try:
        with av.open(name) as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: no audio stream")
            stream = container.streams.audio[0]
            # Planar float keeps the file's layout and rate; the rate is changed by soxr later.
            to_float = av.AudioResampler(format="fltp")
            pieces = []
            for frame in container.decode(stream):
                pieces += [f.to_ndarray() for f in to_float.resample(frame)]
            pieces += [f.to_ndarray() for f in to_float.resample(None)]
            rate = stream.codec_context.sample_rate
    except av.FFmpegError as error:
        raise AudioError(f"{name}: unreadable audio ({_one_line(error)})") from error
    if not pieces:
        raise AudioError(f"{name}: audio stream holds no samples")
    return np.concatenate(pieces, axis=1), rate


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def check_speech(wave: np.ndarray, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> None:
    """Raises `AudioError` naming `path` if `wave` cannot drive a video: non-finite,
    shorter than one video frame (40 ms), or silent (peak below -60 dBFS)."""
    name = os.fspath(path)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    if len(wave) * FPS < sample_rate:
        milliseconds = 1000 * len(wave) / sample_rate
        raise AudioError(
            f"{name}: audio is shorter than one video frame (40 ms): {milliseconds:.1f} ms"
        )
    peak = float(np.max(np.abs(wave)))
    if peak < 10 ** (SILENCE_DBFS / 20):
        peak_dbfs = 20 * np.log10(peak) if peak > 0 else -np.inf
        raise AudioError(
            f"{name}: audio is silent (peak {peak_dbfs:.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS)"
        )


def resample(wave: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Converts a float wave `[samples]` between rates with soxr HQ; float32 out."""
    wave = np.asarray(wave, np.float32)
    if from_rate == to_rate:
        return wave
    return soxr.resample(wave, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


# --------------------------------------------------------------------------- frame counts


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames of a 25 fps video for `num_samples` of audio: round(25 * seconds), halves up."""
    # Integer arithmetic: floor(n * 25 / rate + 1/2) without float rounding surprises.
    return (2 * num_samples * FPS + sample_rate) // (2 * sample_rate)


def mel_frames_for(num_video_frames: int) -> int:
    """Mel (and MFCC) rows that go with `num_video_frames` video frames."""
    return MELS_PER_FRAME * num_video_frames


# --------------------------------------------------------------------------- features


def log_mel(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log mel spectrogram, float32 `[4 * num_video_frames, 80]`.

    Periodic Hann window of 400 samples (25 ms), hop 160 (10 ms), 512-point FFT, power
    spectrum, librosa's Slaney mel filterbank (80 bins, 0 to 8 kHz), then
    ln(max(mel, 1e-5)). Equals `librosa.feature.melspectrogram(center=False)` on the
    wave zero-padded by `N_FFT // 2 - HOP // 2` samples at the start.
    """
    wave, num_frames = _prepare(wave, sample_rate)
    return _log_mel_16k(wave, mel_frames_for(num_frames))


def mfcc(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, n_mfcc: int = 13) -> np.ndarray:
    """MFCCs, float32 `[4 * num_video_frames, n_mfcc]`: the orthonormal DCT-II of
    `log_mel` over mel bins, as `librosa.feature.mfcc(S=log_mel.T)` computes it
    (natural-log units, no liftering)."""
    if not 1 <= n_mfcc <= N_MELS:
        raise ValueError(f"n_mfcc must be in [1, {N_MELS}], got {n_mfcc}")
    log_power = log_mel(wave, sample_rate).astype(np.float64)
    cepstrum = scipy.fft.dct(log_power, type=2, norm="ortho", axis=-1)
    return cepstrum[:, :n_mfcc].astype(np.float32)


def frame_energy(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """RMS of each video frame's 640 samples, float32 `[num_video_frames]`.

    A last frame that runs past the end of the audio is averaged over the samples it has.
    """
    wave, num_frames = _prepare(wave, sample_rate)
    wave = wave[: num_frames * SAMPLES_PER_FRAME]
    padded = np.zeros(num_frames * SAMPLES_PER_FRAME)
    padded[: len(wave)] = wave
    sums_of_squares = np.square(padded).reshape(num_frames, SAMPLES_PER_FRAME).sum(axis=1)
    frame_starts = SAMPLES_PER_FRAME * np.arange(num_frames)
    sample_counts = np.clip(len(wave) - frame_starts, 1, SAMPLES_PER_FRAME)
    return np.sqrt(sums_of_squares / sample_counts).astype(np.float32)


def _prepare(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Checks a wave, brings it to 16 kHz float64 and counts its video frames."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"wave must be mono [samples], got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"wave must be floating point in [-1, 1], got {wave.dtype}")
    num_frames = num_video_frames(len(wave), sample_rate)
    return resample(wave, sample_rate).astype(np.float64), num_frames


def _log_mel_16k(wave: np.ndarray, num_mel_frames: int) -> np.ndarray:
    if num_mel_frames == 0:
        return np.zeros((0, N_MELS), np.float32)
    # Window j covers [j * HOP - 120, j * HOP + 280): centred at j * HOP + HOP / 2.
    lead = WIN // 2 - HOP // 2
    padded = np.zeros(HOP * (num_mel_frames - 1) + WIN)
    kept = wave[: len(padded) - lead]
    padded[lead : lead + len(kept)] = kept
    windows = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP]
    hann, filterbank = _hann_window(), _mel_filterbank()
    out = np.empty((num_mel_frames, N_MELS), np.float32)
    for start in range(0, num_mel_frames, _FFT_CHUNK_FRAMES):
        chunk = windows[start : start + _FFT_CHUNK_FRAMES] * hann
        # A 400-sample window zero-padded to 512 at the end rather than centred (as
        # librosa does) differs by a circular shift: the power spectrum is the same.
        spectrum = np.fft.rfft(chunk, n=N_FFT)
        power = spectrum.real**2 + spectrum.imag**2
        out[start : start + len(chunk)] = np.log(np.maximum(power @ filterbank.T, LOG_FLOOR))
    return out


@functools.cache
def _hann_window() -> np.ndarray:
    """Periodic Hann `[WIN]`, the window librosa and scipy use for spectra."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)


@functools.cache
def _mel_filterbank() -> np.ndarray:
    """`[N_MELS, N_FFT // 2 + 1]` float64, librosa's Slaney-normalised mel filters."""
    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, dtype=np.float64)


def pitch(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, *, fmin: float = 70.0, fmax: float = 400.0,
          frame_length: int = 1024, hop_length: int = SAMPLES_PER_FRAME // 2, threshold: float = 0.1) -> np.ndarray:
    """F0 in Hz by YIN (de Cheveigné & Kawahara 2002), `[1 + len(wave) // hop_length]`.

    Frames are centred on multiples of `hop_length` (the wave is zero-padded by half a
    frame), as `librosa.yin(center=True)` does; defined everywhere, meaningful where the
    speech is voiced. Plain numpy: no JIT cache shared between worker processes.
    """
    wave = np.asarray(wave, np.float64)
    window = frame_length // 2
    min_period = max(1, int(np.floor(sample_rate / fmax)))
    max_period = min(int(np.ceil(sample_rate / fmin)), frame_length - window - 1)
    padded = np.pad(wave, frame_length // 2)
    num_frames = 1 + (len(padded) - frame_length) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length][:num_frames]

    # Difference function d(tau) = sum_j (x_j - x_{j+tau})^2 over the first `window` samples,
    # from energies and a cross-correlation computed with one FFT per frame.
    n_fft = 1 << int(np.ceil(np.log2(frame_length + window)))
    head = np.fft.rfft(frames[:, :window], n_fft)
    cross = np.fft.irfft(np.conj(head) * np.fft.rfft(frames, n_fft), n_fft)[:, : max_period + 1]
    energy = np.concatenate([np.zeros((num_frames, 1)), np.cumsum(frames**2, axis=1)], axis=1)
    taus = np.arange(max_period + 1)
    shifted_energy = energy[:, taus + window] - energy[:, taus]
    difference = energy[:, [window]] + shifted_energy - 2.0 * cross
    # Cumulative mean normalised difference: 1 at tau = 0, dips below 1 at the periods.
    cumulative = np.cumsum(difference[:, 1:], axis=1)
    normalised = np.ones_like(difference)
    normalised[:, 1:] = difference[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-12)

    search = normalised[:, min_period : max_period + 1]
    is_minimum = np.zeros_like(search, bool)
    is_minimum[:, 1:-1] = (search[:, 1:-1] < search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
    below = is_minimum & (search < threshold)
    # The first dip under the threshold, else the global minimum.
    index = np.where(below.any(axis=1), np.argmax(below, axis=1), np.argmin(search, axis=1))
    # Parabolic interpolation around the chosen lag.
    rows = np.arange(num_frames)
    i = np.clip(index, 1, search.shape[1] - 2)
    left, centre, right = search[rows, i - 1], search[rows, i], search[rows, i + 1]
    curvature = left - 2.0 * centre + right
    offset = np.where(np.abs(curvature) > 1e-12, 0.5 * (left - right) / np.where(curvature == 0, 1, curvature), 0.0)
    offset = np.where(index == i, np.clip(offset, -1.0, 1.0), 0.0)
    period = min_period + index + offset
    return (sample_rate / period).astype(np.float32)
