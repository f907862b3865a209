"""t2v.audio: decoding every container we accept, the frame-count contract, librosa
equivalence of the features, and one-line errors that name the file."""

from __future__ import annotations

import fractions
import time

import av
import librosa
import numpy as np
import pytest
import soundfile

from t2v import audio

TONE_HZ = 1000.0


def tone(seconds: float, rate: int, hz: float = TONE_HZ, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def speech_like(num_samples: int, seed: int = 0) -> np.ndarray:
    """A chirp with noise bursts: energy that moves across mel bins and over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / audio.SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    bursts = rng.standard_normal(num_samples) * (np.sin(2 * np.pi * 3 * t) > 0.5) * 0.1
    return (chirp + bursts).astype(np.float32)


def dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


def write_with_av(path, wave: np.ndarray, rate: int, codec: str, with_video: bool = False) -> None:
    """Encodes a mono wave with PyAV, optionally beside a small 25 fps video track."""
    with av.open(str(path), "w") as container:
        # Every stream exists before the first packet: muxing writes the header.
        stream = container.add_stream(codec, rate=rate, layout="mono")
        if with_video:
            video = container.add_stream("mpeg4", rate=audio.FPS)
            video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
            for i in range(audio.num_video_frames(len(wave), rate)):
                image = np.full((32, 32, 3), (7 * i) % 256, np.uint8)
                container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(video.encode())
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
        # A timestamp lets the muxer mark the encoder's priming samples for the decoder
        # to drop; without one AAC audio would start 1024 samples late.
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, fractions.Fraction(1, rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_video_only(path) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=audio.FPS)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for _ in range(5):
            container.mux(video.encode(black))
        container.mux(video.encode())


# --------------------------------------------------------------------------- frame counts


def test_num_video_frames_is_25_times_seconds_rounded_half_up():
    for rate in (audio.SAMPLE_RATE, 22050, 44100, 48000):
        lengths = list(range(0, 3 * rate // audio.FPS, 7)) + [rate, 10 * rate + 1, 3600 * rate - 1]
        for num_samples in lengths:
            frames = fractions.Fraction(num_samples * audio.FPS, rate)
            half_up = int(frames + fractions.Fraction(1, 2))
            assert audio.num_video_frames(num_samples, rate) == half_up
    assert audio.num_video_frames(audio.SAMPLE_RATE) == 25
    assert audio.num_video_frames(audio.SAMPLES_PER_FRAME // 2) == 1  # 20 ms: a half rounds up
    assert audio.num_video_frames(audio.SAMPLES_PER_FRAME // 2 - 1) == 0
    assert audio.mel_frames_for(7) == 28


@pytest.mark.parametrize("rate", [audio.SAMPLE_RATE, 44100])
def test_every_feature_has_four_rows_per_video_frame_for_any_length(rate):
    rng = np.random.default_rng(1)
    lengths = [0, 1, 319, 320, 639, 640, 641, 959, 960, 12_345]
    lengths += list(rng.integers(1, 3 * rate, 20))
    for num_samples in lengths:
        wave = (0.1 * rng.standard_normal(num_samples)).astype(np.float32)
        frames = audio.num_video_frames(num_samples, rate)
        assert audio.log_mel(wave, rate).shape == (4 * frames, audio.N_MELS)
        assert audio.mfcc(wave, rate).shape == (4 * frames, 13)
        assert audio.frame_energy(wave, rate).shape == (frames,)
        assert audio.log_mel(wave, rate).dtype == np.float32


def test_mel_frame_j_is_centred_at_sample_160j_plus_80():
    num_samples = 40 * audio.SAMPLES_PER_FRAME
    for j in (0, 1, 2, 3, 57, 158):
        click = np.zeros(num_samples, np.float32)
        click[audio.HOP * j + audio.HOP // 2] = 1.0
        loudness = audio.log_mel(click).sum(axis=1)
        assert int(np.argmax(loudness)) == j
        # Symmetric window: the neighbours on both sides hear the click equally.
        if j > 0:
            np.testing.assert_allclose(loudness[j - 1], loudness[j + 1], rtol=1e-4)


# --------------------------------------------------------------------------- librosa equivalence


def librosa_log_mel(wave: np.ndarray) -> np.ndarray:
    """The reference: librosa on the wave padded so that frame j is centred at 160 j + 80.

    librosa with center=False centres frame j at 160 j + N_FFT / 2 of its input, so the wave
    gets N_FFT / 2 - 80 zeros in front; the end is padded or cut to exactly 4T frames.
    """
    num_mels = audio.mel_frames_for(audio.num_video_frames(len(wave)))
    lead = audio.N_FFT // 2 - audio.HOP // 2
    padded = np.zeros(audio.HOP * (num_mels - 1) + audio.N_FFT)
    kept = wave[: len(padded) - lead]
    padded[lead : lead + len(kept)] = kept
    mel = librosa.feature.melspectrogram(
        y=padded, sr=audio.SAMPLE_RATE, n_fft=audio.N_FFT, hop_length=audio.HOP,
        win_length=audio.WIN, window="hann", center=False, power=2.0, n_mels=audio.N_MELS,
    )
    return np.log(np.maximum(mel, audio.LOG_FLOOR)).T


@pytest.mark.parametrize("num_samples", [16_000, 16_000 + 123, 7 * 640 + 300, 641])
def test_log_mel_matches_librosa(num_samples):
    wave = speech_like(num_samples)
    ours, reference = audio.log_mel(wave), librosa_log_mel(wave.astype(np.float64))
    assert ours.shape == reference.shape
    # Natural-log units: an absolute 1e-4 is a 1e-4 relative error in mel power.
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    assert ours.min() >= np.log(audio.LOG_FLOOR) - 1e-6


def test_mfcc_matches_librosa_from_the_same_log_mel():
    wave = speech_like(25_000, seed=3)
    for n_mfcc in (13, 40):
        reference_log_mel = librosa_log_mel(wave.astype(np.float64))
        reference = librosa.feature.mfcc(S=reference_log_mel.T, n_mfcc=n_mfcc).T
        np.testing.assert_allclose(audio.mfcc(wave, n_mfcc=n_mfcc), reference, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="n_mfcc"):
        audio.mfcc(wave, n_mfcc=0)


def test_features_at_another_rate_equal_features_of_the_resampled_wave():
    wave_44k = tone(1.5, 44100) + tone(1.5, 44100, hz=3000, amplitude=0.1)
    wave_16k = audio.resample(wave_44k, 44100)
    np.testing.assert_allclose(audio.log_mel(wave_44k, 44100), audio.log_mel(wave_16k), atol=1e-4)
    np.testing.assert_allclose(
        audio.frame_energy(wave_44k, 44100), audio.frame_energy(wave_16k), rtol=1e-5
    )


def test_frame_energy_is_rms_per_video_frame():
    levels = np.array([0.0, 0.5, 0.25, 0.125], np.float32)
    signs = np.where(np.arange(audio.SAMPLES_PER_FRAME) % 2 == 0, 1.0, -1.0).astype(np.float32)
    wave = np.concatenate([level * signs for level in levels])
    np.testing.assert_allclose(audio.frame_energy(wave), levels, rtol=1e-6)
    # A trailing 400 samples make a fifth frame, averaged over the samples it has.
    tail = np.full(400, 0.3, np.float32)
    with_tail = np.concatenate([wave, tail])
    np.testing.assert_allclose(audio.frame_energy(with_tail), [*levels, 0.3], rtol=1e-6)


def test_ten_minutes_of_log_mel_take_well_under_a_few_seconds():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(10 * 60 * audio.SAMPLE_RATE)).astype(np.float32)
    audio.log_mel(wave[: audio.SAMPLE_RATE])  # builds the cached filterbank
    start = time.perf_counter()
    features = audio.log_mel(wave)
    assert features.shape == (4 * 25 * 600, audio.N_MELS)
    assert time.perf_counter() - start < 5.0


# --------------------------------------------------------------------------- loading


def test_wav_at_44k_stereo_becomes_16k_mono_with_the_tone_in_place(tmp_path):
    left = tone(1.0, 44100)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, 0.5 * left], axis=1), 44100)
    wave = audio.load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - audio.SAMPLE_RATE) <= 1
    assert abs(dominant_hz(wave, audio.SAMPLE_RATE) - TONE_HZ) <= 1.0
    # Channels averaged: tones of amplitude 0.5 and 0.25 make one of 0.375.
    np.testing.assert_allclose(np.max(np.abs(wave[1000:-1000])), 0.375, rtol=0.01)
    np.testing.assert_array_equal(wave, audio.load_audio(path))  # deterministic


def test_flac_at_16k_is_read_as_written(tmp_path):
    written = speech_like(20_000)
    path = tmp_path / "speech.flac"
    soundfile.write(path, written, audio.SAMPLE_RATE)
    np.testing.assert_allclose(audio.load_audio(path), written, atol=1 / 2**15)


@pytest.mark.parametrize(
    "name, codec, with_video",
    [("speech.mp3", "mp3", False), ("speech.m4a", "aac", False), ("talk.mp4", "aac", True)],
)
def test_compressed_audio_and_the_audio_track_of_mp4(tmp_path, name, codec, with_video):
    path = tmp_path / name
    write_with_av(path, tone(1.0, 44100), 44100, codec, with_video)
    wave = audio.load_audio(path)
    # Priming is dropped, so the tone starts on time (lip sync); the end may carry padding.
    onset = int(np.argmax(np.abs(wave) > 0.05))
    assert onset < audio.SAMPLE_RATE // 1000
    assert 0 <= len(wave) - audio.SAMPLE_RATE < 0.05 * audio.SAMPLE_RATE
    assert abs(dominant_hz(wave, audio.SAMPLE_RATE) - TONE_HZ) <= 2.0
    assert 0.4 < np.max(np.abs(wave)) < 0.6


def test_load_audio_can_return_another_rate(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.5, audio.SAMPLE_RATE), audio.SAMPLE_RATE)
    wave = audio.load_audio(path, sample_rate=22050)
    assert abs(len(wave) - 22050 // 2) <= 1
    assert abs(dominant_hz(wave, 22050) - TONE_HZ) <= 2.0


# --------------------------------------------------------------------------- errors


def assert_one_line_error(path, problem: str, sample_rate: int = audio.SAMPLE_RATE) -> None:
    with pytest.raises(audio.AudioError) as caught:
        audio.load_audio(path, sample_rate)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and problem in message, message


def test_video_without_audio_says_no_audio_stream(tmp_path):
    path = tmp_path / "silent_film.mp4"
    write_video_only(path)
    assert_one_line_error(path, "no audio stream")


@pytest.mark.parametrize("name", ["garbage.wav", "garbage.mp3", "garbage.mp4"])
def test_garbage_says_unreadable(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not audio\n" * 64)
    assert_one_line_error(path, "unreadable audio (")


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "nowhere.wav", "no such file")


def test_zeros_and_near_silence_say_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    soundfile.write(path, np.zeros(audio.SAMPLE_RATE, np.float32), audio.SAMPLE_RATE)
    assert_one_line_error(path, "audio is silent")
    quiet = tmp_path / "quiet.flac"  # peak -70 dBFS
    quiet_tone = tone(1.0, audio.SAMPLE_RATE, amplitude=10 ** (-70 / 20))
    soundfile.write(quiet, quiet_tone, audio.SAMPLE_RATE, subtype="PCM_24")
    assert_one_line_error(quiet, "audio is silent")
    soft = tmp_path / "soft.flac"  # peak -50 dBFS: quiet, but speech
    soft_tone = tone(1.0, audio.SAMPLE_RATE, amplitude=10 ** (-50 / 20))
    soundfile.write(soft, soft_tone, audio.SAMPLE_RATE, subtype="PCM_24")
    assert len(audio.load_audio(soft)) == audio.SAMPLE_RATE


def test_shorter_than_one_video_frame(tmp_path):
    path = tmp_path / "blip.wav"
    soundfile.write(path, tone(0.020, 44100), 44100)  # 20 ms
    assert_one_line_error(path, "audio is shorter than one video frame (40 ms)")
    assert_one_line_error(path, "audio is shorter than one video frame (40 ms)", sample_rate=8000)
    just_enough = tmp_path / "one_frame.wav"
    soundfile.write(just_enough, tone(0.040, audio.SAMPLE_RATE), audio.SAMPLE_RATE)
    assert len(audio.load_audio(just_enough)) == audio.SAMPLES_PER_FRAME


def test_check_speech_rejects_non_finite_samples():
    wave = tone(0.5, audio.SAMPLE_RATE)
    wave[100] = np.nan
    with pytest.raises(audio.AudioError, match=r"^clip\.wav: audio holds NaN"):
        audio.check_speech(wave, "clip.wav")


def test_pitch_is_yin():
    t = np.arange(audio.SAMPLE_RATE) / audio.SAMPLE_RATE
    for f0 in (90.0, 150.0, 240.0, 380.0):
        tone = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(4 * np.pi * f0 * t) + 0.2 * np.sin(6 * np.pi * f0 * t)
        assert np.median(audio.pitch(tone)[3:-3]) == pytest.approx(f0, rel=2e-3)
    # Real speech: agrees with librosa's YIN on the voiced frames.
    from t2v.data import speech

    wave = speech.speak("The quick brown fox jumps over the lazy dog.", "en", "m3").audio
    ours = audio.pitch(wave, fmin=70.0, fmax=400.0, frame_length=1024, hop_length=320)
    theirs = librosa.yin(wave, fmin=70.0, fmax=400.0, sr=audio.SAMPLE_RATE, frame_length=1024, hop_length=320, center=True)
    assert ours.shape == theirs.shape
    rms = librosa.feature.rms(y=wave, frame_length=1024, hop_length=320)[0][: len(ours)]
    voiced = rms > 0.1 * rms.max()
    relative = np.abs(ours - theirs)[voiced] / theirs[voiced]
    assert np.median(relative) < 0.01 and np.mean(relative < 0.05) > 0.8


def test_silence_reads_the_one_silence_constant():
    # Padding code (the input pipeline, generation) fills with SILENCE_LOG_MEL: it must be
    # exactly what log_mel gives for a silent stretch.
    mel = audio.log_mel(np.zeros(audio.SAMPLE_RATE, np.float32))
    np.testing.assert_array_equal(mel, np.float32(audio.SILENCE_LOG_MEL))
    assert audio.SILENCE_LOG_MEL == pytest.approx(-11.513, abs=1e-3)
