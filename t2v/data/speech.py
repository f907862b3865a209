"""Real speech from eSpeak NG, with the phoneme and word timings that drive the synthetic mouth.

`speak(text, language, variant, pitch, rate)` returns a `Speech`: a mono float32 wave at
16 kHz (peak 0.9) and, aligned with it sample for sample, the phonemes eSpeak spoke and
the words they belong to. The library and its voice data come from the `espeakng-loader`
wheel; nothing is installed on the system or downloaded.

Timing conventions:
  * `phonemes` tile the whole clip: the first starts at 0, each ends where the next
    starts and the last ends at the end of the audio. Silence is a phoneme too: a
    symbol starting with "_" (`Phoneme.is_pause`): "_" a short pause (also the silence
    eSpeak leaves before the first sound), "_:" the pause at a comma or full stop.
  * symbols are eSpeak's phoneme mnemonics (e.g. "a", "@", "tS", "aI", "3:") with the
    stress marks "'" and "," removed, so that one table of visemes serves stressed and
    unstressed vowels alike.
  * a stop's span starts at its silent closure (lips shut before the burst of a /p/),
    not at the burst where eSpeak reports it; see `_timings`.
  * `words` hold (text, start, end) from the first to the last sounding phoneme of the
    word, so the pauses between words belong to no word. eSpeak joins some unstressed
    words to a neighbour ("the" in "in the garden", French "s'il"), which then have no
    entry of their own, and may split a number into several entries.

eSpeak keeps state between utterances (pitch flutter, noise generators), so two calls
with the same arguments would not give the same wave. Each call therefore loads a
private copy of the library afresh and unloads it afterwards (about 3 ms), and reseeds
the noise generator that `espeak_ng_Initialize` seeds from the clock (see
`_seed_noise`): the output depends only on the arguments, in any process, after any
history of calls and at any time.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

import espeakng_loader
import numpy as np

from t2v import audio
from t2v.errors import InputError

# --------------------------------------------------------------------------- public API

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "tr", "cs", "ru")
# The numbered human-sounding variants of espeak-ng-data/voices/!v (checked by the tests).
VOICE_VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
)  # fmt: skip
PITCH_RANGE = (30, 70)  # eSpeak's 0..100 scale; outside this the voices sound strained
RATE_RANGE = (130, 190)  # words per minute
STRESS_MARKS = "',"
_MIN_CLOSURE_S = 0.01  # shorter silent runs are the zero crossings of a waveform, not a closure
_SILENCE_LEVEL = 2  # int16 rounding
_ECHO_MARGIN = 0.35  # see _silence


@dataclasses.dataclass(frozen=True)
class Phoneme:
    symbol: str  # eSpeak phoneme mnemonic without stress marks: "a", "@", "p", "tS", "_:" (pause)
    start: float  # seconds from the start of the audio
    end: float  # seconds

    @property
    def is_pause(self) -> bool:
        return self.symbol.startswith("_")


@dataclasses.dataclass(frozen=True)
class Speech:
    audio: np.ndarray  # float32 [samples], mono, peak 0.9
    sample_rate: int
    phonemes: tuple[Phoneme, ...]  # in time order, tiling [0, duration], pauses included
    words: tuple[tuple[str, float, float], ...]  # (word as written, start, end) in seconds
    text: str
    language: str  # eSpeak language name, e.g. "en"
    voice: str  # the eSpeak voice used, e.g. "en+f3" (just "en" without a variant)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def speak(
    text: str,
    language: str = "en",
    variant: str | None = None,
    pitch: int = 50,
    rate: int = 160,
    sample_rate: int = audio.SAMPLE_RATE,
) -> Speech:
    """Speaks `text` with eSpeak NG.

    `language` is any eSpeak NG voice (`all_languages()`: "en", "de", "pt-BR", "ja",
    "cmn", ...) or a language code one of them declares ("zh", "en-gb"); `LANGUAGES` are
    the 12 with built-in sentences. `variant` is a file of espeak-ng-data/voices/!v
    ("f3", "m1"; `VOICE_VARIANTS` are the natural-sounding ones), `pitch` eSpeak's base
    pitch 0..100, `rate` words per minute 80..450. Text between `[[` and `]]` is read as
    eSpeak phoneme mnemonics (`phoneme_sentence`). The same arguments always give the
    same `Speech`. Raises InputError for an unknown language, ValueError for empty text,
    an unknown variant, or parameters out of range.
    """
    if not text.strip():
        raise ValueError("speak: the text is empty")
    if not language or "+" in language:
        raise ValueError(f"speak: language {language!r} must be an eSpeak language name such as 'en'")
    espeak_name = voice_name(language)
    if variant is not None and variant not in available_variants():
        raise ValueError(f"speak: eSpeak has no voice variant {variant!r} (in {_data_path() / 'voices' / '!v'})")
    if not 0 <= pitch <= 100:
        raise ValueError(f"speak: pitch {pitch} is outside eSpeak's 0..100")
    if not 80 <= rate <= 450:
        raise ValueError(f"speak: rate {rate} words per minute is outside eSpeak's 80..450")
    voice = espeak_name if variant is None else f"{espeak_name}+{variant}"

    native_rate, samples, events = _synthesize(text, voice, pitch, rate)
    if not np.any(samples):
        raise ValueError(f"speak: eSpeak produced no sound for {text!r} in {voice!r}")
    wave = audio.resample(samples.astype(np.float32) / 32768.0, native_rate, sample_rate)
    wave = (0.9 / np.abs(wave).max() * wave).astype(np.float32)
    silent = _silence(samples, variant, native_rate)
    phonemes, words = _timings(events, text, silent, native_rate, len(wave) / sample_rate)
    return Speech(wave, sample_rate, phonemes, words, text, language, voice)


def random_utterance(
    rng: np.random.Generator, language: str, sentences: Sequence[str] | None = None
) -> tuple[str, str, int, int]:
    """Draws (text, variant, pitch, rate) for `speak`: one of `sentences` if given, else of
    `SENTENCES[language]`, else (a language without built-in sentences) a
    `phoneme_sentence` of the language's own phonemes; one of `VOICE_VARIANTS`, pitch in
    `PITCH_RANGE` and rate in `RATE_RANGE` (inclusive). InputError for an unknown voice."""
    voice_name(language)
    sentences = sentences or SENTENCES.get(language)
    text = sentences[rng.integers(len(sentences))] if sentences else phoneme_sentence(rng, language)
    variant = VOICE_VARIANTS[rng.integers(len(VOICE_VARIANTS))]
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    return text, variant, pitch, rate


@functools.cache
def available_variants() -> frozenset[str]:
    """Every voice variant eSpeak's data holds (the names after "+" in "en+f3")."""
    return frozenset(os.listdir(_data_path() / "voices" / "!v"))


