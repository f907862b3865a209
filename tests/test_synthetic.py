"""The synthetic talking heads: speech-driven mouths, blinks, head motion, emotions,
identities, ground-truth labels and the data sets written from them.

Measured values are printed (`pytest -s`) so that the margins of the thresholds stay visible.
"""

import json
import os

import numpy as np
import pytest

from t2v import audio, keypoints, video
from t2v.data import records, synthetic

LANGUAGE_SEEDS = [("en", 1), ("de", 2), ("fr", 3), ("es", 4), ("it", 5), ("ru", 6), ("pl", 7), ("nl", 8)]


@pytest.fixture(scope="module")
def clips_by_language():
    return {lang: synthetic.make_clip(seed, language=lang, render=False) for lang, seed in LANGUAGE_SEEDS}


def test_clip_is_speech_whose_envelope_the_mouth_follows(clips_by_language):
    correlations = {}
    for lang, clip in clips_by_language.items():
        audio.check_speech(clip.audio, f"synthetic {lang} clip")  # finite, long enough, not silent
        seconds = len(clip.audio) / audio.SAMPLE_RATE
        assert 1.0 < seconds < 10.0, (lang, seconds)
        energy = audio.frame_energy(clip.audio)
        assert np.mean(energy > 0.1 * energy.max()) > 0.4, lang  # sounding most of the time, as speech is
        opening = keypoints.mouth_opening(clip.keypoints)
        correlations[lang] = float(np.corrcoef(opening, energy)[0, 1])
    print("mouth opening vs RMS envelope:", {k: round(v, 2) for k, v in correlations.items()},
          "mean", round(float(np.mean(list(correlations.values()))), 3))  # fmt: skip
    assert np.mean(list(correlations.values())) > 0.45
    assert min(correlations.values()) > 0.25


def test_lips_close_on_bilabials_and_open_on_open_vowels(clips_by_language):
    closed, open_ = [], []
    for clip in clips_by_language.values():
        opening = keypoints.mouth_opening(clip.keypoints)
        for phoneme in clip.phonemes:
            frame = min(int((phoneme.start + phoneme.end) / 2 * synthetic.FPS), clip.num_frames - 1)
            if phoneme.symbol[0] in "pbm" and phoneme.end - phoneme.start >= 0.05:
                closed.append(opening[frame])
            elif phoneme.symbol[0] in "aA" and phoneme.end - phoneme.start >= 0.05:
                open_.append(opening[frame])
    print(f"mouth opening: bilabials {np.median(closed):.3f} (n={len(closed)}), a-vowels {np.median(open_):.3f}")
    assert len(closed) >= 8 and len(open_) >= 8
    assert np.median(closed) < 0.04 < 0.08 < np.median(open_)


def test_visemes_cover_every_language_by_first_letter():
    def lips(symbol):
        return [round(v.lips_part, 2) for _, v in synthetic.visemes_for(symbol)]

    assert lips("_:") == [] and lips("_") == [] and lips("||") == []
    assert lips("p") == lips("b") == lips("m") == [0.0]
    assert len(synthetic.visemes_for("aI")) == 2 and len(synthetic.visemes_for("OY")) == 2
    assert synthetic.visemes_for("tS")[0][1].lip_round > 0  # an affricate rounds like its release
    assert synthetic.visemes_for("f")[0][1].lower_lip_tuck == 1.0
    a, i, u = (synthetic.visemes_for(s)[0][1] for s in ("a", "i:", "u:"))
    assert a.jaw_open > i.jaw_open and a.jaw_open > u.jaw_open and u.lip_round > 0.5 and i.lip_spread > 0.5
    for symbol in ("W~", "@-", "Y:", "a#", "R2", "s.", "n^", "Q", "x", "*", "3:"):  # eSpeak symbols of other languages
        assert len(synthetic.visemes_for(symbol)) >= 1, symbol


def test_blink_rate_and_profile():
    rates = []
    for speaker in range(4):
        rate = synthetic.identity_for(speaker).blink_rate
        closure = synthetic.blink_closure(np.random.default_rng(speaker), 2 * 60 * synthetic.FPS, rate)
        blinks = int(np.sum((closure[1:] >= 0.5) & (closure[:-1] < 0.5)))
        rates.append(blinks / 2.0)
        assert closure.min() == 0.0 and closure.max() > 0.9
        assert np.mean(closure > 0.5) < 0.1  # the eyes are open nearly all the time
    print("blinks per minute over 2 minutes:", rates)
    assert all(10 <= r <= 30 for r in rates)


