"""Tests for the mood vocabulary (melodia.music.moods), keys (melodia.music.keys), features and
the estimator (melodia.music.mood_estimator) and user labels (melodia.labels).

Every score is built here with symusic, so the tests need nothing outside the repository.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import symusic

from melodia.errors import BadInputError, MelodiaError
from melodia.labels import Label, Labels, label_from_path, read_labels_csv
from melodia.music.keys import (
    ANY,
    KEY_NAMES,
    estimate_key,
    key_from_index,
    key_from_token_name,
    key_index,
    key_token_name,
    parse_key,
)
from melodia.music.mood_estimator import MoodEstimator, MoodFeatures, extract_features, features_to_dict
from melodia.music.moods import (
    ALIASES,
    CANONICAL_MOODS,
    mood_token_name,
    mood_valence_arousal,
    normalise_word,
    resolve_mood,
)

TPQ = 480


# ------------------------------------------------------------------------------------------
# helpers: build scores
# ------------------------------------------------------------------------------------------

def make_score(notes, qpm: float | None = 120.0, drums=()) -> symusic.Score:
    """notes: (start_beat, duration_beats, pitch, velocity) tuples on one piano track."""
    score = symusic.Score(TPQ)
    if qpm is not None:
        score.tempos.append(symusic.Tempo(0, qpm=qpm))
    track = symusic.Track(program=0, name="piano")
    for start, dur, pitch, vel in notes:
        track.notes.append(symusic.Note(round(start * TPQ), round(dur * TPQ), pitch, vel))
    score.tracks.append(track)
    if drums:
        drum = symusic.Track(program=0, is_drum=True, name="drums")
        for start, dur, pitch, vel in drums:
            drum.notes.append(symusic.Note(round(start * TPQ), round(dur * TPQ), pitch, vel))
        score.tracks.append(drum)
    return score


C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]
A_HARMONIC_MINOR = [57, 59, 60, 62, 64, 65, 68, 69]
MAJOR_CHORDS = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]      # I IV V I in C
MINOR_CHORDS = [(57, 60, 64), (62, 65, 69), (64, 68, 71), (57, 60, 64)]      # i iv V i in a


def scale_and_cadence(scale, chords, vel=80):
    notes = [(i, 1, p, vel) for i, p in enumerate(scale)]
    for bar, chord in enumerate(chords):
        notes += [(8 + 4 * bar, 4, p, vel) for p in chord]
    return notes


def make_piece(minor: bool, qpm: float | None, per_beat: int, vel: int, shift: int = 0,
               bars: int = 8) -> symusic.Score:
    """A melody running through the key's scale over a I-IV-V-I (i-iv-V-i) progression.

    per_beat melody notes per quarter; shift transposes everything (register).
    """
    scale = A_HARMONIC_MINOR if minor else C_MAJOR_SCALE
    chords = MINOR_CHORDS if minor else MAJOR_CHORDS
    notes = []
    step = 1.0 / per_beat
    for bar in range(bars):
        chord = chords[bar % 4]
        notes += [(4 * bar, 4, p - 12 + shift, vel) for p in chord]
        for i in range(4 * per_beat):
            degree = (bar * 3 + i) % 8 if i % 2 == 0 else (i // 2) % 8
            pitch = scale[degree] + 12 + shift
            notes.append((4 * bar + i * step, step, pitch, vel))
    return make_score(notes, qpm=qpm)


# ------------------------------------------------------------------------------------------
# moods
# ------------------------------------------------------------------------------------------

def test_canonical_moods_and_aliases_point_at_them():
    assert CANONICAL_MOODS == ("happy", "tense", "sad", "calm")
    assert ANY == "any"
    assert set(ALIASES.values()) <= set(CANONICAL_MOODS)
    required = {
        "happy": ["joyful", "upbeat", "cheerful", "bright"],
        "tense": ["angry", "anxious", "dark", "agitated", "fearful"],
        "sad": ["melancholic", "gloomy", "sorrowful", "depressed"],
        "calm": ["peaceful", "relaxed", "tender", "serene"],
    }
    for mood, words in required.items():
        for word in words:
            assert ALIASES[word] == mood, word
    assert not set(ALIASES) & set(CANONICAL_MOODS)


@pytest.mark.parametrize("text, expected", [
    ("happy", "happy"), ("  Joyful ", "happy"), ("UPBEAT", "happy"), ("Dark", "tense"),
    ("anxious", "tense"), ("melancholic", "sad"), ("Gloomy", "sad"), ("tender", "calm"),
    ("serene", "calm"), ("calm", "calm"), ("any", "any"), (" ANY ", "any"), (None, "any"),
])
def test_resolve_mood_names(text, expected):
    assert resolve_mood(text) == expected


@pytest.mark.parametrize("valence, arousal, expected", [
    (0.8, 0.8, "happy"), (-0.8, 0.8, "tense"), (-0.8, -0.8, "sad"), (0.8, -0.8, "calm"),
    (0.0, 0.0, "happy"), (0, -0.1, "calm"), (-0.1, 0, "tense"), (-1, -1, "sad"), (1, 1, "happy"),
])
def test_resolve_mood_from_valence_arousal(valence, arousal, expected):
    assert resolve_mood(valence=valence, arousal=arousal) == expected


def test_quadrant_centres_round_trip():
    for mood in CANONICAL_MOODS:
        v, a = mood_valence_arousal(mood)
        assert abs(v) == abs(a) == 0.5
        assert resolve_mood(valence=v, arousal=a) == mood
    assert mood_valence_arousal("anxious") == (-0.5, 0.5)
    assert mood_valence_arousal("Peaceful") == (0.5, -0.5)
    with pytest.raises(BadInputError, match="any"):
        mood_valence_arousal("any")


def test_resolve_mood_unknown_name_lists_valid_moods():
    with pytest.raises(BadInputError) as info:
        resolve_mood("grumpy-ish")
    message = str(info.value)
    assert "grumpy-ish" in message
    for mood in CANONICAL_MOODS:
        assert mood in message
    assert isinstance(info.value, MelodiaError)


@pytest.mark.parametrize("kwargs, needle", [
    ({"valence": 1.5, "arousal": 0.0}, "1.5"),
    ({"valence": 0.0, "arousal": -1.01}, "-1.01"),
    ({"valence": float("nan"), "arousal": 0.0}, "nan"),
    ({"valence": 0.3}, "arousal"),
    ({"arousal": 0.3}, "valence"),
    ({"mood": "happy", "valence": 0.1, "arousal": 0.1}, "happy"),
    ({"mood": 3}, "3"),
])
def test_resolve_mood_bad_values(kwargs, needle):
    with pytest.raises(BadInputError, match=None) as info:
        resolve_mood(**kwargs)
    assert needle in str(info.value)


def test_normalise_word_and_mood_tokens():
    assert normalise_word(" Film Noir ") == "film_noir"
    assert normalise_word("Ständchen/Lied!") == "standchen_lied"
    assert normalise_word("--") == ""
    assert mood_token_name("Joyful") == "MOOD_happy"
    assert mood_token_name("any") == "MOOD_any"
    assert mood_token_name("Nostalgic") == "MOOD_nostalgic"
    with pytest.raises(BadInputError):
        mood_token_name("!!")


# ------------------------------------------------------------------------------------------
# keys
# ------------------------------------------------------------------------------------------

def test_key_names_layout():
    assert len(KEY_NAMES) == 24 and len(set(KEY_NAMES)) == 24
    assert KEY_NAMES[:12] == ("C major", "Db major", "D major", "Eb major", "E major", "F major",
                              "F# major", "G major", "Ab major", "A major", "Bb major", "B major")
    assert KEY_NAMES[12:] == ("C minor", "C# minor", "D minor", "Eb minor", "E minor", "F minor",
                              "F# minor", "G minor", "G# minor", "A minor", "Bb minor", "B minor")
    for i, name in enumerate(KEY_NAMES):
        assert key_index(name) == i
        assert key_from_index(i) == name
        assert parse_key(name) == name
        assert key_from_token_name(key_token_name(name)) == name
    assert key_index("any") == 24 and key_from_index(24) == "any"
    assert key_token_name("any") == "KEY_any" and key_from_token_name("KEY_any") == "any"


@pytest.mark.parametrize("text, expected", [
    ("D minor", "D minor"), ("d minor", "D minor"), ("Dm", "D minor"), ("D", "D major"),
    ("F#", "F# major"), ("Gb:maj", "F# major"), ("A:min", "A minor"), ("Bbm", "Bb minor"),
    ("c#:min", "C# minor"), ("Db:maj", "Db major"), ("C#", "Db major"), ("D#:min", "Eb minor"),
    ("Ab minor", "G# minor"), ("A#m", "Bb minor"), ("Cb major", "B major"), ("E#", "F major"),
    ("B#:min", "C minor"), ("b minor", "B minor"), ("bb minor", "Bb minor"), ("bm", "B minor"),
    ("Eb_major", "Eb major"), ("F# MINOR", "F# minor"), ("DM", "D major"), ("G:maj", "G major"),
    ("E\u266d major", "Eb major"), ("F\u266f minor", "F# minor"), ("  Am  ", "A minor"),
    ("C sharp minor", "C# minor"), ("any", "any"),
])
def test_parse_key_variants(text, expected):
    assert parse_key(text) == expected


def test_pop909_key_forms_all_parse():
    """POP909's key_audio.txt writes every tonic, flats and sharps, as <tonic>:maj|min."""
    tonics = ["C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A",
              "A#", "Bb", "B"]
    for tonic in tonics:
        major, minor = parse_key(f"{tonic}:maj"), parse_key(f"{tonic}:min")
        assert major.endswith(" major") and minor.endswith(" minor")
        assert key_index(major) % 12 == key_index(minor) % 12