# --------------------------------------------------------------------------- voices


@dataclasses.dataclass(frozen=True)
class Voice:
    """One eSpeak NG voice file (espeak-ng-data/lang/<family>/<name>)."""

    name: str  # the file's name, what eSpeak selects a voice by: "en", "pt-BR", "ja", "cmn"
    description: str  # its `name` line: "Japanese", "Chinese (Mandarin, latin as English)"
    languages: tuple[tuple[str, int], ...]  # its `language <code> [priority]` lines, codes lower case
    phoneme_table: str  # its `phonemes` line, else its first language (as eSpeak does)


@functools.cache
def voices() -> dict[str, Voice]:
    """Every eSpeak NG voice of the espeakng-loader wheel, by lower-case name. (The MBROLA
    voices in voices/mb need the separate MBROLA program and are not among them.)"""
    found = {}
    for path in sorted((_data_path() / "lang").rglob("*")):
        if not path.is_file():
            continue
        languages, table, description = [], None, path.name
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "language":
                priority = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 5
                languages.append((fields[1].lower(), priority))
            elif len(fields) >= 2 and fields[0] == "phonemes":
                table = fields[1]
            elif len(fields) >= 2 and fields[0] == "name":
                description = " ".join(fields[1:])
        table = table or (languages[0][0] if languages else path.name)
        found[path.name.lower()] = Voice(path.name, description, tuple(languages), table)
    return found


def all_languages() -> tuple[str, ...]:
    """The name of every eSpeak NG voice `speak` accepts (141 in espeakng-loader 0.2.4)."""
    return tuple(sorted(voice.name for voice in voices().values()))


@functools.cache
def _voices_by_language_code() -> dict[str, str]:
    """Language code -> the voice declaring it with the best priority (eSpeak: lower wins)."""
    best: dict[str, tuple[int, str]] = {}
    for voice in voices().values():
        for code, priority in voice.languages:
            best[code] = min(best.get(code, (priority, voice.name)), (priority, voice.name))
    return {code: name for code, (_, name) in best.items()}


def voice_name(language: str, where: str = "language") -> str:
    """The eSpeak NG voice for `language`: a voice's name in any case ("pt-br" -> "pt-BR")
    or a language code a voice declares ("zh" -> "cmn", "en-gb" -> "en"). Raises
    InputError `<where>: eSpeak NG has no voice 'xx' ...` (one line) for anything else."""
    voice = voices().get(language.lower())
    if voice is not None:
        return voice.name
    if language.lower() in _voices_by_language_code():
        return _voices_by_language_code()[language.lower()]
    raise InputError(
        f"{where}: eSpeak NG has no voice {language!r} (it has {len(voices())}, e.g. en, de, ja, cmn, ar, hi; "
        "t2v.data.speech.all_languages() lists them)"
    )


# --------------------------------------------------------------------------- sentences from phonemes

