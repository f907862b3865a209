"""eSpeak NG speech: every language speaks, timings match the audio, output is reproducible."""

import concurrent.futures
import multiprocessing
import time

import librosa
import numpy as np
import pytest

from t2v import audio
from t2v.data import speech
from t2v.errors import InputError

# eSpeak's English vowels: every mnemonic that starts with one of these (checked by
# test_english_symbols_are_classified, so the energy test cannot silently skip phonemes).
ENGLISH_VOWEL_STARTS = tuple("aeiouAEIOUV03@")
ENGLISH_CONSONANTS = {"b", "d", "D", "f", "g", "h", "j", "k", "l", "m", "n", "N", "p", "r", "r-", "s", "S", "t", "T",
                      "tS", "dZ", "v", "w", "z", "Z", ";"}  # fmt: skip
VOICELESS_STOPS = {"p", "t", "k"}


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if len(wave) else 0.0


def segment(spoken: speech.Speech, start: float, end: float) -> np.ndarray:
    return spoken.audio[round(start * spoken.sample_rate) : round(end * spoken.sample_rate)]


def median_f0(spoken: speech.Speech) -> float:
    """Median YIN pitch over the loud frames, in Hz."""
    f0 = audio.pitch(spoken.audio, spoken.sample_rate, fmin=60, fmax=500, frame_length=1024, hop_length=256)
    energy = librosa.feature.rms(y=spoken.audio, frame_length=1024, hop_length=256, center=True)[0]
    loud = energy[: len(f0)] > 0.3 * energy.max()
    return float(np.median(f0[loud]))


def check_timings(spoken: speech.Speech) -> None:
    phonemes = spoken.phonemes
    assert phonemes[0].start == 0.0
    assert abs(phonemes[-1].end - spoken.duration) < 1e-9
    for phoneme, following in zip(phonemes, phonemes[1:]):
        assert phoneme.start < phoneme.end == following.start, (phoneme, following)
    assert any(not phoneme.is_pause for phoneme in phonemes)
    assert all(phoneme.symbol and not phoneme.symbol.startswith(("'", ",")) for phoneme in phonemes)
    position = 0
    for word, start, end in spoken.words:
        position = spoken.text.index(word, position)  # words come in text order
        assert 0.0 <= start < end <= spoken.duration
    assert all(a[2] <= b[1] for a, b in zip(spoken.words, spoken.words[1:]))


@pytest.mark.parametrize("language", speech.LANGUAGES)
def test_every_language_speaks(language):
    text = speech.SENTENCES[language][3]
    spoken = speech.speak(text, language)
    assert spoken.audio.dtype == np.float32 and spoken.audio.ndim == 1
    assert spoken.sample_rate == 16000
    assert (spoken.text, spoken.language, spoken.voice) == (text, language, language)
    assert abs(np.abs(spoken.audio).max() - 0.9) < 1e-3
    assert rms(spoken.audio) > 0.05
    assert 0.5 < spoken.duration < 10.0
    check_timings(spoken)
    assert len(spoken.words) >= len(text.split()) // 2


def test_variants_exist_and_sound_different():
    assert set(speech.VOICE_VARIANTS) <= speech.available_variants()
    text = speech.SENTENCES["en"][0]
    waves = {}
    for variant in speech.VOICE_VARIANTS:
        spoken = speech.speak(text, "en", variant)
        assert spoken.voice == f"en+{variant}"
        check_timings(spoken)
        waves[variant] = spoken.audio
    distinct = {wave.tobytes() for wave in waves.values()}
    assert len(distinct) == len(speech.VOICE_VARIANTS)


def test_pitch_and_variant_set_the_voice_pitch():
    text = speech.SENTENCES["en"][1]
    low, high = (median_f0(speech.speak(text, "en", "m3", pitch=pitch)) for pitch in (30, 70))
    assert high > 1.2 * low, (low, high)
    male, female = (median_f0(speech.speak(text, "en", variant)) for variant in ("m3", "f2"))
    assert female > 1.4 * male, (male, female)