@pytest.mark.parametrize("bad", ["H major", "C lydian", "", "Cm7", "major", "X", "C##m#"])
def test_parse_key_rejects_bad_text(bad):
    with pytest.raises(BadInputError) as info:
        parse_key(bad)
    assert repr(bad) in str(info.value)


def test_key_token_and_index_errors():
    assert key_token_name("f# minor") == "KEY_F#_minor"
    assert key_token_name("Gb:maj") == "KEY_F#_major"
    with pytest.raises(BadInputError):
        key_from_token_name("MOOD_happy")
    with pytest.raises(BadInputError):
        key_from_token_name("KEY_Gb_major")  # not the canonical token
    with pytest.raises(BadInputError):
        key_from_index(25)


# ------------------------------------------------------------------------------------------
# key estimation
# ------------------------------------------------------------------------------------------

def test_estimate_key_c_major():
    key = estimate_key(make_score(scale_and_cadence(C_MAJOR_SCALE, MAJOR_CHORDS)))
    assert key.name == "C major" and key.tonic == 0 and key.mode == "major"
    assert key.correlation > 0.7
    assert key.major_minor_margin > 0.1


def test_estimate_key_a_minor():
    key = estimate_key(make_score(scale_and_cadence(A_HARMONIC_MINOR, MINOR_CHORDS)))
    assert key.name == "A minor" and key.tonic == 9 and key.mode == "minor"
    assert key.major_minor_margin < -0.1