# phoneme.h: phVOWEL; phLIQUID, phSTOP, phVSTOP, phFRIC, phVFRIC, phNASAL.
_VOWEL_TYPE, _CONSONANT_TYPES = 2, frozenset((3, 4, 5, 6, 7, 8))
# Sounds nearly every language has: a table inherits them rather than redefining them, so
# these are taken from the tables it includes too (where they are defined there).
_COMMON_PHONEMES = frozenset("a e i o u p t k b d g m n s l r j w f v z h".split())


@functools.cache
def _phoneme_tables() -> dict[str, tuple[int, tuple[tuple[str, int], ...]]]:
    """espeak-ng-data/phontab: table name -> (index of the table it includes or -1, ((mnemonic, type), ...)).

    Layout (synthdata.c, LoadPhData): a 4-byte count of tables, then per table 1 byte
    phoneme count, 1 byte included table (its index + 1; 0 for none: SetUpPhonemeTable),
    2 bytes padding, a 32-byte name and that many
    16-byte PHONEME_TAB entries (mnemonic: up to 4 chars in a little-endian uint32, then
    flags, program, code, and the type byte at offset 11).
    """
    data = (_data_path() / "phontab").read_bytes()
    tables, offset = {}, 4
    for _ in range(data[0]):
        count, includes = data[offset], data[offset + 1]
        name = data[offset + 4 : offset + 36].split(b"\0")[0].decode("ascii")
        offset += 36
        entries = []
        for i in range(count):
            entry = data[offset + 16 * i : offset + 16 * (i + 1)]
            mnemonic = entry[:4].rstrip(b"\0").decode("latin-1")
            if mnemonic:
                entries.append((mnemonic, entry[11]))
        tables[name] = (includes - 1, tuple(entries))
        offset += 16 * count
    return tables


def _speakable(mnemonic: str) -> bool:
    # "_x" pauses, "#x" virtual phonemes, "m-" syllabic consonants, "|"-joined specials.
    return mnemonic[0].isalpha() and not any(c in mnemonic for c in "_#-|%=")


