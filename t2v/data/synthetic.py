"""Procedural talking heads with known ground truth: the data of every t2v test, demo
and benchmark, and a pretraining set that needs no download.

A clip is built in five steps, all deterministic in the clip's seed:

  1. speech: a sentence spoken by eSpeak NG in the speaker's voice (variant, pitch),
     shifted by the emotion (happy speaks higher and faster, sad lower and slower),
     with silence before and after;
  2. articulation: every phoneme maps to a viseme target (jaw opening, lip gap,
     spread, rounding, lower lip to teeth); Cohen-Massaro dominance functions blend
     the targets into smooth 25 fps trajectories, with anticipation, in which strong
     segments (lip closure of p/b/m) still reach their target;
  3. face motion: blinks as a Poisson process, brow raises and head nods on stressed
     syllables (found from the pitch and loudness of each vowel), head pose as a
     smooth random process whose energy follows the speech energy, brief idle actions
     (lip press, dimple, chin raise), and a constant emotion expression at one of
     three intensities;
  4. geometry: the speaker's 3D face shape plus the expression displacements, rotated
     by the head pose and projected (weak perspective) into pixels, the face about 60%
     of the frame width;
  5. pixels (optional): a painted face (`t2v.data.face_render.render_face`) or a real
     photograph warped onto the keypoints (`PhotoTexture`).

Expressions are 18 named parameters (`EXPRESSION_NAMES`), most of them one facial
action unit each; the AU labels (`Clip.aus`, `t2v.keypoints.AU_NAMES` order) are read
from them, so they are ground truth rather than measurements.

Coordinates: the face frame of `t2v.keypoints` (x right, y down, z towards the
camera, jaw half-width about 1). Head pose is (yaw, pitch, roll) in radians as in
`t2v.keypoints.rotation_matrix` (positive yaw turns the nose to the image right,
positive pitch lowers it, positive roll turns the face clockwise); the pixels are
`keypoints = scale * keypoints_3d[..., :2] + (tx, ty)`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import scipy.signal

from t2v import audio as audio_lib
from t2v import keypoints as kp
from t2v.data import face_render, records, speech
from t2v.errors import InputError

FPS = audio_lib.FPS
SAMPLE_RATE = audio_lib.SAMPLE_RATE

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "disgusted", "fearful")
INTENSITY_LEVELS = (0.4, 0.7, 1.0)  # weak, medium, strong (MEAD records three levels too)
GENERATOR_VERSION = 1  # bumped whenever the same seed starts to give a different clip
DEFAULT_NUM_SPEAKERS = 100
FACE_WIDTH_FRACTION = 0.6  # jaw width over frame width
FACE_CENTRE = (0.5, 0.5)  # where the face-frame origin sits, as fractions of the frame

EXPRESSION_NAMES = (
    "jaw_open",          # AU26
    "lips_part",         # AU25: the inner-lip gap (the jaw moves the chin)
    "lip_spread",        # visemes i/e/s
    "lip_round",         # visemes o/u/w: narrower, protruded lips
    "lower_lip_tuck",    # visemes f/v: lower lip to the upper teeth
    "upper_lip_raise",   # AU10
    "smile",             # AU12 (with a little AU6 cheek raise)
    "dimpler",           # AU14
    "corner_depress",    # AU15
    "chin_raise",        # AU17
    "lip_stretch",       # AU20
    "lip_tighten",       # AU23
    "brow_inner_raise",  # AU01
    "brow_outer_raise",  # AU02
    "brow_lower",        # AU04
    "upper_lid_raise",   # AU05
    "lid_tighten",       # AU07
    "eye_close",         # AU45
)  # fmt: skip
_E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}

# AU label i is expression parameter AU_SOURCES[i] (AU25 is rescaled: see `action_units`).
AU_SOURCES = {
    "AU01": "brow_inner_raise", "AU02": "brow_outer_raise", "AU04": "brow_lower",
    "AU10": "upper_lip_raise", "AU12": "smile", "AU14": "dimpler", "AU15": "corner_depress",
    "AU17": "chin_raise", "AU20": "lip_stretch", "AU23": "lip_tighten", "AU25": "lips_part",
    "AU26": "jaw_open", "AU45": "eye_close",
}  # fmt: skip

# Each emotion at full intensity, as expression parameters (FACS prototypes, e.g.
# happiness = AU6+12, sadness = AU1+4+15, surprise = AU1+2+5+26, fear = AU1+2+4+5+20+26).
EMOTION_EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"smile": 0.9, "lid_tighten": 0.35, "lip_spread": 0.2, "lips_part": 0.1, "dimpler": 0.2},
    "sad": {"brow_inner_raise": 0.8, "brow_lower": 0.35, "corner_depress": 0.7, "chin_raise": 0.35,
            "eye_close": 0.2},
    "angry": {"brow_lower": 1.0, "lid_tighten": 0.6, "upper_lid_raise": 0.3, "lip_tighten": 0.7,
              "chin_raise": 0.25},
    "surprised": {"brow_inner_raise": 0.9, "brow_outer_raise": 1.0, "upper_lid_raise": 0.9,
                  "jaw_open": 0.25, "lips_part": 0.2},
    "disgusted": {"upper_lip_raise": 0.9, "brow_lower": 0.6, "lid_tighten": 0.5,
                  "corner_depress": 0.35, "chin_raise": 0.3},
    "fearful": {"brow_inner_raise": 0.9, "brow_outer_raise": 0.5, "brow_lower": 0.4,
                "upper_lid_raise": 0.8, "lip_stretch": 0.8, "jaw_open": 0.1, "lips_part": 0.12},
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SpeakingStyle:
    """How an emotion (at full intensity) changes the voice and the motion."""

    pitch_shift: float = 0.0  # eSpeak pitch units (0..100 scale)
    rate_factor: float = 1.0
    articulation: float = 1.0  # gain on jaw and lip movements
    head_motion: float = 1.0
    brow_motion: float = 1.0


EMOTION_STYLES: dict[str, SpeakingStyle] = {
    "neutral": SpeakingStyle(),
    "happy": SpeakingStyle(pitch_shift=8, rate_factor=1.05, articulation=1.1, head_motion=1.2, brow_motion=1.2),
    "sad": SpeakingStyle(pitch_shift=-8, rate_factor=0.85, articulation=0.75, head_motion=0.6, brow_motion=0.6),
    "angry": SpeakingStyle(pitch_shift=4, rate_factor=1.1, articulation=1.2, head_motion=1.3, brow_motion=0.8),
    "surprised": SpeakingStyle(pitch_shift=14, rate_factor=1.0, articulation=1.1, head_motion=1.1, brow_motion=1.3),
    "disgusted": SpeakingStyle(pitch_shift=-4, rate_factor=0.9, articulation=0.9, head_motion=0.9),
    "fearful": SpeakingStyle(pitch_shift=10, rate_factor=1.15, articulation=0.9, head_motion=1.1, brow_motion=1.2),
}


# --------------------------------------------------------------------------- identities


@dataclasses.dataclass(frozen=True, eq=False)
class Identity:
    """A synthetic speaker: face shape, looks, voice and motion habits."""

    speaker: int
    shape_3d: np.ndarray  # float32 [68, 3], the frontal neutral face in the face frame
    appearance: face_render.Appearance
    voice_variant: str  # eSpeak variant, e.g. "f3"
    voice_pitch: int  # eSpeak base pitch, 0..100
    face_scale: float  # face size relative to FACE_WIDTH_FRACTION
    blink_rate: float  # blinks per minute
    head_motion: float  # gain on head movement
    brow_motion: float  # gain on brow raises
    articulation: float  # gain on jaw and lip movements

    @classmethod
    def random(cls, rng: np.random.Generator, speaker: int) -> Identity:
        shape = _random_face_shape(rng)
        shape.flags.writeable = False
        return cls(
            speaker=speaker,
            shape_3d=shape,
            appearance=face_render.Appearance.random(rng),
            voice_variant=speech.VOICE_VARIANTS[rng.integers(len(speech.VOICE_VARIANTS))],
            voice_pitch=int(rng.integers(speech.PITCH_RANGE[0], speech.PITCH_RANGE[1] + 1)),
            face_scale=float(rng.uniform(0.92, 1.08)),
            blink_rate=float(rng.uniform(14.0, 22.0)),
            head_motion=float(rng.uniform(0.7, 1.3)),
            brow_motion=float(rng.uniform(0.5, 1.3)),
            articulation=float(rng.uniform(0.85, 1.15)),
        )


_IDENTITY_STREAM = 0x1D  # keeps identity seeds apart from clip seeds


@functools.lru_cache(maxsize=4096)
def identity_for(speaker: int) -> Identity:
    """The identity of speaker id `speaker`: the same in every clip and process."""
    if speaker < 0:
        raise ValueError(f"speaker ids are non-negative, got {speaker}")
    return Identity.random(np.random.default_rng([_IDENTITY_STREAM, speaker]), speaker)


def _random_face_shape(rng: np.random.Generator) -> np.ndarray:
    """FRONTAL_TEMPLATE_3D with its proportions varied, `[68, 3]` float32."""
    p = kp.FRONTAL_TEMPLATE_3D.astype(np.float64)
    jaw, mouth, nose_lower = list(kp.REGIONS["jaw"]), list(kp.MOUTH), list(kp.REGIONS["nose_lower"])
    side = np.sign(p[:, 0])

    p[jaw, 0] *= rng.uniform(0.85, 1.12)  # jaw width
    p[6:11, 0] *= rng.uniform(0.85, 1.10)  # chin breadth
    lower = p[:, 1] > 0.1  # face length: stretch everything below the nose wings
    p[lower, 1] += (rng.uniform(0.88, 1.15) - 1.0) * (p[lower, 1] - 0.1)
    for eye in (kp.REGIONS["right_eye"], kp.REGIONS["left_eye"]):
        eye = list(eye)
        centre = p[eye].mean(axis=0)
        p[eye, 0] = centre[0] + rng.uniform(0.88, 1.12) * (p[eye, 0] - centre[0])
        p[eye, 1] = centre[1] + rng.uniform(0.8, 1.2) * (p[eye, 1] - centre[1])
    p[list(kp.EYES), 0] += side[list(kp.EYES)] * rng.uniform(-0.05, 0.05)  # eye spacing
    p[[30] + nose_lower, 1] += rng.uniform(-0.04, 0.05)  # nose length
    p[nose_lower, 0] *= rng.uniform(0.85, 1.2)  # nose width
    p[mouth, 0] *= rng.uniform(0.82, 1.18)  # mouth width
    p[mouth, 1] += rng.uniform(-0.03, 0.03)  # mouth height
    p[49:54, 1] -= rng.uniform(-0.015, 0.03) * np.array([0.6, 1, 1, 1, 0.6])  # upper lip thickness
    p[55:60, 1] += rng.uniform(-0.015, 0.04) * np.array([0.6, 1, 1, 1, 0.6])  # lower lip thickness
    brows = list(kp.BROWS)
    p[brows, 1] += rng.uniform(-0.06, 0.06)  # brow height
    arch = np.sin(np.linspace(0, np.pi, 5))
    p[brows, 1] -= rng.uniform(-0.01, 0.03) * np.concatenate([arch, arch])
    p += rng.normal(0.0, [0.005, 0.005, 0.01], size=p.shape)  # a little asymmetry
    return p.astype(np.float32)


# --------------------------------------------------------------------------- visemes


@dataclasses.dataclass(frozen=True)
class Viseme:
    """Articulation target of one phoneme and how strongly it imposes itself.

    Targets are expression parameters; `dominance` weighs each against the
    neighbouring segments (Cohen & Massaro 1993): p/b/m dominate the lip gap, vowels
    dominate the jaw, and a consonant that leaves the lips free lets the vowels around
    it shape them (anticipatory rounding in "two").
    """

    jaw_open: float
    lips_part: float
    lip_spread: float = 0.0
    lip_round: float = 0.0
    lower_lip_tuck: float = 0.0
    dominance: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0)
    reach: float = 1.0  # scales how far in time the dominance extends: short for fast lip closures


ARTICULATION_NAMES = ("jaw_open", "lips_part", "lip_spread", "lip_round", "lower_lip_tuck")
_VOWEL = (1.0, 1.0, 1.0, 1.0, 0.3)
_LOOSE_CONSONANT = (0.8, 0.6, 0.15, 0.15, 0.3)  # tongue consonants: the lips follow the vowels

# eSpeak mnemonics start with a letter that places the sound; the first letter decides
# the viseme, so the table serves every language (a "Y:" in German, "W~" in French).
VOWEL_VISEMES: dict[str, Viseme] = {
    **dict.fromkeys("aA&", Viseme(0.9, 0.85, lip_spread=0.15, dominance=_VOWEL)),
    "V": Viseme(0.7, 0.7, dominance=_VOWEL),
    "0": Viseme(0.7, 0.65, lip_round=0.45, dominance=_VOWEL),
    **dict.fromkeys("eE", Viseme(0.55, 0.55, lip_spread=0.55, dominance=_VOWEL)),
    **dict.fromkeys("@3", Viseme(0.4, 0.4, dominance=_VOWEL)),
    **dict.fromkeys("iI", Viseme(0.2, 0.25, lip_spread=0.9, dominance=_VOWEL)),
    **dict.fromkeys("oO", Viseme(0.55, 0.5, lip_round=0.75, dominance=_VOWEL)),
    **dict.fromkeys("uU", Viseme(0.25, 0.22, lip_round=1.0, dominance=_VOWEL)),
    **dict.fromkeys("yYW2", Viseme(0.3, 0.25, lip_round=0.85, lip_spread=0.1, dominance=_VOWEL)),
}
_BILABIAL = Viseme(0.12, 0.0, dominance=(0.6, 8.0, 0.5, 0.3, 2.0), reach=0.4)
_LABIODENTAL = Viseme(0.15, 0.12, lower_lip_tuck=1.0, dominance=(0.6, 5.0, 0.3, 0.3, 5.0), reach=0.5)
CONSONANT_VISEMES: dict[str, Viseme] = {
    **dict.fromkeys("pbmB", _BILABIAL),
    **dict.fromkeys("fv", _LABIODENTAL),
    "w": Viseme(0.15, 0.15, lip_round=1.0, dominance=(0.6, 1.5, 1.0, 3.0, 0.3)),
    **dict.fromkeys("TD", Viseme(0.2, 0.3, dominance=(0.8, 1.0, 0.2, 0.2, 0.3))),
    **dict.fromkeys("sz", Viseme(0.1, 0.15, lip_spread=0.6, dominance=(1.0, 1.5, 0.6, 0.3, 0.3))),
    **dict.fromkeys("SZ", Viseme(0.15, 0.25, lip_round=0.6, dominance=(1.0, 1.5, 0.3, 1.5, 0.3))),
    **dict.fromkeys("h?", Viseme(0.3, 0.35, dominance=(0.1, 0.1, 0.1, 0.1, 0.1))),
}
_OTHER_CONSONANT = Viseme(0.15, 0.2, dominance=_LOOSE_CONSONANT)  # t d n l r k g x R j ...
_PAUSE_DOMINANCE = (0.8, 0.8, 0.5, 0.5, 0.5)
_EMPHASIS = 0.25  # extra opening per unit of vowel prominence
_PLATEAU = 0.25  # half of a segment's plateau of full dominance, as a fraction of its length
_PAUSE_ONSET_S = 0.1  # the mouth leaves its rest this long before speech starts
_ANTICIPATION_S = 0.05  # dominance decay time before a segment's centre...
_CARRYOVER_S = 0.035  # ...and after it: the mouth prepares the next sound early


def visemes_for(symbol: str) -> list[tuple[float, Viseme]]:
    """The viseme targets of one eSpeak phoneme as (fraction of its duration, viseme).

    A pause (symbol "_...") returns []; a diphthong ("aI", "OY", "e@") returns two
    targets, the first held for 60% of the phoneme; anything unknown falls back by its
    first letter to a generic vowel or consonant.
    """
    if symbol.startswith("_") or not symbol.strip("|"):  # pauses and phrase bars
        return []
    letters = _letters(symbol)
    if not letters:  # "*" (a tap), "?" (a glottal stop)
        return [(0.0, _OTHER_CONSONANT)]
    if letters[0] in VOWEL_VISEMES:
        vowels = [VOWEL_VISEMES[c] for c in letters if c in VOWEL_VISEMES]
        return [(0.0, vowels[0])] if len(vowels) == 1 else [(0.0, vowels[0]), (0.6, vowels[-1])]
    # Affricates start with their stop ("tS", "dZ", "ts"): the release decides the lips.
    first = letters[1] if letters[0] in "td" and len(letters) > 1 and letters[1] in "SZsz" else letters[0]
    return [(0.0, CONSONANT_VISEMES.get(first, _OTHER_CONSONANT))]


def is_vowel(symbol: str) -> bool:
    letters = _letters(symbol)
    return bool(letters) and not symbol.startswith("_") and letters[0] in VOWEL_VISEMES


def _letters(symbol: str) -> list[str]:
    """The characters of an eSpeak mnemonic that name sounds, without length marks,
    nasalisation, tones or palatalisation (":", "~", "#", ";")."""
    return [c for c in symbol if c.isalpha() or c in "@&0235"]


def articulation(
    phonemes: Sequence[speech.Phoneme],
    num_frames: int,
    rest: np.ndarray,
    gain: float = 1.0,
    prominence: np.ndarray | None = None,
) -> np.ndarray:
    """Mouth trajectories at the video frame centres, float32 `[T, 5]` (ARTICULATION_NAMES).

    Each segment k adds a dominance `a_k exp(-d / tau)` (d: distance in seconds from
    its central plateau, tau longer before it than after it) and the trajectory is the
    dominance-weighted mean of the targets. `rest` `[5]` is the mouth in silence (the
    emotion's resting mouth); jaw and lip gap are scaled by `gain` outside pauses, and
    in vowels also by their `prominence` `[N]` (stressed syllables open wider).
    """
    centres, half_plateaus, targets, dominances, reaches = [], [], [], [], []
    if prominence is None:
        prominence = np.zeros(len(phonemes))
    for phoneme, stress in zip(phonemes, prominence):
        duration = phoneme.end - phoneme.start
        parts = visemes_for(phoneme.symbol)
        vowel = is_vowel(phoneme.symbol)
        if not parts:  # silence: the resting mouth, held over the whole pause
            centres.append((phoneme.start + phoneme.end) / 2)
            half_plateaus.append(max(duration / 2 - _PAUSE_ONSET_S, 0.0))
            targets.append(rest)
            dominances.append(_PAUSE_DOMINANCE)
            reaches.append(1.0)
            continue
        bounds = [f for f, _ in parts] + [1.0]
        for (start, viseme), stop in zip(parts, bounds[1:]):
            part_duration = duration * (stop - start)
            target = np.array([getattr(viseme, name) for name in ARTICULATION_NAMES])
            target[:2] *= gain
            if vowel:
                target[:2] *= np.clip(1.0 + _EMPHASIS * stress, 0.6, 1.4)
                target[:2] = np.maximum(target[:2], rest[:2])  # the emotion's open mouth persists
            centres.append(phoneme.start + duration * (start + stop) / 2)
            half_plateaus.append(_PLATEAU * part_duration)
            targets.append(target)
            dominances.append(viseme.dominance)
            reaches.append(viseme.reach)
    times = (np.arange(num_frames) + 0.5) / FPS
    if not centres:
        return np.tile(rest.astype(np.float32), (num_frames, 1))
    centres, half_plateaus = np.array(centres), np.array(half_plateaus)
    targets, dominances = np.array(targets), np.array(dominances)  # [K, 5]
    offset = times[:, None] - centres[None, :]  # [T, K]; negative: the segment is ahead
    distance = np.maximum(np.abs(offset) - half_plateaus[None, :], 0.0)
    tau = np.where(offset < 0, _ANTICIPATION_S, _CARRYOVER_S) * np.array(reaches)[None, :]
    weights = np.exp(-distance / tau)[:, :, None] * dominances[None]  # [T, K, 5]
    weights_sum = weights.sum(axis=1) + 1e-6
    blended = (weights * targets[None]).sum(axis=1) + 1e-6 * rest
    return (blended / weights_sum).astype(np.float32)


# --------------------------------------------------------------------------- prosody


def pitch_track(wave: np.ndarray, num_frames: int) -> np.ndarray:
    """F0 in semitones re 100 Hz at the video frame centres, `[T]` (YIN; defined everywhere,
    meaningful where the speech is voiced)."""
    # Hop of half a frame: the odd analysis frames are centred on the video frame centres.
    f0 = audio_lib.pitch(wave, SAMPLE_RATE, fmin=70.0, fmax=400.0, frame_length=1024,
                         hop_length=audio_lib.SAMPLES_PER_FRAME // 2)[1::2]
    f0 = np.pad(f0, (0, max(num_frames - len(f0), 0)), mode="edge")[:num_frames]
    return 12.0 * np.log2(f0 / 100.0)


def vowel_prominence(phonemes: Sequence[speech.Phoneme], semitones: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """How stressed each phoneme sounds, `[N]`: for vowels a z-score (within the clip) of
    mean pitch, loudness and length, the acoustic cues of stress; 0 for the rest."""
    prominence = np.zeros(len(phonemes))
    vowels = [i for i, p in enumerate(phonemes) if is_vowel(p.symbol) and p.end > p.start]
    if len(vowels) < 2:
        return prominence
    loudness = 20 * np.log10(energy + 1e-4)
    features = []
    for i in vowels:
        first = min(int(phonemes[i].start * FPS), len(energy) - 1)
        frames = slice(first, max(int(math.ceil(phonemes[i].end * FPS)), first + 1))
        features.append([semitones[frames].mean(), loudness[frames].mean(), phonemes[i].end - phonemes[i].start])
    features = np.array(features)
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    prominence[vowels] = z @ np.array([0.5, 0.3, 0.2])
    return prominence


def _pulse(times: np.ndarray, onset: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0..1 bump: smooth rise from `onset`, plateau for `hold`, smooth fall."""
    up = np.clip((times - onset) / rise, 0, 1)
    down = np.clip((times - onset - rise - hold) / fall, 0, 1)
    return _smoothstep(up) * (1 - _smoothstep(down))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def brow_raises(
    rng: np.random.Generator,
    stressed: Sequence[tuple[float, float, float]],
    semitones: np.ndarray,
    voiced: np.ndarray,
    gain: float,
) -> np.ndarray:
    """Brow raise `[T]` in [0, 1]: a raise on most stressed syllables (start s, end s,
    prominence) plus a little of the pitch contour itself (brows go up with the voice)."""
    times = (np.arange(len(semitones)) + 0.5) / FPS
    raise_ = np.zeros(len(times))
    for start, end, prominence in stressed:
        if rng.random() < 0.75:
            amplitude = gain * (0.15 + rng.uniform(0.35, 0.8) * min(prominence, 2.0) / 2.0)
            raise_ = np.maximum(raise_, amplitude * _pulse(times, start - 0.08, 0.12, end - start, 0.35))
    if voiced.any():
        z = (semitones - np.median(semitones[voiced])) / (semitones[voiced].std() + 1e-6)
        contour = np.where(voiced, np.clip(z, 0, 2.5) / 2.5, 0.0)
        raise_ += 0.2 * gain * _low_pass(contour, 0.15)
    return np.clip(raise_, 0, 1)


def _low_pass(signal: np.ndarray, time_constant: float) -> np.ndarray:
    """Zero-phase one-pole smoothing with the given time constant in seconds."""
    a = math.exp(-1.0 / (FPS * time_constant))
    return scipy.signal.filtfilt([1 - a], [1, -a], signal, padlen=min(len(signal) - 1, 3 * FPS))


# --------------------------------------------------------------------------- blinks


def blink_closure(rng: np.random.Generator, num_frames: int, rate_per_minute: float) -> np.ndarray:
    """Eyelid closure `[T]` in [0, 1] from blinks at `rate_per_minute` on average.

    Blinks follow a Poisson process with a 0.4 s refractory gap; each lasts 150-250 ms:
    30% closing (fast), 20% closed, 50% opening (slower).
    """
    duration_s = num_frames / FPS
    refractory, mean_length = 0.4, 0.2
    mean_gap = max(60.0 / rate_per_minute - refractory - mean_length, 0.05)
    times = (np.arange(num_frames) + 0.5) / FPS
    closure = np.zeros(num_frames)
    t = rng.uniform(0.0, 60.0 / rate_per_minute)  # a random phase: clips start mid-process
    while t < duration_s:
        length = rng.uniform(0.15, 0.25)
        closure = np.maximum(closure, _pulse(times, t, 0.3 * length, 0.2 * length, 0.5 * length))
        t += length + refractory + rng.exponential(mean_gap)
    return closure.astype(np.float32)


# --------------------------------------------------------------------------- idle actions

IDLE_ACTIONS = ("dimpler", "lip_tighten", "chin_raise", "lip_stretch")
_IDLE_RATE_PER_MINUTE = 6.0


def idle_actions(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Brief facial actions unrelated to speech or emotion (`IDLE_ACTIONS`: a dimple, a
    lip press, a chin raise, a lip stretch), `[T, E]`: about six a minute, 0.6-1.3 s
    each, so that these AUs vary within every emotion and cannot be read off it."""
    times = (np.arange(num_frames) + 0.5) / FPS
    actions = np.zeros((num_frames, len(EXPRESSION_NAMES)))
    t = rng.exponential(60.0 / _IDLE_RATE_PER_MINUTE)
    while t < num_frames / FPS:
        column = _E[IDLE_ACTIONS[rng.integers(len(IDLE_ACTIONS))]]
        hold = rng.uniform(0.2, 0.8)
        bump = rng.uniform(0.3, 0.8) * _pulse(times, t, 0.2, hold, 0.25)
        actions[:, column] = np.maximum(actions[:, column], bump)
        t += 0.45 + hold + rng.exponential(60.0 / _IDLE_RATE_PER_MINUTE)
    return actions


# --------------------------------------------------------------------------- head motion

# Standard deviations in degrees (rotations) or frame-width fractions (dx, dy, log-scale).
_DRIFT_STD = np.array([3.0, 2.0, 1.5, 0.015, 0.012, 0.012])  # always present, slow
_SPEECH_STD = np.array([4.5, 3.5, 2.0, 0.012, 0.010, 0.010])  # while speaking, faster
_DRIFT_TIME_S, _SPEECH_TIME_S, _SMOOTH_TIME_S = 3.0, 0.6, 0.12
_MAX_ROTATION_DEG = 15.0


def head_motion(
    rng: np.random.Generator, activity: np.ndarray, *, nods: Sequence[tuple[float, float]] = (), gain: float = 1.0
) -> np.ndarray:
    """Head motion `[T, 6]`: yaw, pitch, roll (radians), log-scale, dx, dy (frame widths).

    `activity` `[T]` in [0, 1] says how much the person speaks at each frame. Motion is
    a slow drift (Ornstein-Uhlenbeck, 3 s) plus a faster one (0.6 s) whose driving noise
    follows `activity`, so the head moves more while speaking and settles in pauses;
    both are smoothed (0.12 s) so velocities stay physical. `nods` are (time s,
    amplitude deg) head dips. Rotations saturate softly at +-15 degrees.
    """
    num_frames = len(activity)
    drift = _ou_process(rng, num_frames, _DRIFT_TIME_S, np.ones(num_frames)) * _DRIFT_STD
    speaking = _ou_process(rng, num_frames, _SPEECH_TIME_S, np.asarray(activity, np.float64)) * _SPEECH_STD
    motion = drift + gain * speaking
    motion[:, :3] += rng.normal(0.0, [4.0, 3.0, 2.0])  # where this clip's head rests
    times = (np.arange(num_frames) + 0.5) / FPS
    for time, amplitude in nods:
        dip = _pulse(times, time - 0.1, 0.15, 0.05, 0.3)
        motion[:, 1] += gain * amplitude * dip  # nose down...
        motion[:, 5] += gain * amplitude * 0.002 * dip  # ...and the head drops a little
    rotations = _MAX_ROTATION_DEG * np.tanh(motion[:, :3] / _MAX_ROTATION_DEG)
    return np.concatenate([np.radians(rotations), motion[:, 3:]], axis=1).astype(np.float32)


def _ou_process(rng: np.random.Generator, num_frames: int, time_constant: float, amplitude: np.ndarray) -> np.ndarray:
    """Six smoothed Ornstein-Uhlenbeck channels `[T, 6]` with unit stationary std where
    `amplitude` is 1 (noise scaled by `amplitude` frame by frame)."""
    a = math.exp(-1.0 / (FPS * time_constant))
    b = math.exp(-1.0 / (FPS * _SMOOTH_TIME_S))
    # Start in the stationary state: a warm-up of a few time constants, then dropped.
    warmup = int(3 * FPS * time_constant)
    noise = rng.normal(size=(warmup + num_frames, 6)) * math.sqrt(1 - a * a)
    noise[warmup:] *= amplitude[:, None]
    noise[:warmup] *= amplitude[0] if num_frames else 0.0
    process = scipy.signal.lfilter([1.0], [1.0, -a], noise, axis=0)
    smoothed = scipy.signal.lfilter([1 - b], [1.0, -b], process, axis=0)
    # Variance of a one-pole smoother driven by an AR(1) process with coefficient a.
    gain = math.sqrt((1 - b) / (1 + b) * (1 + a * b) / (1 - a * b))
    return smoothed[warmup:] / gain


def speech_activity(energy: np.ndarray) -> np.ndarray:
    """How much a person speaks, `[T]` in [0, 1]: the frame energy relative to the
    clip's loud frames, smoothed over about a syllable."""
    if not energy.size or energy.max() <= 0:
        return np.zeros_like(energy, dtype=np.float64)
    loud = np.percentile(energy, 90) + 1e-8
    level = np.clip(20 * np.log10(energy / loud + 1e-8) / 30 + 1, 0, 1)  # 0 at -30 dB
    return np.clip(_low_pass(level, 0.15) if len(level) > 3 else level, 0, 1)


# --------------------------------------------------------------------------- geometry


def expression_basis(shape: np.ndarray) -> np.ndarray:
    """Displacement of each point per unit of each expression parameter, `[E, 68, 3]`,
    built on one face shape `[68, 3]` so that mouth moves scale with its mouth, etc.
    `eye_close` is not linear (the lids meet) and is applied by `pose_face`."""
    s = shape.astype(np.float64)
    basis = np.zeros((len(EXPRESSION_NAMES), kp.NUM_POINTS, 3))
    mouth = np.array(kp.MOUTH)
    mouth_centre = s[mouth, 0].mean()
    half_width = (s[54, 0] - s[48, 0]) / 2
    rel = np.zeros(kp.NUM_POINTS)  # -1 at the right mouth corner, +1 at the left
    rel[mouth] = (s[mouth, 0] - mouth_centre) / half_width
    central = np.clip(1 - rel**2, 0, 1)
    upper_outer, lower_outer = np.arange(49, 54), np.arange(55, 60)
    upper_inner, lower_inner = np.arange(61, 64), np.arange(65, 68)
    corners, inner_corners = np.array([48, 54]), np.array([60, 64])
    jaw = np.array(kp.REGIONS["jaw"])
    brows, side = np.array(kp.BROWS), np.sign(s[:, 0])
    inner_brow = np.abs(s[21, 0]) + np.abs(s[22, 0])
    outer_brow = np.abs(s[17, 0]) + np.abs(s[26, 0])
    brow_inner_weight = np.clip(1 - (2 * np.abs(s[:, 0]) - inner_brow) / (outer_brow - inner_brow), 0, 1)
    upper_lids, lower_lids = np.array([37, 38, 43, 44]), np.array([40, 41, 46, 47])

    def move(name, points, dx=0.0, dy=0.0, dz=0.0):
        basis[_E[name], points] += np.stack(np.broadcast_arrays(dx, dy, dz), -1)

    # Jaw: the chin drops, the jaw angles hardly move (a hinge below the ears).
    top, chin = s[[0, 16], 1].mean(), s[8, 1]
    hinge = np.clip((s[jaw, 1] - top) / (chin - top), 0, 1) ** 1.5
    move("jaw_open", jaw, dy=0.30 * hinge, dz=-0.06 * hinge)
    # Lips part: a gap of 0.3 face units at 1, mostly the lower lip.
    move("lips_part", upper_inner, dy=-0.07 * (0.6 + 0.4 * central[upper_inner]))
    move("lips_part", upper_outer, dy=-0.06 * (0.5 + 0.5 * central[upper_outer]))
    move("lips_part", lower_inner, dy=0.23 * (0.6 + 0.4 * central[lower_inner]))
    move("lips_part", lower_outer, dy=0.22 * (0.4 + 0.6 * central[lower_outer]))
    move("lips_part", corners, dx=-0.03 * side[corners], dy=0.06)
    move("lips_part", inner_corners, dx=-0.03 * side[inner_corners], dy=0.07)
    # Spread (i, s) widens and thins the lips; rounding (o, u) narrows and protrudes them.
    move("lip_spread", mouth, dx=0.25 * (s[mouth, 0] - mouth_centre), dy=-0.01 * rel[mouth] ** 2)
    move("lip_spread", upper_outer, dy=0.01 * central[upper_outer])
    move("lip_spread", lower_outer, dy=-0.01 * central[lower_outer])
    move("lip_round", mouth, dx=-0.3 * (s[mouth, 0] - mouth_centre), dz=0.08 * (0.5 + 0.5 * central[mouth]))
    move("lip_round", upper_outer, dy=-0.015 * central[upper_outer])
    move("lip_round", lower_outer, dy=0.02 * central[lower_outer])
    # f/v: the lower lip rises and draws back under the upper teeth.
    move("lower_lip_tuck", lower_inner, dy=-0.04, dz=-0.05)
    move("lower_lip_tuck", lower_outer, dy=-0.03, dz=-0.04)
    move("lower_lip_tuck", upper_outer, dy=-0.01)
    # Emotion action units.
    move("upper_lip_raise", upper_outer, dy=-0.06 * (0.4 + 0.6 * central[upper_outer]))
    move("upper_lip_raise", upper_inner, dy=-0.04)
    move("upper_lip_raise", corners, dy=-0.01)
    move("upper_lip_raise", list(kp.REGIONS["nose_lower"]), dy=-0.015)
    curve = rel[mouth] * np.abs(rel[mouth])  # 0 at the centre, +-1 at the corners
    move("smile", mouth, dx=0.08 * curve, dy=-0.06 * rel[mouth] ** 2, dz=-0.02 * rel[mouth] ** 2)
    move("smile", [2, 3, 4, 5, 11, 12, 13, 14], dx=0.015 * side[[2, 3, 4, 5, 11, 12, 13, 14]], dy=-0.01)
    move("smile", lower_lids, dy=-0.015)  # cheek raise (AU6) narrows the eyes from below
    move("dimpler", mouth, dx=0.03 * curve, dy=-0.01 * rel[mouth] ** 2, dz=-0.04 * rel[mouth] ** 2)
    move("dimpler", [49, 53], dy=0.02)  # the lips press together beside the corners
    move("dimpler", [59, 55], dy=-0.02)
    move("corner_depress", mouth, dx=0.01 * curve, dy=0.06 * rel[mouth] ** 2)
    move("chin_raise", [6, 7, 8, 9, 10], dy=-0.03)
    move("chin_raise", lower_outer, dy=-0.04 * central[lower_outer], dz=0.03)
    move("chin_raise", lower_inner, dy=-0.02)
    move("chin_raise", corners, dy=0.01)
    move("lip_stretch", mouth, dx=0.08 * rel[mouth], dy=0.02 * rel[mouth] ** 2)
    move("lip_stretch", upper_outer, dy=0.01 * central[upper_outer])
    move("lip_stretch", lower_outer, dy=-0.01 * central[lower_outer])
    move("lip_tighten", mouth, dx=-0.08 * (s[mouth, 0] - mouth_centre))
    move("lip_tighten", upper_outer, dy=0.025 * central[upper_outer])
    move("lip_tighten", lower_outer, dy=-0.025 * central[lower_outer])
    move("brow_inner_raise", brows, dy=-0.10 * brow_inner_weight[brows] ** 1.3)
    move("brow_outer_raise", brows, dy=-0.02 - 0.07 * (1 - brow_inner_weight[brows]))
    move("brow_lower", brows, dx=-0.03 * side[brows] * brow_inner_weight[brows],
         dy=0.06 * (0.5 + 0.5 * brow_inner_weight[brows]))
    move("brow_lower", upper_lids, dy=0.01)
    move("upper_lid_raise", upper_lids, dy=-0.035)
    move("upper_lid_raise", brows, dy=-0.01)
    move("lid_tighten", lower_lids, dy=-0.02)
    move("lid_tighten", upper_lids, dy=0.01)
    return basis.astype(np.float32)


_LID_PAIRS = np.array([[37, 41], [38, 40], [43, 47], [44, 46]])  # upper lid point, lower lid point


def pose_face(shape: np.ndarray, expression: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Posed 3D points `[T, 68, 3]`: `shape` `[68, 3]` plus the expression `[T, E]`
    displacements, then the eyelids closed by `eye_close`, then rotated by `[T, 3]`
    (yaw, pitch, roll; `t2v.keypoints.rotation_matrix`) about the face-frame origin."""
    points = shape[None].astype(np.float64) + np.einsum("te,epc->tpc", expression, expression_basis(shape))
    # Blinks: the lids meet a little above the lower lid, whatever their opening.
    closure = expression[:, _E["eye_close"], None, None]
    upper, lower = points[:, _LID_PAIRS[:, 0]], points[:, _LID_PAIRS[:, 1]]
    meet = lower + 0.15 * (upper - lower)
    points[:, _LID_PAIRS[:, 0]] = upper + closure * (meet - upper)
    points[:, _LID_PAIRS[:, 1]] = lower + closure * (meet - lower)
    rotations = kp.rotation_matrix(*np.moveaxis(rotation.astype(np.float64), -1, 0))  # [T, 3, 3]
    return np.einsum("tij,tpj->tpi", rotations, points).astype(np.float32)


def action_units(expression: np.ndarray) -> np.ndarray:
    """AU intensities `[T, 13]` in `t2v.keypoints.AU_NAMES` order, from the generating
    expression parameters `[T, E]`. AU25 (lips part) saturates at a third of full
    opening: FACS scores the parting itself, not its size."""
    columns = []
    for name in kp.AU_NAMES:
        value = expression[:, _E[AU_SOURCES[name]]]
        columns.append(value * 3.0 if name == "AU25" else value)
    return np.clip(np.stack(columns, -1), 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- clips


@dataclasses.dataclass
class Clip:
    """One synthetic talking-head clip; T == `t2v.audio.num_video_frames(len(audio))`."""

    audio: np.ndarray  # float32 [S], 16 kHz mono
    keypoints: np.ndarray  # float32 [T, 68, 2], pixels of a size x size frame
    keypoints_3d: np.ndarray  # float32 [T, 68, 3], posed face frame: keypoints = scale * [..., :2] + t
    pose: np.ndarray  # float32 [T, 6]: yaw, pitch, roll (rad), scale (px / face unit), tx, ty (px)
    expression: np.ndarray  # float32 [T, 18], EXPRESSION_NAMES
    aus: np.ndarray  # float32 [T, 13], t2v.keypoints.AU_NAMES order, in [0, 1]
    frames: np.ndarray | None  # uint8 [T, size, size, 3], None when not rendered
    neutral_keypoints: np.ndarray  # float32 [68, 2], the speaker's frontal neutral face in pixels
    emotion: str
    emotion_intensity: float  # 0 for neutral, else one of INTENSITY_LEVELS
    speaker: int
    language: str
    transcript: str
    phonemes: tuple[speech.Phoneme, ...]  # timed in this clip's audio
    size: int
    seed: int
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE

    @property
    def num_frames(self) -> int:
        return len(self.keypoints)

    @property
    def clip_id(self) -> str:
        return f"synthetic-{self.seed}"

    def to_record(self) -> dict:
        """The fields of a `t2v.data.records` clip record (pass to `records.encode_clip`)."""
        return {
            "schema": records.SCHEMA, "clip_id": self.clip_id, "source": "synthetic",
            "audio": self.audio, "sample_rate": self.sample_rate, "fps": self.fps,
            "keypoints": self.keypoints, "keypoints_3d": self.keypoints_3d, "pose": self.pose,
            "expression": self.expression, "expression_names": list(EXPRESSION_NAMES), "aus": self.aus,
            "frames": self.frames, "frame_size": self.size, "neutral_keypoints": self.neutral_keypoints,
            "emotion": self.emotion, "emotion_intensity": self.emotion_intensity, "speaker": self.speaker,
            "language": self.language, "transcript": self.transcript,
            "phonemes": [[p.symbol, p.start, p.end] for p in self.phonemes],
        }  # fmt: skip


_STREAMS = ("choice", "utterance", "prosody", "blinks", "head", "idle")


def make_clip(
    seed: int,
    *,
    language: str | None = None,
    speaker: int | None = None,
    emotion: str | None = None,
    intensity: float | None = None,
    size: int = 224,
    texture: face_render.PhotoTexture | None = None,
    render: bool = True,
    text: str | None = None,
    num_speakers: int = DEFAULT_NUM_SPEAKERS,
    sentences: Sequence[str] | None = None,
) -> Clip:
    """One clip, a pure function of its arguments.

    Whatever is None is drawn from `seed`: the language from `speech.LANGUAGES`, the
    speaker from `range(num_speakers)`, the emotion uniformly from EMOTIONS, its
    intensity (0..1) from INTENSITY_LEVELS, the text from `sentences`, else from
    `speech.SENTENCES[language]`, else (any other eSpeak NG voice) made up from the
    language's own phonemes (`speech.phoneme_sentence`).
    `render=False` leaves `frames` None: the fast path for keypoint-only training.
    """
    if emotion is not None and emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; choose one of {EMOTIONS}")
    if intensity is not None and not 0.0 <= intensity <= 1.0:
        raise ValueError(f"emotion intensity must be in [0, 1], got {intensity}")
    if size < 16:
        raise ValueError(f"frame size must be at least 16 pixels, got {size}")
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds)}
    choice = rngs["choice"]
    language = language or speech.LANGUAGES[choice.integers(len(speech.LANGUAGES))]
    speaker = int(choice.integers(num_speakers) if speaker is None else speaker)
    emotion = emotion or EMOTIONS[choice.integers(len(EMOTIONS))]
    if intensity is None:
        intensity = 0.0 if emotion == "neutral" else INTENSITY_LEVELS[choice.integers(len(INTENSITY_LEVELS))]
    identity = identity_for(speaker)
    style = _blend_style(EMOTION_STYLES[emotion], intensity)

    spoken, wave, phonemes = _speak(rngs["utterance"], identity, style, language, text, sentences)
    num_frames = audio_lib.num_video_frames(len(wave))
    energy = audio_lib.frame_energy(wave)
    semitones = pitch_track(wave, num_frames)
    prominence = vowel_prominence(phonemes, semitones, energy)
    stressed = [(p.start, p.end, float(z)) for p, z in zip(phonemes, prominence) if z > 0.6]

    # Expression: the emotion held throughout, visemes on the mouth, brows and blinks.
    emotion_expression = np.zeros(len(EXPRESSION_NAMES))
    for name, value in EMOTION_EXPRESSIONS[emotion].items():
        emotion_expression[_E[name]] = intensity * value
    expression = np.tile(emotion_expression, (num_frames, 1))
    rest = np.zeros(len(ARTICULATION_NAMES))  # at rest the mouth stays as open as the emotion holds it
    rest[:2] = emotion_expression[[_E["jaw_open"], _E["lips_part"]]]
    mouth = articulation(phonemes, num_frames, rest, identity.articulation * style.articulation, prominence)
    expression[:, [_E[name] for name in ARTICULATION_NAMES]] = mouth
    expression[:, _E["lip_spread"]] += emotion_expression[_E["lip_spread"]]  # a smile spreads every viseme
    voiced = energy > 0.1 * (energy.max() + 1e-8)
    brows = brow_raises(rngs["prosody"], stressed, semitones, voiced, identity.brow_motion * style.brow_motion)
    expression[:, _E["brow_inner_raise"]] += brows
    expression[:, _E["brow_outer_raise"]] += 0.8 * brows
    expression += idle_actions(rngs["idle"], num_frames)
    blinks = blink_closure(rngs["blinks"], num_frames, identity.blink_rate)
    expression[:, _E["eye_close"]] = np.maximum(expression[:, _E["eye_close"]], blinks)
    expression = np.clip(expression, 0.0, 1.0).astype(np.float32)

    # Head: moves with the speech, nods on some stressed syllables.
    nods = [(start, rngs["prosody"].uniform(1.5, 4.0)) for start, _, z in stressed
            if z > 0.8 and rngs["prosody"].random() < 0.5]  # fmt: skip
    head_gain = identity.head_motion * style.head_motion
    motion = head_motion(rngs["head"], speech_activity(energy), nods=nods, gain=head_gain)

    # Geometry: the posed 3D face, then pixels.
    keypoints_3d = pose_face(identity.shape_3d, expression, motion[:, :3])
    base_scale = FACE_WIDTH_FRACTION * size / _jaw_width(identity.shape_3d) * identity.face_scale
    scale = base_scale * np.exp(motion[:, 3])
    translation = size * (np.array(FACE_CENTRE) + motion[:, 4:6])
    keypoints = scale[:, None, None] * keypoints_3d[..., :2] + translation[:, None, :]
    pose = np.concatenate([motion[:, :3], scale[:, None], translation], axis=1)
    neutral = base_scale * identity.shape_3d[:, :2] + size * np.array(FACE_CENTRE)

    frames = None
    if render:
        if texture is not None:
            frames = np.stack([texture.render(points, size) for points in keypoints])
        else:
            frames = np.stack([face_render.render_face(points, size, identity.appearance) for points in keypoints])

    return Clip(
        audio=wave, keypoints=keypoints.astype(np.float32), keypoints_3d=keypoints_3d, pose=pose.astype(np.float32),
        expression=expression, aus=action_units(expression), frames=frames,
        neutral_keypoints=neutral.astype(np.float32), emotion=emotion, emotion_intensity=float(intensity),
        speaker=speaker, language=language, transcript=spoken.text, phonemes=phonemes, size=size, seed=seed,
    )  # fmt: skip


def _speak(
    rng: np.random.Generator,
    identity: Identity,
    style: SpeakingStyle,
    language: str,
    text: str | None,
    sentences: Sequence[str] | None = None,
) -> tuple[speech.Speech, np.ndarray, tuple[speech.Phoneme, ...]]:
    """The speaker's voice saying `text` (or a random sentence) with 0.15-0.4 s of silence
    before and after: (eSpeak's speech, the padded wave `[S]`, phonemes timed in it)."""
    sentence, _, _, rate = speech.random_utterance(rng, language, sentences)  # the voice is the speaker's own
    pitch = int(np.clip(identity.voice_pitch + style.pitch_shift + rng.integers(-3, 4), 0, 100))
    rate = int(np.clip(rate * style.rate_factor, 80, 450))
    spoken = speech.speak(text or sentence, language, identity.voice_variant, pitch, rate)
    lead, tail = (int(rng.uniform(0.15, 0.4) * SAMPLE_RATE) for _ in range(2))
    wave = np.concatenate([np.zeros(lead, np.float32), spoken.audio, np.zeros(tail, np.float32)])
    shift = lead / SAMPLE_RATE
    phonemes = (
        speech.Phoneme("_", 0.0, shift),
        *(dataclasses.replace(p, start=p.start + shift, end=p.end + shift) for p in spoken.phonemes),
        speech.Phoneme("_", shift + spoken.duration, len(wave) / SAMPLE_RATE),
    )
    return spoken, wave, phonemes


def _blend_style(style: SpeakingStyle, intensity: float) -> SpeakingStyle:
    """The emotion's style at `intensity` (0: neutral, 1: full)."""
    neutral = SpeakingStyle()
    blended = {}
    for field in dataclasses.fields(SpeakingStyle):
        calm, full = getattr(neutral, field.name), getattr(style, field.name)
        blended[field.name] = calm + intensity * (full - calm)
    return SpeakingStyle(**blended)


def _jaw_width(shape: np.ndarray) -> float:
    return float(shape[16, 0] - shape[0, 0])


# --------------------------------------------------------------------------- data sets


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a data set made with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def synthesize(
    out_dir: str | os.PathLike,
    num_clips: int,
    langs: Sequence[str] = ("en",),
    fmt: str = "records",
    texture: face_render.PhotoTexture | None = None,
    size: int = 224,
    seed: int = 0,
    num_speakers: int | None = None,
    num_shards: int | None = None,
    render: bool = True,
    progress: bool = True,
    sentences: Sequence[str] | None = None,
    emotions: Sequence[str] | None = None,
) -> dict:
    """Writes `num_clips` clips to `out_dir`; returns a summary (also written to
    `out_dir/synth.json`).

    Clip i is `make_clip(clip_seed(seed, i), language=langs[i % len(langs)])` with a
    speaker drawn from `num_speakers` (default about sqrt(num_clips), so that each
    speaker appears in several clips). `langs` are any eSpeak NG voices; `sentences`,
    if given, are what every clip says (else each language's own: see `make_clip`).
    `emotions`, if given, are the only emotions made, in turn (each language gets every
    one: clip i has `emotions[(i // len(langs)) % len(emotions)]`); else each clip draws
    one of EMOTIONS. Formats:
      * "records": ArrayRecord shards `clips.array_record-0000i-of-0000n` of
        `t2v.data.records` clip records (frames as JPEG, or none if not `render`);
      * "voxceleb2": `idNNNNN/VIDEOID/00001.mp4` (H.264 + AAC) per clip, speaker
        NNNNN, with `00001.npz` (ground-truth arrays, no pickle) and `00001.json`
        (speaker, emotion, language, transcript, phonemes) beside it.
    """
    from t2v.progress import track

    if fmt not in ("records", "voxceleb2"):
        raise ValueError(f"unknown format {fmt!r}; choose 'records' or 'voxceleb2'")
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    langs = tuple(langs)
    if not langs:
        raise ValueError("langs is empty")
    emotions = parse_emotions(",".join(emotions), "emotions") if emotions is not None else None
    num_speakers = num_speakers or max(1, round(math.sqrt(num_clips)))
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    counts = {"languages": collections.Counter(), "emotions": collections.Counter(), "speakers": set()}
    totals = {"seconds": 0.0, "frames": 0}

    def clips():
        for index in track(range(num_clips), desc="synthesizing clips", unit="clip", disable=not progress):
            emotion = emotions[(index // len(langs)) % len(emotions)] if emotions else None
            clip = make_clip(clip_seed(seed, index), language=langs[index % len(langs)], size=size,
                             texture=texture, render=render or fmt == "voxceleb2", num_speakers=num_speakers,
                             sentences=sentences, emotion=emotion)
            counts["languages"][clip.language] += 1
            counts["emotions"][clip.emotion] += 1
            counts["speakers"].add(clip.speaker)
            totals["seconds"] += len(clip.audio) / SAMPLE_RATE
            totals["frames"] += clip.num_frames
            yield index, clip

    if fmt == "records":
        num_shards = min(num_shards or max(1, min(64, num_clips // 100)), num_clips)  # no empty shards
        paths = records.write_shards(out_dir, (records.encode_clip(c.to_record()) for _, c in clips()), num_shards)
    else:
        paths = [_write_voxceleb2_clip(out_dir, index, clip) for index, clip in clips()]
    summary = {
        "format": fmt, "clips": num_clips, "seconds": totals["seconds"], "frames": totals["frames"],
        "size": size, "seed": seed, "langs": list(langs), "num_speakers": num_speakers,
        "speakers_used": len(counts["speakers"]), "languages": dict(counts["languages"]),
        "emotions": dict(counts["emotions"]), "texture": texture is not None, "rendered": render or fmt == "voxceleb2",
        "schema": records.SCHEMA, "generator_version": GENERATOR_VERSION,
        "files": [os.path.relpath(p, out_dir) for p in paths],
    }  # fmt: skip
    with open(os.path.join(out_dir, "synth.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


_VIDEO_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _write_voxceleb2_clip(out_dir: str, index: int, clip: Clip) -> str:
    """`out/idNNNNN/VIDEOID/00001.{mp4,npz,json}`; returns the mp4's path."""
    from t2v import video

    # An 11-character YouTube-style video id, one per clip, from the clip's seed.
    rng = np.random.default_rng(clip.seed)
    video_id = "".join(_VIDEO_ID_ALPHABET[i] for i in rng.integers(len(_VIDEO_ID_ALPHABET), size=11))
    folder = os.path.join(out_dir, f"id{clip.speaker:05d}", video_id)
    os.makedirs(folder, exist_ok=True)
    stem = os.path.join(folder, "00001")
    video.write_video(stem + ".mp4", clip.frames, audio=clip.audio, sample_rate=clip.sample_rate, fps=clip.fps)
    np.savez_compressed(
        stem + ".npz", keypoints=clip.keypoints, keypoints_3d=clip.keypoints_3d, pose=clip.pose,
        expression=clip.expression, aus=clip.aus, neutral_keypoints=clip.neutral_keypoints, audio=clip.audio,
    )  # fmt: skip
    metadata = {
        "clip_id": clip.clip_id, "index": index, "seed": clip.seed, "speaker": clip.speaker,
        "emotion": clip.emotion, "emotion_intensity": clip.emotion_intensity, "language": clip.language,
        "transcript": clip.transcript, "fps": clip.fps, "sample_rate": clip.sample_rate, "size": clip.size,
        "num_frames": clip.num_frames, "expression_names": list(EXPRESSION_NAMES), "au_names": list(kp.AU_NAMES),
        "phonemes": [[p.symbol, p.start, p.end] for p in clip.phonemes],
    }  # fmt: skip
    with open(stem + ".json", "w") as f:
        json.dump(metadata, f, indent=1)
    return stem + ".mp4"


def load_texture(name: str) -> face_render.PhotoTexture | None:
    """"" = painted faces; "astronaut" = scikit-image's portrait; else a photo path."""
    if not name:
        return None
    if name == "astronaut":
        return face_render.PhotoTexture.astronaut()
    return face_render.PhotoTexture.from_file(name)


def load_sentences(path: str | os.PathLike) -> tuple[str, ...]:
    """The sentences of a text file, one a line (UTF-8; blank lines skipped). InputError
    naming the file when it is missing, unreadable or holds no sentence."""
    try:
        with open(path, encoding="utf-8") as f:
            sentences = tuple(line.strip() for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the sentences (synth.text_file / --text-file): {error}") from None
    if not sentences:
        raise InputError(f"{path}: no sentences, expected one a line (synth.text_file / --text-file)")
    return sentences


def synthesize_from_config(synth, out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """`synthesize` driven by a config's `synth` section (configs/synth.py). Every language
    is checked, and the text file read, before any clip is made."""
    langs = tuple(lang.strip() for lang in synth.langs.split(",") if lang.strip())
    for lang in langs:
        speech.voice_name(lang, where="--langs (synth.langs)")
    text_file = synth.get("text_file", "")
    sentences = load_sentences(text_file) if text_file else None
    spec = str(synth.get("emotions", ""))
    emotions = parse_emotions(spec, "--emotions (synth.emotions)") if spec.strip() else None
    return synthesize(
        out_dir, synth.clips, langs=langs, fmt=synth.format, texture=load_texture(synth.texture),
        size=synth.size, seed=synth.seed, num_speakers=synth.speakers or None,
        num_shards=synth.shards, progress=progress, sentences=sentences, emotions=emotions,
    )  # fmt: skip


def parse_emotions(spec: str, where: str) -> tuple[str, ...]:
    """'neutral,happy' -> ('neutral', 'happy'); InputError naming `where` and the valid
    emotions for an unknown one or an empty list."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in str(spec).split(",") if name.strip()))
    unknown = [name for name in names if name not in EMOTIONS]
    if unknown or not names:
        what = f"unknown emotion {unknown[0]!r}" if unknown else "no emotion given"
        raise InputError(f"{where}: {what}; valid: {','.join(EMOTIONS)}")
    return names


def with_emotion(clip: Clip, emotion: str, intensity: float | None = None,
                 texture: face_render.PhotoTexture | None = None) -> Clip:
    """The same clip (speech, lips, head pose, blinks, speaker) with another emotion held:
    the emotion's expression offsets swapped for `emotion`'s at `intensity` (default: the
    clip's own, or INTENSITY_LEVELS[-1] from a neutral clip), re-posed and re-rendered when
    the clip has frames. The voice stays the clip's, so this is the paired target of
    emotion translation; the articulation is kept, plus the new emotion's resting mouth."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; choose one of {EMOTIONS}")
    if intensity is None:
        intensity = clip.emotion_intensity or INTENSITY_LEVELS[-1]
    intensity = 0.0 if emotion == "neutral" else float(intensity)

    def offsets(name, level):
        vector = np.zeros(len(EXPRESSION_NAMES), np.float32)
        for key, value in EMOTION_EXPRESSIONS[name].items():
            vector[_E[key]] = level * value
        return vector

    delta = offsets(emotion, intensity) - offsets(clip.emotion, clip.emotion_intensity)
    expression = np.clip(clip.expression + delta, 0.0, 1.0).astype(np.float32)
    identity = identity_for(clip.speaker)
    keypoints_3d = pose_face(identity.shape_3d, expression, clip.pose[:, :3].astype(np.float64))
    keypoints = clip.pose[:, 3, None, None] * keypoints_3d[..., :2] + clip.pose[:, None, 4:6]
    frames = None
    if clip.frames is not None:
        paint = texture.render if texture is not None else (
            lambda points, size: face_render.render_face(points, size, identity.appearance))
        frames = np.stack([paint(points, clip.size) for points in keypoints])
    return dataclasses.replace(
        clip, keypoints=keypoints.astype(np.float32), keypoints_3d=keypoints_3d, expression=expression,
        aus=action_units(expression), frames=frames, emotion=emotion, emotion_intensity=intensity)