def test_estimate_key_follows_transposition_and_ignores_drums():
    base = make_score(scale_and_cadence(C_MAJOR_SCALE, MAJOR_CHORDS))
    assert estimate_key(base.shift_pitch(7)).name == "G major"
    assert estimate_key(base.shift_pitch(6)).name == "F# major"
    minor = make_score(scale_and_cadence(A_HARMONIC_MINOR, MINOR_CHORDS))
    assert estimate_key(minor.shift_pitch(-4)).name == "F minor"
    # A long, loud hi-hat (pitch 42 = F#) on a drum track must not move the key.
    hats = [(i * 0.5, 8, 42, 127) for i in range(64)]
    with_drums = make_score(scale_and_cadence(C_MAJOR_SCALE, MAJOR_CHORDS), drums=hats)
    assert estimate_key(with_drums) == estimate_key(base)


def test_tonic_shift_and_key_in_c():
    from melodia.music.keys import key_in_c, tonic_shift

    assert [tonic_shift(k) for k in ("C major", "Db major", "F# major", "G major", "B major")] == [0, 1, 6, -5, -1]
    assert (tonic_shift("A minor"), tonic_shift("Bbm"), tonic_shift("any")) == (-3, -2, 0)
    assert (key_in_c("A minor"), key_in_c("Eb major"), key_in_c("any")) == ("C minor", "C major", "any")
    # moving C by the shift lands on the tonic, and the piece never moves more than a tritone
    for k in KEY_NAMES:
        assert (tonic_shift(k) % 12) == KEY_NAMES.index(k) % 12 and -5 <= tonic_shift(k) <= 6
    minor = make_score(scale_and_cadence(A_HARMONIC_MINOR, MINOR_CHORDS))
    assert estimate_key(minor.shift_pitch(-tonic_shift("A minor"))).name == "C minor"