@functools.cache
def phoneme_inventory(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(vowels, consonants): the phoneme mnemonics of the voice's phoneme table
    (espeak-ng-data/phontab): every one its own table defines, plus the common ones
    (`_COMMON_PHONEMES`) it inherits from the tables it includes."""
    tables, names = _phoneme_tables(), list(_phoneme_tables())
    name = voices()[voice_name(language).lower()].phoneme_table
    while name not in tables and "-" in name:
        name = name.rsplit("-", 1)[0]
    chain = []
    while name in tables and name not in chain:
        chain.append(name)
        parent = tables[name][0]
        name = names[parent] if parent >= 0 else ""
    vowels: dict[str, None] = {}
    consonants: dict[str, None] = {}
    for depth, table in enumerate(chain or ["base1"]):
        for mnemonic, kind in tables[table][1]:
            if not _speakable(mnemonic) or (depth and mnemonic not in _COMMON_PHONEMES):
                continue
            if kind == _VOWEL_TYPE:
                vowels.setdefault(mnemonic)
            elif kind in _CONSONANT_TYPES:
                consonants.setdefault(mnemonic)
    return tuple(vowels), tuple(consonants)


_PROBE_TRIES = 20


def phoneme_sentence(rng: np.random.Generator, language: str, num_words: tuple[int, int] = (3, 8)) -> str:
    """A sentence of made-up words from the language's own phonemes, for eSpeak's phoneme
    input: `[[ka'mina su'to ...]]`. Words have 1-3 open (C)V syllables, stress on the
    first; eSpeak speaks them with its real timings, so the visemes that follow are as
    real as for a written sentence.

    Some phoneme sequences crash eSpeak NG 1.52 outright (a segfault: "[['Oa]]" in
    Greenlandic), so each draw is first spoken in a child process (`_survives`) and a
    sentence that kills it is replaced by the next draw. Deterministic in `rng`.
    """
    vowels, consonants = phoneme_inventory(language)
    voice = voice_name(language)
    for _ in range(_PROBE_TRIES):
        words = []
        for _ in range(rng.integers(num_words[0], num_words[1] + 1)):
            syllables = []
            for _ in range(rng.integers(1, 4)):
                onset = consonants[rng.integers(len(consonants))] if rng.random() < 0.85 else ""
                syllables.append(onset + vowels[rng.integers(len(vowels))])
            words.append("'" + "".join(syllables))
        sentence = "[[" + " ".join(words) + "]]"
        if _survives(sentence, voice):
            return sentence
    raise RuntimeError(f"phoneme_sentence: eSpeak NG crashed on {_PROBE_TRIES} sentences in {voice!r}")


_probe: subprocess.Popen | None = None
_PROBE_LOCK = threading.Lock()


def _survives(text: str, voice: str) -> bool:
    """Whether eSpeak speaks `text` in `voice` without crashing, tried in a child Python
    (`_probe_server`, started once and kept; restarted after a crash). A plain
    subprocess, not multiprocessing: it never re-imports the caller's main module.
    Speech is a pure function of its arguments, so what survives there survives here."""
    global _probe
    request = json.dumps([text, voice]) + "\n"
    with _PROBE_LOCK:
        for _ in range(2):  # a child that died earlier is replaced once
            if _probe is None or _probe.poll() is not None:
                _probe = subprocess.Popen(
                    [sys.executable, "-c", "from t2v.data.speech import _probe_server; _probe_server()"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                )  # fmt: skip
                atexit.register(_probe.kill)
            try:
                _probe.stdin.write(request)
                _probe.stdin.flush()
                answer = _probe.stdout.readline()
            except (BrokenPipeError, OSError):
                answer = ""
            if answer:
                return answer.strip() == "1"
            if _probe.wait() < 0:  # killed by a signal while speaking: eSpeak crashed on this text
                return False
        raise RuntimeError("speak: the eSpeak NG probe process does not answer")


def _probe_server() -> None:
    """The child's loop: one JSON [text, voice] a line in, "1" (spoken) or "0" out."""
    for line in sys.stdin:
        text, voice = json.loads(line)
        try:
            sounded = bool(np.any(_synthesize(text, voice, 50, 160)[1]))
        except (ValueError, RuntimeError):
            sounded = False
        sys.stdout.write("1\n" if sounded else "0\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- timings


def _timings(
    events: list[_Event], text: str, silent: np.ndarray, native_rate: int, duration: float
) -> tuple[tuple[Phoneme, ...], tuple[tuple[str, float, float], ...]]:
    """Phonemes tiling [0, duration] and the words' spans, from eSpeak's events.

    `silent` marks the native-rate samples where eSpeak produced nothing. eSpeak reports
    a stop at its release, so the silent closure before it (lips shut before the burst
    of a /p/) ends the previous phoneme's span instead; silence at the end of a sounding
    phoneme's span is therefore handed to the phoneme that follows (a stop's closure, or
    a pause). A phoneme eSpeak lists but does not sound at all is left out.
    """
    symbols, starts, word_of_phoneme, word_texts = [], [], [], []
    for event in events:
        if event.kind == _EVENT_WORD:
            # text_position counts characters from 1; the word's length is in characters too.
            word_texts.append(text[event.text_position - 1 : event.text_position - 1 + event.length].strip())
        elif event.kind == _EVENT_PHONEME and event.symbol:
            symbols.append(event.symbol.strip(STRESS_MARKS) or event.symbol)
            starts.append(min(event.sample, len(silent)))
            word_of_phoneme.append(len(word_texts) - 1)
    if not symbols or starts[0] > 0:  # the silence before the first sound
        symbols.insert(0, "_")
        starts.insert(0, 0)
        word_of_phoneme.insert(0, -1)

    min_closure = round(_MIN_CLOSURE_S * native_rate)
    for i in range(1, len(starts)):
        if symbols[i - 1].startswith("_"):
            continue
        sounding = np.flatnonzero(~silent[starts[i - 1] : starts[i]])
        silence_start = starts[i - 1] + (int(sounding[-1]) + 1 if len(sounding) else 0)
        if starts[i] - silence_start >= min_closure:
            starts[i] = silence_start

    seconds = [start / native_rate for start in starts] + [duration]
    phonemes, spans = [], {}
    for symbol, start, end, word in zip(symbols, seconds, seconds[1:], word_of_phoneme):
        end = min(end, duration)
        if end <= start:  # eSpeak marks some boundaries with zero-length pauses
            continue
        phoneme = Phoneme(symbol, start, end)
        phonemes.append(phoneme)
        if word >= 0 and not phoneme.is_pause:
            first, _ = spans.get(word, (start, end))
            spans[word] = (first, end)
    words = tuple((word_texts[i], start, end) for i, (start, end) in sorted(spans.items()))
    return tuple(phonemes), words


def _silence(samples: np.ndarray, variant: str | None, native_rate: int) -> np.ndarray:
    """bool [samples]: where eSpeak generated no sound.

    Some variants add an echo (`echo <delay ms> <amplitude/256>` in their voice file),
    which fills pauses with a faint copy of earlier speech. Where eSpeak is silent the
    signal is just that copy; eSpeak scales it by about 75 to 100 % of the file's figure
    (it varies between clauses), so a sample counts as silent when the nominal echo
    explains it up to that margin.
    """
    level = np.abs(samples.astype(np.float64))
    delay_ms, amplitude = _echo(variant) if variant else (0, 0)
    delay = delay_ms * native_rate // 1000
    if not (0 < delay < len(samples) and 0 < amplitude < 256):
        return level <= _SILENCE_LEVEL
    echo = np.zeros_like(level)
    echo[delay:] = amplitude / 256 * samples[:-delay]
    return np.abs(samples - echo) <= _SILENCE_LEVEL + _ECHO_MARGIN * np.abs(echo)


@functools.cache
def _echo(variant: str) -> tuple[int, int]:
    """(delay in ms, amplitude in 1/256) of a variant's echo; (0, 0) without one."""
    for line in (_data_path() / "voices" / "!v" / variant).read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "echo" and fields[1].isdigit() and fields[2].isdigit():
            return int(fields[1]), int(fields[2])
    return 0, 0


# --------------------------------------------------------------------------- eSpeak NG through ctypes

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # return errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_INPUT = 0x100  # espeakPHONEMES: [[...]] in the text holds phoneme mnemonics
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),  # word and sentence events
        ("name", ctypes.c_char_p),  # mark and play events
        ("string", ctypes.c_char * 8),  # phoneme events: the mnemonic, not always NUL-terminated
    ]