def test_blinks_show_in_the_keypoints(clips_by_language):
    clip = clips_by_language["en"]
    aperture = keypoints.eye_aperture(clip.keypoints).mean(-1)
    blink = clip.aus[:, keypoints.AU_NAMES.index("AU45")]
    assert np.corrcoef(aperture, blink)[0, 1] < -0.8


def test_head_moves_within_bounds_and_more_while_speaking():
    frames = 2 * 60 * synthetic.FPS
    speaking = (np.arange(frames) // (4 * synthetic.FPS)) % 2 == 0  # 4 s of speech, 4 s of pause
    motion = synthetic.head_motion(np.random.default_rng(0), speaking.astype(float))
    degrees = np.degrees(motion[:, :3])
    speed = np.abs(np.diff(degrees, axis=0))  # degrees per frame
    speaking_speed, pause_speed = speed[speaking[1:]].mean(0), speed[~speaking[1:]].mean(0)
    print("head std (deg)", degrees.std(0).round(2), "speed speaking", speaking_speed.round(3),
          "in pauses", pause_speed.round(3))  # fmt: skip
    assert np.all(np.abs(degrees) <= 15.0)
    assert np.all((degrees.std(0) > [1.5, 1.0, 0.5]) & (degrees.std(0) < [8.0, 6.0, 5.0]))
    assert np.all(speaking_speed > 1.8 * pause_speed)
    assert np.all(np.abs(motion[:, 3:]) < 0.1)  # scale and shift stay small


def test_clip_fields_are_consistent(clips_by_language):
    clip = clips_by_language["de"]
    t = audio.num_video_frames(len(clip.audio))
    assert clip.audio.dtype == np.float32 and clip.num_frames == t and clip.fps == 25
    shapes = {"keypoints": (t, 68, 2), "keypoints_3d": (t, 68, 3), "pose": (t, 6), "aus": (t, 13),
              "expression": (t, len(synthetic.EXPRESSION_NAMES)), "neutral_keypoints": (68, 2)}  # fmt: skip
    for name, shape in shapes.items():
        value = getattr(clip, name)
        assert value.shape == shape and value.dtype == np.float32, name
    assert clip.frames is None and clip.language == "de" and clip.emotion in synthetic.EMOTIONS
    scale, translation = clip.pose[:, 3], clip.pose[:, 4:]
    projected = scale[:, None, None] * clip.keypoints_3d[..., :2] + translation[:, None]
    np.testing.assert_allclose(projected, clip.keypoints, atol=1e-3)
    # The pose's rotation is the one the 3D points carry.
    fitted = keypoints.head_rotation(clip.keypoints, synthetic.identity_for(clip.speaker).shape_3d)
    assert np.abs(np.degrees(fitted - clip.pose[:, :3])).max() < 2.0
    assert np.all((clip.keypoints > 0) & (clip.keypoints < clip.size))
    jaw_width = np.ptp(clip.neutral_keypoints[:17, 0]) / clip.size
    assert 0.5 < jaw_width < 0.7
    assert np.all((clip.aus >= 0) & (clip.aus <= 1))
    assert abs(clip.phonemes[-1].end - len(clip.audio) / audio.SAMPLE_RATE) < 1e-6


def test_rendered_frames():
    clip = synthetic.make_clip(3, language="en", size=64)
    assert clip.frames.shape == (clip.num_frames, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.frames.std() > 20  # a face, not a blank canvas
    assert np.abs(np.diff(clip.frames.astype(int), axis=0)).mean() > 0.3  # and it moves


def test_same_seed_same_clip_other_seed_other_clip():
    first, again = (synthetic.make_clip(11, render=False) for _ in range(2))
    np.testing.assert_array_equal(first.audio, again.audio)
    np.testing.assert_array_equal(first.keypoints, again.keypoints)
    np.testing.assert_array_equal(first.aus, again.aus)
    other = synthetic.make_clip(12, language=first.language, speaker=first.speaker, render=False)
    assert other.keypoints.shape != first.keypoints.shape or not np.allclose(other.keypoints, first.keypoints)


def test_speakers_keep_their_identity_and_differ_from_each_other():
    a1 = synthetic.make_clip(21, speaker=5, language="en", render=False)
    a2 = synthetic.make_clip(22, speaker=5, language="fr", render=False)
    np.testing.assert_array_equal(a1.neutral_keypoints, a2.neutral_keypoints)
    assert synthetic.identity_for(5).voice_variant == synthetic.identity_for(5).voice_variant
    shapes = np.stack([synthetic.identity_for(s).shape_3d[:, :2] for s in range(8)])
    distances = [np.abs(shapes[i] - shapes[j]).mean() for i in range(8) for j in range(i + 1, 8)]
    print(f"mean point distance between identities: min {min(distances):.3f}, mean {np.mean(distances):.3f}")
    assert min(distances) > 0.01  # face units: jaw half-width ~1
    voices = {(synthetic.identity_for(s).voice_variant, synthetic.identity_for(s).voice_pitch) for s in range(8)}
    assert len(voices) >= 6


def _upright_mean(clip):
    """Mean pose-free face `[68, 2]` of a clip, in the template's upright frame."""
    return keypoints.split_pose(clip.keypoints)[1].mean(0)


def test_emotions_move_the_expected_points():
    def clip(emotion):
        return synthetic.make_clip(31, speaker=2, language="en", emotion=emotion, intensity=1.0, render=False)

    clips = {emotion: clip(emotion) for emotion in ("neutral", "happy", "sad", "surprised", "angry")}
    face = {emotion: _upright_mean(c) for emotion, c in clips.items()}

    def corners_above_mouth_centre(points):  # y grows downwards
        return points[[62, 66], 1].mean() - points[[48, 54], 1].mean()

    assert corners_above_mouth_centre(face["happy"]) > corners_above_mouth_centre(face["neutral"]) + 0.03
    assert corners_above_mouth_centre(face["sad"]) < corners_above_mouth_centre(face["neutral"]) - 0.02
    brow = {emotion: float(keypoints.brow_height(c.keypoints).mean()) for emotion, c in clips.items()}
    print("brow height:", {k: round(v, 3) for k, v in brow.items()})
    assert brow["surprised"] > brow["neutral"] + 0.03 > brow["angry"] + 0.06
    inner_brow_gap = {name: p[22, 0] - p[21, 0] for name, p in face.items()}
    assert inner_brow_gap["angry"] < inner_brow_gap["neutral"] - 0.01  # frowning draws the brows together
    eyes = {emotion: keypoints.eye_aperture(c.keypoints).mean() for emotion, c in clips.items()}
    assert eyes["surprised"] > 1.2 * eyes["neutral"]


def test_each_au_parameter_moves_its_own_proxy():
    for speaker in range(3):
        shape = synthetic.identity_for(speaker).shape_3d
        neutral = 100 * shape[:, :2]
        for index, name in enumerate(keypoints.AU_NAMES):
            expression = np.zeros((1, len(synthetic.EXPRESSION_NAMES)), np.float32)
            expression[0, synthetic.EXPRESSION_NAMES.index(synthetic.AU_SOURCES[name])] = 1.0
            posed = 100 * synthetic.pose_face(shape, expression, np.zeros((1, 3)))[..., :2]
            proxies = keypoints.au_proxies(posed, neutral)[0]
            assert proxies[index] > 0.5, (speaker, name, proxies.round(2))
            assert synthetic.action_units(expression)[0, index] == 1.0


def test_au_labels_agree_with_geometric_proxies():
    labels, proxies = [], []
    for index, emotion in enumerate(synthetic.EMOTIONS * 2):
        clip = synthetic.make_clip(40 + index, emotion=emotion, language="en", render=False)
        labels.append(clip.aus)
        proxies.append(keypoints.au_proxies(clip.keypoints, clip.neutral_keypoints))
    labels, proxies = np.concatenate(labels), np.concatenate(proxies)
    correlation = {
        name: float(np.corrcoef(labels[:, i], proxies[:, i])[0, 1]) for i, name in enumerate(keypoints.AU_NAMES)
    }
    print("AU label vs proxy correlation:", {k: round(v, 2) for k, v in correlation.items()})
    for name in ("AU01", "AU02", "AU04", "AU10", "AU12", "AU25", "AU26", "AU45"):
        assert correlation[name] > 0.6, name
    for name in ("AU15", "AU20", "AU23"):
        assert correlation[name] > 0.3, name
    # The AU17 proxy also reads the lower lip rising on f/v and closures, the AU14 one
    # the lips thinning whenever they spread (i, e, s): frame by frame they mostly
    # measure speech, so only their isolated effect is checked (test above).
    assert correlation["AU17"] > 0.1


def test_synthesize_records(tmp_path):
    summary = synthetic.synthesize(tmp_path, 3, langs=("en", "de"), size=32, seed=5, num_shards=2, progress=False)
    assert summary["clips"] == 3 and summary["languages"] == {"en": 2, "de": 1} and summary["seconds"] > 3
    assert json.loads((tmp_path / "synth.json").read_text())["files"] == summary["files"]
    paths = [tmp_path / name for name in summary["files"]]
    decoded = [records.decode_clip(r) for r in records.read_records(paths)]
    assert sorted(c["language"] for c in decoded) == ["de", "en", "en"]
    first_seed = synthetic.clip_seed(5, 0)
    expected = synthetic.make_clip(first_seed, language="en", size=32, num_speakers=summary["num_speakers"])
    match = next(c for c in decoded if c["clip_id"] == expected.clip_id)
    np.testing.assert_array_equal(match["keypoints"], expected.keypoints)
    assert match["frames"].shape == expected.frames.shape
    assert np.abs(match["frames"].astype(int) - expected.frames).mean() < 4


def test_synthesize_voxceleb2_tree(tmp_path):
    summary = synthetic.synthesize(tmp_path, 2, langs=("es",), fmt="voxceleb2", size=64, seed=1, progress=False)
    for name in summary["files"]:
        speaker_dir, video_id, file_name = name.split(os.sep)
        assert speaker_dir.startswith("id") and len(speaker_dir) == 7 and len(video_id) == 11
        assert file_name == "00001.mp4"
        path = tmp_path / name
        clip = video.read_video(path)
        truth = np.load(path.with_suffix(".npz"), allow_pickle=False)
        metadata = json.loads(path.with_suffix(".json").read_text())
        assert clip.frames.shape == (metadata["num_frames"], 64, 64, 3) == truth["keypoints"].shape[:1] + (64, 64, 3)
        assert clip.audio is not None and abs(len(clip.audio) - len(truth["audio"])) < 0.05 * len(truth["audio"])
        assert metadata["language"] == "es" and metadata["speaker"] == int(speaker_dir[2:])


def test_a_language_without_sentences_speaks_and_the_mouth_follows():
    clip = synthetic.make_clip(5, language="ja", render=False)
    assert clip.transcript.startswith("[[") and clip.language == "ja"
    assert sum(not p.is_pause for p in clip.phonemes) >= 4
    energy = audio.frame_energy(clip.audio)
    r = float(np.corrcoef(keypoints.mouth_opening(clip.keypoints), energy)[0, 1])
    print("ja phoneme sentence: mouth opening vs RMS envelope r", round(r, 2))
    assert r > 0.3
    kana = synthetic.make_clip(5, language="ja", render=False, sentences=("きょうは とても いい てんき ですね。",))
    assert kana.transcript == "きょうは とても いい てんき ですね。"


def test_unknown_voice_and_bad_text_file_are_one_line_errors(tmp_path):
    from ml_collections import ConfigDict

    from t2v.errors import InputError

    synth = ConfigDict(dict(clips=1, langs="ja,xx", format="records", texture="", size=32, seed=0,
                            speakers=0, shards=1, text_file=""))  # fmt: skip
    with pytest.raises(InputError, match="--langs.*no voice 'xx'"):
        synthetic.synthesize_from_config(synth, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    synth.langs, synth.text_file = "ja", str(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="missing.txt"):
        synthetic.synthesize_from_config(synth, tmp_path / "out", progress=False)
    (tmp_path / "empty.txt").write_text("\n\n")
    synth.text_file = str(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="no sentences"):
        synthetic.synthesize_from_config(synth, tmp_path / "out", progress=False)