def test_estimate_key_without_pitched_notes():
    with pytest.raises(BadInputError, match="no pitched notes"):
        estimate_key(make_score([], drums=[(0, 1, 36, 100)]))


# ------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------

def test_features_of_a_plain_quarter_note_line():
    notes = [(i, 1, 60 + (i % 8), 64) for i in range(16)]
    notes += [(i, 1, 48, 64) for i in range(0, 16, 4)]
    f = extract_features(make_score(notes, qpm=120))
    assert f.note_count == 20
    assert f.onset_count == 16                      # the bass notes coincide with melody onsets
    assert f.duration_beats == pytest.approx(16)
    assert f.duration_s == pytest.approx(8, rel=1e-3)
    assert f.onsets_per_beat == pytest.approx(1.0)
    assert f.onsets_per_second == pytest.approx(2.0, rel=1e-3)
    assert f.tempo_qpm == pytest.approx(120) and f.tempo_known
    assert f.velocity_mean == pytest.approx(64)
    assert 55 < f.pitch_mean < 65 and f.pitch_std > 0
    assert f.mode == f.key.mode and f.major_minor_margin == f.key.major_minor_margin


def test_tempo_is_the_one_held_longest_and_unknown_without_events():
    score = make_score([(i, 1, 60 + i % 5, 80) for i in range(32)], qpm=None)
    score.tempos.append(symusic.Tempo(0, qpm=90))
    score.tempos.append(symusic.Tempo(8 * TPQ, qpm=140))      # 24 of the 32 beats at 140
    assert extract_features(score).tempo_qpm == pytest.approx(140, rel=1e-3)
    bare = extract_features(make_score([(i, 1, 60, 80) for i in range(8)], qpm=None))
    assert not bare.tempo_known and bare.tempo_qpm is None and bare.onsets_per_second is None


def test_drums_count_as_onsets_not_as_pitch_or_velocity():
    melody = [(i, 1, 72, 60) for i in range(8)]
    hats = [(i + 0.5, 0.25, 42, 127) for i in range(8)]
    f = extract_features(make_score(melody, drums=hats))
    assert f.onset_count == 16
    assert f.pitch_mean == 72 and f.velocity_mean == 60


def test_features_dict_is_flat_json_and_round_trips():
    f = extract_features(make_piece(minor=True, qpm=100, per_beat=2, vel=70))
    d = f.to_dict()
    assert d == features_to_dict(f)
    assert d["key"] == "A minor" and d["mode"] == "minor" and d["tempo_known"] is True
    json.dumps(d)
    back = MoodFeatures.from_dict(json.loads(json.dumps(d)))
    assert back.key.name == "A minor" and back.key.tonic == 9
    assert back.onset_count == f.onset_count and back.tempo_qpm == pytest.approx(f.tempo_qpm)
    with pytest.raises(BadInputError):
        MoodFeatures.from_dict({"key": "A minor"})