def test_rate_sets_the_duration():
    text = speech.SENTENCES["de"][4]
    slow, fast = (speech.speak(text, "de", rate=rate).duration for rate in (130, 190))
    assert fast < 0.85 * slow, (slow, fast)


def test_same_arguments_same_speech_whatever_came_before():
    arguments = dict(text=speech.SENTENCES["en"][5], language="en", variant="f1", pitch=44, rate=150)
    first = speech.speak(**arguments)
    speech.speak(speech.SENTENCES["fr"][2], "fr", "m7", pitch=68)  # leaves eSpeak in another state
    second = speech.speak(**arguments)
    np.testing.assert_array_equal(first.audio, second.audio)
    assert first.phonemes == second.phonemes and first.words == second.words


def test_same_arguments_same_speech_a_second_later():
    # espeak_ng_Initialize seeds eSpeak's noise generator from time(NULL); f3 has breath
    # noise (`breath` in its voice file), so its wave would change with the clock second.
    text = "Could you pass me the salt, please? She sighed softly."
    first = speech.speak(text, "en", "f3")
    time.sleep(1.1)  # past a wall-clock second boundary
    second = speech.speak(text, "en", "f3")
    np.testing.assert_array_equal(first.audio, second.audio)


def test_threads_and_spawned_processes_get_the_same_speech():
    jobs = [(speech.SENTENCES[language][7], language) for language in ("en", "de", "ru", "tr")]
    expected = [speech.speak(*job).audio for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        in_threads = list(pool.map(lambda job: speech.speak(*job).audio, jobs))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        in_process = pool.submit(speech.speak, *jobs[0]).result().audio
    for want, got in zip(expected, in_threads):
        np.testing.assert_array_equal(want, got)
    np.testing.assert_array_equal(expected[0], in_process)


@pytest.mark.parametrize("variant", [None, "f3"])  # f3 adds an echo that fills the pauses
def test_vowels_are_loud_and_pauses_silent(variant):
    vowels, pauses = [], []
    sentences = speech.SENTENCES["en"][:12]
    for text in (" ".join(pair) for pair in zip(sentences[::2], sentences[1::2])):  # a pause between the two
        spoken = speech.speak(text, "en", variant)
        for phoneme in spoken.phonemes:
            energy = rms(segment(spoken, phoneme.start, phoneme.end))
            if phoneme.is_pause and phoneme.end - phoneme.start >= 0.02:
                pauses.append(energy)
            elif phoneme.symbol.startswith(ENGLISH_VOWEL_STARTS):
                vowels.append(energy)
    assert len(vowels) > 100 and len(pauses) >= 6
    assert np.mean(vowels) > 10 * np.mean(pauses), (np.mean(vowels), np.mean(pauses))


def unexplained_rms(spoken: speech.Speech, start: float, end: float, echo_delay: float) -> float:
    """RMS of the part of [start, end) that a scaled copy of the audio `echo_delay` s earlier
    does not explain: the level of what eSpeak generated there, with the echo taken out."""
    part = segment(spoken, start, end)
    if not echo_delay:
        return rms(part)
    earlier = segment(spoken, start - echo_delay, end - echo_delay)
    gain = part @ earlier / max(float(earlier @ earlier), 1e-12)
    return rms(part - gain * earlier)


@pytest.mark.parametrize("variant", [None, "m1", "m2", "f3", "f4", "f5"])  # m2, f3, f4, f5 add an echo
def test_voiceless_stops_start_at_their_silent_closure(variant):
    """Lips shut before a /p/ bursts: the stop's span must start where the sound stops."""
    spoken = speech.speak("Paul kept a bit of pepper, to take a cup.", "en", variant)
    echo_delay = speech._echo(variant)[0] / 1000 if variant else 0.0
    stops = [
        (before, stop)
        for before, stop in zip(spoken.phonemes, spoken.phonemes[1:])
        if stop.symbol in VOICELESS_STOPS and not before.is_pause
    ]
    assert len(stops) >= 6
    for before, stop in stops:
        closure = unexplained_rms(spoken, stop.start + 0.002, stop.start + 0.012, echo_delay)
        sound = unexplained_rms(spoken, before.end - 0.012, before.end - 0.002, echo_delay)
        assert closure < min(0.005, 0.25 * sound), (before, stop, closure, sound)


def test_english_symbols_are_classified():
    symbols = {p.symbol for text in speech.SENTENCES["en"] for p in speech.speak(text, "en").phonemes}
    unclassified = {
        s for s in symbols if not (s.startswith("_") or s.startswith(ENGLISH_VOWEL_STARTS) or s in ENGLISH_CONSONANTS)
    }
    assert not unclassified
    assert {"_", "_:", "p", "m", "a", "@"} <= symbols


def test_sample_rate_keeps_the_timings():
    text = speech.SENTENCES["it"][6]
    at_16k, at_native = speech.speak(text, "it"), speech.speak(text, "it", sample_rate=22050)
    assert at_native.sample_rate == 22050
    assert abs(at_16k.duration - at_native.duration) < 1e-3
    assert [p.symbol for p in at_16k.phonemes] == [p.symbol for p in at_native.phonemes]
    starts_16k, starts_native = ([p.start for p in s.phonemes] for s in (at_16k, at_native))
    np.testing.assert_allclose(starts_16k, starts_native, atol=1e-3)


def test_bad_requests_raise_one_line_errors():
    cases = [
        (dict(text="   "), "empty"),
        (dict(text="Hello.", language="xx"), "no voice 'xx'"),
        (dict(text="Hello.", language="en+f3"), "language"),
        (dict(text="Hello.", variant="nobody"), "variant 'nobody'"),
        (dict(text="Hello.", pitch=120), "pitch"),
        (dict(text="Hello.", rate=20), "rate"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            speech.speak(**arguments)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="no voice 'xx'") as error:
        speech.random_utterance(np.random.default_rng(0), "xx")
    assert "\n" not in str(error.value)


def test_every_espeak_voice_is_accepted():
    names = speech.all_languages()
    assert len(names) > 100 and {"ja", "cmn", "ar", "hi", "en", "pt-BR"} <= set(names)
    assert speech.voice_name("zh") == "cmn" and speech.voice_name("PT-br") == "pt-BR"
    rng = np.random.default_rng(0)
    assert speech.random_utterance(rng, "en")[0] in speech.SENTENCES["en"]  # built-in sentences kept
    assert speech.random_utterance(rng, "ja", ["こんにちは。"])[0] == "こんにちは。"
    assert speech.random_utterance(rng, "ja")[0].startswith("[[")


@pytest.mark.parametrize("language", ["ja", "ar", "hi", "kl"])
def test_phoneme_sentences_speak_with_real_timings(language):
    vowels, consonants = speech.phoneme_inventory(language)
    assert len(vowels) >= 3 and len(consonants) >= 8
    text = speech.phoneme_sentence(np.random.default_rng(0), language)
    assert text == speech.phoneme_sentence(np.random.default_rng(0), language)  # deterministic
    spoken = speech.speak(text, language)
    check_timings(spoken)
    sounding = [p.symbol for p in spoken.phonemes if not p.is_pause]
    assert len(sounding) >= 4 and rms(spoken.audio) > 0.05
    assert np.mean([s in vowels + consonants for s in sounding]) > 0.8  # its own phonemes, spoken


def test_random_utterances_are_reproducible_and_in_range():
    for language in speech.LANGUAGES:
        draws = [speech.random_utterance(np.random.default_rng(seed), language) for seed in range(40)]
        assert draws == [speech.random_utterance(np.random.default_rng(seed), language) for seed in range(40)]
        for text, variant, pitch, rate in draws:
            assert text in speech.SENTENCES[language] and variant in speech.VOICE_VARIANTS
            assert type(pitch) is int and 30 <= pitch <= 70
            assert type(rate) is int and 130 <= rate <= 190
        assert len({draw[0] for draw in draws}) > 10 and len({draw[1] for draw in draws}) > 6


def test_sentences():
    assert tuple(speech.SENTENCES) == speech.LANGUAGES
    for language, sentences in speech.SENTENCES.items():
        assert len(sentences) == len(set(sentences)) >= 15, language
        assert all(3 <= len(sentence.split()) <= 12 for sentence in sentences), language