class _EspeakEvent(ctypes.Structure):
    """espeak_EVENT (40 bytes on 64-bit platforms: `id` sits at offset 32)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # characters from the start of the text, from 1
        ("length", ctypes.c_int),  # word length in characters
        ("audio_position", ctypes.c_int),  # milliseconds (rounded down; `sample` is exact)
        ("sample", ctypes.c_int),  # sample index in the native-rate output
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


@dataclasses.dataclass(frozen=True)
class _Event:
    kind: int
    text_position: int
    length: int
    sample: int
    symbol: str  # phoneme events only


_LOCK = threading.Lock()  # one synthesis at a time: eSpeak's state is global to the library


def _data_path() -> pathlib.Path:
    return pathlib.Path(espeakng_loader.get_data_path())


@functools.cache
def _private_library() -> str:
    """Path of a copy of libespeak-ng that only this module opens.

    dlclose unloads a library, and so resets its state, only when nobody else holds it
    open; a copy under its own name guarantees that. On Linux the copy lives in memory
    (memfd) and is inherited by forked workers; elsewhere it is a temporary file.
    """
    with open(espeakng_loader.get_library_path(), "rb") as original:
        image = original.read()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("t2v-libespeak-ng")
        os.write(fd, image)
        return f"/proc/self/fd/{fd}"
    folder = tempfile.mkdtemp(prefix="t2v-espeak-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, os.path.basename(espeakng_loader.get_library_path()))
    with open(path, "wb") as copy:
        copy.write(image)
    return path


def _synthesize(text: str, voice: str, pitch: int, rate: int) -> tuple[int, np.ndarray, list[_Event]]:
    """Runs eSpeak on freshly loaded library state: (native rate, int16 samples, events)."""
    chunks: list[np.ndarray] = []
    events: list[_Event] = []

    def collect(wave, num_samples, event_list):
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wave, (num_samples,)).copy())
        i = 0
        while event_list and event_list[i].type != _EVENT_LIST_TERMINATED:
            event = event_list[i]
            symbol = event.id.string.decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
            events.append(_Event(event.type, event.text_position, event.length, event.sample, symbol))
            i += 1
        return 0  # 0: go on synthesizing

    callback = _SynthCallback(collect)  # kept alive until the library is unloaded
    encoded = text.encode("utf-8")
    with _LOCK:
        library = ctypes.CDLL(_private_library(), mode=ctypes.RTLD_LOCAL)
        try:
            library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            library.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]  # fmt: skip
            # `path` is the folder that contains espeak-ng-data.
            native_rate = library.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                str(_data_path().parent).encode(),
                _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
            )
            if native_rate <= 0:
                raise RuntimeError(f"speak: eSpeak NG failed to start with the data in {_data_path()}")
            _seed_noise(library)
            if library.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InputError(f"speak: eSpeak NG has no language {voice.split('+')[0]!r}")
            library.espeak_SetParameter(_PARAMETER_RATE, rate, 0)
            library.espeak_SetParameter(_PARAMETER_PITCH, pitch, 0)
            library.espeak_SetSynthCallback(callback)
            status = library.espeak_Synth(
                encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES_INPUT, None, None
            )
            if status != 0 or library.espeak_Synchronize() != 0:
                raise RuntimeError(f"speak: eSpeak NG failed (status {status}) on {text!r}")
        finally:
            library.espeak_Terminate()
            _ctypes.dlclose(library._handle)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return native_rate, samples, events


_NOISE_SEED = 1  # any fixed value: it only has to be the same for every call


def _seed_noise(library: ctypes.CDLL) -> None:
    """Reseeds eSpeak's noise generator (breath noise, Klatt voices) with a constant.

    espeak_ng_Initialize seeds it with `time(NULL)`, so without this the wave would change
    whenever the wall-clock second does. espeak_ng_SetRandSeed (espeak_ng.h, eSpeak NG
    1.52 and later, which the espeakng-loader wheel ships) replaces that seed; called
    right after initialisation it leaves no trace of the clock. An older library
    without it still speaks, but its noise then varies with the second it started in.
    """
    if hasattr(library, "espeak_ng_SetRandSeed"):
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        library.espeak_ng_SetRandSeed(_NOISE_SEED)


# --------------------------------------------------------------------------- sentences

# Short everyday sentences (3 to 12 words), written for this project, so that clips vary.
SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (  # English
        "The weather is lovely this morning.",
        "Could you pass me the salt, please?",
        "I think we should leave a little earlier.",
        "My brother bought a new bicycle last week.",
        "Nobody expected the meeting to end so quickly.",
        "Where did you put the keys?",
        "She reads a chapter every night before sleeping.",
        "The train to London is running late again.",
        "Let me know when you are ready.",
        "We planted tomatoes and beans in the garden.",
        "That was the best soup I have ever tasted.",
        "Please speak a bit more slowly.",
        "The children laughed at the clumsy puppy.",
        "How long have you lived in this city?",
        "Turn left after the old church.",
        "I forgot my umbrella at the office.",
        "Music fills the square every summer evening.",
        "He promised to call back tomorrow.",
        "The museum opens at nine on Sundays.",
        "Thank you so much for your help!",
    ),
    "de": (  # German
        "Das Wetter ist heute wirklich schön.",
        "Kannst du mir bitte das Salz geben?",
        "Wir sollten etwas früher losfahren.",
        "Mein Bruder hat sich ein neues Fahrrad gekauft.",
        "Niemand hat erwartet, dass die Sitzung so kurz ist.",
        "Wo hast du die Schlüssel hingelegt?",
        "Sie liest jeden Abend ein Kapitel vor dem Schlafen.",
        "Der Zug nach Hamburg hat schon wieder Verspätung.",
        "Sag mir Bescheid, wenn du fertig bist.",
        "Im Garten wachsen Tomaten und Bohnen.",
        "Das war die beste Suppe, die ich je gegessen habe.",
        "Bitte sprich ein bisschen langsamer.",
        "Die Kinder lachten über den tollpatschigen Welpen.",
        "Wie lange wohnst du schon in dieser Stadt?",
        "Biegen Sie nach der alten Kirche links ab.",
        "Ich habe meinen Regenschirm im Büro vergessen.",
        "Im Sommer spielt abends Musik auf dem Marktplatz.",
        "Er hat versprochen, morgen zurückzurufen.",
        "Das Museum öffnet sonntags um neun Uhr.",
        "Vielen Dank für deine Hilfe!",
    ),
    "fr": (  # French
        "Il fait vraiment beau ce matin.",
        "Tu peux me passer le sel, s'il te plaît ?",
        "Nous devrions partir un peu plus tôt.",
        "Mon frère a acheté un nouveau vélo la semaine dernière.",
        "Personne ne pensait que la réunion finirait si vite.",
        "Où as-tu mis les clés ?",
        "Elle lit un chapitre chaque soir avant de dormir.",
        "Le train pour Lyon a encore du retard.",
        "Dis-moi quand tu es prêt.",
        "Nous avons planté des tomates et des haricots.",
        "C'est la meilleure soupe que j'aie jamais goûtée.",
        "Parle un peu plus lentement, s'il te plaît.",
        "Les enfants riaient du chiot maladroit.",
        "Depuis combien de temps habites-tu dans cette ville ?",
        "Tournez à gauche après la vieille église.",
        "J'ai oublié mon parapluie au bureau.",
        "La musique remplit la place chaque soir d'été.",
        "Il a promis de rappeler demain.",
        "Le musée ouvre à neuf heures le dimanche.",
        "Merci beaucoup pour ton aide !",
    ),
    "es": (  # Spanish
        "Hace un tiempo precioso esta mañana.",
        "¿Me pasas la sal, por favor?",
        "Creo que deberíamos salir un poco antes.",
        "Mi hermano se compró una bicicleta nueva.",
        "Nadie esperaba que la reunión terminara tan pronto.",
        "¿Dónde has puesto las llaves?",
        "Ella lee un capítulo cada noche antes de dormir.",
        "El tren a Sevilla vuelve a llegar tarde.",
        "Avísame cuando estés listo.",
        "Plantamos tomates y judías en el huerto.",
        "Es la mejor sopa que he probado nunca.",
        "Habla un poco más despacio, por favor.",
        "Los niños se reían del cachorro torpe.",
        "¿Cuánto tiempo llevas viviendo en esta ciudad?",
        "Gire a la izquierda después de la iglesia vieja.",
        "Me olvidé el paraguas en la oficina.",
        "La música llena la plaza cada noche de verano.",
        "Prometió llamar mañana por la tarde.",
        "El museo abre a las nueve los domingos.",
        "¡Muchas gracias por tu ayuda!",
    ),
    "it": (  # Italian
        "Stamattina il tempo è davvero bello.",
        "Mi passi il sale, per favore?",
        "Penso che dovremmo partire un po' prima.",
        "Mio fratello ha comprato una bicicletta nuova.",
        "Nessuno si aspettava che la riunione finisse così presto.",
        "Dove hai messo le chiavi?",
        "Lei legge un capitolo ogni sera prima di dormire.",
        "Il treno per Milano è di nuovo in ritardo.",
        "Fammi sapere quando sei pronto.",
        "Abbiamo piantato pomodori e fagioli nell'orto.",
        "È la zuppa più buona che abbia mai assaggiato.",
        "Parla un po' più lentamente, per favore.",
        "I bambini ridevano del cucciolo goffo.",
        "Da quanto tempo vivi in questa città?",
        "Giri a sinistra dopo la vecchia chiesa.",
        "Ho dimenticato l'ombrello in ufficio.",
        "D'estate la musica riempie la piazza ogni sera.",
        "Ha promesso di richiamare domani.",
        "Il museo apre alle nove la domenica.",
        "Grazie mille per il tuo aiuto!",
    ),
    "pt": (  # Portuguese (Portugal)
        "O tempo está lindo esta manhã.",
        "Podes passar-me o sal, por favor?",
        "Acho que devíamos sair um pouco mais cedo.",
        "O meu irmão comprou uma bicicleta nova.",
        "Ninguém esperava que a reunião acabasse tão depressa.",
        "Onde puseste as chaves?",
        "Ela lê um capítulo todas as noites antes de dormir.",
        "O comboio para o Porto está outra vez atrasado.",
        "Avisa-me quando estiveres pronto.",
        "Plantámos tomates e feijões na horta.",
        "É a melhor sopa que já provei.",
        "Fala um pouco mais devagar, por favor.",
        "As crianças riam-se do cachorro desajeitado.",
        "Há quanto tempo vives nesta cidade?",
        "Vire à esquerda depois da igreja velha.",
        "Esqueci-me do guarda-chuva no escritório.",
        "A música enche a praça todas as noites de verão.",
        "Ele prometeu ligar amanhã.",
        "O museu abre às nove aos domingos.",
        "Muito obrigado pela tua ajuda!",
    ),
    "nl": (  # Dutch
        "Het is vanochtend heerlijk weer.",
        "Kun je me het zout even aangeven?",
        "We moeten iets eerder vertrekken.",
        "Mijn broer heeft een nieuwe fiets gekocht.",
        "Niemand had verwacht dat de vergadering zo kort zou duren.",
        "Waar heb je de sleutels gelaten?",
        "Ze leest elke avond een hoofdstuk voor het slapen.",
        "De trein naar Utrecht heeft weer vertraging.",
        "Laat het me weten als je klaar bent.",
        "We hebben tomaten en bonen in de tuin geplant.",
        "Dat was de lekkerste soep die ik ooit heb geproefd.",
        "Praat alsjeblieft wat langzamer.",
        "De kinderen lachten om de onhandige puppy.",
        "Hoe lang woon je al in deze stad?",
        "Sla linksaf na de oude kerk.",
        "Ik heb mijn paraplu op kantoor laten liggen.",
        "Op zomeravonden klinkt er muziek op het plein.",
        "Hij beloofde morgen terug te bellen.",
        "Het museum gaat op zondag om negen uur open.",
        "Heel erg bedankt voor je hulp!",
    ),
    "pl": (  # Polish
        "Dzisiaj rano jest piękna pogoda.",
        "Czy możesz podać mi sól?",
        "Myślę, że powinniśmy wyjść trochę wcześniej.",
        "Mój brat kupił sobie nowy rower.",
        "Nikt się nie spodziewał, że spotkanie skończy się tak szybko.",
        "Gdzie położyłeś klucze?",
        "Ona czyta rozdział każdego wieczoru przed snem.",
        "Pociąg do Krakowa znowu się spóźnia.",
        "Daj mi znać, kiedy będziesz gotowy.",
        "Posadziliśmy w ogrodzie pomidory i fasolę.",
        "To najlepsza zupa, jaką kiedykolwiek jadłem.",
        "Mów trochę wolniej, proszę.",
        "Dzieci śmiały się z niezdarnego szczeniaka.",
        "Jak długo mieszkasz w tym mieście?",
        "Proszę skręcić w lewo za starym kościołem.",
        "Zostawiłem parasol w biurze.",
        "Latem wieczorami na rynku gra muzyka.",
        "Obiecał, że jutro oddzwoni.",
        "Muzeum jest otwarte w niedziele od dziewiątej.",
        "Bardzo dziękuję za pomoc!",
    ),
    "sv": (  # Swedish
        "Det är härligt väder i morse.",
        "Kan du skicka saltet, tack?",
        "Vi borde nog åka lite tidigare.",
        "Min bror har köpt en ny cykel.",
        "Ingen trodde att mötet skulle ta slut så snabbt.",
        "Var lade du nycklarna?",
        "Hon läser ett kapitel varje kväll innan hon somnar.",
        "Tåget till Göteborg är försenat igen.",
        "Säg till när du är klar.",
        "Vi planterade tomater och bönor i trädgården.",
        "Det var den godaste soppan jag någonsin ätit.",
        "Snälla, prata lite långsammare.",
        "Barnen skrattade åt den klumpiga valpen.",
        "Hur länge har du bott i den här staden?",
        "Sväng vänster efter den gamla kyrkan.",
        "Jag glömde mitt paraply på kontoret.",
        "På sommarkvällarna fylls torget av musik.",
        "Han lovade att ringa tillbaka i morgon.",
        "Museet öppnar klockan nio på söndagar.",
        "Tack så mycket för hjälpen!",
    ),
    "tr": (  # Turkish
        "Bu sabah hava gerçekten çok güzel.",
        "Tuzu uzatır mısın, lütfen?",
        "Bence biraz daha erken çıkmalıyız.",
        "Kardeşim geçen hafta yeni bir bisiklet aldı.",
        "Toplantının bu kadar çabuk biteceğini kimse beklemiyordu.",
        "Anahtarları nereye koydun?",
        "Her gece uyumadan önce bir bölüm okur.",
        "Ankara treni yine gecikti.",
        "Hazır olduğunda bana haber ver.",
        "Bahçeye domates ve fasulye ektik.",
        "Bu şimdiye kadar içtiğim en güzel çorbaydı.",
        "Lütfen biraz daha yavaş konuş.",
        "Çocuklar sakar köpek yavrusuna güldüler.",
        "Ne zamandır bu şehirde yaşıyorsun?",
        "Eski kiliseden sonra sola dönün.",
        "Şemsiyemi ofiste unuttum.",
        "Yaz akşamları meydan müzikle dolar.",
        "Yarın geri arayacağına söz verdi.",
        "Müze pazar günleri saat dokuzda açılır.",
        "Yardımın için çok teşekkür ederim!",
    ),
    "cs": (  # Czech
        "Dnes ráno je krásné počasí.",
        "Můžeš mi prosím podat sůl?",
        "Myslím, že bychom měli vyrazit trochu dřív.",
        "Můj bratr si koupil nové kolo.",
        "Nikdo nečekal, že porada skončí tak rychle.",
        "Kam jsi dal klíče?",
        "Každý večer před spaním čte jednu kapitolu.",
        "Vlak do Brna má zase zpoždění.",
        "Dej mi vědět, až budeš hotový.",
        "Na zahradě jsme zasadili rajčata a fazole.",
        "To byla nejlepší polévka, jakou jsem kdy jedl.",
        "Mluv prosím trochu pomaleji.",
        "Děti se smály nešikovnému štěněti.",
        "Jak dlouho už bydlíš v tomhle městě?",
        "Za starým kostelem odbočte doleva.",
        "Zapomněl jsem deštník v kanceláři.",
        "V létě večer hraje na náměstí hudba.",
        "Slíbil, že zítra zavolá zpátky.",
        "Muzeum otevírá v neděli v devět hodin.",
        "Moc děkuji za pomoc!",
    ),
    "ru": (  # Russian
        "Сегодня утром прекрасная погода.",
        "Передай мне, пожалуйста, соль.",
        "Думаю, нам стоит выйти немного раньше.",
        "Мой брат купил себе новый велосипед.",
        "Никто не ожидал, что собрание так быстро закончится.",
        "Куда ты положил ключи?",
        "Каждый вечер перед сном она читает главу.",
        "Поезд в Казань опять опаздывает.",
        "Дай мне знать, когда будешь готов.",
        "Мы посадили в саду помидоры и фасоль.",
        "Это был самый вкусный суп в моей жизни.",
        "Говори, пожалуйста, чуть медленнее.",
        "Дети смеялись над неуклюжим щенком.",
        "Как давно ты живёшь в этом городе?",
        "Поверните налево после старой церкви.",
        "Я забыл зонт на работе.",
        "Летними вечерами на площади звучит музыка.",
        "Он обещал перезвонить завтра.",
        "По воскресеньям музей открывается в девять.",
        "Большое спасибо за помощь!",
    ),
}


def long_speech(
    seconds: float, language: str = "en", sample_rate: int = 16000, sentences: Sequence[str] | None = None
) -> np.ndarray:
    """Exactly `seconds` of real speech: `sentences` (default `SENTENCES[language]`) spoken
    back to back, float32 `[round(seconds * sample_rate)]`; for benchmarks and long-input tests."""
    wanted = int(round(seconds * sample_rate))
    pieces, total = [], 0
    sentences = sentences or SENTENCES[language]
    while total < wanted:
        for sentence in sentences:
            pieces.append(speak(sentence, language, sample_rate=sample_rate).audio)
            total += len(pieces[-1])
            if total >= wanted:
                break
    return np.concatenate(pieces)[:wanted]