def test_score_in_other_time_units_gives_same_features():
    score = make_piece(minor=False, qpm=90, per_beat=2, vel=80)
    assert extract_features(score.to("quarter")).onset_count == extract_features(score).onset_count


# ------------------------------------------------------------------------------------------
# estimator
# ------------------------------------------------------------------------------------------

ESTIMATOR = MoodEstimator()


@pytest.mark.parametrize("name, kwargs, expected", [
    ("fast major loud", dict(minor=False, qpm=150, per_beat=4, vel=110, shift=5), "happy"),
    ("slow minor soft low", dict(minor=True, qpm=58, per_beat=1, vel=45, shift=-12), "sad"),
    ("fast minor", dict(minor=True, qpm=160, per_beat=4, vel=100), "tense"),
    ("slow major", dict(minor=False, qpm=62, per_beat=1, vel=55), "calm"),
])
def test_estimator_on_synthetic_pieces(name, kwargs, expected):
    estimate = ESTIMATOR.estimate(make_piece(**kwargs))
    assert estimate.mood == expected, (name, estimate.reasons)
    assert -1 <= estimate.valence <= 1 and -1 <= estimate.arousal <= 1
    assert estimate.mood == resolve_mood(valence=estimate.valence, arousal=estimate.arousal)
    assert any("key" in r for r in estimate.reasons) and expected in estimate.reasons[-1]
    json.dumps(estimate.to_dict())


def test_unknown_tempo_ignores_the_default_tempo():
    slow = make_piece(minor=False, qpm=60, per_beat=2, vel=80)
    fast = make_piece(minor=False, qpm=200, per_beat=2, vel=80)
    a = ESTIMATOR.estimate(slow, tempo_known=False)
    b = ESTIMATOR.estimate(fast, tempo_known=False)
    assert a.arousal == b.arousal and a.mood == b.mood
    assert a.features.tempo_qpm is None and a.features.onsets_per_second is None
    assert not a.features.tempo_known
    assert any("tempo unknown" in r for r in a.reasons)
    # ...while with the tempo known the same change does move arousal.
    assert ESTIMATOR.estimate(fast).arousal > ESTIMATOR.estimate(slow).arousal + 0.3


def test_unknown_tempo_uses_rhythmic_activity():
    plain = make_piece(minor=True, qpm=120, per_beat=1, vel=80)
    busy = make_piece(minor=True, qpm=120, per_beat=4, vel=80)
    assert ESTIMATOR.estimate(plain, tempo_known=False).mood == "sad"
    assert ESTIMATOR.estimate(busy, tempo_known=False).mood == "tense"


def test_thresholds_are_fields_and_move_the_label():
    piece = make_piece(minor=False, qpm=62, per_beat=1, vel=55)
    assert ESTIMATOR.estimate(piece).mood == "calm"
    assert MoodEstimator(tempo_centre=40, density_centre=0.5).estimate(piece).mood == "happy"
    assert MoodEstimator(margin_centre=0.9).estimate(piece).mood == "sad"


def test_louder_and_higher_push_the_right_way():
    soft_low = ESTIMATOR.estimate(make_piece(minor=False, qpm=90, per_beat=2, vel=40, shift=-12))
    loud_high = ESTIMATOR.estimate(make_piece(minor=False, qpm=90, per_beat=2, vel=120, shift=12))
    assert loud_high.arousal > soft_low.arousal
    assert loud_high.valence > soft_low.valence


# ------------------------------------------------------------------------------------------
# user labels
# ------------------------------------------------------------------------------------------

def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_labels_csv(tmp_path):
    path = write(tmp_path, "\ufefffile,mood,tags\n"
                 "piano/a.mid,Peaceful,solo; Night Music\n"
                 "b.mid,happy,\n"
                 "./c.mid,Nostalgic Feel,jazz\n"
                 "\n"
                 "sub\\d.mid,,live\n"
                 "\"e, the song.mid\",ANY,\n")
    labels = read_labels_csv(path)
    assert isinstance(labels, Labels) and isinstance(labels, dict)
    assert labels == {"piano/a.mid": "calm", "b.mid": "happy", "c.mid": "nostalgic_feel",
                      "sub/d.mid": "", "e, the song.mid": ""}
    assert labels.tags == {"piano/a.mid": ("solo", "night_music"), "c.mid": ("jazz",),
                           "sub/d.mid": ("live",)}
    assert labels.path == str(path)


def test_read_labels_csv_without_tags_column(tmp_path):
    labels = read_labels_csv(write(tmp_path, "File, Mood\nx.mid,gloomy\n"))
    assert labels == {"x.mid": "sad"} and labels.tags == {}


@pytest.mark.parametrize("text, line, needle", [
    ("file,mood\na.mid,happy,extra\n", 2, "3 fields"),
    ("file,mood\n,happy\n", 2, "empty 'file'"),
    ("file,mood\na.mid,happy\na.mid,sad\n", 3, "a.mid"),
    ("name,feeling\na.mid,happy\n", 1, "header"),
    ("file,mood\nok.mid,calm\nbad.mid,???\n", 3, "???"),
])
def test_read_labels_csv_errors_name_file_and_line(tmp_path, text, line, needle):
    path = write(tmp_path, text)
    with pytest.raises(BadInputError) as info:
        read_labels_csv(path)
    message = str(info.value)
    assert f"{path}:{line}" in message and needle in message


def test_read_labels_csv_missing_or_empty_file(tmp_path):
    with pytest.raises(BadInputError, match="nope.csv"):
        read_labels_csv(tmp_path / "nope.csv")
    with pytest.raises(BadInputError, match="empty"):
        read_labels_csv(write(tmp_path, "\n\n"))


def test_label_from_path_folders():
    assert label_from_path("happy/a.mid", None) == Label("happy", (), "folder")
    assert label_from_path("Jazz Trio/Melancholic/a.mid", None) == \
        Label("sad", ("jazz_trio",), "folder")
    assert label_from_path("sad/live/calm/a.mid", None) == Label("calm", ("live",), "folder")
    assert label_from_path("Film Noir\\b.mid", None) == Label(None, ("film_noir",), "estimated")
    assert label_from_path("c.mid", None) == Label(None, (), "estimated")
    assert label_from_path("happy.mid", None).mood is None      # the file name is not a folder


def test_label_from_path_labels_csv_wins(tmp_path):
    labels = read_labels_csv(write(tmp_path, "file,mood,tags\n"
                                   "happy/a.mid,serene,solo\n"
                                   "rock/b.mid,Nostalgic,\n"
                                   "sad/c.mid,,extra\n"))
    assert label_from_path("happy/a.mid", labels) == Label("calm", ("solo",), "labels.csv")
    assert label_from_path("./rock/b.mid", labels) == Label("nostalgic", ("rock",), "labels.csv")
    # an empty mood cell leaves the mood to the folders; its tags still count
    assert label_from_path("sad/c.mid", labels) == Label("sad", ("extra",), "folder")
    assert label_from_path("other/d.mid", labels) == Label(None, ("other",), "estimated")
    # a hand-built plain dict works too
    assert label_from_path("x/y.mid", {"x/y.mid": "Upbeat"}) == Label("happy", ("x",), "labels.csv")


def test_import_stays_light():
    code = ("import sys, melodia.music.moods, melodia.music.mood_estimator, melodia.labels; "
            "print(sorted(m for m in ('torch', 'music21', 'miditok', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mood_defaults_follow_the_quadrants():
    from melodia.music.moods import mood_defaults

    for seed in range(6):
        k, band = mood_defaults("happy", seed)
        assert k.endswith("major") and band[0] > 100
        k, band = mood_defaults("sad", seed)
        assert k.endswith("minor") and band[1] < 80
        assert mood_defaults("tense", seed)[0].endswith("minor")
        assert mood_defaults("calm", seed)[0].endswith("major") and mood_defaults("calm", seed)[1][1] < 80
    assert mood_defaults("any", 1) == (None, None) and mood_defaults("lofi", 1) == (None, None)
    assert mood_defaults("happy", 3) == mood_defaults("happy", 3)
